"""Filters without wildcards run as generated Python: the same results as the trie walk."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_filter_memo import TREES, reference_allow, reference_deny
from transforms.rules import filter as rules
from transforms.rules.filter import FieldFilter, GroupFilter, compile_patterns

SEGMENTS = st.sampled_from(["a", "b", "ab", "id", "x_1", "c"])
PATTERNS = st.lists(
    st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join)
    | st.lists(SEGMENTS, min_size=1, max_size=2).map(lambda p: ".".join(p) + ".*"),
    min_size=0,
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(patterns=PATTERNS, tree=TREES)
def test_generated_walks_equal_the_plain_walk(patterns: list[str], tree: dict[str, Any]) -> None:
    root = compile_patterns(patterns)
    group = GroupFilter(allow=root, deny=None)
    assert group.allow_fn is not None and hasattr(group.allow_fn, "__source__")
    allowed = group.allow_fn(tree)
    assert allowed == reference_allow(tree, [root])
    assert list(allowed) == list(reference_allow(tree, [root]))  # the object's key order
    assert allowed == rules._allow(tree, root.state)
    group = GroupFilter(allow=None, deny=root)
    assert group.deny_fn is not None
    denied = group.deny_fn(tree)
    expected = reference_deny(tree, [root])
    assert denied == expected
    assert list(denied) == list(expected)
    assert (denied is tree) == (expected is tree)  # unchanged objects are shared, not copied


def test_wildcard_tries_keep_the_memoized_walk() -> None:
    group = GroupFilter(allow=compile_patterns(["device.*", "*.id"]), deny=None)
    assert not hasattr(group.allow_fn, "__source__")
    tree = {"device": {"os": "iOS"}, "user": {"id": "u", "x": 1}, "z": 1}
    assert group.apply(tree) == {"device": {"os": "iOS"}, "user": {"id": "u"}}


def test_keys_reach_the_source_only_as_literals() -> None:
    hostile = "x' in obj: exit(3)\n    if 'x"  # no wildcard characters, no dot
    f = FieldFilter.compile({"metadata": {"allow": [hostile + ".y", "plain"]}})
    group = f.groups[0][1]
    assert repr(hostile) in group.allow_fn.__source__  # type: ignore[union-attr]
    event = {"metadata": {hostile: {"y": 1, "z": 2}, "plain": 3, "other": 4}}
    assert f.apply(event) == {"metadata": {hostile: {"y": 1}, "plain": 3}}


def test_the_connectors_filters_are_generated() -> None:
    f = FieldFilter.compile(
        {
            "metadata": {"allow": ["device.*", "player.*", "geo.country_code"]},
            "fluxdata": {"deny": ["playhead_position_sec"]},
        }
    )
    (_, metadata), (_, fluxdata) = f.groups
    assert "def _allow_0(obj):" in metadata.allow_fn.__source__  # type: ignore[union-attr]
    assert "def _deny_0(obj):" in fluxdata.deny_fn.__source__  # type: ignore[union-attr]
    event = {
        "event_id": "e",
        "metadata": {"device": {"os": "iOS"}, "geo": {"city": "c", "country_code": "US"}},
        "fluxdata": {"playhead_position_sec": 1.5, "bitrate": 4500},
    }
    assert f.apply(event) == {
        "event_id": "e",
        "metadata": {"device": {"os": "iOS"}, "geo": {"country_code": "US"}},
        "fluxdata": {"bitrate": 4500},
    }


GROUP_RULES = st.none() | st.fixed_dictionaries(
    {},
    optional={"allow": PATTERNS | st.just(["a.*", "*.id"]), "deny": PATTERNS},
)
GROUP_VALUES = TREES | st.integers(0, 2) | st.none()


@settings(max_examples=300, deadline=None)
@given(
    metadata=GROUP_RULES,
    fluxdata=GROUP_RULES,
    hashed=st.booleans(),
    event=st.fixed_dictionaries(
        {"event_id": st.just("e")},
        optional={"metadata": GROUP_VALUES, "fluxdata": GROUP_VALUES, "other": TREES},
    ),
)
def test_the_fused_filter_equals_the_apply_method(
    metadata: dict[str, Any] | None,
    fluxdata: dict[str, Any] | None,
    hashed: bool,
    event: dict[str, Any],
) -> None:
    spec: dict[str, Any] = {"metadata": metadata, "fluxdata": fluxdata}
    if hashed:
        spec["hash"] = {"paths": ["metadata.a", "event_id"], "key": "k", "length": 8}
    f = FieldFilter.compile(spec)
    assert "def _filter(event):" in f.apply.__source__  # type: ignore[attr-defined]
    fused = f.apply(event)
    method = FieldFilter.apply(f, event)  # the definition, group by group
    assert fused == method and list(fused) == list(method)
    assert (fused is event) == (method is event)
