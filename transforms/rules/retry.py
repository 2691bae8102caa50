"""The immediate-retry policy shared by every connector.

    policy = RetryPolicy(immediate=3)
    result, attempts = policy.call(lambda: sink.write(batch))   # raises the last DeliveryError

A retryable :class:`~transforms.connectors.base.DeliveryError` is retried up to
``immediate`` times with jittered exponential backoff (0.2 s, 0.4 s, 0.8 s ... capped at
2 s each, so well under 10 s in total), waiting instead what the destination asked for in
``Retry-After`` (capped at 5 s; longer waits belong to the delayed retry). A non-retryable
error is raised at once. Plain Python, no Beam import.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from transforms.connectors.base import DeliveryError

T = TypeVar("T")

BASE_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
MAX_RETRY_AFTER_S = 5.0


@dataclass
class RetryPolicy:
    """Immediate retries of one call; ``sleep`` is injectable so tests need not wait."""

    immediate: int = 3
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, retry: int, error: DeliveryError) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        cap = min(BASE_BACKOFF_S * 2 ** (retry - 1), MAX_BACKOFF_S)
        return cap / 2 + self.rng.random() * cap / 2

    def call(self, fn: Callable[[], T]) -> tuple[T, int]:
        """Run ``fn`` with retries; return (its result, attempts made).

        Raises:
            DeliveryError: the last error, with ``attempts`` set on it, when every attempt
                failed or the error was not retryable.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), attempt
            except DeliveryError as exc:
                exc.attempts = attempt  # type: ignore[attr-defined]
                if not exc.retryable or attempt > self.immediate:
                    raise
                self.sleep(self.delay(attempt, exc))
