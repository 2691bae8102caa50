"""Unit tests of the shared retry algorithm (pure Python).

These drive :func:`deliver_with_retries` with a scripted sink: the algorithm itself has no
I/O, so a scripted outcome sequence is the direct way to check every branch. The same
code runs against real stand-ins in the connector and end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from tests.conftest import make_event
from transforms.connectors.base import (
    DeliveryBatch,
    DeliveryError,
    PartialDeliveryError,
    Sink,
    WriteResult,
)
from transforms.rules.records import Packaged, RetryRecord
from transforms.rules.retry import (
    MAX_RETRY_AFTER_S,
    RetryPolicy,
    deliver_with_retries,
    settle_failures,
)


class ScriptedSink(Sink):
    """Answers each write with the next scripted outcome (an exception or None = success)."""

    def __init__(self, script: Sequence[Exception | None]):
        self.connector_id = "c"
        self.script = list(script)
        self.calls: list[list[str]] = []

    def write(self, batch: DeliveryBatch) -> WriteResult:
        self.calls.append([i.event_id for i in batch.items])
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        return WriteResult(name="x", events=len(batch.items), bytes=10)


def batch(n: int = 3) -> DeliveryBatch:
    items = []
    for i in range(n):
        e = make_event(event_id=f"e{i}")
        items.append(Packaged(f"e{i}", 1, "heartbeat", e, e))
    return DeliveryBatch("c", "p/", items)


def policy(immediate: int = 3) -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []
    return RetryPolicy(immediate=immediate, sleep=waits.append), waits


def test_transient_errors_are_retried_then_delivered() -> None:
    sink = ScriptedSink([DeliveryError("503", True, 503), DeliveryError("503", True, 503), None])
    p, waits = policy()
    out = deliver_with_retries(sink, batch(), p)
    assert out.delivered == 3 and not out.failed and out.retries == 2
    assert len(sink.calls) == 3 and len(waits) == 2
    assert all(0 < w <= 2.0 for w in waits) and sum(waits) < 10


def test_retries_stop_after_immediate_attempts() -> None:
    sink = ScriptedSink([DeliveryError("down", True, 503)] * 10)
    p, waits = policy(immediate=3)
    out = deliver_with_retries(sink, batch(), p)
    assert len(sink.calls) == 4 and out.delivered == 0 and len(waits) == 3
    assert [(i.event_id, a) for i, _, a in out.failed] == [("e0", 4), ("e1", 4), ("e2", 4)]


def test_non_retryable_fails_at_once() -> None:
    sink = ScriptedSink([DeliveryError("400 bad", False, 400)])
    out = deliver_with_retries(sink, batch(), policy()[0])
    assert len(sink.calls) == 1 and len(out.failed) == 3 and out.failed[0][2] == 1


def test_retry_after_is_honoured_and_capped() -> None:
    sink = ScriptedSink(
        [DeliveryError("429", True, 429, retry_after_s=1.5), DeliveryError("429", True, 429, 60.0)]
    )
    p, waits = policy()
    deliver_with_retries(sink, batch(), p)
    assert waits == [1.5, MAX_RETRY_AFTER_S]


def test_partial_failure_resends_only_failed_retryable_items() -> None:
    partial = PartialDeliveryError(
        "2 of 3 failed",
        WriteResult("x", 1, 5),
        {"e1": DeliveryError("429", True, 429), "e2": DeliveryError("mapping", False, 400)},
    )
    sink = ScriptedSink([partial, None])
    out = deliver_with_retries(sink, batch(), policy()[0])
    assert sink.calls == [["e0", "e1", "e2"], ["e1"]]
    assert out.delivered == 2
    assert [(i.event_id, e.status) for i, e, _ in out.failed] == [("e2", 400)]


def test_settle_sends_retryable_to_delayed_retry_and_the_rest_to_dead_letters() -> None:
    b = batch()
    sink = ScriptedSink([DeliveryError("down", True, 503)] * 4)
    out = deliver_with_retries(sink, b, policy()[0])
    out.failed.append((b.items[0], DeliveryError("bad", False, 400), 1))
    record, letters = settle_failures(b, out, [300, 600], True, now_ms=1_000)
    assert record is not None
    assert [i.event_id for i in record.items] == ["e0", "e1", "e2"]
    assert record.delayed_attempts == 0 and record.attempts == 4
    assert record.not_before_ms == 1_000 + 300_000
    assert record.name.startswith("c/") and record.name.endswith(".json")
    assert [(d.reason, d.status) for d in letters] == [("not_retryable", 400)]
    # Without a retry location, retryable failures are dead letters at once.
    record, letters = settle_failures(b, out, [300, 600], False, now_ms=1_000)
    assert record is None and {d.reason for d in letters} == {"retries_exhausted", "not_retryable"}


def test_a_record_walks_the_whole_schedule_then_dies() -> None:
    schedule = [300.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0]
    b = batch(1)
    now = 0
    sink = ScriptedSink([DeliveryError("down", True, 503)] * 100)
    out = deliver_with_retries(sink, b, policy(3)[0])
    record, letters = settle_failures(b, out, schedule, True, now_ms=now)
    due_times = []
    while record is not None:
        assert not letters
        due_times.append(record.not_before_ms)
        now = record.not_before_ms
        stored = RetryRecord.from_json_dict(record.to_json_dict())  # survives storage
        redo = DeliveryBatch(stored.connector, stored.prefix, stored.items, retry=stored)
        out = deliver_with_retries(sink, redo, RetryPolicy(immediate=0, sleep=lambda s: None))
        record, letters = settle_failures(redo, out, schedule, True, now_ms=now)
    gaps = [b - a for a, b in zip([0, *due_times], due_times, strict=False)]
    assert gaps == [s * 1000 for s in schedule]
    assert len(sink.calls) == 4 + 6  # first try + 3 immediate retries + 6 delayed
    assert [(d.reason, d.attempts) for d in letters] == [("retries_exhausted", 10)]
    assert letters[0].event == b.items[0].event
