"""The memoized filter walk (``_State``) against the plain trie walk it replaced."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.rules import filter as rules
from transforms.rules.filter import FieldFilter, _Node, _step, compile_patterns


def reference_allow(obj: dict[str, Any], nodes: list[_Node]) -> dict[str, Any]:
    """The walk before memoization: every key matched against every pattern, every time."""
    kept: dict[str, Any] = {}
    for key, value in obj.items():
        nxt, whole = _step(nodes, key)
        if whole:
            kept[key] = value
        elif nxt and isinstance(value, dict):
            sub = reference_allow(value, nxt)
            if sub:
                kept[key] = sub
    return kept


def reference_deny(obj: dict[str, Any], nodes: list[_Node]) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for key, value in obj.items():
        nxt, whole = _step(nodes, key)
        if not nxt:
            continue
        if whole:
            if out is None:
                out = dict(obj)
            del out[key]
        elif isinstance(value, dict):
            sub = reference_deny(value, nxt)
            if sub is not value:
                if out is None:
                    out = dict(obj)
                out[key] = sub
    return obj if out is None else out


SEGMENTS = st.sampled_from(["a", "b", "ab", "id", "x_1", "*", "a*", "*b", "?", "[ab]", "x_*"])
PATTERNS = st.lists(
    st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join), min_size=0, max_size=5
)
KEYS = st.sampled_from(["a", "b", "ab", "ba", "id", "x_1", "x_2", "c"])
TREES = st.recursive(
    st.integers(0, 3) | st.none() | st.text(max_size=2),
    lambda inner: st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
).filter(lambda t: isinstance(t, dict))


@settings(max_examples=300, deadline=None)
@given(patterns=PATTERNS, tree=TREES)
def test_memoized_walk_equals_the_plain_walk(patterns: list[str], tree: dict[str, Any]) -> None:
    root = compile_patterns(patterns)
    for _ in range(2):  # the second pass runs on memoized steps
        allowed = rules._allow(tree, root.state)
        assert allowed == reference_allow(tree, [root])
        assert list(allowed) == list(reference_allow(tree, [root]))
        denied = rules._deny(tree, root.state)
        assert denied == reference_deny(tree, [root])
        assert (denied is tree) == (reference_deny(tree, [root]) is tree)


def test_memo_is_bounded_and_still_correct() -> None:
    f = FieldFilter.compile({"metadata": {"allow": ["k*", "other.id"]}})
    root = f.groups[0][1].allow
    assert root is not None
    many = {f"k{n}": n for n in range(rules.MAX_MEMO_ENTRIES + 50)} | {"z": 1}
    out = f.apply({"metadata": many})
    assert out["metadata"] == {k: v for k, v in many.items() if k.startswith("k")}
    assert len(root.state.steps) == rules.MAX_MEMO_ENTRIES == root.state.memo.entries
    again = f.apply({"metadata": many})  # keys past the bound: matched, not remembered
    assert again == out


def test_overlapping_wildcards_with_data_keys_stay_bounded() -> None:
    # Keys that are data under patterns that overlap: every (state, key) pair is new, and
    # multi-node states must be shared, or memory grows with the product of the keys.
    f = FieldFilter.compile({"metadata": {"allow": ["*.*.x", "d*.s*.y"]}})
    root = f.groups[0][1].allow
    assert root is not None
    tree = {f"d{i}": {f"s{j}": {"x": 1, "y": 2, "z": 3} for j in range(300)} for i in range(300)}
    out = f.apply({"metadata": tree})["metadata"]
    assert out == {d: {s: {"x": 1, "y": 2} for s in sub} for d, sub in tree.items()}
    memo = root.state.memo
    assert memo.entries <= rules.MAX_MEMO_ENTRIES
    assert len(memo.states) <= 4, "one shared state per distinct set of trie nodes"


def test_wildcards_reaching_several_nodes() -> None:
    # "*.id" and "user.*" both reach user: the walk state holds two nodes.
    f = FieldFilter.compile({"metadata": {"allow": ["*.id", "user.name"], "deny": ["user.id"]}})
    event = {"metadata": {"user": {"id": 1, "name": "n", "x": 2}, "content": {"id": 3, "t": 4}}}
    for _ in range(2):
        assert f.apply(event)["metadata"] == {"user": {"name": "n"}, "content": {"id": 3}}
