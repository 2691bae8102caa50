"""Deliver caps what a connector holds in flight in events, not only in batches.

Each event waiting for its write holds its record and original line in memory; counted
in batches alone, a slow connector with big batches could hold 16 * concurrency of them.
Beyond ``deliver.max_pending_events`` (but never below ``concurrency`` batches) the
connector counts as not keeping up: its new batches are parked in the retry location
without an attempt. Driven here against the webhook stand-in, slowed down, so the first
writes are still in flight when the next batches arrive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from tests.receivers.base import Receiver
from tests.receivers.credentials import make_api, webhook_connector
from transforms.config import parse_config
from transforms.connectors.base import DeliveryBatch
from transforms.deliver import RETRY, Delivered, _DeliverBatch
from transforms.rules.records import Packaged, RetryRecord

pytest_plugins = ["tests.receivers.fixtures"]


@pytest.fixture
def webhook(start_receiver: Any, secret_env: dict[str, str]) -> Receiver:
    return start_receiver(make_api("http"))


def batch(tag: str, size: int) -> DeliveryBatch:
    items = [
        Packaged(f"{tag}-{i}", 1764136800123, "heartbeat", None, b"{}", b'{"n":1}')
        for i in range(size)
    ]
    return DeliveryBatch("hook", "", items)


def deliver_fn(tmp_path: Path, url: str, concurrency: int, pending: int) -> _DeliverBatch:
    hook = webhook_connector(
        url,
        "{max_events: 1000}",
        f"concurrency: {concurrency}",
        f"max_pending_events: {pending}",
        retry="{immediate: 0}",
    )
    config = parse_config(
        f'connectors:\n{hook}\ndead_letter: {{path: "{tmp_path}/dl"}}\n'
        f'retry_location: "{tmp_path}/retry"\n'
    )
    fn = _DeliverBatch(config)
    fn.setup()
    fn.start_bundle()
    return fn


def spilled(out: list[Any]) -> list[RetryRecord]:
    return [o.value.value for o in out if isinstance(o, TaggedOutput) and o.tag == RETRY]


@pytest.mark.parametrize(
    ("concurrency", "pending", "sizes", "accepted"),
    [
        # 10 + 10 + 10 events in flight: the fourth batch finds 30 >= 25 waiting.
        (1, 25, [10, 10, 10, 10, 10], 3),
        # Batches larger than the cap: still `concurrency` of them at once.
        (2, 25, [100, 100, 100], 2),
    ],
)
def test_a_connector_holds_at_most_max_pending_events_beyond_its_concurrency(
    tmp_path: Path,
    webhook: Receiver,
    concurrency: int,
    pending: int,
    sizes: list[int],
    accepted: int,
) -> None:
    fn = deliver_fn(tmp_path, webhook.url, concurrency, pending)
    webhook.slow(1.0)  # the first writes are still in flight when the rest arrive
    where: dict[str, Any] = {"window": GlobalWindow(), "timestamp": Timestamp(0)}
    try:
        out: list[Any] = []
        for n, size in enumerate(sizes):
            out += list(fn.process(batch(f"b{n}", size), **where))
        parked = spilled(out)
        assert [r.items[0].event_id.split("-")[0] for r in parked] == [
            f"b{n}" for n in range(accepted, len(sizes))
        ]
        assert all(r.attempts == 0 and "not keeping up" in r.last_error for r in parked)
        done = list(fn.finish_bundle())
    finally:
        fn.teardown()
    delivered = [o.value for o in done if not isinstance(o, TaggedOutput)]
    assert all(isinstance(d, Delivered) for d in delivered)
    # Nothing lost: what was not parked was delivered.
    assert sum(d.events for d in delivered) == sum(sizes[:accepted])
    assert sum(len(r.items) for r in parked) == sum(sizes[accepted:])
    assert fn.lanes["hook"].in_flight_events == 0
