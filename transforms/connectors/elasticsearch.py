"""``type: elasticsearch``: the Elasticsearch (and OpenSearch) ``_bulk`` API.

    - id: search_es
      type: elasticsearch
      package: {template: elasticsearch}   # templates/elasticsearch.yaml: copy and change it
      deliver:
        endpoint: https://es.example.com:9200
        index: video-events
        api_key: ${env:ES_API_KEY}         # the encoded API key ("id:key" in base64), or:
        # username: telemetry_writer
        # password: ${env:ES_PASSWORD}     # basic auth
        op_type: index                     # index (default, overwrites) | create (data streams)
        compression: gzip                  # gzip (default) | none
        max_request_bytes: 5000000
        batch: {max_events: 1000, max_wait_s: 1}

**What the template controls:** each packaged record is one document, whole.
**What the API fixes (the sink does it):** ``POST {endpoint}/_bulk`` with an NDJSON body
of action/document line pairs ending in a newline, ``Content-Type:
application/x-ndjson``; each action is ``{"index": {"_index": <index>, "_id":
<event_id>}}``, so redelivering an event overwrites the same document instead of adding
a copy. With ``op_type: create`` (required for data streams) an event that is already
there answers ``409`` and counts as delivered.

Elasticsearch reports errors per document: when some documents fail, the others are
delivered and ``write`` raises
:class:`~transforms.connectors.base.PartialDeliveryError` naming the failed events, so
only those are retried (``429`` and ``5xx`` items) or dead-lettered (``400``
``mapper_parsing_exception`` and other ``4xx`` items); the delivered ones are never sent
again. A whole-request ``401``/``403`` (credentials) or ``413`` (too large) is not
retryable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from transforms.connectors._api import (
    HttpApiDeliver,
    Part,
    PartFailures,
    send_parts,
    split_parts,
    too_large_failures,
)
from transforms.connectors._http import HttpApiSink, compress, ndjson
from transforms.connectors._policy import is_retryable_status, redact
from transforms.connectors.base import (
    ConnectorSpec,
    DeliveryBatch,
    DeliveryError,
    ItemFailure,
    WriteResult,
)
from transforms.rules.encode import dumps, record_json

_INDEX_NAME = re.compile(r'^[^-_+.A-Z\\/*?"<>| ,#:][^A-Z\\/*?"<>| ,#:]{0,254}$')


class ElasticsearchDeliver(HttpApiDeliver):
    """``type: elasticsearch``: documents indexed through ``_bulk``, ``_id`` = event_id."""

    index: str = Field(description="Index, alias or data stream the documents go to.")
    api_key: SecretStr | None = Field(
        default=None, description="Encoded API key (Authorization: ApiKey ...), as ${env:NAME}."
    )
    username: str | None = Field(default=None, description="Basic-auth user.")
    password: SecretStr | None = Field(
        default=None, description="Basic-auth password, as ${env:NAME}."
    )
    op_type: Literal["index", "create"] = Field(
        default="index",
        description="index: create or overwrite; create: only new ids (data streams).",
    )
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Request body compression: gzip | none."
    )
    max_request_bytes: int = Field(
        default=5_000_000,
        ge=10_000,
        le=100_000_000,
        description="Uncompressed bytes per _bulk request at most (ES limit: 100 MB).",
    )

    @field_validator("index")
    @classmethod
    def _index(cls, index: str) -> str:
        if index in (".", "..") or not _INDEX_NAME.match(index):
            raise ValueError(
                f"index {index!r} is not a valid Elasticsearch index name (lowercase, no "
                'spaces or \\/*?"<>|,#:, not starting with -, _ or +)'
            )
        return index

    @model_validator(mode="after")
    def _auth(self) -> ElasticsearchDeliver:
        if self.api_key is not None and (self.username or self.password):
            raise ValueError("give either api_key or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


class ElasticsearchSink(HttpApiSink):
    """Sends each batch as ``_bulk`` requests and reads the per-document results."""

    type_name = "elasticsearch"

    def secrets(self) -> Sequence[Any]:
        """The API key, the password and the basic-auth header value."""
        return (self.deliver.api_key, self.deliver.password, self._basic())

    def _basic(self) -> str | None:
        d = self.deliver
        if d.username is None or d.password is None:
            return None
        pair = f"{d.username}:{d.password.get_secret_value()}".encode()
        return base64.b64encode(pair).decode("ascii")

    def open(self) -> None:
        """Create the pooled client and the fixed request headers."""
        super().open()
        d = self.deliver
        self.url = self.endpoint_url.rstrip("/") + "/_bulk"
        self.target = d.shown + "/_bulk"  # how results and messages name it
        self.headers = {"Content-Type": "application/x-ndjson"}
        if d.api_key is not None:
            self.headers["Authorization"] = f"ApiKey {d.api_key.get_secret_value()}"
        elif d.username is not None:
            self.headers["Authorization"] = f"Basic {self._basic()}"
        if d.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.action = d.op_type
        self.index_json = dumps(d.index).decode("utf-8")

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Send the batch as ``_bulk`` requests of at most ``max_request_bytes``."""
        entries = [
            b'{"%s":{"_index":%s,"_id":%s}}\n%s'
            % (
                self.action.encode(),
                self.index_json.encode(),
                dumps(item.event_id),
                record_json(item),
            )
            for item in batch.items
        ]
        parts, too_large = split_parts(
            entries, len(entries) or 1, self.deliver.max_request_bytes, envelope_bytes=1
        )
        rejected = too_large_failures(too_large, batch.items, "max_request_bytes")
        return send_parts(batch, parts, self._send, rejected, self.target)

    def _send(self, part: Part) -> int:
        body = ndjson(part.entries)
        body = compress(body, self.deliver.compression)
        response = self.client.send("POST", self.url, body, self.headers)
        where = self.client.where("POST", self.url)
        try:
            answer = orjson.loads(response.body)
            items = answer["items"]
            errors = bool(answer.get("errors"))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise DeliveryError(
                f"{where}: HTTP {response.status} but the _bulk response is unreadable; the "
                "outcome is unknown (a resend overwrites by _id)",
                retryable=True,
                status=response.status,
            ) from None
        if not isinstance(items, list) or len(items) != len(part.indices):
            raise DeliveryError(
                f"{where}: _bulk answered {len(items) if isinstance(items, list) else 'no'} "
                f"items for {len(part.indices)} documents; the outcome is unknown",
                retryable=True,
                status=response.status,
            )
        if not errors:
            return len(body)
        failures = [f for f in (self._item(i, r) for i, r in enumerate(items)) if f is not None]
        if not failures:
            return len(body)
        delivered = len(part.indices) - len(failures)
        first = failures[0]
        raise PartFailures(
            f"{where}: {len(failures)} of {len(items)} documents failed; first: {first.reason}",
            failures,
            delivered=delivered,
            sent=len(body),
        )

    def _item(self, index: int, result: Any) -> ItemFailure | None:
        outcome = next(iter(result.values()), None) if isinstance(result, dict) else None
        if not isinstance(outcome, dict):
            return ItemFailure(index, "", True, "elasticsearch: unreadable _bulk item")
        status = outcome.get("status")
        if not isinstance(status, int):
            return ItemFailure(index, "", True, "elasticsearch: _bulk item without status")
        if 200 <= status < 300 or (status == 409 and self.action == "create"):
            return None
        error = outcome.get("error")
        if isinstance(error, dict):
            reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        else:
            reason = str(error)
        retryable = is_retryable_status(status)
        reason = redact(reason, self.client.secrets)[:200]  # cut after: a cut secret hides
        return ItemFailure(
            index, "", retryable, f"elasticsearch item HTTP {status}: {reason}", status
        )


CONNECTOR_TYPES = {
    "elasticsearch": ConnectorSpec(
        ElasticsearchDeliver, ElasticsearchSink, default_template="elasticsearch"
    )
}
