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

import datetime
import json
import re
import threading
import time
from collections.abc import Sequence
from typing import Any
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
