"""The HTTP layer of the API connectors: one pooled client and one response policy.

    client = HttpClient("datadog_logs", concurrency=8, timeouts=Timeouts(), secrets=(key,))
    client.open()                                   # in Sink.open (DoFn.setup)
    response = client.send("POST", url, body, {"DD-API-KEY": key})   # 2xx or DeliveryError
    client.close()

:class:`HttpClient` wraps a ``requests.Session`` with an ``HTTPAdapter`` whose pool holds
``concurrency`` connections, so up to that many worker threads send through it at once
(a Session is safe to share between threads as long as nobody mutates it after
:meth:`HttpClient.open`). It never retries (``max_retries=0``): retrying is shared code.

Every response is classified by :func:`classify` (the one policy of every API
connector):

==========================================  ===============================================
outcome                                     result
==========================================  ===============================================
2xx                                         delivered
408, 429, 5xx                               ``DeliveryError(retryable=True)``; 429 and 503
                                            carry ``retry_after_s`` from ``Retry-After``
                                            (seconds or an HTTP date)
any other status (400, 401, 403, 404, 413)  ``DeliveryError(retryable=False)``
connection refused/reset, timeouts          ``DeliveryError(retryable=True, status=None)``
==========================================  ===============================================

Messages carry the status and a short excerpt of the response body, and name the request
by its URL path; every secret the client knows (credentials, and the path and query of an
endpoint with ``${env:NAME}`` parts) is removed by the shared
:func:`~transforms.connectors._policy.redact`, however the server echoes it back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from transforms.connectors._api import Timeouts
from transforms.connectors._policy import (
    guard_logs,
    is_retryable_status,
    parse_retry_after,
    redact,
    secret_values,
)
from transforms.connectors.base import DeliveryError, Sink
from transforms.rules import gzipio

EXCERPT_CHARS = 200
"""How much of an error response body a message quotes."""

GZIP_LEVEL = 5
"""gzip level of request bodies: close to level 6's size at about two thirds of the CPU."""

USER_AGENT = "telemetry-delivery/0.1"

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def compress(body: bytes, compression: str) -> bytes:
    """Apply a connector's ``compression`` (``gzip`` or ``none``) to a request body."""
    return gzip_body(body) if compression == "gzip" else body


def gzip_body(data: bytes) -> bytes:
    """Compress a request body with gzip (no timestamp: equal bodies give equal bytes)."""
    return gzipio.compress(data, GZIP_LEVEL)


def excerpt(body: bytes, secrets: Sequence[str] = ()) -> str:
    """A one-line, redacted, bounded quote of a response body."""
    window = EXCERPT_CHARS * 4
    text = " ".join(body[:window].decode("utf-8", "replace").split())
    if len(body) > window and secrets:
        # A secret cut in two by the window is no longer recognisable: drop the tail
        # where a cut one could start (an encoded character takes up to 12 characters).
        text = text[: max(len(text) - 12 * max(len(s) for s in secrets), 0)]
    text = redact(text, secrets)
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    what: str,
    secrets: Sequence[str] = (),
) -> DeliveryError | None:
    """The shared response policy (see the module docstring); None means delivered."""
    if 200 <= status < 300:
        return None
    retryable = is_retryable_status(status)
    retry_after = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
    quoted = excerpt(body, secrets)
    message = f"{what}: HTTP {status}" + (f": {quoted}" if quoted else "")
    return DeliveryError(message, retryable=retryable, status=status, retry_after_s=retry_after)


@dataclass(frozen=True)
class HttpResponse:
    """A response: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpClient:
    """A pooled, thread-safe HTTP client that raises classified :class:`DeliveryError`.

    Args:
        name: the connector type, used in messages.
        concurrency: connections kept in the pool (requests in flight at once).
        timeouts: connect and read timeouts of every request.
        secrets: values to redact from every message (and from the HTTP library's logs).
    """

    def __init__(
        self, name: str, concurrency: int, timeouts: Timeouts, secrets: Sequence[str] = ()
    ):
        self.name = name
        self.concurrency = concurrency
        self.timeout = (timeouts.connect_s, timeouts.read_s)
        self.secrets = tuple(secrets)
        self.session: Any = None

    def open(self) -> None:
        """Create the session and its connection pool."""
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=self.concurrency, max_retries=0, pool_block=False
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = f"{USER_AGENT} ({self.name})"
        guard_logs(self.secrets)  # urllib3 logs request paths at DEBUG level
        self.session = session

    def close(self) -> None:
        """Close every pooled connection."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def send(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """Send one request; return the 2xx response or raise a classified error.

        Raises:
            DeliveryError: for a non-2xx status, a connection failure or a timeout.
        """
        response = self.request(method, url, body, headers)
        error = classify(
            response.status, response.headers, response.body, self.where(method, url), self.secrets
        )
        if error is not None:
            raise error
        return response

    def request(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> HttpResponse:
        """Send one request and return its response, whatever the status.

        For APIs whose error bodies say more than the status (per-item results); pass the
        response to :func:`classify` for the shared policy.

        Raises:
            DeliveryError: for a connection failure or a timeout (retryable).
        """
        import requests

        # Errors are raised "from None": the low-level exception's text may quote request
        # details, and the message below says what matters.
        if self.session is None:
            raise RuntimeError(f"{self.name}: HttpClient.request before open()")
        where = self.where(method, url)
        try:
            response = self.session.request(
                method, url, data=body, headers=dict(headers), timeout=self.timeout
            )
            content = response.content
        except requests.exceptions.ConnectTimeout:
            raise DeliveryError(
                f"{where}: could not connect within {self.timeout[0]} s", retryable=True
            ) from None
        except requests.exceptions.Timeout:
            raise DeliveryError(
                f"{where}: no response within {self.timeout[1]} s (read timeout; the request "
                "may or may not have been processed)",
                retryable=True,
                outcome_unknown=True,
            ) from None
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise DeliveryError(
                f"{where}: connection failed: {self._reason(exc)}",
                retryable=True,
                outcome_unknown=not _never_sent(exc),
            ) from None
        except requests.exceptions.RequestException as exc:
            raise DeliveryError(
                f"{where}: request refused by the client: {self._reason(exc)}", retryable=False
            ) from None
        return HttpResponse(response.status_code, response.headers, content)

    def where(self, method: str, url: str) -> str:
        """How messages name a request: connector type, method and URL path (redacted)."""
        return redact(f"{self.name} {method} {urlsplit(url).path or '/'}", self.secrets)

    def _reason(self, exc: BaseException) -> str:
        text = redact(str(exc), self.secrets)  # before cutting: a cut secret is unrecognisable
        found = _ERRNO.search(text)
        return found.group(0).strip() if found else f"{type(exc).__name__}: {text[:160]}"


def _never_sent(exc: BaseException) -> bool:
    """True when the request surely did not reach the server (no connection was made).

    A reset or a broken response after a connection was made may come after the server
    processed the request, so the outcome of those is unknown.
    """
    from urllib3.exceptions import NewConnectionError

    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError) or isinstance(
        exc.args[0] if exc.args else None, NewConnectionError
    )


class HttpApiSink(Sink):
    """Base of the HTTP connectors: holds the config and a pooled :class:`HttpClient`.

    Subclasses list their secrets in :meth:`secrets` and implement ``write``; the secret
    parts of the endpoint (:attr:`~._api.HttpApiDeliver.endpoint_secrets`) are added here.
    They send to :attr:`endpoint_url` (the endpoint with its secret references filled in
    by :meth:`open`, in ``DoFn.setup``) and name it in results and messages as
    ``deliver.shown``.
    """

    type_name = "http"

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.deliver = deliver
        self.endpoint_url = ""
        self.client = HttpClient(
            self.type_name, deliver.concurrency, deliver.timeouts, secret_values(*self.secrets())
        )

    def secrets(self) -> Sequence[Any]:
        """The secret values of this connector's config (redacted from every message)."""
        return ()

    def secret_values(self) -> tuple[str, ...]:
        """Every secret of this connector: its credentials and its endpoint's secret parts."""
        return self.client.secrets

    def open(self) -> None:
        """Fill in the endpoint's secret references; create the pooled HTTP client."""
        self.endpoint_url, endpoint_secrets = self.deliver.resolve()
        self.client.secrets = secret_values(*self.client.secrets, *endpoint_secrets)
        self.client.open()

    def close(self) -> None:
        """Close the pooled HTTP client (``DoFn.teardown``)."""
        self.client.close()


def json_array(entries: Sequence[bytes]) -> bytes:
    """A JSON array body from encoded JSON values."""
    return b"[" + b",".join(entries) + b"]"


def ndjson(entries: Sequence[bytes]) -> bytes:
    """An NDJSON body (every line ends in a newline)."""
    return b"".join(e + b"\n" for e in entries)
