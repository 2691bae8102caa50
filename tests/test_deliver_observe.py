"""Deliver's per-batch freshness counting against the per-event loop it replaced."""

from __future__ import annotations

import bisect
import random
import time
from typing import Any

import pytest

from transforms import metrics
from transforms.connectors.base import DeliveryBatch, DeliveryError
from transforms.deliver import _Lane
from transforms.rules.records import Packaged
from transforms.rules.retry import Outcome


class Tally:
    """Stands in for a Beam counter or distribution: records every call."""

    def __init__(self) -> None:
        self.total = 0
        self.values: list[int] = []

    def inc(self, n: int = 1) -> None:
        self.total += n

    def update(self, value: int) -> None:
        self.values.append(value)


def observer() -> tuple[_Lane, list[Tally], dict[str, Tally], dict[str, Tally]]:
    lane = _Lane.__new__(_Lane)
    fresh = [Tally() for _ in metrics.FRESHNESS_COUNTERS]
    counters = {metrics.FRESHNESS_UNKNOWN: Tally()}
    dists = {metrics.BATCH_SIZE: Tally(), metrics.DELIVERY_LATENCY_MS: Tally()}
    lane.freshness = fresh  # type: ignore[assignment]
    lane.counters = counters  # type: ignore[assignment]
    lane.distributions = dists  # type: ignore[assignment]
    return lane, fresh, counters, dists


def reference(items: list[Packaged], failed: set[int], now_ms: int) -> tuple[list[int], int, list]:
    buckets = [0] * len(metrics.FRESHNESS_COUNTERS)
    unknown, ages = 0, []
    for item in items:
        if id(item) in failed:
            continue
        if item.time_ms is None:
            unknown += 1
            continue
        age = max(now_ms - item.time_ms, 0)
        buckets[bisect.bisect_left(metrics.FRESHNESS_BOUNDS_MS, age)] += 1
        ages.append(age)
    return buckets, unknown, sorted(ages)


@pytest.mark.parametrize("seed", range(20))
def test_per_batch_counts_equal_per_event_counts(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    now_ms = 1_764_136_800_000
    monkeypatch.setattr(time, "time", lambda: now_ms / 1000)
    bounds = [*metrics.FRESHNESS_BOUNDS_MS, 40_000_000_000]
    times: list[int | None] = []
    for _ in range(rng.randrange(1, 300)):
        pick = rng.random()
        if pick < 0.1:
            times.append(None)
        elif pick < 0.2:
            times.append(now_ms + rng.randrange(1, 10_000))  # in the future: age 0
        elif pick < 0.4:
            times.append(now_ms - rng.choice(bounds) - rng.choice([-1, 0, 1]))  # edges
        else:
            times.append(now_ms - rng.randrange(0, 10**11))
    items = [Packaged(f"e{n}", t, "x", {}, {}) for n, t in enumerate(times)]
    failures = rng.sample(items, k=rng.randrange(0, len(items) // 3 + 1))
    failed = [(i, DeliveryError("no", False), 1) for i in failures]
    outcome = Outcome(delivered=len(items) - len(failures), failed=failed)
    lane, fresh, counters, dists = observer()
    lane.observe(DeliveryBatch("c", "", items), outcome)
    buckets, unknown, ages = reference(items, {id(i) for i in failures}, now_ms)
    assert [t.total for t in fresh] == buckets
    assert counters[metrics.FRESHNESS_UNKNOWN].total == unknown
    assert sorted(dists[metrics.DELIVERY_LATENCY_MS].values) == ages
    assert dists[metrics.BATCH_SIZE].values == [outcome.delivered]


def test_no_zero_increments(monkeypatch: pytest.MonkeyPatch) -> None:
    lane, fresh, counters, _ = observer()
    now_ms = 1_764_136_800_000
    monkeypatch.setattr(time, "time", lambda: now_ms / 1000)
    items = [Packaged("a", now_ms - 50, "x", {}, {}), Packaged("b", now_ms - 60, "x", {}, {})]
    calls: list[Any] = []
    for t in fresh:
        t.inc = lambda n=1, calls=calls: calls.append(n)  # type: ignore[method-assign]
    lane.observe(DeliveryBatch("c", "", items), Outcome(delivered=2))
    assert calls == [2]  # one bucket, counted once; no inc(0) for the others
    assert counters[metrics.FRESHNESS_UNKNOWN].total == 0
