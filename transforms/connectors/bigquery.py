"""``type: bigquery``: rows streamed into a BigQuery table (REST ``tabledata.insertAll``).

    - id: warehouse
      type: bigquery
      package: {template: bigquery_row}    # templates/bigquery_row.yaml: typed columns
      deliver:
        table: my-project.telemetry.player_events   # PROJECT.DATASET.TABLE
        method: streaming_inserts          # the default; storage_write: not yet
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

**Why ``streaming_inserts`` is the default**: it is plain HTTPS and JSON, answers per row
(so one bad row is one dead letter, not a failed batch), dedups retries by ``insertId``,
and has real offline stand-ins (tests/receivers/bigquery.py; the ``bqemulator`` REST
server). The Storage Write API's default stream costs half as much per GB and its
committed streams with offsets are exactly-once, but it needs gRPC and protobuf row
descriptors built from the schema; ``method: storage_write`` is refused at validate until
it is implemented.

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

import hashlib
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Literal
from urllib.parse import quote

import orjson
import yaml
from pydantic import Field, field_validator

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
    Sink,
    StrictModel,
    WriteResult,
)
from transforms.rules.encode import dumps, record_json

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

TYPES = (
    "STRING",
    "BYTES",
    "INT64",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "DATETIME",
    "GEOGRAPHY",
    "JSON",
    "RECORD",
)
_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}
_CASTS = {"int": "INT64", "float": "FLOAT64", "bool": "BOOL", "string": "STRING"}
_FORMATS = {
    "iso8601": "TIMESTAMP",
    "epoch_ms": "INT64",
    "epoch_s": "INT64",
    "%Y-%m-%d": "DATE",
    "%Y-%m-%dT%H:%M:%S": "DATETIME",
    "%Y-%m-%d %H:%M:%S": "DATETIME",
}
_WIDER = {"INT64": {"FLOAT64", "NUMERIC", "BIGNUMERIC"}, "FLOAT64": {"NUMERIC", "BIGNUMERIC"}}
"""Derived types a column of a wider type takes as they are (an INT64 into FLOAT64)."""

_PROJECT = r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_TABLE = r"[\w\- ]{1,1024}"
_TABLE_NAME = re.compile(rf"^({_PROJECT})\.({_DATASET})\.({_TABLE})$")
_INT_TEXT = re.compile(r"^[+-]?\d+$")
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SchemaField(StrictModel):
    """One column: ``{name: bitrate_kbps, type: INT64, mode: NULLABLE}``."""

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
        kind = _ALIASES.get(value.upper(), value.upper())
        if kind not in TYPES:
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
            description="streaming_inserts (tabledata.insertAll); storage_write: not yet.",
        )
        schema: list[SchemaField] | Literal["auto"] = Field(  # type: ignore[assignment]
            default="auto",
            description="The table's columns [{name, type, mode}], checked against the "
            "template at validate; auto: derived from the template.",
        )
        endpoint: str | None = Field(
            default=None,
            description="API root (default https://bigquery.googleapis.com); http:// means an "
            "emulator (no credentials). BIGQUERY_EMULATOR_HOST wins.",
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

        @field_validator("method")
        @classmethod
        def _method(cls, method: str) -> str:
            if method == "storage_write":
                raise ValueError(
                    "method storage_write is not yet implemented. Fix: use streaming_inserts "
                    "(the default: per-row errors, insertId dedup)"
                )
            return method

        @field_validator("endpoint")
        @classmethod
        def _endpoint(cls, endpoint: str | None) -> str | None:
            if endpoint is None:
                return None
            check_endpoint(endpoint)
            return endpoint.rstrip("/")

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


class BigQuerySink(Sink):
    """Streams each batch into the table through ``insertAll`` and reads per-row results."""

    type_name = "bigquery"

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.deliver = deliver
        self.root, self.anonymous = root_url(deliver.endpoint)
        self.client = HttpClient(self.type_name, deliver.concurrency, deliver.timeouts)
        self._credentials: Any = None
        self._lock = threading.Lock()

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
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = google.auth.default(scopes=[SCOPE])
                if not self._credentials.valid:
                    self._credentials.refresh(google.auth.transport.requests.Request())
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise DeliveryError(
                    "bigquery: no Application Default Credentials found "
                    f"({self._say(exc)}). Fix: set GOOGLE_APPLICATION_CREDENTIALS or run with "
                    f"a service account; for an emulator set {EMULATOR_ENV} or an http:// "
                    "endpoint",
                    retryable=False,
                ) from None
            except google.auth.exceptions.GoogleAuthError as exc:
                transient = bool(getattr(exc, "retryable", False)) or isinstance(
                    exc, google.auth.exceptions.TransportError
                )
                raise DeliveryError(
                    f"bigquery: could not refresh credentials: {self._say(exc)}",
                    retryable=transient,
                ) from None
            token = str(self._credentials.token)
            known = (*self.client.secrets, token, *self._credential_secrets())
            self.client.secrets = tuple(dict.fromkeys(s for s in known if s))
        return {"Authorization": f"Bearer {token}"}

    def _credential_secrets(self) -> tuple[str, ...]:
        names = ("refresh_token", "client_secret", "_refresh_token", "_client_secret")
        found = (getattr(self._credentials, n, None) for n in names)
        return tuple(v for v in found if isinstance(v, str) and v)

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


# -- schema rules (plain functions: validate's probe and the tests use them) --------------------


def template_spec(template: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A packaging template's mapping: ``templates/<name>.yaml`` read, or inline as given.

    None (no template: the filtered event is the row) has no fields to check.
    """
    if template is None:
        return {}
    if not isinstance(template, str):
        return template
    spec = yaml.safe_load(resources.files("templates").joinpath(f"{template}.yaml").read_text())
    return spec if isinstance(spec, dict) else {}


def _spec_type(spec: Any) -> str | None:
    """The BigQuery type a template field gives, or None when only the data would say."""
    envelope = {"event_id": "STRING", "session_id": "STRING", "event.type": "STRING"}
    if isinstance(spec, str):
        return envelope.get(spec)
    if not isinstance(spec, Mapping):
        return None
    if spec.get("cast") in _CASTS:
        return _CASTS[spec["cast"]]
    if "map" in spec:
        values = [
            *dict(spec["map"]).values(),
            *([spec["map_default"]] if "map_default" in spec else []),
        ]
        kinds = {_value_type(v) for v in values}
        return kinds.pop() if len(kinds) == 1 and "map_default" in spec else None
    if isinstance(spec.get("format"), str):
        return _FORMATS.get(spec["format"], "STRING")
    if "const" in spec:
        return _value_type(spec["const"])
    if "concat" in spec:
        return "STRING"
    return envelope.get(spec.get("path", "")) if isinstance(spec.get("path"), str) else None


def _value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    return "STRING" if isinstance(value, str) else None


def _columns(template: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level column name -> the field spec (a dict of specs for a nested RECORD)."""
    sep = template.get("flatten")
    out: dict[str, Any] = {}
    for key, spec in dict(template.get("fields") or {}).items():
        key = str(key)
        if key == "*":
            continue  # a spread's keys are the data's
        if "." in key and isinstance(sep, str):
            out[key.replace(".", sep)] = spec
        elif "." in key:
            head, rest = key.split(".", 1)
            nested = out.setdefault(head, {"\0record": {}})
            if isinstance(nested, dict) and "\0record" in nested:
                nested["\0record"][rest] = spec
        else:
            out[key] = spec
    return out


def derive_schema(template: str | Mapping[str, Any]) -> list[SchemaField]:
    """``schema: auto``: the columns a template's fields give (see the module docstring).

    >>> [(f.name, f.type) for f in derive_schema({"fields": {"n": {"path": "x", "cast": "int"}}})]
    [('n', 'INT64')]
    """
    out = []
    for name, spec in _columns(template_spec(template)).items():
        if isinstance(spec, dict) and "\0record" in spec:
            inner = derive_schema({"fields": spec["\0record"]})
            out.append(SchemaField(name=name, type="RECORD", fields=inner))
        else:
            out.append(SchemaField(name=name, type=_spec_type(spec) or "STRING"))
    return out


def check_template(
    template: str | Mapping[str, Any] | None, schema: Sequence[SchemaField] | str
) -> list[str]:
    """What a declared schema says against a template's fields (empty: they agree).

    A field with no column, a field whose type (from its ``cast``/``format``/constant)
    the column does not take, and a ``REQUIRED`` column no field fills.
    """
    if isinstance(schema, str) or template is None:
        return []  # auto: the schema is the template's; no template: only records say
    columns = {f.name: f for f in schema}
    problems = []
    fields = _columns(template_spec(template))
    for name, spec in fields.items():
        column = columns.get(name)
        if column is None:
            problems.append(
                f"template field {name!r} has no column in the schema "
                "(BigQuery: no such field); add the column or drop the field"
            )
            continue
        kind = "RECORD" if isinstance(spec, dict) and "\0record" in spec else _spec_type(spec)
        if kind is not None and kind != column.type and column.type not in _WIDER.get(kind, ()):
            problems.append(
                f"template field {name!r} gives {kind} but column {name!r} is "
                f"{column.type}; change the field's cast/format or the column"
            )
    for name, column in columns.items():
        if column.mode == "REQUIRED" and name not in fields:
            problems.append(
                f"REQUIRED column {name!r} has no template field: every row would "
                "be refused (Missing required field)"
            )
    return problems


def check_record(item: Any, deliver: Any, connector_id: str) -> str | None:
    """Why BigQuery would refuse one packaged record as a row of a declared schema.

    For ``validate``'s probe (``RECORD_CHECKS``); None when it would take it, or when the
    schema is ``auto``.
    """
    schema = deliver.schema
    if isinstance(schema, str):
        return None
    record = item.record
    if not isinstance(record, dict):
        return f"BigQuery: a row must be a JSON object, not a {type(record).__name__}"
    problems = _row_problems(record, schema)
    return "BigQuery would refuse the row: " + "; ".join(problems) if problems else None


def _row_problems(record: Mapping[str, Any], schema: Sequence[SchemaField]) -> list[str]:
    columns = {f.name: f for f in schema}
    problems = [f"no such field {k!r}" for k in record if k not in columns]
    for name, column in columns.items():
        value = record.get(name)
        if value is None:
            if column.mode == "REQUIRED":
                problems.append(f"missing REQUIRED {name!r}")
            continue
        values = value if column.mode == "REPEATED" and isinstance(value, list) else [value]
        if column.mode == "REPEATED" and not isinstance(value, list):
            problems.append(f"{name!r} is REPEATED but not a list")
        elif not all(_takes(column, v) for v in values):
            problems.append(f"{name!r} ({column.type}) cannot take {dumps(value)[:60]!r}")
    return problems


def _takes(column: SchemaField, value: Any) -> bool:
    kind = column.type
    if kind == "INT64":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and _INT_TEXT.match(value) is not None
        )
    if kind in ("FLOAT64", "NUMERIC", "BIGNUMERIC"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BOOL":
        return isinstance(value, bool)
    if kind == "DATE":
        return isinstance(value, str) and _DATE_TEXT.match(value) is not None
    if kind == "RECORD":
        return isinstance(value, dict) and not _row_problems(value, column.fields or [])
    if kind == "STRING":
        return not isinstance(value, (dict, list))
    if kind in ("BYTES", "TIMESTAMP", "DATETIME", "TIME", "GEOGRAPHY"):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return True  # JSON takes anything


CONNECTOR_TYPES = {
    "bigquery": ConnectorSpec(BigQueryDeliver, BigQuerySink, default_template="bigquery_row")
}
