"""``type: http``: a generic webhook; each request carries a batch of records.

    - id: partner_webhook
      type: http
      route: {events: [playback_start, playback_complete]}
      package: {template: flat_event}      # or any template; the record is sent as is
      deliver:
        endpoint: https://hooks.example.com/video/events   # the full URL, posted as is
        # a token in the URL: https://hooks.slack.com/services/T0/B0/${env:SLACK_HOOK_TOKEN}
        method: POST                       # POST (default) | PUT | PATCH
        headers:                           # sent with every request; values may be secrets
          Authorization: ${env:WEBHOOK_AUTH}   # e.g. "Bearer abc..." (the whole value)
          X-Source: video-telemetry
        body: json_array                   # json_array (default) | ndjson
        compression: none                  # none (default) | gzip
        max_request_bytes: 5000000         # a batch is split into requests of this size
        batch: {max_events: 500, max_wait_s: 1}
        concurrency: 4
        timeouts: {connect_s: 5, read_s: 30}

**What the template controls:** each record, whole. **What this connector fixes:** the
records of a batch travel as one JSON array (``Content-Type: application/json``) or as
NDJSON (``application/x-ndjson``), gzip-compressed with ``Content-Encoding: gzip`` when
configured. A header may override ``Content-Type``; ``Content-Length``,
``Content-Encoding`` and ``Host`` are set by the client. Every header value is treated
as a secret: none appears in a message, log or dead letter. So is an endpoint with
``${env:NAME}`` parts: messages, results and dead letters name it with the references,
never with their values, and never show its path or query.

The receiver answers with the shared policy: any ``2xx`` delivered; ``408``, ``429``
(with ``Retry-After``) and ``5xx`` retried; other ``4xx`` dead letters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from transforms.connectors._api import (
    HttpApiDeliver,
    Part,
    check_endpoint_template,
    send_parts,
    split_parts,
    too_large_failures,
)
from transforms.connectors._http import HttpApiSink, compress, json_array, ndjson
from transforms.connectors.base import ConnectorSpec, DeliveryBatch, WriteResult
from transforms.rules.encode import record_json

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = {"content-length", "content-encoding", "host", "transfer-encoding"}

CONTENT_TYPES = {"json_array": "application/json", "ndjson": "application/x-ndjson"}


class HttpDeliver(HttpApiDeliver):
    """``type: http``: batches of records sent to a URL."""

    method: Literal["POST", "PUT", "PATCH"] = Field(default="POST", description="HTTP method.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Headers of every request; values may be ${env:NAME} secrets.",
    )
    body: Literal["json_array", "ndjson"] = Field(
        default="json_array", description="Body format: json_array | ndjson."
    )
    compression: Literal["none", "gzip"] = Field(
        default="none", description="Request body compression: none | gzip."
    )
    max_request_bytes: int = Field(
        default=5_000_000, ge=1_000, description="Uncompressed bytes per request at most."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str) -> str:
        check_endpoint_template(endpoint)
        return endpoint  # the full URL: a trailing slash may matter to the receiver

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the client; remove it")
            if any(c in value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: the value contains a line break or NUL")
        return headers


class HttpSink(HttpApiSink):
    """Sends each batch as JSON array or NDJSON requests."""

    type_name = "http"

    def secrets(self) -> Sequence[Any]:
        """Every header value (the client cannot tell which are credentials)."""
        return tuple(self.deliver.headers.values())

    def open(self) -> None:
        """Create the pooled client and the request headers."""
        super().open()
        d = self.deliver
        self.headers = {"Content-Type": CONTENT_TYPES[d.body]}
        self.headers.update({k: v.get_secret_value() for k, v in d.headers.items()})
        if d.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Send the batch in requests of at most ``max_request_bytes``."""
        entries = [record_json(item) for item in batch.items]
        ndjson_body = self.deliver.body == "ndjson"
        parts, too_large = split_parts(
            entries,
            len(entries) or 1,
            self.deliver.max_request_bytes,
            envelope_bytes=1 if ndjson_body else 2,
        )
        rejected = too_large_failures(too_large, batch.items, "max_request_bytes")
        return send_parts(batch, parts, self._send, rejected, self.deliver.shown)

    def _send(self, part: Part) -> int:
        d = self.deliver
        body = ndjson(part.entries) if d.body == "ndjson" else json_array(part.entries)
        body = compress(body, d.compression)
        self.client.send(d.method, self.endpoint_url, body, self.headers)
        return len(body)


CONNECTOR_TYPES = {"http": ConnectorSpec(HttpDeliver, HttpSink)}
