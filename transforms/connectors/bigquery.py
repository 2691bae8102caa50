"""``type: bigquery``: rows streamed into a BigQuery table (``insertAll`` or Storage Write).

    - id: warehouse
      type: bigquery
      package: {template: bigquery_row}    # templates/bigquery_row.yaml: typed columns
      deliver:
        table: my-project.telemetry.player_events   # PROJECT.DATASET.TABLE
        method: streaming_inserts          # the default; or storage_write
        schema: auto                       # or [{name, type, mode}, ...]: the table's columns
        endpoint: null                     # optional API root, e.g. http://127.0.0.1:9050
        batch: {max_events: 500, max_wait_s: 1}

Each packaged record is one row, whole (its keys are the columns). The table must exist;
the connector creates none. Each batch is sent as ``POST {endpoint}/bigquery/v2/projects/
{project}/datasets/{dataset}/tables/{table}/insertAll`` requests of at most
``max_rows_per_request`` rows (default 500, BigQuery's recommendation) and
``max_request_bytes`` (default 9 MB, under BigQuery's 10 MB), each row with ``insertId``
= its ``event_id`` (hashed when longer than 128 characters), so a resend of a request
whose answer was lost (a read timeout) is dropped by BigQuery's best-effort dedup
(about a minute) instead of stored twice.

**Credentials**: with ``BIGQUERY_EMULATOR_HOST`` set (``127.0.0.1:9050``; it wins over
``endpoint``) or an ``http://`` endpoint, none (an emulator or a stand-in); otherwise
Google's Application Default Credentials (a service account with
``roles/bigquery.dataEditor`` on the table), read on the worker at the first write and
refreshed when they expire. No secret is given in the config; the access token is
redacted from every message. Missing credentials fail the batch, not the worker: its
events are dead letters (not retryable) saying so.

**Errors**: requests are sent with ``skipInvalidRows: true`` and ``ignoreUnknownValues:
false``: a row BigQuery refuses (a value of the wrong type, an unknown column, a missing
``REQUIRED`` one) is answered in ``insertErrors`` and becomes that event's dead letter
with BigQuery's reason, location and message (``invalid at bitrate_kbps: Cannot convert
value to integer (bad value): "4500kbps"``); the other rows are inserted.
Rows reported ``stopped``, ``backendError`` or ``timeout`` are retried. A whole request
answered 403 ``rateLimitExceeded``/``quotaExceeded``, 408, 429 or 5xx, a timeout or a
connection failure is retried by the shared policy; any other 4xx (``accessDenied``,
``notFound``: no such table) is not.

**Why ``streaming_inserts`` stays the default**: it is plain HTTPS and JSON, answers per
row, dedups retries by ``insertId``, and has real offline stand-ins. ``method:
storage_write`` (the Storage Write API: half the price per GB, exactly-once) is a gRPC
client (``google-cloud-bigquery-storage``, installed with Beam's GCP extra) whose cost here
was not measured against insertAll.

**storage_write**: each sink (one per ``DoFn`` instance) creates one ``COMMITTED`` write
stream at its first write (``CreateWriteStream``; finalized in ``close``) and appends each
batch as ``AppendRows`` requests of proto2 rows (a ``DescriptorProto`` built from the
declared schema, or with ``schema: auto`` from the table's own columns as the stream
reports them), each naming its ``offset``. A value the column cannot take is that event's
dead letter before sending (``invalid at bitrate_kbps: Cannot convert value to integer (bad
value): "4500kbps"``); rows BigQuery refuses (``row_errors``: a missing ``REQUIRED``
column) are dead letters with its message and the rest are appended again at the same
offset (BigQuery appends none of a request with row errors). UNAVAILABLE,
RESOURCE_EXHAUSTED, ABORTED, DEADLINE_EXCEEDED and INTERNAL are retried by the shared
policy; other codes are not. **Exactly-once**: an append whose answer was lost is resent at
its offset when the retry comes back to the sink (``ALREADY_EXISTS``: it had landed, not
stored twice); when another batch comes first, the stream is finalized (no append can land
after that) and its row count tells whether the lost one had landed, then a new stream
takes the batch. A retry that goes to another worker (a delayed retry) is at-least-once:
such events were reported ``outcome_unknown`` and are counted in ``possible_duplicates``.
The gRPC server is ``BIGQUERY_STORAGE_EMULATOR_HOST`` (``127.0.0.1:9060``, anonymous),
else ``endpoint`` (``http://host:port``: plaintext, anonymous; ``https://host:port``: TLS
and ADC), else ``bigquerystorage.googleapis.com:443`` with ADC.

**Schema**: a declared ``schema`` (the table's columns) is what validate checks the
packaging template against (:func:`check_template`: every field has a column of a type it
takes, every ``REQUIRED`` column has a field) and each probed record
(:func:`check_record`). ``auto`` (the default) means the table follows the template:
nothing is checked, and :func:`derive_schema` gives the columns the template implies:
``cast: int`` is ``INT64``, ``float`` ``FLOAT64``, ``bool`` ``BOOL``, ``string``
``STRING``; ``format: iso8601`` is ``TIMESTAMP``, ``epoch_ms``/``epoch_s`` ``INT64``,
``"%Y-%m-%d"`` ``DATE``, ``"%Y-%m-%dT%H:%M:%S"`` ``DATETIME``, any other pattern
``STRING``; a constant has its value's type; anything else is ``STRING``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import hashlib
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

import orjson
from pydantic import Field, field_validator, model_validator

from transforms.connectors._api import (
    ApiDeliver,
    Part,
    PartFailures,
    check_endpoint,
    send_parts,
    split_parts,
    too_large_failures,
)
from transforms.connectors._http import HttpClient, classify, excerpt
from transforms.connectors._policy import redact
from transforms.connectors.base import (
    Batch,
    ConnectorSpec,
    DeliveryBatch,
    DeliveryError,
    ItemFailure,
    PartialDeliveryError,
    Sink,
    StrictModel,
    WriteResult,
)
from transforms.rules import schema as schemas
from transforms.rules.encode import dumps, record_json
from transforms.rules.events import iso_time
from transforms.rules.records import record_of
from transforms.rules.schema import BIGQUERY_TYPES, Column, compile_schema, row_problems

# Re-exported: the connector's own names for the schema rules (tests, docs).
from transforms.rules.schema import TYPES as TYPES
from transforms.rules.schema import derive_schema as derive_schema

DEFAULT_ROOT = "https://bigquery.googleapis.com"
EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
SCOPE = "https://www.googleapis.com/auth/bigquery"
MAX_INSERT_ID = 128
"""Longest ``insertId`` BigQuery dedups by; a longer ``event_id`` is hashed."""

RETRYABLE_REASONS = frozenset(
    {"rateLimitExceeded", "quotaExceeded", "backendError", "internalError"}
)
"""Whole-request error reasons worth retrying, whatever the status (a quota 403)."""
RETRYABLE_ROW_REASONS = frozenset({"stopped", "backendError", "timeout", "internalError"})
"""Per-row reasons of rows BigQuery did not judge invalid (resending them may succeed)."""

_PROJECT = r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_TABLE = r"[\w\- ]{1,1024}"
_TABLE_NAME = re.compile(rf"^({_PROJECT})\.({_DATASET})\.({_TABLE})$")
_INT_TEXT = re.compile(r"^[+-]?\d+$")


class SchemaField(StrictModel):
    """One column as the config declares it: ``{name: bitrate_kbps, type: INT64}``.

    Validates the config (with the field's path in errors); everything after validation
    reads the :class:`~transforms.rules.schema.Column` values it compiles to
    (:attr:`BigQueryDeliver.columns`).
    """

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,299}$", description="Column name.")
    type: str = Field(description="BigQuery type: " + ", ".join(TYPES) + " (or legacy names).")
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"] = Field(
        default="NULLABLE", description="NULLABLE | REQUIRED | REPEATED."
    )
    fields: list[SchemaField] | None = Field(default=None, description="A RECORD's columns.")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        kind = BIGQUERY_TYPES.get(value.upper())
        if kind is None:
            raise ValueError(f"type {value!r} is not a BigQuery type; one of {', '.join(TYPES)}")
        return kind

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def _bigquery_batch() -> Batch:
    return Batch(max_events=500, max_wait_s=1.0)


with warnings.catch_warnings():
    # The contract names the key ``schema``, which shadows pydantic's deprecated
    # ``BaseModel.schema()`` (nothing here calls it).
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class BigQueryDeliver(ApiDeliver):
        """``type: bigquery``: a table, how rows reach it, and its columns."""

        table: str = Field(description="PROJECT.DATASET.TABLE, e.g. my-project.telemetry.events.")
        method: Literal["streaming_inserts", "storage_write"] = Field(
            default="streaming_inserts",
            description="streaming_inserts (tabledata.insertAll) or storage_write (the Storage "
            "Write API over gRPC: a committed stream with offsets).",
        )
        schema: list[SchemaField] | Literal["auto"] = Field(  # type: ignore[assignment]
            default="auto",
            description="The table's columns [{name, type, mode}], checked against the "
            "template at validate; auto: derived from the template.",
        )
        endpoint: str | None = Field(
            default=None,
            description="API root (default https://bigquery.googleapis.com; storage_write: the "
            "gRPC server, default https://bigquerystorage.googleapis.com); http:// means an "
            "emulator (no credentials). BIGQUERY_EMULATOR_HOST (storage_write: "
            "BIGQUERY_STORAGE_EMULATOR_HOST) wins.",
        )
        batch: Batch = Field(
            default_factory=_bigquery_batch,
            description="Events per batch and the longest an event waits (default 500, 1 s).",
        )
        max_rows_per_request: int = Field(
            default=500, ge=1, le=50_000, description="Rows per insertAll request at most."
        )
        max_request_bytes: int = Field(
            default=9_000_000,
            ge=10_000,
            le=10_000_000,
            description="Bytes per insertAll request at most (BigQuery's limit: 10 MB).",
        )

        @field_validator("table")
        @classmethod
        def _table(cls, table: str) -> str:
            if _TABLE_NAME.match(table) is None:
                raise ValueError(
                    f"table {table!r} is not PROJECT.DATASET.TABLE (project: 6-30 of a-z, 0-9 "
                    "and -, optionally after a domain and ':'; dataset: letters, digits and _; "
                    "table: letters, digits, _, - and spaces), e.g. my-project.telemetry.events"
                )
            return table

        @field_validator("endpoint")
        @classmethod
        def _endpoint(cls, endpoint: str | None) -> str | None:
            if endpoint is None:
                return None
            check_endpoint(endpoint)
            return endpoint.rstrip("/")

        @model_validator(mode="after")
        def _compiles(self) -> BigQueryDeliver:
            _ = self.columns  # a RECORD without fields, fields on a scalar: refused here
            return self

        @cached_property
        def columns(self) -> tuple[Column, ...] | None:
            """The declared schema as columns (compiled once), or None for ``auto``."""
            return None if isinstance(self.schema, str) else columns_of(self.schema)

        def parts(self) -> tuple[str, str, str]:
            """``(project, dataset, table)`` of :attr:`table`."""
            found = _TABLE_NAME.match(self.table)
            assert found is not None  # validated
            return found.group(1), found.group(2), found.group(3)


def insert_id(event_id: str) -> str:
    """The ``insertId`` of an event: its id, or a hash of an id over 128 characters.

    >>> insert_id("9f1e-42")
    '9f1e-42'
    >>> len(insert_id("x" * 300))
    71
    """
    if len(event_id) <= MAX_INSERT_ID:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def root_url(endpoint: str | None) -> tuple[str, bool]:
    """The API root to send to and whether it is an emulator (no credentials).

    >>> root_url("http://127.0.0.1:9050")
    ('http://127.0.0.1:9050', True)
    """
    emulator = os.environ.get(EMULATOR_ENV, "").strip()
    if emulator:
        root = emulator if "://" in emulator else "http://" + emulator
        return root.rstrip("/"), True
    root = endpoint or DEFAULT_ROOT
    return root, root.startswith("http://")


class Adc:
    """Application Default Credentials of one sink: read, refreshed and redacted here.

    The sinks refresh the token themselves, never the HTTP or gRPC library, so every error
    on the way passes through :func:`redact` with every secret the credentials hold (the
    tokens so far, a refresh token, a client secret), and no library logs a token
    endpoint's answer (gRPC's auth plugin logs it unredacted). E.g.
    ``Adc(EMULATOR_ENV).token("bigquery")`` -> ``"ya29.a0..."`` (refreshed when expired).
    """

    def __init__(self, emulator_env: str, self_signed: bool = False):
        self.emulator_env = emulator_env
        self.self_signed = self_signed
        self.secrets: tuple[str, ...] = ()
        self._credentials: Any = None
        self._lock = threading.Lock()

    def token(self, where: str) -> str:
        """A valid access token; a failure is a DeliveryError starting with ``where``."""
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    credentials, _ = google.auth.default(scopes=[SCOPE])
                    # gRPC: a service account key signs its own token (a JWT with the
                    # scope), as Google's gRPC clients do: no token endpoint on the way.
                    if self.self_signed and hasattr(credentials, "with_always_use_jwt_access"):
                        credentials = credentials.with_always_use_jwt_access(True)
                    self._credentials = credentials
                if not self._credentials.valid:
                    self._credentials.refresh(google.auth.transport.requests.Request())
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise DeliveryError(
                    f"{where}: no Application Default Credentials found ({self.say(exc)}). "
                    "Fix: set GOOGLE_APPLICATION_CREDENTIALS or run with a service account; "
                    f"for an emulator set {self.emulator_env} or an http:// endpoint",
                    retryable=False,
                ) from None
            except google.auth.exceptions.TransportError as exc:  # no answer: say why
                raise DeliveryError(
                    f"{where}: could not refresh credentials: {self.say(exc)}", retryable=True
                ) from None
            except google.auth.exceptions.GoogleAuthError as exc:
                code = _oauth_error_code(exc)
                raise DeliveryError(
                    f"{where}: could not refresh credentials: the token endpoint answered "
                    f"{code or type(exc).__name__} (its description is not shown: it may "
                    "quote the credentials sent)",
                    retryable=bool(getattr(exc, "retryable", False))
                    or code in ("server_error", "temporarily_unavailable"),
                ) from None
            token = str(self._credentials.token)
            names = ("refresh_token", "client_secret", "_refresh_token", "_client_secret")
            held = (getattr(self._credentials, n, None) for n in names)
            known = (*self.secrets, token, *(v for v in held if isinstance(v, str)))
            self.secrets = tuple(dict.fromkeys(v for v in known if v))
            return token

    def say(self, exc: BaseException) -> str:
        """``exc`` in one redacted line (a local problem: no file, no network)."""
        return redact(" ".join(str(exc).split()), self.secrets)[:300]


def _oauth_error_code(exc: BaseException) -> str | None:
    """The OAuth ``error`` code a token endpoint answered (RFC 6749 5.2), if it says one.

    google-auth words it ``Error code server_error: ...`` (STS) or ``invalid_grant: ...``
    (OAuth 2.0), e.g. ``RefreshError("invalid_grant: Bad Request", {...})`` ->
    ``"invalid_grant"``. Only the code is shown: the description and the raw answer (the
    second argument) are the endpoint's words and may quote the tokens it was sent.
    """
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    found = re.match(r"(?:Error code )?([a-z_]{3,40})(?::|$)", first)
    return found.group(1) if found else None


class BigQuerySink(Sink):
    """Streams each batch into the table through ``insertAll`` and reads per-row results."""

    type_name = "bigquery"

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.deliver = deliver
        self.root, self.anonymous = root_url(deliver.endpoint)
        self.client = HttpClient(self.type_name, deliver.concurrency, deliver.timeouts)
        self._adc = Adc(EMULATOR_ENV)

    def __repr__(self) -> str:
        return f"BigQuerySink({self.connector_id!r}, table={self.deliver.table!r})"

    def secret_values(self) -> tuple[str, ...]:
        """The current access token (and any earlier one), never shown."""
        return self.client.secrets

    def open(self) -> None:
        """Create the pooled HTTP client; credentials are read at the first write."""
        project, dataset, table = self.deliver.parts()
        path = "/bigquery/v2/projects/{}/datasets/{}/tables/{}/insertAll".format(
            *(quote(p, safe=":") for p in (project, dataset, table))
        )
        self.url = self.root + path
        self.target = self.deliver.table
        self.client.open()

    def close(self) -> None:
        """Close the pooled HTTP client (``DoFn.teardown``)."""
        self.client.close()

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Send the batch as ``insertAll`` requests; see the module docstring."""
        headers = {"Content-Type": "application/json", **self._auth()}
        entries: list[bytes] = []
        kept: list[int] = []
        rejected: list[ItemFailure] = []
        for i, item in enumerate(batch.items):
            row = record_json(item)
            if not row.startswith(b"{"):
                rejected.append(
                    ItemFailure(i, item.event_id, False, "bigquery: a row must be a JSON object")
                )
                continue
            kept.append(i)
            entries.append(b'{"insertId":%s,"json":%s}' % (dumps(insert_id(item.event_id)), row))
        head = (
            b'{"kind":"bigquery#tableDataInsertAllRequest","skipInvalidRows":true,'
            b'"ignoreUnknownValues":false,"rows":['
        )
        parts, too_large = split_parts(
            entries,
            self.deliver.max_rows_per_request,
            self.deliver.max_request_bytes,
            envelope_bytes=len(head) + 2,
        )
        # split_parts indexes the kept entries; the batch's positions are kept[...]
        parts = [Part(tuple(kept[j] for j in p.indices), p.entries) for p in parts]
        too_large = [(kept[j], size) for j, size in too_large]
        rejected += too_large_failures(too_large, batch.items, "max_request_bytes")
        return send_parts(
            batch, parts, lambda part: self._send(part, head, headers), rejected, self.target
        )

    def _auth(self) -> dict[str, str]:
        """The Authorization header (none for an emulator); reads or refreshes ADC."""
        if self.anonymous:
            return {}
        token = self._adc.token("bigquery")
        self.client.secrets = tuple(dict.fromkeys((*self.client.secrets, *self._adc.secrets)))
        return {"Authorization": f"Bearer {token}"}

    def _say(self, exc: BaseException) -> str:
        return redact(" ".join(str(exc).split()), self.client.secrets)[:300]

    def _send(self, part: Part, head: bytes, headers: Mapping[str, str]) -> int:
        body = head + b",".join(part.entries) + b"]}"
        response = self.client.request("POST", self.url, body, headers)
        where = self.client.where("POST", self.url)
        if not 200 <= response.status < 300:
            raise self._request_error(response.status, response.headers, response.body, where)
        try:
            answer = orjson.loads(response.body)
            errors = answer.get("insertErrors") or []
            failures = [self._row(e, len(part.indices)) for e in errors]
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise DeliveryError(
                f"{where}: HTTP {response.status} but the insertAll response is unreadable; "
                "the outcome is unknown (a resend is deduplicated by insertId)",
                retryable=True,
                status=response.status,
                outcome_unknown=True,
            ) from None
        if not failures:
            return len(body)
        failures.sort(key=lambda f: f.index)
        raise PartFailures(
            f"{where}: {len(failures)} of {len(part.indices)} rows refused; first: "
            f"{failures[0].reason}",
            failures,
            delivered=len(part.indices) - len(failures),
            sent=len(body),
        )

    def _row(self, entry: Any, rows: int) -> ItemFailure:
        """One ``insertErrors`` entry as the failure of its row (ValueError: unreadable)."""
        index = entry["index"]
        if not isinstance(index, int) or not 0 <= index < rows:
            raise ValueError(f"insertErrors index {index!r}")
        said = [e for e in entry.get("errors") or [] if isinstance(e, dict)] or [{}]
        reasons = {str(e.get("reason", "")) for e in said}
        retryable = reasons <= RETRYABLE_ROW_REASONS and "" not in reasons
        text = "; ".join(
            f"{e.get('reason', 'error')}"
            + (f" at {e['location']}" if e.get("location") else "")
            + (f": {e['message']}" if e.get("message") else "")
            for e in said
        )
        # Redact before cutting: a cut secret is no longer recognisable.
        reason = redact(text, self.client.secrets)[:300]
        return ItemFailure(index, "", retryable, f"bigquery row: {reason}")

    def _request_error(
        self, status: int, headers: Mapping[str, str], body: bytes, where: str
    ) -> DeliveryError:
        error = classify(status, headers, body, where, self.client.secrets)
        assert error is not None  # not a 2xx
        try:
            said = orjson.loads(body)["error"]
            reasons = {str(e.get("reason")) for e in said.get("errors", []) if isinstance(e, dict)}
            message = str(said.get("message", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return error
        shown = excerpt(message.encode(), self.client.secrets)
        text = f"{where}: HTTP {status} {', '.join(sorted(reasons)) or 'error'}: {shown}"
        return DeliveryError(
            text,
            retryable=error.retryable or bool(reasons & RETRYABLE_REASONS),
            status=status,
            retry_after_s=error.retry_after_s,
        )


# -- method: storage_write (the Storage Write API over gRPC) -------------------------------------

STORAGE_ROOT = "https://bigquerystorage.googleapis.com"
STORAGE_EMULATOR_ENV = "BIGQUERY_STORAGE_EMULATOR_HOST"
RETRYABLE_GRPC = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "DEADLINE_EXCEEDED", "INTERNAL"}
)
"""gRPC codes worth retrying; on a call that was sent, all but RESOURCE_EXHAUSTED leave the
outcome unknown (the rows may have been appended), which the stream's offsets resolve."""
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH_DAY = datetime.date(1970, 1, 1)
_PROTO = {  # column type -> FieldDescriptorProto type (BigQuery's documented mapping)
    "STRING": 9,
    "BYTES": 12,
    "INT64": 3,
    "FLOAT64": 1,
    "BOOL": 8,
    "NUMERIC": 9,
    "BIGNUMERIC": 9,
    "TIMESTAMP": 3,  # microseconds since the epoch
    "DATE": 5,  # int32 days since the epoch
    "TIME": 9,
    "DATETIME": 9,
    "GEOGRAPHY": 9,
    "JSON": 9,
    "RECORD": 11,
}


def storage_target(endpoint: str | None) -> tuple[str, bool]:
    """The gRPC ``host:port`` to append to and whether it is an emulator (no credentials).

    ``BIGQUERY_STORAGE_EMULATOR_HOST`` (``127.0.0.1:9060``) wins; then ``endpoint``
    (``http://`` means plaintext and anonymous); then Google's server.

    >>> storage_target("http://127.0.0.1:9060")
    ('127.0.0.1:9060', True)
    """
    emulator = os.environ.get(STORAGE_EMULATOR_ENV, "").strip()
    root = emulator if emulator else (endpoint or STORAGE_ROOT)
    anonymous = bool(emulator) or root.startswith("http://")
    host = root.split("://", 1)[-1].rstrip("/")
    return (host if ":" in host else host + (":80" if anonymous else ":443")), anonymous


def row_descriptor(schema: Sequence[Column], name: str = "Row") -> Any:
    """A self-contained proto2 ``DescriptorProto`` of rows of ``schema`` (RECORDs nested).

    >>> [f.name for f in row_descriptor([Column("n", "INT64")]).field]
    ['n']
    """
    from google.protobuf import descriptor_pb2

    top = descriptor_pb2.DescriptorProto(name=name)

    def fill(message: Any, fields: Sequence[Column]) -> None:
        for number, column in enumerate(fields, 1):
            field = message.field.add(name=column.name, number=number, type=_PROTO[column.type])
            field.label = 3 if column.mode == "REPEATED" else 1  # repeated / optional
            if column.type == "RECORD":
                nested = top.nested_type.add(name=f"R{len(top.nested_type)}")
                fill(nested, column.fields)
                field.type_name = f".{name}.{nested.name}"

    fill(top, schema)
    return top


def row_class(descriptor: Any) -> Any:
    """The message class of a descriptor from :func:`row_descriptor`."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="bigquery_row.proto", syntax="proto2")
    file.message_type.add().CopyFrom(descriptor)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.name))


def encode_row(message: Any, record: Mapping[str, Any], schema: Sequence[Column]) -> None:
    """Fill ``message`` from ``record``; ValueError saying where and why BigQuery would not.

    The values BigQuery's JSON API takes are taken (``"42"`` into INT64, an ISO 8601 text or
    epoch seconds into TIMESTAMP); a missing or null column is left unset (BigQuery refuses a
    missing REQUIRED one per row).
    """
    columns = {f.name: f for f in schema}
    for key, value in record.items():
        column = columns.get(key)
        if column is None:
            raise ValueError(f"invalid at {key}: no such field: {key}")
        if value is None:
            continue
        if column.mode == "REPEATED":
            if not isinstance(value, list):
                raise ValueError(f"invalid at {key}: Array specified for non-repeated field")
            target = getattr(message, key)
            for n, element in enumerate(value):
                if column.type == "RECORD":
                    _record(target.add(), element, column, f"{key}[{n}]")
                else:
                    target.append(_scalar(column.type, element, f"{key}[{n}]"))
        elif column.type == "RECORD":
            _record(getattr(message, key), value, column, key)
        else:
            setattr(message, key, _scalar(column.type, value, key))


def _record(message: Any, value: Any, column: Column, where: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"invalid at {where}: This field: {where} is not a record")
    message.SetInParent()
    try:
        encode_row(message, value, column.fields)
    except ValueError as exc:
        raise ValueError(str(exc).replace("invalid at ", f"invalid at {where}.", 1)) from None


def _scalar(kind: str, value: Any, where: str) -> Any:
    """One value as its protobuf field takes it (ValueError: BigQuery's words for why not)."""
    shown = dumps(value)[:60].decode("utf-8", "replace")
    bad = f"invalid at {where}: Cannot convert value to {{}} (bad value): {shown}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "INT64":
        if isinstance(value, str) and _INT_TEXT.match(value.strip()):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(bad.format("integer"))
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"invalid at {where}: Value out of INT64 range: {shown}")
        return value
    if kind == "FLOAT64":
        try:
            return float(value) if number or isinstance(value, str) else float("x")
        except ValueError:
            raise ValueError(bad.format("floating point")) from None
    if kind == "BOOL":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(bad.format("boolean"))
        return value
    if kind == "TIMESTAMP":
        return _timestamp_micros(value, bad.format("timestamp"))
    if kind == "DATE":
        try:
            return (datetime.date.fromisoformat(value) - _EPOCH_DAY).days
        except (TypeError, ValueError):
            raise ValueError(bad.format("date")) from None
    if kind == "BYTES":
        try:
            return base64.b64decode(value, validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise ValueError(bad.format("bytes (base64)")) from None
    if kind == "JSON":
        return value if isinstance(value, str) else dumps(value).decode()
    if isinstance(value, (dict, list)):
        raise ValueError(f"invalid at {where}: Cannot convert a JSON object to {kind}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else dumps(value).decode()


def _timestamp_micros(value: Any, bad: str) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(value * 1_000_000)  # epoch seconds, as BigQuery's JSON API reads numbers
    moment = iso_time(value) if isinstance(value, str) else None
    if moment is None:
        raise ValueError(bad)
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclasses.dataclass
class _Pending:
    """An append whose answer was lost: where it went and which events it held."""

    offset: int
    event_ids: tuple[str, ...]


class StorageWriteSink(Sink):
    """Appends each batch to a committed write stream of the table, at known offsets.

    One stream per sink (per ``DoFn`` instance), created at the first write; each append
    names the offset it must land at. An append whose answer is lost is resent at the same
    offset when the retry comes back (the shared policy's immediate retries): BigQuery
    answers ``ALREADY_EXISTS`` if it had landed, so it is stored once. If a different batch
    comes first (a streaming lane's writer threads interleave batches; a retry waits for
    its backoff), the stream is finalized first: its row count says whether the lost append
    landed (its events are then delivered when their retry comes, without a resend), and a
    new stream takes the batch. Nothing is appended after an append whose fate is unknown,
    so at most one is unknown per stream.
    """

    type_name = "bigquery"

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.deliver = deliver
        self.target_host, self.anonymous = storage_target(deliver.endpoint)
        self.target = deliver.table
        self.timeout = deliver.timeouts.connect_s + deliver.timeouts.read_s
        self._client: Any = None
        self._adc: Adc | None = None
        self._stream: str | None = None
        self._schema: tuple[Column, ...] | None = deliver.columns
        self._row_class: Any = None
        self._descriptor: Any = None
        self._next = 0
        self._pending: _Pending | None = None
        self._landed: set[str] = set()
        """Events of a lost append found landed, until their retry comes back."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StorageWriteSink({self.connector_id!r}, table={self.deliver.table!r})"

    def secret_values(self) -> tuple[str, ...]:
        """The access tokens so far (and the credentials' own secrets), never shown."""
        return self._adc.secrets if self._adc is not None else ()

    def open(self) -> None:
        """Create the gRPC client (``DoFn.setup``); missing credentials fail each write.

        With credentials the channel is TLS only, and each call carries the token as its
        ``authorization`` metadata (:meth:`_metadata`): no call credentials, so the library
        never refreshes a token (or logs the failure) where :class:`Adc` cannot redact it.
        """
        import grpc
        from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        if self.anonymous:
            channel = grpc.insecure_channel(self.target_host, options=options)
        else:
            self._adc = Adc(STORAGE_EMULATOR_ENV, self_signed=True)
            tls = grpc.ssl_channel_credentials()  # the system's roots
            channel = grpc.secure_channel(self.target_host, tls, options=options)
        self._client = BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))

    def _metadata(self, where: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """A call's metadata: ``extra`` and, with ADC, ``authorization: Bearer <token>``."""
        if self._adc is None:
            return extra
        return (*extra, ("authorization", f"Bearer {self._adc.token(where)}"))

    def close(self) -> None:
        """Finalize the stream (best effort) and close the channel (``DoFn.teardown``)."""
        if self._client is not None and self._stream is not None:
            with contextlib.suppress(Exception):  # the rows are committed either way
                self._unary("FinalizeWriteStream", self._stream, name=self._stream)
        self._stream = None
        if self._client is not None:
            self._client.transport.close()
            self._client = None

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Append the batch's rows; see the class docstring and the module's."""
        if self._client is None:
            raise DeliveryError("bigquery: the sink is not open", retryable=False)
        with self._lock:
            if self._stream is None:
                self._create_stream()
            failures: list[ItemFailure] = []
            kept: list[tuple[int, bytes]] = []
            for i, item in enumerate(batch.items):
                try:
                    kept.append((i, self._encode(record_of(item))))
                except ValueError as exc:
                    failures.append(ItemFailure(i, item.event_id, False, f"bigquery row: {exc}"))
            pending = self._pending
            if (
                pending is not None
                and tuple(batch.items[i].event_id for i, _ in kept[: len(pending.event_ids)])
                != pending.event_ids
            ):
                self._settle_lost_append(pending)
            landed = [(i, row) for i, row in kept if batch.items[i].event_id in self._landed]
            for i, _ in landed:  # a lost append found landed: delivered, not sent again
                self._landed.discard(batch.items[i].event_id)
            kept = [
                entry
                for entry in kept
                if batch.items[entry[0]].event_id
                not in {batch.items[i].event_id for i, _ in landed}
            ]
            ids = tuple(batch.items[i].event_id for i, _ in kept)
            parts = self._parts(kept, ids)
            return self._send(batch, parts, failures, len(landed))

    def _parts(
        self, kept: list[tuple[int, bytes]], ids: tuple[str, ...]
    ) -> list[list[tuple[int, bytes]]]:
        """The appends, each within the row and byte limits; a lost one first, as it was."""
        parts: list[list[tuple[int, bytes]]] = []
        pending = self._pending
        if pending is not None and ids[: len(pending.event_ids)] == pending.event_ids:
            parts.append(kept[: len(pending.event_ids)])
            kept = kept[len(pending.event_ids) :]
        current: list[tuple[int, bytes]] = []
        size = 0
        for entry in kept:
            if current and (
                len(current) >= self.deliver.max_rows_per_request
                or size + len(entry[1]) > self.deliver.max_request_bytes
            ):
                parts.append(current)
                current, size = [], 0
            current.append(entry)
            size += len(entry[1]) + 8
        return [*parts, current] if current else parts

    def _send(
        self,
        batch: DeliveryBatch,
        parts: list[list[tuple[int, bytes]]],
        failures: list[ItemFailure],
        delivered: int = 0,
    ) -> WriteResult:
        sent = 0
        requests = 0
        stop: DeliveryError | None = None
        for part in parts:
            if stop is not None:
                for i, _ in part:
                    failures.append(ItemFailure(i, batch.items[i].event_id, True, str(stop)))
                continue
            while part:
                requests += 1
                try:
                    refused = self._append(part, batch)
                except DeliveryError as exc:
                    if not failures and delivered == 0 and len(parts) == 1:
                        raise
                    stop = exc
                    for i, _ in part:
                        failures.append(
                            ItemFailure(i, batch.items[i].event_id, exc.retryable, str(exc))
                        )
                    break
                if not refused:
                    delivered += len(part)
                    sent += sum(len(row) for _, row in part)
                    break
                failures.extend(refused)  # nothing of the part was appended: the rest again
                gone = {f.index for f in refused}
                part = [entry for entry in part if entry[0] not in gone]
        result = WriteResult(self.target, delivered, sent)
        if not failures:
            return result
        failures.sort(key=lambda f: f.index)
        raise PartialDeliveryError(
            f"bigquery: {len(failures)} of {len(batch.items)} rows not appended; first: "
            f"{failures[0].reason}",
            result,
            failures=failures,
            requests=requests,
        )

    def _append(self, part: list[tuple[int, bytes]], batch: DeliveryBatch) -> list[ItemFailure]:
        """One AppendRows at the next offset: the rows BigQuery refused, or DeliveryError.

        When rows are refused nothing of the part was appended (BigQuery's rule).
        """
        from google.api_core import exceptions
        from google.cloud.bigquery_storage_v1 import types

        assert self._stream is not None
        ids = tuple(batch.items[i].event_id for i, _ in part)
        resend = self._pending is not None and self._pending.event_ids == ids
        request = types.AppendRowsRequest(
            write_stream=self._stream,
            offset=self._next,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=self._descriptor),
                rows=types.ProtoRows(serialized_rows=[row for _, row in part]),
            ),
        )
        where = f"bigquery AppendRows {self._stream} at offset {self._next}"
        try:
            answers = self._client.append_rows(
                requests=iter([request]),
                # Not the client's default retry: it retries UNAVAILABLE for up to a day
                # (a hang) and logs each error unredacted; the shared policy retries.
                retry=None,
                timeout=self.timeout,
                metadata=self._metadata(
                    where, ("x-goog-request-params", f"write_stream={self._stream}")
                ),
            )
            answer = next(iter(answers))
        except (exceptions.GoogleAPICallError, StopIteration) as exc:
            code = getattr(getattr(exc, "grpc_status_code", None), "name", "UNKNOWN")
            retryable = code in RETRYABLE_GRPC or isinstance(exc, StopIteration)
            unknown = retryable and code != "RESOURCE_EXHAUSTED"
            if unknown:
                self._pending = _Pending(self._next, ids)  # resend here to learn its fate
            raise DeliveryError(
                f"{where}: {code}: {self._say(exc)}"
                + ("; the outcome is unknown: a retry resends it at the same offset" * unknown),
                retryable=retryable,
                outcome_unknown=unknown,
            ) from None
        status = answer.error.code
        name = _grpc_name(status)
        if status == 0 or (resend and name == "ALREADY_EXISTS"):
            self._pending = None
            self._next += len(part)
            return []
        self._pending = None
        if answer.row_errors:
            refused = []
            for error in answer.row_errors:
                if not 0 <= error.index < len(part):
                    raise DeliveryError(
                        f"{where}: row_errors index {error.index} names no row", retryable=True
                    )
                i = part[error.index][0]
                reason = redact(str(error.message), self.secret_values())[:300]
                refused.append(
                    ItemFailure(i, batch.items[i].event_id, False, f"bigquery row: {reason}")
                )
            return refused
        message = redact(str(answer.error.message), self.secret_values())[:300]
        if name in ("ALREADY_EXISTS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND"):
            self._abandon_stream()  # offsets out of step, or the stream is gone: a new one
            raise DeliveryError(f"{where}: {name}: {message}", retryable=True)
        raise DeliveryError(f"{where}: {name}: {message}", retryable=name in RETRYABLE_GRPC)

    def _create_stream(self) -> None:
        from google.cloud.bigquery_storage_v1 import types

        project, dataset, table = self.deliver.parts()
        parent = f"projects/{project}/datasets/{dataset}/tables/{table}"
        stream = self._unary(
            "CreateWriteStream",
            parent,
            parent=parent,
            write_stream=types.WriteStream(type_=types.WriteStream.Type.COMMITTED),
        )
        if self._schema is None:  # auto: the table's own columns
            self._schema = compile_schema(
                [_field_spec(f) for f in stream.table_schema.fields],
                "the table's schema",
                BIGQUERY_TYPES,
            )
        self._descriptor = row_descriptor(self._schema)
        self._row_class = row_class(self._descriptor)
        self._stream = stream.name
        self._next = 0
        self._pending = None

    def _abandon_stream(self) -> None:
        self._stream = None
        self._pending = None
        self._create_stream()

    def _settle_lost_append(self, pending: _Pending) -> None:
        """Learn whether ``pending`` landed, then go on in a new stream.

        Nothing else is appended first. FinalizeWriteStream seals the stream (an append
        still on its way can no longer land) and answers its row count: the lost append
        landed if the stream reaches past its end. E.g. a lost append of 38 rows at offset 0
        and ``row_count`` 38: it landed, and its events are delivered when their retry
        comes (:attr:`_landed`), not sent again. A failed finalize fails this write
        (retryable); the question stays open.
        """
        answer = self._unary(
            "FinalizeWriteStream",
            f"{self._stream} (to learn whether an append whose answer was lost had landed)",
            retryable=True,
            name=self._stream,
        )
        if answer.row_count >= pending.offset + len(pending.event_ids):
            if len(self._landed) > 1_000_000:  # retries that went elsewhere
                self._landed.clear()
            self._landed.update(pending.event_ids)
        self._abandon_stream()

    def _unary(self, call: str, where: Any, retryable: bool | None = None, **request: Any) -> Any:
        """One unary call, with no library retry (the shared policy retries).

        A refusal is a DeliveryError naming the call, e.g. ``bigquery CreateWriteStream
        projects/p/datasets/d/tables/t: NOT_FOUND: ...``, retryable by its code unless
        ``retryable`` says otherwise.
        """
        from google.api_core import exceptions

        said = f"bigquery {call} {where}"
        methods = {
            "CreateWriteStream": self._client.create_write_stream,
            "FinalizeWriteStream": self._client.finalize_write_stream,
        }
        try:
            return methods[call](
                **request, retry=None, timeout=self.timeout, metadata=self._metadata(said)
            )
        except exceptions.GoogleAPICallError as exc:
            code = getattr(exc.grpc_status_code, "name", "UNKNOWN")
            raise DeliveryError(
                f"{said}: {code}: {self._say(exc)}",
                retryable=code in RETRYABLE_GRPC if retryable is None else retryable,
            ) from None

    def _encode(self, record: Any) -> bytes:
        if not isinstance(record, dict):
            raise ValueError(f"a row must be a JSON object, not a {type(record).__name__}")
        message = self._row_class()
        encode_row(message, record, self._schema or ())
        return bytes(message.SerializeToString())

    def _say(self, exc: BaseException) -> str:
        text = getattr(exc, "message", None) or str(exc)
        return redact(" ".join(str(text).split()), self.secret_values())[:300]


def _grpc_name(code: int) -> str:
    import grpc

    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return f"code {code}"


def _field_spec(field: Any) -> dict[str, Any]:
    """A ``TableFieldSchema`` of the Storage API as a schema field ``{name, type, mode}``."""
    kind = {"DOUBLE": "FLOAT64", "STRUCT": "RECORD", "INT64": "INT64"}.get(
        field.type_.name, field.type_.name
    )
    mode = field.mode.name if field.mode.name in ("REQUIRED", "REPEATED") else "NULLABLE"
    inner = [_field_spec(f) for f in field.fields] if kind == "RECORD" else None
    return {"name": field.name, "type": kind, "mode": mode, "fields": inner}


# -- schema checks (validate's probe and the tests use them; the rules are rules.schema's) -----


def columns_of(schema: Sequence[SchemaField] | Sequence[Column]) -> tuple[Column, ...]:
    """A declared schema as :class:`~transforms.rules.schema.Column` values.

    >>> columns_of([SchemaField(name="n", type="INTEGER")])
    (Column(name='n', type='INT64', mode='NULLABLE', fields=()),)
    """
    if all(isinstance(c, Column) for c in schema):
        return tuple(c for c in schema if isinstance(c, Column))
    specs = [c.model_dump(exclude_none=True) if isinstance(c, SchemaField) else c for c in schema]
    return compile_schema(specs, "schema", BIGQUERY_TYPES)


def check_template(
    template: str | Mapping[str, Any] | None,
    schema: Sequence[SchemaField] | Sequence[Column] | str,
) -> list[str]:
    """What a declared schema says against a template's fields (empty: they agree).

    ``schema`` is ``deliver.schema`` (``auto``: the table follows the template, nothing to
    check) or columns; see :func:`transforms.rules.schema.check_template`.
    """
    if isinstance(schema, str):
        return []
    return schemas.check_template(template, columns_of(schema))


def check_record(item: Any, deliver: Any, connector_id: str) -> str | None:
    """Why BigQuery would refuse one packaged record as a row of a declared schema.

    For ``validate``'s probe (``RECORD_CHECKS``); None when it would take it, or when the
    schema is ``auto``.
    """
    columns = deliver.columns
    if columns is None:
        return None
    record = item.record
    if not isinstance(record, dict):
        return f"BigQuery: a row must be a JSON object, not a {type(record).__name__}"
    problems = row_problems(record, columns)
    return "BigQuery would refuse the row: " + "; ".join(problems) if problems else None


def make_sink(connector_id: str, deliver: Any) -> Sink:
    """The sink of ``deliver.method``: streaming inserts or the Storage Write API."""
    if deliver.method == "storage_write":
        return StorageWriteSink(connector_id, deliver)
    return BigQuerySink(connector_id, deliver)


CONNECTOR_TYPES = {
    "bigquery": ConnectorSpec(BigQueryDeliver, make_sink, default_template="bigquery_row")
}
