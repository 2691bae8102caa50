"""Hostile delivery: secrets in endpoint URLs, sinks that mis-count, absurd ``Retry-After``.

Issue 19, items 4, 5 and 11 (header part):

* a webhook whose token is in its URL path never shows the token in an exception, a dead
  letter, a retry record or a log line, whatever the receiver answers (400, 503, refused);
  and the one shared :func:`~transforms.connectors._policy.redact` removes any secret from
  any text, raw or URL-encoded;
* a sink whose result does not account for every event of its batch cannot lose events:
  the missing ones become ``sink_unaccounted`` dead letters (a sink claiming more is
  capped and counted); New Relic reports an event too large to send as a dead letter;
* ``Retry-After`` parsing and :meth:`RetryPolicy.delay` are total: any header gives a
  finite, non-negative wait or none.
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_event
from tests.receivers.apis import NewRelicEventApi, WebhookApi
from tests.receivers.base import Receiver
from tests.receivers.credentials import NEW_RELIC_ACCOUNT, NEW_RELIC_KEY
from transforms.connectors import CONNECTORS, make_sink
from transforms.connectors._http import classify
from transforms.connectors._policy import parse_retry_after, redact
from transforms.connectors.base import (
    DeliveryBatch,
    DeliveryError,
    PartialDeliveryError,
    Sink,
    WriteResult,
)
from transforms.connectors.secrets import SecretRef
from transforms.rules.records import Packaged
from transforms.rules.retry import (
    MAX_BACKOFF_S,
    MAX_RETRY_AFTER_S,
    RetryPolicy,
    deliver_with_retries,
    settle_failures,
)

pytest_plugins = ["tests.receivers.fixtures"]

SCHEDULE = (300.0, 600.0)


def items(n: int, **extra: Any) -> list[Packaged]:
    out = []
    for i in range(n):
        event = make_event(event_id=f"e{i}")
        record = {"event_id": f"e{i}", "eventType": "Heartbeat", **extra}
        out.append(Packaged(f"e{i}", 1764136800123 + i, "heartbeat", record, event))
    return out


def no_sleep() -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []
    return RetryPolicy(immediate=2, sleep=waits.append), waits


# -- item 4: a token in the endpoint's path --------------------------------------------------

TOKEN = "xoxb" + os.urandom(12).hex()
HOOK_PATH = "/services/T0001/B0002/" + TOKEN


@pytest.fixture(params=["part", "whole"])
def hook(
    request: pytest.FixtureRequest, start_receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """A webhook receiver at a path holding ``TOKEN``, and an http sink referencing it.

    The endpoint references the token (``.../${env:TEST_HOOK_TOKEN}``) or is one whole
    reference (``${env:TEST_HOOK_URL}``), as the config loader hands it over (a SecretRef).
    """
    monkeypatch.setenv("TEST_HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_HOOK_URL", "")
    receiver = start_receiver(WebhookApi(HOOK_PATH, {}, "json_array"))
    endpoint: Any = receiver.url + "/services/T0001/B0002/${env:TEST_HOOK_TOKEN}"
    if request.param == "whole":
        monkeypatch.setenv("TEST_HOOK_URL", receiver.url + HOOK_PATH)
        endpoint = SecretRef("${env:TEST_HOOK_URL}")
    section = {"endpoint": endpoint, "timeouts": {"connect_s": 2, "read_s": 5}}
    deliver = CONNECTORS["http"].deliver_model.model_validate(section)
    assert TOKEN not in repr(deliver) + str(deliver.model_dump())  # the config keeps references
    sink = make_sink("hook", "http", deliver)
    sink.open()
    yield receiver, sink
    sink.close()


def assert_no_token(*texts: Any) -> None:
    for text in texts:
        assert TOKEN not in str(text)
        assert quote(TOKEN) not in str(text)


def test_the_secret_endpoint_is_used_and_never_shown(
    hook: tuple[Receiver, Sink], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, sink = hook
    caplog.set_level(logging.DEBUG)
    # The token really is the path: delivery works, so the checks below are not vacuous.
    ok = sink.write(DeliveryBatch("hook", "", items(2)))
    assert ok.events == 2 and len(receiver.items) == 2
    assert_no_token(ok.name)

    echo = f'{{"error": "no channel for {HOOK_PATH}?token={TOKEN}"}}'.encode()
    faults = [
        ("400", lambda: receiver.fail(times=None, status=400, body=echo)),
        (
            "503",
            lambda: receiver.fail(times=None, status=503, body=echo, headers={"Retry-After": "1"}),
        ),
        ("refused", receiver.outage),
    ]
    for label, inject in faults:
        inject()
        batch = DeliveryBatch("hook", "", items(3))
        with pytest.raises(DeliveryError) as raised:
            sink.write(batch)
        assert_no_token(raised.value, *raised.value.args)

        policy, _ = no_sleep()
        outcome = deliver_with_retries(sink, batch, policy)
        assert outcome.delivered == 0 and len(outcome.failed) == 3, label
        record, letters = settle_failures(batch, outcome, SCHEDULE, delayed_enabled=True)
        _, final = settle_failures(batch, outcome, SCHEDULE, delayed_enabled=False)
        dumped = [json.dumps(d.to_json_dict()) for d in letters + final]
        assert dumped, label
        if record is not None:
            assert_no_token(record.last_error, json.dumps(record.to_json_dict()))
        assert_no_token(*dumped, *(str(e) for _, e, _ in outcome.failed))
        receiver.clear_faults()
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert_no_token(*logged)


def test_a_partly_refused_batch_does_not_name_the_secret_endpoint(
    hook: tuple[Receiver, Sink],
) -> None:
    receiver, sink = hook
    receiver.fail(times=None, status=400, body=b'{"error": "bad"}')
    huge = items(1, pad="x" * 6_000_000)  # beyond max_request_bytes: refused before sending
    batch = DeliveryBatch("hook", "", items(2) + huge)
    with pytest.raises(PartialDeliveryError) as raised:
        sink.write(batch)
    assert_no_token(raised.value, *(str(e) for e in raised.value.failed.values()))


SECRET_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))


def embed(secret: str, how: str) -> str:
    forms = {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "quote_path": quote(secret),
        "quote_plus": quote_plus(secret),
        "lower_hex": quote(secret, safe="").lower() if secret.isascii() else quote(secret, safe=""),
        "path": f"https://hooks.example.com/services/{quote(secret)}/x",
        "query": f"https://api.example.com/v1?token={quote_plus(secret)}&b=1",
        "json": json.dumps(secret)[1:-1],
        "json_ascii": json.dumps(secret, ensure_ascii=True)[1:-1],
    }
    return forms[how]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    secrets=st.lists(st.text(SECRET_CHARS, min_size=4, max_size=40), min_size=1, max_size=3),
    pieces=st.lists(
        st.one_of(
            st.text(max_size=20),
            st.tuples(
                st.integers(0, 2),
                st.sampled_from(
                    [
                        "raw",
                        "quote",
                        "quote_path",
                        "quote_plus",
                        "lower_hex",
                        "path",
                        "query",
                        "json",
                        "json_ascii",
                    ]
                ),
            ),
        ),
        max_size=8,
    ),
)
def test_redacted_text_never_contains_a_secret(secrets: list[str], pieces: list[Any]) -> None:
    text = "".join(
        p if isinstance(p, str) else embed(secrets[p[0] % len(secrets)], p[1]) for p in pieces
    )
    cleaned = redact(text, secrets)
    for secret in secrets:
        assert secret not in cleaned
        assert quote(secret, safe="") not in cleaned
        assert quote_plus(secret) not in cleaned


# -- item 5: every event of a batch accounted for -------------------------------------------


class MiscountingSink(Sink):
    """A broken sink (test-only, registered nowhere): reports ``claim(n)`` events delivered."""

    def __init__(self, claim: Any):
        self.connector_id = "broken"
        self.claim = claim

    def write(self, batch: DeliveryBatch) -> WriteResult:
        return WriteResult(name="x", events=self.claim(len(batch.items)), bytes=1)


class MiscountingPartialSink(Sink):
    """A broken sink whose partial failure names ``failed`` events and claims ``claimed``."""

    def __init__(self, failed: int, claimed: int):
        self.connector_id = "broken"
        self.failed, self.claimed = failed, claimed

    def write(self, batch: DeliveryBatch) -> WriteResult:
        bad = {i.event_id: DeliveryError("refused", False, 400) for i in batch.items[: self.failed]}
        raise PartialDeliveryError("part", WriteResult("x", self.claimed, 1), bad)


def settle_all(batch: DeliveryBatch, sink: Sink) -> tuple[Any, list[Any]]:
    policy, _ = no_sleep()
    outcome = deliver_with_retries(sink, batch, policy)
    record, letters = settle_failures(batch, outcome, SCHEDULE, delayed_enabled=False)
    assert record is None
    return outcome, letters


@given(n=st.integers(1, 30), claim=st.integers(0, 60))
def test_a_sink_that_miscounts_cannot_lose_or_invent_events(n: int, claim: int) -> None:
    batch = DeliveryBatch("broken", "", items(n))
    outcome, letters = settle_all(batch, MiscountingSink(lambda _: claim))
    assert outcome.delivered + len(letters) == n  # conservation
    assert outcome.delivered == min(claim, n)
    unaccounted = [d for d in letters if d.reason == "sink_unaccounted"]
    assert len(unaccounted) == max(n - claim, 0) == len(letters)
    assert all("reported" in d.error and d.event is not None for d in unaccounted)
    assert outcome.overclaimed == max(claim - n, 0)


@given(n=st.integers(1, 20), failed=st.integers(0, 20), claimed=st.integers(0, 40))
def test_a_partial_failure_that_miscounts_cannot_lose_or_invent_events(
    n: int, failed: int, claimed: int
) -> None:
    failed = min(failed, n)
    batch = DeliveryBatch("broken", "", items(n))
    outcome, letters = settle_all(batch, MiscountingPartialSink(failed, claimed))
    assert outcome.delivered + len(letters) == n
    refused = [d for d in letters if d.reason == "not_retryable"]
    assert len(refused) == failed
    unaccounted = [d for d in letters if d.reason == "sink_unaccounted"]
    assert len(unaccounted) == max(n - failed - claimed, 0)
    assert outcome.overclaimed == max(claimed - (n - failed), 0)


def test_new_relic_reports_an_event_too_large_to_send(start_receiver: Any) -> None:
    receiver = start_receiver(NewRelicEventApi(NEW_RELIC_ACCOUNT, NEW_RELIC_KEY))
    deliver = CONNECTORS["new_relic"].deliver_model.model_validate(
        {"endpoint": receiver.url, "account_id": NEW_RELIC_ACCOUNT, "api_key": NEW_RELIC_KEY}
    )
    sink = make_sink("nr", "new_relic", deliver)
    sink.open()
    try:
        small = items(1)
        # 10.5 MB of hex: beyond the 10 MB New Relic can take before compression.
        huge = items(1, pad=os.urandom(5_250_000).hex())
        batch = DeliveryBatch("nr", "", [small[0], huge[0]._replace(event_id="big")])
        outcome, letters = settle_all(batch, sink)
    finally:
        sink.close()
    assert outcome.delivered == 1 and len(receiver.items) == 1
    assert len(letters) == 1 and letters[0].reason == "not_retryable"
    assert "1 MB" in letters[0].error and letters[0].status is None


# -- item 11: Retry-After is total -------------------------------------------------------------

NOW = datetime(2025, 11, 26, 6, 0, 0, tzinfo=timezone.utc)

HOSTILE_HEADERS = st.one_of(
    st.text(),
    st.sampled_from(
        [
            "NaN",
            "nan",
            "-nan",
            "inf",
            "+inf",
            "-inf",
            "Infinity",
            "1e309",
            "-1e309",
            "1e308",
            "-3",
            "9" * 400,
            "0x10",
            "1_000",
            "\u0663",  # an Arabic-Indic digit: float() accepts it
            "Wed, 26 Nov 2025 06:00:10 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Wed, 26 Nov 2025 06:00:10 +9999",
            "Wed, 99 Nov 2025 06:00:10 GMT",
            "26 Nov 2025",
        ]
    ),
    st.floats().map(repr),
    st.integers().map(str),
)


@given(value=st.one_of(st.none(), HOSTILE_HEADERS))
def test_retry_after_parsing_is_total(value: str | None) -> None:
    for now in (NOW, None):
        seconds = parse_retry_after(value, now)
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    error = classify(503, {"Retry-After": value or ""}, b"", "t POST /p")
    assert error is not None
    assert error.retry_after_s is None or math.isfinite(error.retry_after_s)


@given(
    retry=st.integers(-5, 100_000),
    retry_after=st.one_of(st.none(), st.floats()),
)
def test_retry_delay_is_total(retry: int, retry_after: float | None) -> None:
    policy = RetryPolicy(immediate=3)
    delay = policy.delay(retry, DeliveryError("x", True, 503, retry_after))
    assert math.isfinite(delay) and 0 <= delay <= max(MAX_RETRY_AFTER_S, MAX_BACKOFF_S)


def test_a_nan_retry_after_from_a_destination_does_not_crash_the_sleep(
    start_receiver: Any,
) -> None:
    receiver = start_receiver(WebhookApi("/h", {}, "json_array"))
    receiver.fail(times=2, status=429, headers={"Retry-After": "NaN"})
    deliver = CONNECTORS["http"].deliver_model.model_validate({"endpoint": receiver.url + "/h"})
    sink = make_sink("hook", "http", deliver)
    sink.open()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):  # what time.sleep refuses
            raise ValueError(f"sleep length {seconds}")
        slept.append(seconds)

    try:
        outcome = deliver_with_retries(
            sink, DeliveryBatch("hook", "", items(2)), RetryPolicy(immediate=3, sleep=sleep)
        )
    finally:
        sink.close()
    assert outcome.delivered == 2 and len(slept) == 2
