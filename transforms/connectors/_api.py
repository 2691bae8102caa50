"""What every API connector shares: config fields, request splitting, partial failures.

API connectors (``http``, ``datadog_logs``, ``splunk_hec``, ``new_relic``,
``elasticsearch``, ``pubsub``) send one :class:`~.base.DeliveryBatch` as one or more
requests. Three things are the same for all of them and live here:

* :class:`ApiDeliver`, the ``deliver`` fields they all have::

      deliver:
        endpoint: https://http-intake.logs.datadoghq.com   # base URL
        concurrency: 4                  # batches in flight per worker (= HTTP pool size)
        timeouts: {connect_s: 5, read_s: 30}
        batch: {max_events: 1000, max_wait_s: 1}

* :func:`split_parts`, which cuts a batch into requests that respect the destination's
  limits (entries and bytes per request), and rejects single entries that can never fit;
* :func:`send_parts`, which sends the parts and, when some events of a batch were
  delivered and others were not (an Elasticsearch ``_bulk`` item error, a Splunk
  ``invalid-event-number``, the third of three Datadog requests failing), raises
  :class:`~.base.PartialDeliveryError` with one :class:`~.base.ItemFailure` per failed
  event: which, why, and whether it may be retried, so the shared retry code resends
  only those and never the delivered ones.

Sinks never retry: a failure is raised as a :class:`~.base.DeliveryError` (or a
:class:`~.base.PartialDeliveryError`) and :mod:`transforms.rules.retry` decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from transforms.connectors.base import (
    Batch,
    DeliverConfig,
    DeliveryBatch,
    DeliveryError,
    ItemFailure,
    PartialDeliveryError,
    StrictModel,
    WriteResult,
)
from transforms.connectors.secrets import SecretRef, check_reference
from transforms.rules.records import Packaged


class Timeouts(StrictModel):
    """How long one request may take to connect and to answer."""

    connect_s: float = Field(default=5.0, gt=0, le=300, description="Connect timeout (s).")
    read_s: float = Field(
        default=30.0, gt=0, le=600, description="Longest wait for response bytes (s)."
    )


def _api_batch() -> Batch:
    return Batch(max_events=1000, max_wait_s=1.0)


class ApiDeliver(DeliverConfig):
    """Fields every API connector's ``deliver`` section has."""

    batch: Batch = Field(
        default_factory=_api_batch,
        description="Events per batch (split further into requests by the API's limits) and "
        "the longest an event waits (default 1000 events, 1 s).",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Connect and read timeouts.")


class HttpApiDeliver(ApiDeliver):
    """An API reached over HTTP(S) at a base URL.

    The endpoint may hold secrets as references, e.g. a webhook whose token is in its
    path: ``https://hooks.slack.com/services/T0/B0/${env:SLACK_HOOK_TOKEN}``, or be one
    whole reference (``${env:HOOK_URL}``). Such an endpoint is secret: the config keeps
    the references (never the values); a sink fills them in when it opens (:meth:`resolve`,
    in ``DoFn.setup`` on the worker) and sends there, names the endpoint in results and
    messages as it is written (:attr:`shown`, references and all), and redacts every
    message of the values and of the filled-in URL's path and query.
    """

    # The endpoint keeps its references (StrictModel would fill in a whole one here).
    keeps_references = frozenset({"endpoint"})

    endpoint: str = Field(
        description="Base URL, e.g. https://http-intake.logs.datadoghq.com (no credentials); "
        "secret parts as ${env:NAME} (or another secret reference)."
    )

    @field_validator("endpoint", mode="before")
    @classmethod
    def _reference_text(cls, endpoint: Any) -> Any:
        return getattr(endpoint, "reference", endpoint)  # a whole-endpoint SecretRef

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str) -> str:
        check_endpoint_template(endpoint)
        return endpoint.rstrip("/")

    @property
    def shown(self) -> str:
        """How results and messages name the endpoint: as written, references unresolved."""
        return self.endpoint

    def resolve(self) -> tuple[str, tuple[str, ...]]:
        """The URL to send to, and what of it is secret (see :func:`resolve_endpoint`)."""
        return resolve_endpoint(self.endpoint)


SECRET_PART = re.compile(r"\$\{(?:env|gcp-secret|aws-secret):[^}\s]*\}")
"""A secret reference inside an endpoint (``${env:NAME}``, ``${gcp-secret:...}`` ...)."""


def check_endpoint_template(endpoint: str) -> None:
    """Refuse a malformed reference, or an endpoint that is no http(s) URL once filled in.

    Raises:
        ValueError: naming the problem and the fix.
    """
    for part in SECRET_PART.findall(endpoint):
        problem = check_reference(part)
        if problem is not None:
            raise ValueError(f"endpoint: {problem}")
    if "${" in SECRET_PART.sub("x", endpoint):
        raise ValueError(
            "endpoint: a '${' that is not a secret reference. Fix: write secret parts "
            "exactly as ${env:NAME}."
        )
    # Checked with the values that can be read here; a value read only on the workers
    # (a secret manager) stands as "x", and a whole endpoint read there is checked there.
    shape = SECRET_PART.sub(lambda m: SecretRef(m.group(0)).peek() or "x", endpoint)
    if shape == endpoint:
        check_endpoint(endpoint)
    elif shape != "x":
        _check_secret_endpoint(endpoint, shape)


def _check_secret_endpoint(endpoint: str, url: str) -> None:
    """:func:`check_endpoint` of a filled-in URL, naming it by ``endpoint`` (references)."""
    try:
        check_endpoint(url)
    except ValueError:
        raise ValueError(
            f"endpoint {endpoint!r}, filled in, is not an http(s) URL without credentials "
            "such as https://example.com/path"
        ) from None


def resolve_endpoint(endpoint: str) -> tuple[str, tuple[str, ...]]:
    """An endpoint with its secret references filled in, and what of it is secret.

    With ``HOOK_TOKEN=xoxb-1``::

        resolve_endpoint("https://h.example/services/${env:HOOK_TOKEN}?a=1")
        # ('https://h.example/services/xoxb-1?a=1', ('xoxb-1', '/services/xoxb-1', 'a=1'))

    >>> resolve_endpoint("https://h.example/api")
    ('https://h.example/api', ())

    Raises:
        SecretError: when a reference cannot be resolved here (e.g. an unset variable).
    """
    values: list[str] = []

    def fill(match: re.Match[str]) -> str:
        values.append(SecretRef(match.group(0)).get_secret_value())
        return values[-1]

    url = SECRET_PART.sub(fill, endpoint)
    if not values:
        return url, ()
    _check_secret_endpoint(endpoint, url)
    parts = urlsplit(url)
    return url, tuple(dict.fromkeys(v for v in (*values, parts.path, parts.query) if v))


def check_endpoint(endpoint: str) -> None:
    """Refuse what is not an http(s) URL, or a URL with credentials in it.

    Raises:
        ValueError: naming the problem and the fix.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"endpoint {endpoint!r} is not an http(s) URL such as https://example.com:8088"
        )
    if parts.username or parts.password:
        raise ValueError(
            "endpoint must not contain credentials (user:password@); give them in the "
            "connector's secret fields as ${env:NAME}"
        )


class PartFailures(DeliveryError):
    """Raised by a part sender when the API answered per entry (Elasticsearch, Splunk).

    ``failures`` index the entries of the part (event ids unknown there); :func:`send_parts`
    maps them to the batch and raises :class:`PartialDeliveryError`.
    """

    def __init__(self, message: str, failures: Sequence[ItemFailure], delivered: int, sent: int):
        super().__init__(message, any(f.retryable for f in failures))
        self.failures = tuple(failures)
        self.delivered = delivered
        self.sent = sent


@dataclass(frozen=True)
class Part:
    """One request's share of a batch: positions in the batch and the encoded entries."""

    indices: tuple[int, ...]
    entries: tuple[bytes, ...]
    body: bytes | None = None  # the finished request body, when built while splitting

    @property
    def size(self) -> int:
        """Bytes of the entries (before separators and compression)."""
        return sum(len(e) for e in self.entries)


def split_parts(
    entries: Sequence[bytes],
    max_entries: int,
    max_bytes: int,
    max_entry_bytes: int | None = None,
    separator_bytes: int = 1,
    envelope_bytes: int = 2,
) -> tuple[list[Part], list[tuple[int, int]]]:
    """Cut encoded entries into parts of at most ``max_entries`` and ``max_bytes``.

    Order is kept. ``separator_bytes`` and ``envelope_bytes`` count what the body adds
    (``,`` and ``[]`` for a JSON array). Returns (parts, too_large) where ``too_large``
    lists ``(index, size)`` of entries that exceed ``max_entry_bytes`` or cannot fit in
    any request: these can never be sent and are not retryable.
    """
    limit = max_bytes - envelope_bytes
    parts: list[Part] = []
    too_large: list[tuple[int, int]] = []
    indices: list[int] = []
    chunk: list[bytes] = []
    used = 0
    for i, entry in enumerate(entries):
        size = len(entry)
        if (max_entry_bytes is not None and size > max_entry_bytes) or size > limit:
            too_large.append((i, size))
            continue
        extra = size + (separator_bytes if chunk else 0)
        if chunk and (len(chunk) >= max_entries or used + extra > limit):
            parts.append(Part(tuple(indices), tuple(chunk)))
            indices, chunk, used = [], [], 0
            extra = size
        indices.append(i)
        chunk.append(entry)
        used += extra
    if chunk:
        parts.append(Part(tuple(indices), tuple(chunk)))
    return parts, too_large


def send_parts(
    batch: DeliveryBatch,
    parts: Sequence[Part],
    send: Callable[[Part], int],
    rejected: Sequence[ItemFailure] = (),
    target: str = "",
) -> WriteResult:
    """Send each part with ``send`` (returning the bytes sent) and account per event.

    ``send`` raises :class:`~.base.DeliveryError` when its request failed as a whole, or
    :class:`PartFailures` (with indices relative to the part) when the API reported
    per-entry results. After a retryable whole-request failure the remaining
    parts are not sent (the destination is throttling or failing; the shared retry code
    will try them again); after a non-retryable one the other parts still go.

    Returns:
        A :class:`~.base.WriteResult` when every event was delivered.

    Raises:
        DeliveryError: unchanged, when the batch was one request that failed as a whole.
        PartialDeliveryError: when only some events were delivered, or events failed for
            different reasons.
    """
    failures: list[ItemFailure] = list(rejected)
    errors: list[DeliveryError] = []
    delivered = 0
    sent_bytes = 0
    requests = 0
    stop: DeliveryError | None = None
    items = batch.items
    for part in parts:
        if stop is not None:
            failures.extend(_fail_all(part.indices, items, stop, "not sent: " + str(stop)))
            continue
        requests += 1
        try:
            sent_bytes += send(part)
            delivered += len(part.indices)
        except PartFailures as exc:
            errors.append(exc)
            delivered += exc.delivered
            sent_bytes += exc.sent
            for f in exc.failures:
                index = part.indices[f.index]
                failures.append(
                    ItemFailure(
                        index,
                        items[index].event_id,
                        f.retryable,
                        f.reason,
                        f.status,
                        f.retry_after_s,
                    )
                )
        except DeliveryError as exc:
            errors.append(exc)
            failures.extend(_fail_all(part.indices, items, exc, str(exc)))
            if exc.retryable:
                stop = exc
    if not failures:
        return WriteResult(name=target, events=delivered, bytes=sent_bytes)
    if delivered == 0 and not rejected and len(errors) == 1 and type(errors[0]) is DeliveryError:
        raise errors[0]
    failures.sort(key=lambda f: f.index)
    first = failures[0]
    message = (
        f"{target}: {delivered} of {len(items)} events delivered, {len(failures)} failed "
        f"in {requests} request(s); first failure ({first.event_id}): {first.reason}"
    )
    raise PartialDeliveryError(
        message, WriteResult(target, delivered, sent_bytes), failures=failures, requests=requests
    )


def _fail_all(
    indices: Sequence[int], items: Sequence[Packaged], exc: DeliveryError, reason: str
) -> list[ItemFailure]:
    return [
        ItemFailure(i, items[i].event_id, exc.retryable, reason, exc.status, exc.retry_after_s)
        for i in indices
    ]


def too_large_failures(
    too_large: Sequence[tuple[int, int]], items: Sequence[Packaged], what: str
) -> list[ItemFailure]:
    """Non-retryable failures for entries that can never be sent (``what``: the limit)."""
    return [
        ItemFailure(i, items[i].event_id, False, f"entry of {size} bytes exceeds {what}")
        for i, size in too_large
    ]


def require_fields(record: Any, names: Sequence[str]) -> str | None:
    """Why a record lacks a required top-level field (None when it has them all)."""
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not an object"
    missing = [n for n in names if n not in record]
    return f"record has no {', '.join(missing)}" if missing else None
