// Command benthos is a minimal Benthos build for bench/agent_like.yaml: only the pure
// (bloblang, switch, broker, branch, ...) and io (file input/output) component sets.
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
