"""The small interface every connector implements, and the errors it raises.

A connector author writes four things (compare Beam's ``requestresponse.Caller``)::

    class MySink(Sink):
        def open(self): self.client = make_client()          # once per DoFn instance (setup)
        def write(self, batch): ...                          # send one batch; return a WriteResult
        def close(self): self.client.close()                 # teardown

and raises :class:`DeliveryError` with ``retryable`` set by the destination's rules when a
batch cannot be delivered. Everything else (batching, retries, metrics, dead letters) is
shared code in :mod:`transforms.deliver`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transforms.rules.records import Packaged


@dataclass(frozen=True)
class DeliveryBatch:
    """Events of one connector that travel together (one file, object or request)."""

    connector_id: str
    prefix: str
    items: Sequence[Packaged]


@dataclass(frozen=True)
class WriteResult:
    """What one successful write delivered."""

    name: str
    events: int
    bytes: int


class DeliveryError(Exception):
    """A batch that could not be delivered.

    Args:
        message: what went wrong (never containing a secret).
        retryable: True for transient failures (throttling, 5xx, timeouts, resets).
        status: the destination's status code, when there is one.
        retry_after_s: how long the destination asked us to wait, when it did.
    """

    def __init__(
        self,
        message: str,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class Sink:
    """A destination: open a client, write a batch, close."""

    connector_id: str

    def open(self) -> None:
        """Create clients (called once per DoFn instance, in ``setup``)."""

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Deliver one batch or raise :class:`DeliveryError`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release clients (called in ``teardown``)."""
