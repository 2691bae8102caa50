"""``type: new_relic``: New Relic Event API (``POST {endpoint}/v1/accounts/{account_id}/events``).

    - id: analytics_nr
      type: new_relic
      route: {events: [playback_start, playback_complete, playback_stop, error]}
      package: {template: new_relic}       # templates/new_relic.yaml: copy and change it
      deliver:
        endpoint: https://insights-collector.newrelic.com   # EU: ...collector.eu01.nr-data.net
        account_id: 1234567
        api_key: ${env:NEW_RELIC_LICENSE_KEY}   # a license (ingest) key, sent as Api-Key
        compression: gzip                       # gzip (default) | none
        batch: {max_events: 1000, max_wait_s: 1}

**What the template controls:** each packaged record is one New Relic event: its
``eventType`` (required: letters, digits, ``_``, ``:`` and spaces), ``timestamp``
(epoch seconds or milliseconds; New Relic uses the arrival time without it) and every
attribute. **What the API fixes (the sink does it):** New Relic takes flat events, so
nested objects are flattened with dots (``metadata.geo.country_code``) and lists become
JSON text; the events of a batch travel as a JSON array, gzip-compressed, with the key in
the ``Api-Key`` header.

**Limits** (New Relic's): at most 1 MB (10^6 bytes) per request as sent (compressed), so
a batch is split into as many requests as that needs; at most 255 attributes per event.
An event without a valid ``eventType``, with too many attributes, or too large alone is
a dead letter (not retryable); the rest of its batch is delivered. New Relic answers
``200`` when it accepted a payload (events it cannot store are reported later, in
``NrIntegrationError``), ``403`` for a bad key and ``413`` for a payload too large (not
retryable), ``408``/``429``/``5xx`` (retryable).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr

from transforms.connectors._api import (
    HttpApiDeliver,
    ItemFailure,
    Part,
    send_parts,
    split_parts,
)
from transforms.connectors._http import HttpApiSink, compress, json_array
from transforms.connectors.base import ConnectorSpec, DeliveryBatch, WriteResult
from transforms.rules.encode import dumps
from transforms.rules.package import flatten
from transforms.rules.records import record_of

MAX_REQUEST_BYTES = 1_000_000
"""Bytes per request as sent (compressed) at most (New Relic: 1 MB = 10^6 bytes)."""

MAX_ATTRIBUTES = 255
"""Attributes per event at most."""

MAX_UNCOMPRESSED_BYTES = MAX_REQUEST_BYTES * 10
"""Bytes of a request before compression at most: none compresses 10x and still fits."""

MAX_ENTRIES = 2000
"""Events per request at most (keeps each compression attempt small)."""

EVENT_TYPE = re.compile(r"^[A-Za-z0-9_: ]{1,255}$")
"""What New Relic accepts as an ``eventType``."""


class NewRelicDeliver(HttpApiDeliver):
    """``type: new_relic``: New Relic Event API."""

    account_id: int = Field(ge=1, description="New Relic account id (a number).")
    api_key: SecretStr = Field(description="License (ingest) key, as ${env:NAME}.")
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Request body compression: gzip (default) | none."
    )


def to_event(record: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A packaged record as a flat New Relic event, or (None, why it cannot be one)."""
    if not isinstance(record, dict):
        return None, f"record is a {type(record).__name__}, not an object"
    flat = flatten(record, ".")
    for key, value in flat.items():
        if isinstance(value, (dict, list)):
            flat[key] = dumps(value).decode("utf-8")
    event_type = flat.get("eventType")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        return None, (
            f"eventType {event_type!r} is missing or invalid "
            "(letters, digits, '_', ':' and spaces; set it in the template)"
        )
    if len(flat) > MAX_ATTRIBUTES:
        return None, f"{len(flat)} attributes, New Relic takes at most {MAX_ATTRIBUTES}"
    return flat, None


class NewRelicSink(HttpApiSink):
    """Sends each batch as gzip JSON arrays of flat events, split to 1 MB per request."""

    type_name = "new_relic"

    def secrets(self) -> Sequence[Any]:
        """The license key."""
        return (self.deliver.api_key,)

    def open(self) -> None:
        """Create the pooled client and the fixed request headers."""
        super().open()
        path = f"/v1/accounts/{self.deliver.account_id}/events"
        self.url = self.endpoint_url.rstrip("/") + path
        self.target = self.deliver.shown + path  # how results and messages name it
        self.headers = {
            "Api-Key": self.deliver.api_key.get_secret_value(),
            "Content-Type": "application/json",
        }
        if self.deliver.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Flatten, encode and send the batch in requests of at most 1 MB as sent."""
        rejected: list[ItemFailure] = []
        entries: list[bytes] = []
        positions: list[int] = []
        for i, item in enumerate(batch.items):
            event, why = to_event(record_of(item))
            if event is None:
                rejected.append(ItemFailure(i, item.event_id, False, f"new_relic: {why}"))
                continue
            entries.append(dumps(event))
            positions.append(i)
        # Cut by uncompressed size first (no request can exceed 10x the limit once
        # compressed), then halve any part whose body is still too large.
        rough, too_large = split_parts(entries, MAX_ENTRIES, MAX_UNCOMPRESSED_BYTES)
        for i, size in too_large:
            index = positions[i]
            rejected.append(
                ItemFailure(
                    index,
                    batch.items[index].event_id,
                    False,
                    f"new_relic: event of {size} bytes before compression exceeds the 1 MB "
                    f"request limit (at most {MAX_UNCOMPRESSED_BYTES} bytes are tried)",
                )
            )
        parts: list[Part] = []
        for part in rough:
            mapped = Part(tuple(positions[i] for i in part.indices), part.entries)
            parts.extend(self._fit(mapped, batch, rejected))
        rejected.sort(key=lambda f: f.index)
        return send_parts(batch, parts, self._send, rejected, self.target)

    def _fit(self, part: Part, batch: DeliveryBatch, rejected: list[ItemFailure]) -> list[Part]:
        body = json_array(part.entries)
        body = compress(body, self.deliver.compression)
        if len(body) <= MAX_REQUEST_BYTES:
            return [Part(part.indices, part.entries, body)]
        if len(part.indices) == 1:
            index = part.indices[0]
            rejected.append(
                ItemFailure(
                    index,
                    batch.items[index].event_id,
                    False,
                    f"new_relic: event of {len(body)} bytes as sent exceeds the 1 MB request limit",
                )
            )
            return []
        half = len(part.indices) // 2
        left = Part(part.indices[:half], part.entries[:half])
        right = Part(part.indices[half:], part.entries[half:])
        return self._fit(left, batch, rejected) + self._fit(right, batch, rejected)

    def _send(self, part: Part) -> int:
        body = part.body if part.body is not None else json_array(part.entries)
        self.client.send("POST", self.url, body, self.headers)
        return len(body)


CONNECTOR_TYPES = {
    "new_relic": ConnectorSpec(
        NewRelicDeliver, NewRelicSink, sends_record_json=False, default_template="new_relic"
    )
}
