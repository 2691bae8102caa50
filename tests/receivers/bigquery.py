"""A strict stand-in of BigQuery's REST ``tabledata.insertAll`` (streaming inserts).

    api = BigQueryInsertAllApi({"proj.telemetry.events": [("event_id", "STRING", "REQUIRED"),
                                                          ("bitrate_kbps", "INT64", "NULLABLE")]})
    receiver = start_receiver(api)
    # POST {receiver.url}/bigquery/v2/projects/proj/datasets/telemetry/tables/events/insertAll
    receiver.fail(times=1, status=403, body=quota_error())   # a quota 403, then normal again
    api.rows["proj.telemetry.events"]                          # what a query would return

What it checks, as BigQuery does (https://cloud.google.com/bigquery/docs/reference/rest/v2/tabledata/insertAll):

- ``POST /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}/insertAll``; any other path is
  404 ``notFound``, another method 405; a table it does not hold is 404 ``notFound``
  (``Not found: Table p:d.t``).
- ``Authorization: Bearer <token>`` when an ``access_token`` is set (401 ``unauthorized``
  otherwise); no header needed without one (an emulator).
- ``Content-Type: application/json`` and a JSON object body with a non-empty ``rows``
  list of ``{"insertId": str, "json": {...}}`` (400 ``invalid``/``parseError``); at most
  50,000 rows and 10 MB per request (400), an ``insertId`` of at most 128 characters.
- each row against the table's schema: unknown columns (``no such field``), missing
  ``REQUIRED`` ones, values of the wrong type (``Cannot convert value to integer``...).
  An invalid row is answered in ``insertErrors`` (``index``, ``errors`` with ``reason``,
  ``location``, ``message``) with status 200. Without ``skipInvalidRows`` one invalid row
  fails the whole request: nothing is inserted and every valid row is reported with
  reason ``stopped``; with it, the valid rows are inserted.
- ``insertId`` dedup: a row whose ``insertId`` was inserted within ``dedup_window_s``
  (BigQuery: best effort, about a minute) is answered as inserted but not stored again.

It is the test vehicle for what the ``bqemulator`` package gets wrong (it crashes on a
wrongly typed row and stores ``insertId`` duplicates twice).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import unquote

from tests.receivers.base import Api, Reply, decode_body

MAX_ROWS = 50_000
MAX_BYTES = 10 * 1024 * 1024
MAX_INSERT_ID = 128

_PATH = re.compile(
    r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/?]+)/insertAll(?:\?.*)?$"
)
_INT = re.compile(r"^[+-]?\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}


def error_body(status: int, reason: str, message: str, state: str) -> bytes:
    """A Google API error body, as BigQuery answers a failed request."""
    error = {"message": message, "domain": "global", "reason": reason}
    body = {"error": {"code": status, "message": message, "errors": [error], "status": state}}
    return json.dumps(body).encode()


def quota_error(reason: str = "rateLimitExceeded") -> bytes:
    """The body of BigQuery's quota 403 (``rateLimitExceeded`` or ``quotaExceeded``)."""
    return error_body(
        403,
        reason,
        "Exceeded rate limits: too many api requests per user per method for this user_method.",
        "PERMISSION_DENIED",
    )


def backend_error(status: int = 503) -> bytes:
    """The body of BigQuery's 500/503 ``backendError``."""
    return error_body(
        status,
        "backendError",
        "Error encountered during execution. Retrying may solve the problem.",
        "UNAVAILABLE" if status == 503 else "INTERNAL",
    )


def _reply(status: int, reason: str, message: str, state: str) -> Reply:
    return Reply(status, error_body(status, reason, message, state))


class BigQueryInsertAllApi(Api):
    """Tables by ``project.dataset.table``, each a schema of ``(name, type, mode)``."""

    name = "bigquery"

    def __init__(
        self,
        tables: dict[str, Sequence[tuple[str, str, str]]],
        access_token: str | None = None,
        dedup_window_s: float = 60.0,
    ):
        self.schemas = {
            name: {n: (_TYPES.get(t.upper(), t.upper()), m.upper()) for n, t, m in fields}
            for name, fields in tables.items()
        }
        self.access_token = access_token
        self.dedup_window_s = dedup_window_s
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        self.seen: dict[tuple[str, str], float] = {}
        self.requests_options: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def secrets(self) -> list[str]:
        return [self.access_token] if self.access_token else []

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path == "/token" and method == "POST" and self.access_token is not None:
            # Google's OAuth token endpoint, for Application Default Credentials whose
            # token_uri points here: a refresh token buys the access token.
            answer = {"access_token": self.access_token, "expires_in": 3600, "token_type": "Bearer"}
            return Reply(200, json.dumps(answer).encode())
        found = _PATH.match(path)
        if found is None:
            return _reply(404, "notFound", f"Not found: URL {path}", "NOT_FOUND")
        if method != "POST":
            return _reply(405, "httpMethodNotAllowed", f"{method} not allowed", "INVALID_ARGUMENT")
        if self.access_token is not None and (
            headers.get("authorization") != f"Bearer {self.access_token}"
        ):
            return _reply(
                401,
                "unauthorized",
                "Request is missing required authentication credential.",
                "UNAUTHENTICATED",
            )
        project, dataset, table = (unquote(p) for p in found.groups())
        name = f"{project}.{dataset}.{table}"
        schema = self.schemas.get(name)
        if schema is None:
            return _reply(
                404, "notFound", f"Not found: Table {project}:{dataset}.{table}", "NOT_FOUND"
            )
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _reply(
                400, "invalid", "Content-Type must be application/json", "INVALID_ARGUMENT"
            )
        try:
            text = decode_body(headers, body)
        except ValueError as exc:
            return _reply(400, "parseError", str(exc), "INVALID_ARGUMENT")
        if len(text) > MAX_BYTES:
            return _reply(
                400,
                "invalid",
                f"Request payload size exceeds the limit: {MAX_BYTES} bytes.",
                "INVALID_ARGUMENT",
            )
        try:
            request = json.loads(text)
        except ValueError:
            return _reply(
                400, "parseError", "Parse error: the body is not JSON.", "INVALID_ARGUMENT"
            )
        rows = request.get("rows") if isinstance(request, dict) else None
        if not isinstance(rows, list) or not rows:
            return _reply(400, "invalid", "No rows present in the request.", "INVALID_ARGUMENT")
        if len(rows) > MAX_ROWS:
            return _reply(
                400,
                "invalid",
                f"too many rows present in the request, limit: {MAX_ROWS} row count: {len(rows)}.",
                "INVALID_ARGUMENT",
            )
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("json"), dict):
                return _reply(
                    400,
                    "invalid",
                    "Invalid value: each row needs a json object.",
                    "INVALID_ARGUMENT",
                )
            insert_id = row.get("insertId")
            if insert_id is not None and (
                not isinstance(insert_id, str) or len(insert_id) > MAX_INSERT_ID
            ):
                return _reply(
                    400, "invalid", f"insertId too long (max {MAX_INSERT_ID})", "INVALID_ARGUMENT"
                )
        self.requests_options.append({k: v for k, v in request.items() if k != "rows"})
        skip = bool(request.get("skipInvalidRows"))
        ignore_unknown = bool(request.get("ignoreUnknownValues"))
        errors = {
            i: e
            for i, row in enumerate(rows)
            if (e := _row_errors(row["json"], schema, ignore_unknown))
        }
        answer: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
        stopped = {"reason": "stopped", "location": "", "debugInfo": "", "message": ""}
        if errors and not skip:
            answer["insertErrors"] = [
                {"index": i, "errors": errors.get(i, [stopped])} for i in range(len(rows))
            ]
            return Reply(
                200, json.dumps(answer).encode(), items=[r["json"] for r in rows], store=lambda: []
            )
        if errors:
            answer["insertErrors"] = [{"index": i, "errors": e} for i, e in errors.items()]
        good = [row for i, row in enumerate(rows) if i not in errors]

        def store() -> list[Any]:
            # Dedup when committing: a retry that overtakes a slow first request still
            # finds one of them first.
            now = time.monotonic()
            stored = []
            with self._lock:
                for row in good:
                    key = (name, row.get("insertId"))
                    if row.get("insertId") is not None:
                        if now - self.seen.get(key, -1e18) < self.dedup_window_s:
                            continue
                        self.seen[key] = now
                    self.rows[name].append(row["json"])
                    stored.append(row["json"])
            return stored

        return Reply(200, json.dumps(answer).encode(), items=[r["json"] for r in rows], store=store)


def _row_errors(
    row: dict[str, Any], schema: dict[str, tuple[str, str]], ignore_unknown: bool
) -> list[dict[str, str]]:
    """BigQuery's errors for one row (empty: the row is valid)."""
    out = []

    def error(location: str, message: str) -> None:
        out.append({"reason": "invalid", "location": location, "debugInfo": "", "message": message})

    for key, value in row.items():
        if key not in schema:
            if not ignore_unknown:
                error(key, f"no such field: {key}.")
            continue
        kind, mode = schema[key]
        if value is None:
            if mode == "REQUIRED":
                error(key, f"Missing required field: {key}.")
            continue
        values = value if mode == "REPEATED" and isinstance(value, list) else [value]
        if mode == "REPEATED" and not isinstance(value, list):
            error(key, f"Array specified for non-repeated field: {key}.")
            continue
        for item in values:
            problem = _type_problem(kind, item)
            if problem is not None:
                error(key, problem)
                break
    for key, (_, mode) in schema.items():
        if mode == "REQUIRED" and key not in row:
            error(key, f"Missing required field: {key}.")
    return out


def _type_problem(kind: str, value: Any) -> str | None:
    shown = json.dumps(value)[:60]
    if kind == "INT64":
        if isinstance(value, bool) or not (
            (isinstance(value, int) and -(2**63) <= value < 2**63)
            or (isinstance(value, float) and value.is_integer())
            or (isinstance(value, str) and _INT.match(value))
        ):
            return f"Cannot convert value to integer (bad value): {shown}"
    elif kind in ("FLOAT64", "NUMERIC", "BIGNUMERIC"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(value, str):
            try:
                float(value)
                ok = True
            except ValueError:
                ok = False
        if not ok:
            return f"Cannot convert value to floating point (bad value): {shown}"
    elif kind == "BOOL":
        if not (isinstance(value, bool) or value in ("true", "false", "TRUE", "FALSE", 0, 1)):
            return f"Cannot convert value to boolean (bad value): {shown}"
    elif kind == "STRING":
        if isinstance(value, (dict, list)):
            return "This field: is not a record."
    elif kind == "TIMESTAMP":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, str))
            or (isinstance(value, str) and not _timestamp(value))
        ):
            return f"Cannot convert value to timestamp (bad value): {shown}"
    elif kind == "DATE":
        if not (isinstance(value, str) and _DATE.match(value) and _date(value)):
            return f"Invalid date: {shown}"
    elif kind == "RECORD" and not isinstance(value, dict):
        return "This field is not a record."
    return None


def _timestamp(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        return False
    return True


def _date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


# -- Storage Write API (gRPC BigQueryWrite) ------------------------------------------------------


class BigQueryWriteStandIn:
    """A strict in-process gRPC server of BigQuery's Storage Write API (``BigQueryWrite``).

        stand_in = BigQueryWriteStandIn({"proj.telemetry.events": [("event_id", "STRING",
                                                                    "REQUIRED")]})
        stand_in.url                     # "http://127.0.0.1:PORT": the connector's endpoint
        stand_in.fail(times=1, code=grpc.StatusCode.UNAVAILABLE, commit=True)  # a lost answer
        stand_in.rows["proj.telemetry.events"]                 # what a query would return
        stand_in.stop()

    Messages are the library's own (``google.cloud.bigquery_storage_v1.types``), served on
    real gRPC. What it checks, as BigQuery does
    (https://cloud.google.com/bigquery/docs/write-api):

    - ``CreateWriteStream`` of a ``COMMITTED`` stream on a table it holds (``NOT_FOUND``
      otherwise; other stream types ``INVALID_ARGUMENT``); the answer carries the table's
      schema. ``FinalizeWriteStream`` seals a stream (later appends: ``FAILED_PRECONDITION``).
    - ``AppendRows``: the first request of a connection names the stream and carries the
      writer schema (a ``DescriptorProto``); every field must be a column of a matching
      type (``INVALID_ARGUMENT`` for the whole request otherwise). On a committed stream an
      offset below the stream's end is ``ALREADY_EXISTS``, above it ``OUT_OF_RANGE``; the
      ``_default`` stream takes no offset.
    - each row decoded and checked: a missing ``REQUIRED`` column is a ``row_errors`` entry
      (``FIELDS_ERROR``, index, message) and the whole request is refused with
      ``INVALID_ARGUMENT``: nothing of it is appended, as BigQuery does.
    - requests over 10 MB are refused (``INVALID_ARGUMENT``).

    ``fail(times, code, commit)`` aborts the next appends with a gRPC status; with
    ``commit=True`` the rows are appended first (the answer is lost, as after a network
    failure), which is what offsets must make safe to retry.

    **TLS and OAuth**, for the production path (a TLS channel and an access token)::

        ca, key_and_chain = tls_credentials()       # a throwaway CA and its 127.0.0.1 cert
        stand_in = BigQueryWriteStandIn(tables, tls=key_and_chain, access_token="ya29.x")
        stand_in.url                                # "https://127.0.0.1:PORT"
        stand_in.authorizations                     # [("CreateWriteStream", "Bearer ya29.x")]

    With ``tls`` it serves TLS only (clients trust ``ca``, e.g. through
    ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``). Every call's ``authorization`` metadata is
    recorded in :attr:`authorizations`; with ``access_token`` a call without
    ``Bearer <access_token>`` is refused ``UNAUTHENTICATED``, as BigQuery refuses it.
    ``fail(..., echo=True)`` and ``refuse_rows(times, echo=True)`` are a hostile server:
    their messages (and the error details, a ``google.rpc.DebugInfo``) quote the call's
    metadata, the authorization header included.
    """

    _SERVICE = "/google.cloud.bigquery.storage.v1.BigQueryWrite/"
    _PROTO_TYPES: ClassVar[dict[str, set[int]]] = {
        "STRING": {9},
        "BYTES": {12},
        "INT64": {3, 18, 16},
        "FLOAT64": {1, 2},
        "BOOL": {8},
        "NUMERIC": {9},
        "BIGNUMERIC": {9},
        "TIMESTAMP": {3, 9},
        "DATE": {5, 9},
        "DATETIME": {9},
        "TIME": {9},
        "GEOGRAPHY": {9},
        "JSON": {9},
        "RECORD": {11},
    }
    """Column type -> protobuf field types it takes (FieldDescriptorProto.Type numbers)."""

    def __init__(
        self,
        tables: dict[str, Sequence[tuple[str, str, str]]],
        tls: tuple[bytes, bytes] | None = None,
        access_token: str | None = None,
    ):
        import concurrent.futures

        import grpc

        self.schemas = {t: [(n, _TYPES.get(k, k), m) for n, k, m in c] for t, c in tables.items()}
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in tables}
        self.appends: list[tuple[str, int | None, int, str]] = []
        """(stream, offset, rows, outcome) of every AppendRows request, in order."""
        self.streams: dict[str, dict[str, Any]] = {}
        self.access_token = access_token
        self.authorizations: list[tuple[str, str | None]] = []
        """(RPC, its ``authorization`` metadata or None) of every call, in order."""
        self._faults: list[_WriteFault] = []
        self._create_faults: list[_WriteFault] = []
        self._lock = threading.Lock()
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers([_WriteHandler(self)])
        if tls is None:
            port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            port = self._server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
        self._server.start()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop serving (open calls are cancelled)."""
        self._server.stop(grace=None)

    def fail(
        self,
        times: int,
        code: Any,
        commit: bool = False,
        echo: bool = False,
        message: str = "injected failure",
        rpc: str = "AppendRows",
    ) -> None:
        """Abort the next ``times`` appends with ``code``; ``commit``: after appending.

        ``echo``: the message (when not empty) and the error details quote the call's
        metadata; ``rpc="CreateWriteStream"`` aborts stream creations instead (``commit``
        does not apply).
        """
        fault = _WriteFault(code, commit, echo, message)
        with self._lock:
            if rpc == "CreateWriteStream":
                self._create_faults += [fault] * times
            elif rpc == "AppendRows":
                self._faults += [fault] * times
            else:
                raise ValueError(f"rpc {rpc!r}: CreateWriteStream or AppendRows")

    def refuse_rows(self, times: int, echo: bool = False) -> None:
        """Answer the next ``times`` appends with a ``row_errors`` entry for every row.

        Nothing of such an append is stored (BigQuery's rule); ``echo``: each row error's
        message quotes the call's metadata.
        """
        with self._lock:
            self._faults += [_WriteFault(None, False, echo, "")] * times

    def _authorize(self, rpc: str, context: Any) -> None:
        """Record the call's ``authorization``; refuse it without the expected token."""
        import grpc

        metadata = dict(context.invocation_metadata())
        said = metadata.get("authorization")
        with self._lock:
            self.authorizations.append((rpc, said))
        if self.access_token is not None and said != f"Bearer {self.access_token}":
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )

    # -- RPCs (request bytes in, response bytes out) ---------------------------------------------

    def create(self, data: bytes, context: Any) -> bytes:
        import grpc
        from google.cloud.bigquery_storage_v1 import types

        request = types.CreateWriteStreamRequest.deserialize(data)
        self._authorize("CreateWriteStream", context)
        with self._lock:
            fault = self._create_faults.pop(0) if self._create_faults else None
        if fault is not None:
            _abort(context, fault)
        table = self._table(request.parent)
        if table is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Not found: Table {request.parent}")
        if request.write_stream.type_ != types.WriteStream.Type.COMMITTED:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only COMMITTED streams here")
        with self._lock:
            name = f"{request.parent}/streams/s{len(self.streams):015d}"
            self.streams[name] = {"table": table, "next": 0, "final": False}
        schema = types.TableSchema(
            fields=[
                types.TableFieldSchema(
                    name=n,
                    type_=types.TableFieldSchema.Type[
                        {"FLOAT64": "DOUBLE", "RECORD": "STRUCT"}.get(k, k)
                    ],
                    mode=types.TableFieldSchema.Mode[m],
                )
                for n, k, m in self.schemas[table]
            ]
        )
        answer = types.WriteStream(name=name, type_=request.write_stream.type_, table_schema=schema)
        return types.WriteStream.serialize(answer)

    def finalize(self, data: bytes, context: Any) -> bytes:
        import grpc
        from google.cloud.bigquery_storage_v1 import types

        request = types.FinalizeWriteStreamRequest.deserialize(data)
        self._authorize("FinalizeWriteStream", context)
        with self._lock:
            stream = self.streams.get(request.name)
            if stream is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Stream not found: {request.name}")
            stream["final"] = True
            count = stream["next"]
        return types.FinalizeWriteStreamResponse.serialize(
            types.FinalizeWriteStreamResponse(row_count=count)
        )

    def append(self, requests: Any, context: Any) -> Any:
        import grpc
        from google.cloud.bigquery_storage_v1 import types

        self._authorize("AppendRows", context)
        name = ""
        message_class: Any = None
        for data in requests:
            if len(data) > MAX_BYTES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "AppendRows request over 10 MB")
            request = types.AppendRowsRequest.deserialize(data)
            name = request.write_stream or name
            table = self._stream_table(name)
            if table is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Stream not found: {name!r}")
            pb = types.AppendRowsRequest.pb(request)
            offset = pb.offset.value if pb.HasField("offset") else None
            if pb.proto_rows.HasField("writer_schema"):
                descriptor = pb.proto_rows.writer_schema.proto_descriptor
                problem = self._schema_problem(descriptor, table)
                if problem:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
                message_class = _message_class(descriptor)
            if message_class is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no writer_schema")
            serialized = list(pb.proto_rows.rows.serialized_rows)
            yield self._append(name, table, offset, serialized, message_class, context)

    def _append(
        self,
        name: str,
        table: str,
        offset: int | None,
        serialized: list[bytes],
        message_class: Any,
        context: Any,
    ) -> bytes:
        import grpc
        from google.cloud.bigquery_storage_v1 import types
        from google.protobuf import json_format
        from google.rpc import status_pb2

        def answer(code: Any, message: str, **extra: Any) -> bytes:
            status = status_pb2.Status(code=code.value[0], message=message)
            return types.AppendRowsResponse.serialize(
                types.AppendRowsResponse(error=status, write_stream=name, **extra)
            )

        decoded = []
        row_errors = []
        for index, raw in enumerate(serialized):
            message = message_class()
            message.ParseFromString(raw)
            row = json_format.MessageToDict(message, preserving_proto_field_name=True)
            decoded.append(row)
            for column, _, mode in self.schemas[table]:
                if mode == "REQUIRED" and not message.HasField(column):
                    row_errors.append(
                        types.RowError(
                            index=index,
                            code=types.RowError.RowErrorCode.FIELDS_ERROR,
                            message=f"Missing required field: {column}.",
                        )
                    )
        with self._lock:
            stream = self.streams.get(name)
            default = name.endswith("/_default")
            if stream is None and default:
                stream = self.streams.setdefault(name, {"table": table, "next": 0, "final": False})
            assert stream is not None
            start = stream["next"]

            def log(outcome: str) -> None:
                self.appends.append((name, offset, len(serialized), outcome))

            if stream["final"]:
                log("FAILED_PRECONDITION")
                return answer(grpc.StatusCode.FAILED_PRECONDITION, f"Stream {name} is finalized")
            if default and offset is not None:
                log("INVALID_ARGUMENT")
                return answer(grpc.StatusCode.INVALID_ARGUMENT, "_default takes no offset")
            if offset is not None and offset < start:
                log("ALREADY_EXISTS")
                return answer(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"The offset is within stream, expected offset {start}, received {offset}",
                )
            if offset is not None and offset > start:
                log("OUT_OF_RANGE")
                return answer(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"The offset is beyond stream, expected offset {start}, received {offset}",
                )
            if row_errors:
                log("ROW_ERRORS")
                return answer(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Errors found while processing rows. Please refer to the row_errors field "
                    "for details. The list may not be complete because of the size limitations.",
                    row_errors=row_errors,
                )
            fault = self._faults.pop(0) if self._faults else None
            if fault is not None and fault.code is None:  # refuse_rows
                log("ROW_ERRORS")
                quoted = f": {_quoted(context)}" if fault.echo else ""
                return answer(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Errors found while processing rows." + quoted,
                    row_errors=[
                        types.RowError(
                            index=i,
                            code=types.RowError.RowErrorCode.FIELDS_ERROR,
                            message=f"Row {i} refused{quoted}",
                        )
                        for i in range(len(serialized))
                    ],
                )
            if fault is None or fault.commit:
                self.rows[table].extend(decoded)
                stream["next"] = start + len(decoded)
            log(fault.code.name if fault else "OK")
        if fault is not None:
            _abort(context, fault)
        result = types.AppendRowsResponse.AppendResult(offset=start)
        return types.AppendRowsResponse.serialize(
            types.AppendRowsResponse(append_result=result, write_stream=name)
        )

    def _table(self, parent: str) -> str | None:
        found = re.match(r"^projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$", parent)
        table = ".".join(found.groups()) if found else None
        return table if table in self.schemas else None

    def _stream_table(self, name: str) -> str | None:
        with self._lock:
            if name in self.streams:
                return str(self.streams[name]["table"])
        if name.endswith("/streams/_default"):
            return self._table(name.removesuffix("/streams/_default"))
        return None

    def _schema_problem(self, descriptor: Any, table: str) -> str | None:
        columns = {n: k for n, k, _ in self.schemas[table]}
        for field in descriptor.field:
            if field.name not in columns:
                return f"Input schema has more fields than BigQuery schema, extra: {field.name}"
            if field.type not in self._PROTO_TYPES.get(columns[field.name], set()):
                return (
                    f"Field {field.name}: proto type {field.type} does not match "
                    f"{columns[field.name]}"
                )
        return None


@dataclasses.dataclass(frozen=True)
class _WriteFault:
    """One injected refusal: a gRPC ``code`` (None: every row refused in ``row_errors``)."""

    code: Any
    commit: bool
    echo: bool
    message: str


def _quoted(context: Any) -> str:
    """The call's metadata as a careless server quotes it, the authorization first.

    First, so that a client cutting long messages cannot hide it by chance.
    """
    metadata = sorted(context.invocation_metadata(), key=lambda kv: kv[0] != "authorization")
    pairs = [f"{k}={v}" for k, v in metadata if not k.endswith("-bin")]
    return "request metadata: " + "; ".join(pairs)


def _abort(context: Any, fault: _WriteFault) -> None:
    """Abort the call with ``fault``'s code; with ``echo`` quote its metadata, in details too."""
    if not fault.echo:
        context.abort(fault.code, fault.message)
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    quoted = _quoted(context)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.DebugInfo(detail=quoted))
    status = status_pb2.Status(
        code=fault.code.value[0],
        message=f"{fault.message} ({quoted})" if fault.message else "",
        details=[detail],
    )
    context.abort_with_status(rpc_status.to_status(status))


def tls_credentials() -> tuple[bytes, tuple[bytes, bytes]]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost.

    Returns ``(ca_pem, (server_key_pem, server_chain_pem))``: the CA for the client to
    trust, the pair for ``BigQueryWriteStandIn(tls=...)`` (``grpc.ssl_server_credentials``).
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(
        subject: str, key: Any, issuer: x509.Name, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in CA")])
    ca_cert = certificate("stand-in CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("127.0.0.1", key, ca_name, ca_key, ca=False)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = serialization.Encoding.PEM
    return ca_cert.public_bytes(pem), (key_pem, cert.public_bytes(pem))


def _message_class(descriptor: Any) -> Any:
    """The message class of a self-contained ``DescriptorProto`` (nested types inside)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="standin.proto", syntax="proto2")
    file.message_type.add().CopyFrom(descriptor)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.name))


class _WriteHandler:
    """Routes BigQueryWrite RPCs to the stand-in (raw bytes in and out)."""

    def __init__(self, stand_in: BigQueryWriteStandIn):
        self.stand_in = stand_in

    def service(self, details: Any) -> Any:
        import grpc

        method = details.method.removeprefix(BigQueryWriteStandIn._SERVICE)
        if method == "CreateWriteStream":
            return grpc.unary_unary_rpc_method_handler(self.stand_in.create)
        if method == "FinalizeWriteStream":
            return grpc.unary_unary_rpc_method_handler(self.stand_in.finalize)
        if method == "AppendRows":
            return grpc.stream_stream_rpc_method_handler(self.stand_in.append)
        return None
