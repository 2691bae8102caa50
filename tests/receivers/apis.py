"""The request formats of the real APIs, as the real services check and answer them.

Each class accepts exactly the documented request and answers anything else with the
status and body shape the real service uses:

- :class:`DatadogLogsApi`: Datadog Logs intake v2, ``POST /api/v2/logs``.
- :class:`SplunkHecApi`: Splunk HTTP Event Collector, ``POST /services/collector/event``.
- :class:`NewRelicEventApi`: New Relic Event API, ``POST /v1/accounts/{id}/events``.
- :class:`ElasticsearchBulkApi`: Elasticsearch ``POST /_bulk`` with per-item results.
- :class:`WebhookApi`: a generic webhook with configured path, method, headers and body.

Where the real service validates asynchronously (New Relic stores or drops each event
after answering 200; Datadog truncates logs over 1 MB), the stand-in answers the same and
records the problem (``async_errors``, ``truncated``) for the test to check.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.receivers.base import Api, Reply, decode_body


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class DatadogLogsApi(Api):
    """Datadog Logs intake v2.

    Checks: ``POST /api/v2/logs``; ``DD-API-KEY`` equal to the key (403 otherwise);
    ``Content-Type: application/json`` (415); gzip/deflate bodies; at most 5 MB
    uncompressed (413) and 1,000 entries (400); a JSON array of objects or one object
    (400). Logs over 1 MB are accepted and truncated by Datadog: recorded in
    ``truncated``. Answers ``202 {}``.
    """

    name = "datadog_logs"
    MAX_PAYLOAD = 5_000_000
    MAX_ENTRIES = 1000
    MAX_ENTRY = 1_000_000

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.truncated: list[str] = []

    def secrets(self) -> list[str]:
        return [self.api_key]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        def error(status: int, text: str) -> Reply:
            return Reply(status, _json({"errors": [text]}))

        if path.split("?")[0] != "/api/v2/logs":
            return error(404, "Not Found")
        if method != "POST":
            return error(405, "Method Not Allowed")
        if headers.get("dd-api-key") != self.api_key:
            return error(403, "Forbidden")
        if _media_type(headers) != "application/json":
            return error(415, "Unsupported Media Type")
        try:
            payload = decode_body(headers, body)
        except ValueError:
            return error(400, "Bad Request")
        if len(payload) > self.MAX_PAYLOAD:
            return error(413, "Request Entity Too Large")
        try:
            logs = json.loads(payload)
        except ValueError:
            return error(400, "Bad Request")
        if isinstance(logs, dict):
            logs = [logs]
        if not isinstance(logs, list) or not all(isinstance(x, dict) for x in logs):
            return error(400, "Bad Request")
        if len(logs) > self.MAX_ENTRIES:
            return error(400, "Bad Request: too many log entries")

        def store() -> list[Any]:
            for log in logs:
                if len(_json(log)) > self.MAX_ENTRY:
                    self.truncated.append(str(log.get("event_id")))
            return logs

        return Reply(202, b"{}", items=logs, store=store)


class SplunkHecApi(Api):
    """Splunk HTTP Event Collector, JSON event endpoint.

    Checks: ``POST /services/collector/event`` (or ``/services/collector``);
    ``Authorization: Splunk <token>`` (401 code 2 missing, 401 code 3 malformed, 403
    code 4 wrong); gzip bodies; ``max_content_length`` (413); concatenated JSON event
    objects, each with a non-blank ``event`` (code 12/13), a numeric ``time`` when given,
    an allowed ``index`` when given (code 7). Events are indexed in order up to the first
    bad one, which is reported as ``invalid-event-number`` with 400 (code 6). Events for
    which ``bad_event`` returns True are refused that way. Answers
    ``200 {"text":"Success","code":0}``.
    """

    name = "splunk_hec"

    def __init__(
        self,
        token: str,
        indexes: tuple[str, ...] = ("main",),
        max_content_length: int = 1_000_000,
        bad_event: Callable[[dict[str, Any]], bool] | None = None,
    ):
        self.token = token
        self.indexes = indexes
        self.max_content_length = max_content_length
        self.bad_event = bad_event

    def secrets(self) -> list[str]:
        return [self.token]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        def error(status: int, text: str, code: int, **extra: Any) -> Reply:
            return Reply(status, _json({"text": text, "code": code, **extra}))

        if path.split("?")[0] not in ("/services/collector/event", "/services/collector"):
            return Reply(404, _json({"text": "The requested URL was not found", "code": 404}))
        if method != "POST":
            return error(405, "Method Not Allowed", 405)
        auth = headers.get("authorization")
        if auth is None:
            return error(401, "Token is required", 2)
        scheme, _, token = auth.partition(" ")
        if scheme != "Splunk" or not token:
            return error(401, "Invalid authorization", 3)
        if token != self.token:
            return error(403, "Invalid token", 4)
        try:
            payload = decode_body(headers, body)
        except ValueError:
            return error(400, "Invalid data format", 6)
        if len(payload) > self.max_content_length:
            return error(413, "Content too large", 413)
        text = payload.decode("utf-8", "replace")
        events, bad, why = self._parse(text)
        if not events and bad is None:
            return error(400, "No data", 5)
        good = events if bad is None else events[:bad]

        def store() -> list[Any]:
            return good

        if bad is not None:
            text_, code = why
            return Reply(
                400,
                _json({"text": text_, "code": code, "invalid-event-number": bad}),
                items=events,
                store=store,
            )
        return Reply(200, _json({"text": "Success", "code": 0}), items=events, store=store)

    def _parse(self, text: str) -> tuple[list[Any], int | None, tuple[str, int]]:
        decoder = json.JSONDecoder()
        events: list[Any] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                return events, None, ("", 0)
            try:
                event, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return events, len(events), ("Invalid data format", 6)
            events.append(event)
            n = len(events) - 1
            if not isinstance(event, dict):
                return events, n, ("Invalid data format", 6)
            if "event" not in event:
                return events, n, ("Event field is required", 12)
            if event["event"] in ("", None, {}):
                return events, n, ("Event field cannot be blank", 13)
            if "time" in event:
                t = event["time"]
                try:
                    float(t)
                except (TypeError, ValueError):
                    return events, n, ("Invalid data format", 6)
                if isinstance(t, bool):
                    return events, n, ("Invalid data format", 6)
            if "index" in event and event["index"] not in self.indexes:
                return events, n, ("Incorrect index", 7)
            for key in ("host", "source", "sourcetype"):
                if key in event and not isinstance(event[key], str):
                    return events, n, ("Invalid data format", 6)
            if self.bad_event is not None and self.bad_event(event):
                return events, n, ("Invalid data format", 6)


_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_: ]{1,255}$")


class NewRelicEventApi(Api):
    """New Relic Event API.

    Checks: ``POST /v1/accounts/<account_id>/events``; ``Api-Key`` (or ``X-Insert-Key``)
    equal to the key (403); ``Content-Type: application/json`` (415); at most 1 MB
    (10^6 bytes) as sent, i.e. compressed (413); gzip/deflate bodies (400 if unreadable);
    a JSON array of objects or one object (400). Answers ``200 {"success":true,
    "uuid":...}``. Like the real service, it then checks each event (flat, valid
    ``eventType``, at most 255 attributes) and drops bad ones, noting why in
    ``async_errors`` (New Relic's ``NrIntegrationError``).
    """

    name = "new_relic"
    MAX_BYTES = 1_000_000

    def __init__(self, account_id: int, api_key: str):
        self.account_id = account_id
        self.api_key = api_key
        self.async_errors: list[str] = []

    def secrets(self) -> list[str]:
        return [self.api_key]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        def error(status: int, text: str) -> Reply:
            return Reply(status, _json({"success": False, "error": text}))

        if path.split("?")[0] != f"/v1/accounts/{self.account_id}/events":
            return error(404, "Not Found")
        if method != "POST":
            return error(405, "Method Not Allowed")
        key = headers.get("api-key") or headers.get("x-insert-key")
        if key != self.api_key:
            return error(403, "Forbidden")
        if _media_type(headers) != "application/json":
            return error(415, "Unsupported Media Type")
        if len(body) > self.MAX_BYTES:
            return error(413, "Request Entity Too Large")
        try:
            events = json.loads(decode_body(headers, body))
        except ValueError:
            return error(400, "Bad Request: unreadable body")
        if isinstance(events, dict):
            events = [events]
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return error(400, "Bad Request: expected an array of objects")

        def store() -> list[Any]:
            kept = []
            for e in events:
                problem = self._problem(e)
                if problem:
                    self.async_errors.append(problem)
                else:
                    kept.append(e)
            return kept

        answer = {"success": True, "uuid": str(uuid.uuid4())}
        return Reply(200, _json(answer), items=events, store=store)

    def _problem(self, event: dict[str, Any]) -> str | None:
        et = event.get("eventType")
        if not isinstance(et, str) or not _EVENT_TYPE.match(et):
            return f"invalid eventType {et!r} in {event.get('event_id')}"
        nested = [k for k, v in event.items() if isinstance(v, (dict, list))]
        if nested:
            return f"nested attributes {nested} in {event.get('event_id')}"
        if len(event) > 255:
            return f"{len(event)} attributes in {event.get('event_id')}"
        return None


@dataclass
class ItemFault:
    """A ``_bulk`` item failure to inject for one ``_id``."""

    status: int = 429
    type: str = "es_rejected_execution_exception"
    reason: str = "rejected execution of coordinating operation"
    times: int | None = 1  # None: every time


@dataclass
class ElasticsearchBulkApi(Api):
    """Elasticsearch ``_bulk``.

    Checks: ``POST``/``PUT`` ``/_bulk`` or ``/<index>/_bulk``; credentials when
    configured (401 ``security_exception`` with ``WWW-Authenticate``), ``ApiKey <key>``
    or ``Basic``; ``Content-Type`` ``application/json`` or ``application/x-ndjson``
    (406); gzip bodies; ``http.max_content_length`` (413); a body ending in a newline
    (400); action lines ``index``/``create``/``delete`` with an index (400
    ``action_request_validation_exception``) and a document line each. Items are
    answered one by one: ``create`` of an existing ``_id`` is 409; ids in ``item_faults``
    fail with the given status. ``docs`` holds the documents by (index, _id); ``ops``
    counts the write operations per _id (to prove nothing was resent).
    """

    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    max_content_length: int = 100 * 1024 * 1024
    item_faults: dict[str, ItemFault] = field(default_factory=dict)
    docs: dict[tuple[str, str], Any] = field(default_factory=dict)
    ops: Counter[str] = field(default_factory=Counter)
    name: str = "elasticsearch"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def secrets(self) -> list[str]:
        out = [s for s in (self.api_key, self.password) if s]
        if self.username and self.password:
            out.append(base64.b64encode(f"{self.username}:{self.password}".encode()).decode())
        return out

    def _error(self, status: int, type_: str, reason: str, **headers: str) -> Reply:
        cause = {"type": type_, "reason": reason}
        body = {"error": {"root_cause": [cause], **cause}, "status": status}
        return Reply(status, _json(body), dict(headers))

    def _authenticated(self, path: str, headers: dict[str, str]) -> Reply | None:
        if self.api_key is None and self.username is None:
            return None
        auth = headers.get("authorization")
        challenge = {"WWW-Authenticate": 'Basic realm="security" charset="UTF-8", ApiKey'}
        if auth is None:
            return self._error(
                401,
                "security_exception",
                f"missing authentication credentials for REST request [{path}]",
                **challenge,
            )
        scheme, _, value = auth.partition(" ")
        if self.api_key is not None and scheme == "ApiKey" and value == self.api_key:
            return None
        if self.username is not None and scheme == "Basic":
            try:
                user, _, pw = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user, pw = "", ""
            if user == self.username and pw == self.password:
                return None
        return self._error(
            401,
            "security_exception",
            f"unable to authenticate with provided credentials for REST request [{path}]",
            **challenge,
        )

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        route = path.split("?")[0]
        match = re.fullmatch(r"/(?:([^/_][^/]*)/)?_bulk", route)
        if match is None:
            return self._error(400, "invalid_index_name_exception", f"no handler for [{route}]")
        if method not in ("POST", "PUT"):
            return Reply(
                405,
                _json({"error": f"Incorrect HTTP method for uri [{route}] and method [{method}]"}),
            )
        denied = self._authenticated(route, headers)
        if denied is not None:
            return denied
        media = _media_type(headers)
        if media not in ("application/json", "application/x-ndjson"):
            ct = headers.get("content-type", "")
            return Reply(
                406, _json({"error": f"Content-Type header [{ct}] is not supported", "status": 406})
            )
        try:
            payload = decode_body(headers, body)
        except ValueError as exc:
            return self._error(400, "parse_exception", str(exc))
        if len(payload) > self.max_content_length:
            return self._error(413, "content_too_long_exception", "request too large")
        if not payload.endswith(b"\n"):
            return self._error(
                400,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            )
        try:
            ops = self._parse(payload, match.group(1))
        except ValueError as exc:
            return self._error(400, "illegal_argument_exception", str(exc))
        missing = [i for i, (_, index, _, _) in enumerate(ops) if not index]
        if missing:
            reasons = "".join(f"{n + 1}: index is missing;" for n in range(len(missing)))
            return self._error(
                400, "action_request_validation_exception", f"Validation Failed: {reasons}"
            )
        items = [{"action": a, "_index": i, "_id": d, "doc": doc} for a, i, d, doc in ops]
        results: list[dict[str, Any]] = []
        committed: list[tuple[str, str, str, Any]] = []
        with self._lock:
            for action, index, doc_id, doc in ops:
                result: dict[str, Any] = {"_index": index, "_id": doc_id}
                fault = self.item_faults.get(doc_id)
                if fault is not None and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    result.update(
                        status=fault.status, error={"type": fault.type, "reason": fault.reason}
                    )
                elif action == "create" and (index, doc_id) in self.docs:
                    result.update(
                        status=409,
                        error={
                            "type": "version_conflict_engine_exception",
                            "reason": f"[{doc_id}]: version conflict, document already exists",
                        },
                    )
                else:
                    exists = (index, doc_id) in self.docs
                    result.update(
                        status=200 if exists else 201, result="updated" if exists else "created"
                    )
                    committed.append((action, index, doc_id, doc))
                results.append({action: result})
        errors = any("error" in next(iter(r.values())) for r in results)

        def store() -> list[Any]:
            for _, index, doc_id, doc in committed:
                self.docs[(index, doc_id)] = doc
                self.ops[doc_id] += 1
            return [{"_index": i, "_id": d, "doc": doc} for _, i, d, doc in committed]

        answer = {"took": 1, "errors": errors, "items": results}
        return Reply(200, _json(answer), items=items, store=store)

    def _parse(self, payload: bytes, path_index: str | None) -> list[tuple[str, str, str, Any]]:
        lines = payload.split(b"\n")[:-1]
        ops: list[tuple[str, str, str, Any]] = []
        i = 0
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            try:
                action_line = json.loads(lines[i])
            except ValueError:
                raise ValueError(
                    f"Malformed action/metadata line [{i + 1}], expected START_OBJECT"
                ) from None
            if not isinstance(action_line, dict) or len(action_line) != 1:
                raise ValueError(f"Malformed action/metadata line [{i + 1}]")
            action, meta = next(iter(action_line.items()))
            if action not in ("index", "create", "delete") or not isinstance(meta, dict):
                raise ValueError(
                    f"Malformed action/metadata line [{i + 1}], expected field [create], "
                    f"[delete], [index] or [update] but found [{action}]"
                )
            index = meta.get("_index") or path_index or ""
            doc_id = meta.get("_id") or str(uuid.uuid4())
            if action == "delete":
                ops.append((action, index, str(doc_id), None))
                i += 1
                continue
            if i + 1 >= len(lines):
                raise ValueError(f"Validation Failed: 1: no requests added; line [{i + 1}]")
            try:
                doc = json.loads(lines[i + 1])
            except ValueError:
                raise ValueError(f"failed to parse document on line [{i + 2}]") from None
            ops.append((action, index, str(doc_id), doc))
            i += 2
        return ops


class WebhookApi(Api):
    """A generic webhook as the ``http`` connector documents it.

    Checks: the configured path (404) and method (405); every configured header equal
    (401); ``Content-Type`` ``application/json`` for a JSON array body or
    ``application/x-ndjson`` for NDJSON (415); gzip when ``Content-Encoding`` says so;
    at most ``max_bytes`` as sent (413); a JSON array of objects, or NDJSON lines of
    objects (400). Answers ``200 {"accepted": n}``.
    """

    name = "http"

    def __init__(
        self,
        path: str,
        headers: dict[str, str],
        body: str = "json_array",
        method: str = "POST",
        max_bytes: int = 10_000_000,
    ):
        self.path = path
        self.required = {k.lower(): v for k, v in headers.items()}
        self.body = body
        self.method = method
        self.max_bytes = max_bytes

    def secrets(self) -> list[str]:
        return [v for k, v in self.required.items() if k == "authorization"]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        def error(status: int, text: str) -> Reply:
            return Reply(status, _json({"error": text}))

        if path != self.path:
            return error(404, "not found")
        if method != self.method:
            return error(405, "method not allowed")
        for name, value in self.required.items():
            if headers.get(name) != value:
                return error(401, f"header {name} missing or wrong")
        want = "application/json" if self.body == "json_array" else "application/x-ndjson"
        if _media_type(headers) != want:
            return error(415, f"expected Content-Type {want}")
        if len(body) > self.max_bytes:
            return error(413, "payload too large")
        try:
            payload = decode_body(headers, body)
            if self.body == "json_array":
                records = json.loads(payload)
                if not isinstance(records, list):
                    raise ValueError("not an array")
            else:
                if payload and not payload.endswith(b"\n"):
                    raise ValueError("NDJSON must end with a newline")
                records = [json.loads(line) for line in payload.split(b"\n")[:-1]]
        except ValueError as exc:
            return error(400, f"bad body: {exc}")
        if not all(isinstance(r, dict) for r in records):
            return error(400, "bad body: every record must be an object")

        def store() -> list[Any]:
            return records

        return Reply(200, _json({"accepted": len(records)}), items=records, store=store)
