"""A threaded HTTP receiver that records requests and injects faults.

An :class:`Api` decides what one request means (path, method, auth, body shape, limits)
and what the real service would answer; :class:`Receiver` serves it on a free port,
records every request, stores the items the API accepted, and can be told to misbehave:

    receiver.fail(times=2, status=500)            # the next 2 requests get 500
    receiver.throttle(times=1, retry_after="1")   # then one 429 with Retry-After: 1
    receiver.reject_when(lambda items: ..., status=400, body=b'{"errors":["Bad Request"]}')
    receiver.slow(0.3)                            # every response 0.3 s late
    receiver.hang(seconds=30)                     # never answer (until stop)
    receiver.outage(); ...; receiver.restore()    # connection refused, then back
    receiver.wait_for(lambda r: len(r.items) >= 100, timeout=10)

A fault consumes the request (its items are parsed and kept in ``rejected`` but not
stored), like a load balancer or an overloaded node in front of the real API.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What an API answers: status, body, headers, and the items to store if delivered."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)  # parsed entries of the request
    store: Callable[[], list[Any]] | None = None  # commits; returns the stored entries


@dataclass
class Request:
    """One received request, as recorded."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes  # as received (compressed if it was)
    started: float  # time.time() at arrival (comparable with the job's own timestamps)
    status: int | None = None
    response: bytes = b""
    items: list[Any] = field(default_factory=list)
    fault: str | None = None
    finished: float | None = None
    peer: tuple[str, int] | None = None  # the client's address: one per pooled connection

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def decode_body(headers: dict[str, str], body: bytes) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate); ValueError for what cannot be read."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"bad gzip body: {exc}") from exc
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error as exc:
            raise ValueError(f"bad deflate body: {exc}") from exc
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class Api:
    """One API's rules. Subclasses implement :meth:`handle` and set ``name``."""

    name = "api"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Credential values a test can check never leak."""
        return []


@dataclass
class _Fault:
    kind: str  # status | hang | slow
    remaining: int | None  # None: forever
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    match: Callable[[list[Any]], bool] | None = None
    echo_headers: bool = False
    after: int = 0  # matching requests to let through before the fault starts


_PLAIN_HEADERS = {
    "accept",
    "accept-encoding",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "user-agent",
}


class Receiver:
    """Serve an :class:`Api` on 127.0.0.1 (a free port); see the module docstring."""

    def __init__(self, api: Api):
        self.api = api
        self.requests: list[Request] = []
        self.items: list[Any] = []
        self.rejected: list[Any] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Condition()
        self._release = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._listen(0)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> None:
        server = _Server(("127.0.0.1", port), _Handler)
        server.receiver = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:  # pooled keep-alive connections die with the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def outage(self) -> None:
        """Stop listening: connections are refused until :meth:`restore`."""
        self._stop_listening()

    def restore(self) -> None:
        """Listen again on the same port after an :meth:`outage`."""
        if self._server is None:
            self._listen(self.port)

    def stop(self) -> None:
        """Release hung requests and stop serving."""
        self._release.set()
        self._stop_listening()

    # -- faults ------------------------------------------------------------------------------

    def fail(
        self,
        times: int | None = 1,
        status: int = 500,
        body: bytes = b'{"error":"injected failure"}',
        headers: dict[str, str] | None = None,
        after: int = 0,
    ) -> None:
        """Answer ``times`` requests (None: all) with ``status``, after letting ``after`` by."""
        self._add(_Fault("status", times, status, body, dict(headers or {}), after=after))

    def throttle(self, times: int | None = 1, retry_after: str = "1", after: int = 0) -> None:
        """Answer ``times`` requests with 429 and ``Retry-After``."""
        self.fail(times, 429, b'{"error":"Too Many Requests"}', {"Retry-After": retry_after}, after)

    def reject_when(
        self,
        match: Callable[[list[Any]], bool],
        status: int = 400,
        body: bytes = b'{"error":"injected rejection"}',
        echo_headers: bool = False,
    ) -> None:
        """Answer every request whose parsed items satisfy ``match`` with ``status``.

        ``echo_headers`` puts the request headers in the error body, like a careless
        server would, to prove that clients redact their secrets.
        """
        self._add(_Fault("status", None, status, body, {}, match=match, echo_headers=echo_headers))

    def slow(self, seconds: float, times: int | None = None) -> None:
        """Delay the next ``times`` responses (None: all) by ``seconds``, then answer."""
        self._add(_Fault("slow", times, seconds=seconds))

    def hang(self, seconds: float = 60.0, times: int | None = None) -> None:
        """Never answer the next ``times`` requests (None: all): wait, then drop them."""
        self._add(_Fault("hang", times, seconds=seconds))

    def release(self) -> None:
        """Let every held request (:meth:`hang`, ``slow``) go now, and drop the faults."""
        with self._lock:
            self._faults.clear()
        self._release.set()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, items: list[Any]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.match is not None and not fault.match(items):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                return fault
        return None

    # -- observing ---------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[Receiver], bool], timeout: float = 10.0) -> bool:
        """Wait until ``condition(self)`` holds (checked on every request); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def snapshot(self) -> tuple[list[Request], list[Any]]:
        with self._lock:
            return list(self.requests), list(self.items)

    # -- serving -----------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        length = headers.get("content-length")
        if length is None:
            handler.reply(411, b'{"error":"Length Required"}', {})
            return
        body = handler.rfile.read(int(length))
        request = Request(handler.command, handler.path, headers, body, time.time())
        request.peer = handler.client_address
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
        reply = self.api.handle(handler.command, handler.path, headers, body)
        request.items = reply.items
        fault = self._take_fault(reply.items)
        if fault is not None and fault.kind == "slow":
            self._release.wait(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "hang":
            request.fault = "hang"
            self._release.wait(fault.seconds)
            handler.close_connection = True
            with self._lock:
                request.finished = time.time()
                self.rejected.extend(reply.items)
                self._lock.notify_all()
            return
        if fault is not None:
            body_out = fault.body
            if fault.echo_headers:  # the interesting ones (credentials) first
                quoted = {k: v for k, v in headers.items() if k not in _PLAIN_HEADERS}
                body_out = b'{"error":"rejected","request_headers":' + repr(quoted).encode() + b"}"
            reply = Reply(fault.status, body_out, fault.headers, reply.items)
            request.fault = f"status {fault.status}"
        # Commit before answering, like the real service: once the client has the answer,
        # what it reports is visible.
        with self._lock:
            if fault is None and reply.store is not None:
                self.items.extend(reply.store())
            elif fault is not None or not 200 <= reply.status < 300:
                self.rejected.extend(reply.items)
            request.status = reply.status
            request.response = reply.body
        try:
            handler.reply(reply.status, reply.body, reply.headers)
        finally:
            with self._lock:
                request.finished = time.time()
                self._lock.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeouts, outages) is expected here

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.receiver._lock:
            self.receiver._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.receiver._lock:
            self.receiver._connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' pools expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        names = {k.lower() for k in headers}
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _any(self) -> None:
        try:
            self.server.receiver._serve(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any
