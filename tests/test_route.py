from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_event
from transforms.rules.route import RouteRule, compile_condition, session_bucket


def cond(field: str, op: str, value: object = None):
    return compile_condition(field, op, value)


E = make_event(fluxdata={"num_errors": 2, "bitrate": 4500.5, "live": True, "label": "abc"})


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("metadata.geo.country_code", "eq", "US", True),
        ("metadata.geo.country_code", "eq", "CA", False),
        ("metadata.geo.country_code", "ne", "CA", True),
        ("metadata.geo.country_code", "ne", "US", False),
        ("metadata.geo.country_code", "in", ["US", "CA"], True),
        ("metadata.geo.country_code", "in", ["GB"], False),
        ("metadata.geo.country_code", "not_in", ["GB"], True),
        ("metadata.geo.country_code", "not_in", ["US"], False),
        ("metadata.geo.country_code", "exists", True, True),
        ("metadata.geo.country_code", "exists", False, False),
        ("fluxdata.num_errors", "gt", 1, True),
        ("fluxdata.num_errors", "gt", 2, False),
        ("fluxdata.num_errors", "gte", 2, True),
        ("fluxdata.num_errors", "lt", 3, True),
        ("fluxdata.num_errors", "lte", 1, False),
        ("fluxdata.bitrate", "gt", 4500, True),
        ("metadata.device.os", "regex", "^i", True),
        ("metadata.device.os", "regex", "OS", True),  # search, not full match
        ("metadata.device.os", "regex", "^OS$", False),
        ("event.type", "eq", "heartbeat", True),
        ("event_id", "eq", "s1-1", True),
    ],
)
def test_each_op(field: str, op: str, value: object, expected: bool) -> None:
    assert cond(field, op, value)(E) is expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "x", False),
        ("ne", "x", True),
        ("in", ["x"], False),
        ("not_in", ["x"], True),
        ("exists", True, False),
        ("exists", False, True),
        ("gt", 0, False),
        ("gte", 0, False),
        ("lt", 0, False),
        ("lte", 0, False),
        ("regex", ".*", False),
    ],
)
def test_missing_field(op: str, value: object, expected: bool) -> None:
    assert cond("metadata.nope.deeper", op, value)(E) is expected
    # A path through a non-object is missing too.
    assert cond("metadata.geo.country_code.x", op, value)(E) is expected


def test_booleans_are_not_numbers() -> None:
    assert cond("fluxdata.live", "gt", 0)(E) is False
    assert cond("fluxdata.live", "eq", 1)(E) is False
    assert cond("fluxdata.live", "eq", True)(E) is True
    assert cond("fluxdata.live", "in", [1, 2])(E) is False
    assert cond("fluxdata.num_errors", "eq", True)(E) is False


def test_numeric_ops_false_for_strings_and_regex_false_for_numbers() -> None:
    assert cond("fluxdata.label", "gt", 0)(E) is False
    assert cond("fluxdata.num_errors", "regex", "2")(E) is False


def test_unicode_values() -> None:
    assert cond("metadata.content.title", "regex", "⚽")(E) is True
    assert cond("metadata.content.title", "regex", "\u2028")(E) is True


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("in", "US", "list"),
        ("gt", "5", "number"),
        ("gt", True, "number"),
        ("exists", "yes", "true or false"),
        ("regex", "(", "does not compile"),
        ("like", 1, "unknown op"),
    ],
)
def test_bad_conditions_are_refused(op: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cond("a.b", op, value)


def test_event_type_lists() -> None:
    rule = RouteRule.compile(events=["heartbeat", "error"], exclude_events=["error"])
    assert rule.matches(make_event(etype="heartbeat"))
    assert not rule.matches(make_event(etype="error"))  # exclude wins
    assert not rule.matches(make_event(etype="seek"))
    assert "not in events" in (rule.explain(make_event(etype="seek")) or "")
    assert RouteRule.compile().matches(make_event(etype="anything"))
    assert not RouteRule.compile(exclude_events=["seek"]).matches(make_event(etype="seek"))


def test_all_conditions_must_hold_and_explain_names_the_failing_one() -> None:
    rule = RouteRule.compile(
        when=[
            {"field": "metadata.geo.country_code", "op": "eq", "value": "US"},
            {"field": "metadata.device.os", "op": "eq", "value": "Android"},
        ]
    )
    assert not rule.matches(E)
    assert rule.explain(E) == "condition failed: when[1]: metadata.device.os eq 'Android' was false"


def test_sampling_is_stable_per_session_and_close_to_the_fraction() -> None:
    rule = RouteRule.compile(sample_sessions=0.3)
    kept_sessions = set()
    for s in range(4000):
        verdicts = {
            rule.matches(make_event(event_id=f"s{s}-{i}", session_id=f"s{s}")) for i in range(3)
        }
        assert len(verdicts) == 1, "all events of a session go or none do"
        if verdicts.pop():
            kept_sessions.add(s)
    assert 0.27 < len(kept_sessions) / 4000 < 0.33
    assert RouteRule.compile(sample_sessions=0.0).matches(E) is False
    assert RouteRule.compile(sample_sessions=1.0).matches(E) is True


# The documented rule, computed by hand: the first 8 bytes of BLAKE2b-64("abc") read as a
# big-endian integer, over 2**64 (`b2sum -l 64` of "abc" prints d8bb14d833d59559).
ABC_BUCKET = 0xD8BB14D833D59559 / 2**64


@pytest.mark.integration  # starts a process
def test_session_bucket_is_the_documented_hash_in_every_process() -> None:
    assert session_bucket("abc") == ABC_BUCKET
    assert (
        session_bucket("s1")
        == int.from_bytes(hashlib.blake2b(b"s1", digest_size=8).digest(), "big") / 2**64
    )
    # Another interpreter with another string-hash seed: the same numbers, to the bit.
    script = (
        "from transforms.rules.route import session_bucket;"
        "print(repr(session_bucket('abc')), repr(session_bucket('s1')))"
    )
    values = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
        values.add(out.stdout.strip())
    assert values == {f"{session_bucket('abc')!r} {session_bucket('s1')!r}"}


def test_sampling_without_session_uses_event_id() -> None:
    rule = RouteRule.compile(sample_sessions=0.5)
    kept = sum(rule.matches(make_event(event_id=f"e{i}", session_id=None)) for i in range(2000))
    assert 850 < kept < 1150


def test_matches_and_explain_agree() -> None:
    rule = RouteRule.compile(
        events=["heartbeat"],
        when=[{"field": "fluxdata.num_errors", "op": "lt", "value": 5}],
        sample_sessions=0.5,
    )
    for i in range(300):
        e = make_event(event_id=f"x{i}", session_id=f"s{i}", etype=["heartbeat", "seek"][i % 2])
        assert rule.matches(e) == (rule.explain(e) is None)
