"""``type: datadog_logs``: Datadog Logs intake v2 (``POST {endpoint}/api/v2/logs``).

    - id: ops_datadog
      type: datadog_logs
      route: {events: [heartbeat, error, buffer_start, buffer_end]}
      package: {template: datadog_logs}    # templates/datadog_logs.yaml: copy and change it
      deliver:
        endpoint: https://http-intake.logs.datadoghq.com   # .eu, us3., us5., ap1. ... per site
        api_key: ${env:DD_API_KEY}        # an API key (not an application key)
        compression: gzip                 # gzip (default) | none
        batch: {max_events: 1000, max_wait_s: 1}
        concurrency: 8
        timeouts: {connect_s: 5, read_s: 30}

**What the template controls:** each packaged record is one Datadog log object, whole:
the reserved attributes (``ddsource``, ``ddtags``, ``service``, ``hostname``,
``message``, ``timestamp``, ``status``) and every other attribute. **What the API fixes
(the sink does it):** the records of a batch travel as a JSON array, ``Content-Type:
application/json``, the key in the ``DD-API-KEY`` header, gzip when configured.

**Limits** (Datadog's): at most 1,000 logs and 5 MB (uncompressed) per request, so a
batch is split into several requests when needed; a log over 1 MB is never sent and
becomes a dead letter (not retryable) while the rest of its batch is delivered. Datadog
answers ``202`` when it accepted a payload; ``403`` for a bad key (not retryable),
``413``/``400`` for a refused payload (not retryable), ``408``/``429``/``5xx``
(retryable, ``Retry-After`` honoured).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr

from transforms.connectors._api import (
    HttpApiDeliver,
    Part,
    send_parts,
    split_parts,
    too_large_failures,
)
from transforms.connectors._http import HttpApiSink, compress, json_array
from transforms.connectors.base import ConnectorSpec, DeliveryBatch, WriteResult
from transforms.rules.encode import record_json

MAX_ENTRIES = 1000
"""Logs per request at most (Datadog's array limit)."""

MAX_PAYLOAD_BYTES = 5_000_000
"""Uncompressed bytes per request at most (Datadog: 5 MB)."""

MAX_ENTRY_BYTES = 1_000_000
"""Bytes of one log at most (Datadog: 1 MB); larger ones are dead letters."""

PATH = "/api/v2/logs"


class DatadogDeliver(HttpApiDeliver):
    """``type: datadog_logs``: Datadog Logs intake v2."""

    api_key: SecretStr = Field(description="Datadog API key, as ${env:NAME}.")
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Request body compression: gzip | none."
    )


class DatadogSink(HttpApiSink):
    """Sends each batch as JSON arrays of log objects, split by Datadog's limits."""

    type_name = "datadog_logs"

    def secrets(self) -> Sequence[Any]:
        """The API key."""
        return (self.deliver.api_key,)

    def open(self) -> None:
        """Create the pooled client and the fixed request headers."""
        super().open()
        self.url = self.endpoint_url.rstrip("/") + PATH
        self.target = self.deliver.shown + PATH  # how results and messages name it
        self.headers = {
            "DD-API-KEY": self.deliver.api_key.get_secret_value(),
            "Content-Type": "application/json",
        }
        if self.deliver.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Send the batch in as many requests as the limits need."""
        entries = [record_json(item) for item in batch.items]
        parts, too_large = split_parts(
            entries, MAX_ENTRIES, MAX_PAYLOAD_BYTES, max_entry_bytes=MAX_ENTRY_BYTES
        )
        rejected = too_large_failures(too_large, batch.items, "Datadog's 1 MB limit per log")
        return send_parts(batch, parts, self._send, rejected, self.target)

    def _send(self, part: Part) -> int:
        body = json_array(part.entries)
        body = compress(body, self.deliver.compression)
        self.client.send("POST", self.url, body, self.headers)
        return len(body)


CONNECTOR_TYPES = {
    "datadog_logs": ConnectorSpec(DatadogDeliver, DatadogSink, default_template="datadog_logs")
}
