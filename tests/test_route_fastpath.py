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
