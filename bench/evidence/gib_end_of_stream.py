"""Evidence: does GroupIntoBatches flush its buffer at the end of a TestStream?

    python bench/evidence/gib_end_of_stream.py plain     # prints FLUSHED ('k', [1])
    python bench/evidence/gib_end_of_stream.py sharded   # WithShardedKey: prints nothing

See docs/beam-limits.md.
"""

from __future__ import annotations

import sys
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream


def fake_clock() -> float:
    return 0.0


def show(kv: Any) -> None:
    print("FLUSHED", kv, flush=True)


def main(mode: str) -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        keyed = (
            p
            | TestStream().add_elements([("k", 1)]).advance_watermark_to_infinity()
            | beam.Map(lambda kv: kv).with_output_types(beam.typehints.Tuple[str, int])
        )
        if mode == "sharded":
            batches = keyed | beam.GroupIntoBatches.WithShardedKey(10, 30, clock=fake_clock)
        else:
            batches = keyed | beam.GroupIntoBatches(10, 30, clock=fake_clock)
        batches | beam.Map(show)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain")
