"""``type: splunk_hec``: Splunk HTTP Event Collector (``POST {endpoint}/services/collector/event``).

    - id: secops_splunk
      type: splunk_hec
      route: {events: [error, playback_stop]}
      package: {template: splunk_hec}      # templates/splunk_hec.yaml: copy and change it
      deliver:
        endpoint: https://splunk.example.com:8088
        token: ${env:SPLUNK_HEC_TOKEN}    # Settings > Data inputs > HTTP Event Collector
        index: video                      # optional: the token's default index otherwise
        sourcetype: _json                 # optional, default _json
        source: video-telemetry           # optional, default video-telemetry
        host: null                        # optional: Splunk uses the sender's host otherwise
        compression: gzip                 # gzip (default) | none
        max_request_bytes: 1000000        # Splunk's max_content_length (1 MB on Splunk Cloud)
        batch: {max_events: 1000, max_wait_s: 1}

**What the template controls:** the ``event`` of each HEC event, that is what Splunk
indexes and searches. **What the API fixes (the sink does it):** every packaged record is
wrapped as ``{"time": <event time in epoch seconds>, "host", "source", "sourcetype",
"index", "event": <record>}`` (``time`` from the event's own timestamp, left out when the
event has none; the others from ``deliver``), the events of a batch are concatenated
(one per line) in requests of at most ``max_request_bytes``, the token goes in
``Authorization: Splunk <token>``.

HEC indexes the events of a request in order and stops at the first one it cannot take,
answering ``400`` with ``invalid-event-number``: the events before it are delivered, that
one is a dead letter (not retryable), the ones after it are retried. ``401``/``403`` (a
missing or wrong token) and ``400 Incorrect index`` are not retryable; ``503 Server is
busy`` and other ``5xx``/``429`` are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr

from transforms.connectors._api import (
    HttpApiDeliver,
    ItemFailure,
    Part,
    PartFailures,
    send_parts,
    split_parts,
    too_large_failures,
)
from transforms.connectors._http import HttpApiSink, classify, compress, ndjson
from transforms.connectors.base import ConnectorSpec, DeliveryBatch, WriteResult
from transforms.rules.encode import dumps
from transforms.rules.records import record_of

PATH = "/services/collector/event"


class SplunkDeliver(HttpApiDeliver):
    """``type: splunk_hec``: Splunk HTTP Event Collector, JSON events endpoint."""

    token: SecretStr = Field(description="HEC token, as ${env:NAME}.")
    index: str | None = Field(
        default=None, description="Target index; omitted: the token's default index."
    )
    source: str | None = Field(default="video-telemetry", description="HEC 'source' field.")
    sourcetype: str | None = Field(default="_json", description="HEC 'sourcetype' field.")
    host: str | None = Field(
        default=None, description="HEC 'host' field; omitted: Splunk uses the sender's host."
    )
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Request body compression: gzip | none."
    )
    max_request_bytes: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Uncompressed bytes per request at most (Splunk's max_content_length).",
    )


class SplunkSink(HttpApiSink):
    """Sends each batch as concatenated HEC events; reads ``invalid-event-number``."""

    type_name = "splunk_hec"

    def secrets(self) -> Sequence[Any]:
        """The HEC token."""
        return (self.deliver.token,)

    def open(self) -> None:
        """Create the pooled client, the fixed headers and the envelope fields."""
        super().open()
        d = self.deliver
        self.url = self.endpoint_url.rstrip("/") + PATH
        self.target = d.shown + PATH  # how results and messages name it
        self.headers = {
            "Authorization": f"Splunk {d.token.get_secret_value()}",
            "Content-Type": "application/json",
        }
        if d.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.envelope = {
            k: v
            for k, v in (
                ("host", d.host),
                ("source", d.source),
                ("sourcetype", d.sourcetype),
                ("index", d.index),
            )
            if v is not None
        }

    def wrap(self, record: Any, time_ms: int | None) -> dict[str, Any]:
        """The HEC event of one packaged record."""
        event: dict[str, Any] = {} if time_ms is None else {"time": time_ms / 1000}
        event.update(self.envelope)
        event["event"] = record
        return event

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Send the batch in requests of at most ``max_request_bytes``."""
        entries = [dumps(self.wrap(record_of(item), item.time_ms)) for item in batch.items]
        parts, too_large = split_parts(
            entries, len(entries) or 1, self.deliver.max_request_bytes, envelope_bytes=1
        )
        rejected = too_large_failures(too_large, batch.items, "max_request_bytes")
        return send_parts(batch, parts, self._send, rejected, self.target)

    def _send(self, part: Part) -> int:
        body = ndjson(part.entries)
        body = compress(body, self.deliver.compression)
        response = self.client.request("POST", self.url, body, self.headers)
        where = self.client.where("POST", self.url)
        error = classify(
            response.status, response.headers, response.body, where, self.client.secrets
        )
        if error is None:
            return len(body)
        bad, code = _invalid_event(response.body) if response.status == 400 else (None, None)
        if bad is None or not 0 <= bad < len(part.indices):
            raise error
        if bad == 0 and code == INCORRECT_INDEX:
            raise error  # every event of the request names the same (refused) index
        # HEC indexed the events before the bad one and did not look at the ones after.
        failures = [ItemFailure(bad, "", False, str(error), response.status)]
        failures += [
            ItemFailure(i, "", True, f"not indexed: event {bad} of its request was refused")
            for i in range(bad + 1, len(part.indices))
        ]
        raise PartFailures(str(error), failures, delivered=bad, sent=len(body))


INCORRECT_INDEX = 7
"""HEC's code for an index the token may not write to."""


def _invalid_event(body: bytes) -> tuple[int | None, int | None]:
    """(``invalid-event-number``, ``code``) of an HEC error answer, when it has them."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    number, code = answer.get("invalid-event-number"), answer.get("code")
    valid = isinstance(number, int) and not isinstance(number, bool)
    return (number if valid else None), (code if isinstance(code, int) else None)


CONNECTOR_TYPES = {
    "splunk_hec": ConnectorSpec(
        SplunkDeliver, SplunkSink, sends_record_json=False, default_template="splunk_hec"
    )
}
