"""Compiled route conditions against the semantics they replaced (frozenset, path getters)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.rules.events import MISSING, get_path, path_getter
from transforms.rules.route import RouteRule, _member, compile_condition

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.floats(allow_nan=False, min_value=-2, max_value=2),
    st.sampled_from(["US", "CA", "", "1", "True"]),
    st.lists(st.integers(0, 1), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 1), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    choices=st.lists(st.sampled_from(["US", "CA", "", "1", "True", "MX"]), min_size=1),
    got=VALUES,
    present=st.booleans(),
)
def test_string_choices_answer_like_the_generic_member(
    choices: list[str], got: Any, present: bool
) -> None:
    event = {"metadata": {"geo": {"country_code": got}}} if present else {"metadata": {}}
    value = get_path(event, ("metadata", "geo", "country_code"))
    for op, expected in (("in", _member(value, choices)), ("not_in", not _member(value, choices))):
        assert compile_condition("metadata.geo.country_code", op, choices)(event) is expected


@pytest.mark.parametrize(
    ("choices", "got", "expected"),
    [
        ([1, "1"], 1, True),  # mixed choices keep the generic comparison
        ([1, "1"], True, False),  # a boolean is not the number 1
        ([True], 1, False),
        ([1.0], 1, True),
        ([], "US", False),
        (["US"], ["US"], False),
    ],
)
def test_mixed_choices(choices: list[Any], got: Any, expected: bool) -> None:
    assert compile_condition("f", "in", choices)({"f": got}) is expected
    assert compile_condition("f", "not_in", choices)({"f": got}) is not expected


PATH_TREES = st.recursive(
    st.none() | st.integers(0, 2) | st.text(max_size=1) | st.lists(st.integers(0, 1), max_size=1),
    lambda inner: st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(obj=PATH_TREES, path=st.lists(st.sampled_from(["a", "b"]), min_size=0, max_size=5))
def test_path_getter_equals_get_path(obj: Any, path: list[str]) -> None:
    got = path_getter(tuple(path))(obj)
    expected = get_path(obj, tuple(path))
    assert got is expected or (got is not MISSING and got == expected)


def test_types_precomputed_from_events_and_exclusions() -> None:
    rule = RouteRule.compile(events=["a", "b"], exclude_events=["b"])
    assert rule.matches({"event": {"type": "a"}})
    assert not rule.matches({"event": {"type": "b"}})
    assert not rule.matches({"event": {"type": "c"}})
    anything = RouteRule.compile(exclude_events=["b"])
    assert anything.matches({"event": {"type": "c"}})
    assert not anything.matches({"event": {"type": "b"}})
    assert rule == RouteRule.compile(events=["b", "a"], exclude_events=["b"])


KINDS = st.sampled_from(["a", "b", "c"])


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(KINDS, max_size=3, unique=True),
    exclude=st.lists(KINDS, max_size=2, unique=True),
    condition=st.booleans(),
    sample=st.sampled_from([1.0, 0.5]),
    stream=st.lists(st.tuples(KINDS, st.sampled_from(["US", "CA"])), max_size=12),
)
def test_select_answers_like_matches_on_each_event(
    events: list[str],
    exclude: list[str],
    condition: bool,
    sample: float,
    stream: list[tuple[str, str]],
) -> None:
    when = [{"field": "metadata.geo.country_code", "op": "eq", "value": "US"}] if condition else []
    rule = RouteRule.compile(events, exclude, when, sample)
    chunk = [
        {
            "event_id": f"e{n}",
            "session_id": f"s{n}",
            "event": {"type": kind},
            "metadata": {"geo": {"country_code": country}},
        }
        for n, (kind, country) in enumerate(stream)
    ]
    kinds = [e["event"]["type"] for e in chunk]
    assert rule.select(chunk, kinds) == [i for i, e in enumerate(chunk) if rule.matches(e)]
