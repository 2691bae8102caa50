"""The one prefix-keying function both Batch paths use (backfill cuts, streaming keys).

Every record ends in exactly one group (its rendered prefix) or one dead letter
(``prefix_unrenderable``), each group keeps input order, and a constant prefix (which
renders nothing) groups exactly as rendering every record would.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.rules.naming import PrefixError, PrefixTemplate, key_by_prefix
from transforms.rules.records import Chunk, DeadLetter, Packaged

CONSTANT = ["", "raw/", "telemetry/all/"]
RENDERED = [
    "{event_type}/",
    "raw/{year}/{month}/{day}/{hour}/",
    "{connector}/{event_type}/{minute}/",
    "x/{hour}/{event_type}-",
    "n={field:n}/{hour}/",  # read from each record
    "k={field:kind|none}/{event_type}/",
]

times = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=4_102_444_800_000),  # up to 2100
    st.sampled_from([1764136800123, 1764136859999, 1764136860000]),  # minute edges
    st.integers(min_value=-(10**22), max_value=10**22),  # mostly beyond any calendar
)
kinds = st.sampled_from(["heartbeat", "error", "seek", "../up", "a/b", ".hidden", ""])


@st.composite
def records(draw: Any) -> list[Packaged]:
    rows = draw(st.lists(st.tuples(times, kinds), max_size=40))
    return [
        Packaged(
            f"e{n}", t, kind, {"n": n} | ({"kind": kind} if n % 3 else {}), {"event_id": f"e{n}"}
        )
        for n, (t, kind) in enumerate(rows)
    ]


def rendered_one_by_one(
    prefix: PrefixTemplate, cid: str, items: list[Packaged]
) -> tuple[dict[str, list[str]], list[str]]:
    """What keying means, record by record: its rendered prefix, or refused."""
    groups: dict[str, list[str]] = {}
    refused: list[str] = []
    for item in items:
        try:
            key = prefix.render(cid, item.event_type, item.time_ms, item.record)
        except PrefixError:
            refused.append(item.event_id)
            continue
        groups.setdefault(key, []).append(item.event_id)
    return groups, refused


@settings(max_examples=300, deadline=None)
@given(items=records(), text=st.sampled_from(CONSTANT + RENDERED), chunk=st.booleans())
def test_every_record_ends_in_one_group_or_one_dead_letter(
    items: list[Packaged], text: str, chunk: bool
) -> None:
    prefix = PrefixTemplate.compile(text)
    given_items = Chunk(items) if chunk else list(items)
    groups, failed = key_by_prefix(prefix, "conn", given_items)

    grouped = [item.event_id for group in groups.values() for item in group]
    refused = [letter.event_id for letter in failed]
    assert sorted(grouped + refused) == sorted(item.event_id for item in items)
    assert len(grouped) + len(refused) == len(items)  # exactly once, no duplicates

    position = {item.event_id: n for n, item in enumerate(items)}
    for key, group in groups.items():
        assert group, "no empty group"
        indices = [position[item.event_id] for item in group]
        assert indices == sorted(indices), "input order within a group"
        assert all(prefix.render("conn", i.event_type, i.time_ms, i.record) == key for i in group)
    for letter in failed:
        assert isinstance(letter, DeadLetter)
        assert (letter.stage, letter.connector, letter.reason) == (
            "batch",
            "conn",
            "prefix_unrenderable",
        )
        assert "event time" in letter.error
        assert letter.event == {"event_id": letter.event_id}

    ids = {key: [item.event_id for item in group] for key, group in groups.items()}
    assert (ids, refused) == rendered_one_by_one(prefix, "conn", items)
    assert list(ids) == list(rendered_one_by_one(prefix, "conn", items)[0])  # group order


@settings(max_examples=200, deadline=None)
@given(items=records(), text=st.sampled_from(CONSTANT))
def test_a_constant_prefix_groups_as_rendering_each_record_would(
    items: list[Packaged], text: str
) -> None:
    prefix = PrefixTemplate.compile(text)
    assert prefix.is_constant
    groups, failed = key_by_prefix(prefix, "conn", items)
    ids = {key: [item.event_id for item in group] for key, group in groups.items()}
    assert (ids, [letter.event_id for letter in failed]) == rendered_one_by_one(
        prefix, "conn", items
    )


@pytest.mark.parametrize("text", RENDERED[1:3])
def test_a_record_without_an_event_time_is_refused_not_grouped(text: str) -> None:
    items = [
        Packaged("a", 1764136800123, "error", {}, {"event_id": "a"}),
        Packaged("b", None, "error", {}, {"event_id": "b"}),
        Packaged("c", 1764136800123, "error", {}, {"event_id": "c"}),
    ]
    groups, failed = key_by_prefix(PrefixTemplate.compile(text), "conn", items)
    assert [[i.event_id for i in g] for g in groups.values()] == [["a", "c"]]
    assert [letter.event_id for letter in failed] == ["b"]
