"""Unit tests of the shared retry algorithm (pure Python).

These drive :func:`deliver_with_retries` with a scripted sink: the algorithm itself has no
I/O, so a scripted outcome sequence is the direct way to check every branch. The same
code runs against real stand-ins in the connector and end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_event
from transforms.connectors import _api, base
from transforms.connectors.base import (
    DeliveryBatch,
    DeliveryError,
    PartialDeliveryError,
    Sink,
    WriteResult,
)
from transforms.rules import delivery
from transforms.rules.delivery import ItemFailure
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


def test_one_partial_delivery_error_for_every_connector() -> None:
    # Connectors import it from base, API connectors used to get a subclass from _api.
    assert _api.PartialDeliveryError is base.PartialDeliveryError is delivery.PartialDeliveryError
    assert _api.ItemFailure is base.ItemFailure is delivery.ItemFailure
    assert base.DeliveryBatch is delivery.DeliveryBatch
    assert base.WriteResult is delivery.WriteResult
    assert base.DeliveryError is delivery.DeliveryError


OUTCOMES = st.sampled_from(
    [None, (True, 429, 2.0), (True, 503, None), (False, 400, None), (False, 413, None)]
)


@given(st.lists(OUTCOMES, min_size=1, max_size=12))
def test_a_partial_failure_means_the_same_named_by_id_or_by_position(
    plan: list[tuple[bool, int, float | None] | None],
) -> None:
    b = batch(len(plan))
    failures = [
        ItemFailure(n, f"e{n}", retryable, f"refused {status}", status, after)
        for n, step in enumerate(plan)
        if step is not None
        for retryable, status, after in [step]
    ]
    delivered = WriteResult("x", len(plan) - len(failures), 7)
    by_id = PartialDeliveryError(
        "some failed", delivered, {f.event_id: f.error() for f in failures}
    )
    by_position = PartialDeliveryError("some failed", delivered, failures=failures, requests=2)

    def meaning(exc: PartialDeliveryError) -> object:
        return (
            str(exc),
            exc.retryable,
            exc.status,
            exc.retry_after_s,
            exc.delivered,
            exc.failed_event_ids,
            [(k, str(e), e.retryable, e.status) for k, e in exc.failed.items()],
            [
                None if e is None else (str(e), e.retryable, e.status)
                for e in exc.errors_for(b.items)
            ],
            exc.item_failures(b.items),
            exc.retry_batch(b),
            exc.dead_items(b),
        )

    assert meaning(by_id) == meaning(by_position)
    assert by_position.failures == tuple(failures) and by_position.requests == 2
    assert by_id.failures == () and by_id.requests == 0
    outcomes = []
    for exc in (by_id, by_position):
        sink = ScriptedSink([exc, None])
        out = deliver_with_retries(sink, b, policy()[0])
        outcomes.append(
            (sink.calls, out.delivered, [(i.event_id, e.status) for i, e, _ in out.failed])
        )
        assert out.delivered + len(out.failed) == len(plan)  # every event accounted for
    assert outcomes[0] == outcomes[1]


def test_a_partial_failure_by_position_tells_repeated_event_ids_apart() -> None:
    items = [Packaged("dup", 1, "heartbeat", {}, {}) for _ in range(3)]
    b = DeliveryBatch("c", "", items)
    exc = PartialDeliveryError(
        "1 of 3 failed",
        WriteResult("x", 2, 5),
        failures=[ItemFailure(1, "dup", False, "mapping", 400)],
    )
    assert [e is not None for e in exc.errors_for(items)] == [False, True, False]
    assert [f.index for _, f in exc.dead_items(b)] == [1] and exc.retry_batch(b) is None
    out = deliver_with_retries(ScriptedSink([exc]), b, policy()[0])
    assert out.delivered == 2 and [e.status for _, e, _ in out.failed] == [400]


def test_a_partial_failure_refuses_two_lists_of_failures() -> None:
    failure = ItemFailure(0, "e0", False, "mapping", 400)
    with pytest.raises(ValueError, match="not both"):
        PartialDeliveryError(
            "x", WriteResult("x", 0, 0), {"e0": failure.error()}, failures=[failure]
        )


class BareWriter:
    """Only what the retry code needs of a sink (no connector base class)."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, batch: DeliveryBatch) -> WriteResult:
        self.calls += 1
        status = 503 if self.calls == 1 else 400
        raise DeliveryError(f"{status} from https://u:s3cret@h/", status == 503, status)

    def redact(self, text: str) -> str:
        return text.replace("s3cret", "***")


def test_retries_need_only_write_and_redact_of_a_sink() -> None:
    writer = BareWriter()
    out = deliver_with_retries(writer, batch(), policy()[0])
    assert writer.calls == 2 and out.retries == 1 and out.delivered == 0
    assert {str(e) for _, e, _ in out.failed} == {"400 from https://u:***@h/"}


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
