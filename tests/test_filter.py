from __future__ import annotations

import copy
import fnmatch
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_event
from transforms.rules.filter import FieldFilter, normalize_pattern


def apply(spec: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    return FieldFilter.compile(spec).apply(event)


def test_allow_keeps_only_listed_paths_and_subtrees(event: dict[str, Any]) -> None:
    out = apply({"metadata": {"allow": ["device.*", "player", "content.title"]}}, event)
    assert out["metadata"] == {
        "device": {"os": "iOS", "type": "mobile"},
        "player": {"name": "hls.js"},
        "content": {"title": event["metadata"]["content"]["title"]},
    }
    assert out["fluxdata"] == event["fluxdata"]  # group without rules passes through
    assert out["event_id"] == event["event_id"]  # outside the groups: never filtered


def test_deny_removes_paths(event: dict[str, Any]) -> None:
    out = apply(
        {"metadata": {"deny": ["network", "user.id"]}, "fluxdata": {"deny": ["playhead_*"]}}, event
    )
    assert "network" not in out["metadata"]
    assert out["metadata"]["user"] == {}
    assert "playhead_position_sec" not in out["fluxdata"]
    assert out["fluxdata"]["num_errors"] == 0


def test_allow_then_deny(event: dict[str, Any]) -> None:
    out = apply({"metadata": {"allow": ["device", "geo"], "deny": ["device.type"]}}, event)
    assert out["metadata"] == {"device": {"os": "iOS"}, "geo": {"country_code": "US"}}


def test_wildcards_within_segments() -> None:
    e = make_event(
        metadata={
            "geo": {"country_code": "US", "country_name": "United States", "city": "X"},
            "user": {"id": "u"},
            "content": {"id": "c", "title": "t"},
        }
    )
    assert apply({"metadata": {"allow": ["geo.country_*"]}}, e)["metadata"] == {
        "geo": {"country_code": "US", "country_name": "United States"}
    }
    assert apply({"metadata": {"allow": ["*.id"]}}, e)["metadata"] == {
        "user": {"id": "u"},
        "content": {"id": "c"},
    }
    assert apply({"metadata": {"deny": ["*.id"]}}, e)["metadata"]["content"] == {"title": "t"}
    assert apply({"metadata": {"allow": ["*"]}}, e)["metadata"] == e["metadata"]


def test_empty_allow_empties_the_group(event: dict[str, Any]) -> None:
    out = apply({"fluxdata": {"allow": []}}, event)
    assert out["fluxdata"] == {}
    assert out["metadata"] == event["metadata"]


def test_non_object_group_and_missing_group() -> None:
    e = make_event()
    e["metadata"] = "not an object"
    assert apply({"metadata": {"allow": ["device"]}}, e)["metadata"] == {}
    assert apply({"metadata": {"deny": ["device"]}}, e)["metadata"] == "not an object"
    del e["metadata"]
    assert "metadata" not in apply({"metadata": {"allow": ["device"]}}, e)


def test_allowed_leaf_path_below_a_scalar_is_absent() -> None:
    e = make_event(metadata={"device": "iPhone", "player": {"name": "p"}})
    assert apply({"metadata": {"allow": ["device.os", "player.name"]}}, e)["metadata"] == {
        "player": {"name": "p"}
    }
    assert apply({"metadata": {"allow": ["device.*"]}}, e)["metadata"] == {"device": "iPhone"}


def test_input_is_never_modified(event: dict[str, Any]) -> None:
    before = copy.deepcopy(event)
    apply(
        {
            "metadata": {"allow": ["device"], "deny": ["device.os"]},
            "fluxdata": {"deny": ["num_errors"]},
        },
        event,
    )
    apply({"metadata": {"deny": ["user.id", "network.ip"]}}, event)
    assert event == before


def test_unicode_keys_and_values() -> None:
    e = make_event(metadata={"内容": {"标题": "ok\u2028"}, "ключ": 1})
    assert apply({"metadata": {"allow": ["内容.*"]}}, e)["metadata"] == {
        "内容": {"标题": "ok\u2028"}
    }


def test_identity_filter_returns_the_same_object(event: dict[str, Any]) -> None:
    f = FieldFilter.compile({})
    assert f.is_identity and f.apply(event) is event


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a."])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_pattern(bad)


# --- property: no field outside an allow list ever appears ---------------------------------

keys = st.sampled_from(["device", "os", "id", "geo", "country_code", "user", "ip", "a", "b", "x_1"])
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
json_tree = st.recursive(
    json_leaf, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=20
)
pattern_segment = st.sampled_from(
    ["device", "os", "id", "geo", "country_*", "user", "*", "?", "x_*", "a"]
)
patterns = st.lists(st.lists(pattern_segment, min_size=1, max_size=3).map(".".join), max_size=4)


def leaf_paths(obj: Any, prefix: tuple[str, ...] = (), empty: bool = True) -> list[tuple[str, ...]]:
    """Paths of the values in a tree; empty objects count as values only when ``empty``."""
    if isinstance(obj, dict):
        if not obj:
            return [prefix] if empty else []
        out: list[tuple[str, ...]] = []
        for k, v in obj.items():
            out.extend(leaf_paths(v, (*prefix, k), empty))
        return out
    return [prefix]


def allowed_by(path: tuple[str, ...], pats: list[str]) -> bool:
    """Oracle: a path is allowed when some pattern matches a prefix of it, segment by segment."""
    for p in pats:
        segs = normalize_pattern(p)
        pairs = zip(path, segs, strict=False)
        if len(segs) <= len(path) and all(fnmatch.fnmatchcase(k, s) for k, s in pairs):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(group=st.dictionaries(keys, json_tree, max_size=5), allow=patterns, deny=patterns)
def test_no_field_outside_the_allow_list_survives(
    group: dict[str, Any], allow: list[str], deny: list[str]
) -> None:
    e = make_event(metadata=group)
    before = copy.deepcopy(e)
    out = apply({"metadata": {"allow": allow, "deny": deny}}, e)["metadata"]
    # Empty objects left behind by a deny carry no data point; every value must be allowed.
    for path in leaf_paths(out, empty=False):
        assert allowed_by(path, allow), f"{path} is outside allow={allow}"
        assert not allowed_by(path, deny), f"{path} is denied by {deny}"
    # Nothing allowed and not denied is lost.
    for path in leaf_paths(group):
        if (
            path
            and allowed_by(path, allow)
            and not any(allowed_by(path[:n], deny) for n in range(1, len(path) + 1))
        ):
            node: Any = out
            for k in path:
                assert isinstance(node, dict) and k in node, f"{path} was dropped"
                node = node[k]
    assert e == before
