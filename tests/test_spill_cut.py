"""The backfill cut under ``batch.max_bytes``: the same batches, measured in bulk.

Every backfill object goes through :func:`~transforms.rules.naming.cut_batches`, with
``batch.max_bytes`` at its 100 MiB default when the config gives none, so the cut runs
once per delivered record (1.58M times in the 1M-event benchmark). These tests pin what
it must give (the reference below is the rule as the docstring states it, one record at
a time) and that records which carry their JSON bytes are not measured one Python call
at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.rules import naming
from transforms.rules.naming import cut_batches
from transforms.rules.records import Packaged


def _reference(items: list[Packaged], size: int, max_bytes: int | None) -> list[list[Packaged]]:
    """The rule, record by record: a new batch at ``size`` records, or before the record
    whose NDJSON line would take the batch past ``max_bytes`` (a record alone may pass it)."""
    out: list[list[Packaged]] = []
    batch: list[Packaged] = []
    used = 0
    for item in items:
        text = item.data if item.data is not None else _compact(item.record)
        line = len(text) + 1
        if batch and (len(batch) == size or (max_bytes is not None and used + line > max_bytes)):
            out.append(batch)
            batch, used = [], 0
        batch.append(item)
        used += line
    if batch:
        out.append(batch)
    return out


def _compact(record: Any) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


@st.composite
def records(draw: Any) -> list[Packaged]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from([0, 1, 50, 700, 1023, 1024, 3000, 9000]),  # padding
                st.booleans(),  # JSON bytes (Package's usual) or a dict (serialized to measure)
            ),
            max_size=300,
        )
    )
    out = []
    for n, (pad, as_bytes) in enumerate(rows):
        record = {"id": f"e{n}", "p": "x" * pad}
        data = json.dumps(record).encode() if as_bytes else None
        out.append(Packaged(f"e{n}", n, "t", None if as_bytes else record, b"{}", data))
    return out


@settings(max_examples=300, deadline=None)
@given(
    items=records(),
    size=st.integers(1, 40),
    max_bytes=st.one_of(st.none(), st.integers(1, 40_000)),
    lazy=st.booleans(),
)
def test_the_cut_gives_the_batches_of_the_rule(
    items: list[Packaged], size: int, max_bytes: int | None, lazy: bool
) -> None:
    source: Any = iter(items) if lazy else items  # a merge hands over an iterator
    got = list(cut_batches(source, size, max_bytes))
    assert got == _reference(items, size, max_bytes)
    assert all(type(b) is list for b in got)  # the callers wrap or extend them


def test_a_record_past_max_bytes_alone_is_a_batch_of_its_own() -> None:
    small = [Packaged(f"s{n}", n, "t", None, b"{}", b'{"a":1}') for n in range(3)]
    big = Packaged("big", 9, "t", None, b"{}", b'{"p":"' + b"x" * 5000 + b'"}')
    got = list(cut_batches([*small, big, *small], 1000, 1024))
    assert [len(b) for b in got] == [3, 1, 3] and got[1] == [big]


def test_the_cut_stops_reading_at_each_full_batch() -> None:
    """A batch goes on before the records after it are read: at most ``size`` ahead."""
    taken: list[int] = []

    def stream() -> Iterator[Packaged]:
        for n in range(100):
            taken.append(n)
            yield Packaged(f"e{n}", n, "t", None, b"{}", b'{"a":1}')

    cut = cut_batches(stream(), 10, 1 << 20)
    first = next(cut)
    assert len(first) == 10 and len(taken) <= 20


def test_records_with_bytes_are_measured_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records that carry their JSON are sized by C code, not by a Python call each.

    The cut ran :func:`record_size` once per record, most of its CPU in a backfill. A
    record without bytes is still serialized to be measured.
    """
    calls = []
    real = naming.record_size

    def counted(item: Packaged) -> int:
        calls.append(item.event_id)
        return real(item)

    monkeypatch.setattr(naming, "record_size", counted)
    items = [Packaged(f"e{n}", n, "t", None, b"{}", b'{"id":"e%d"}' % n) for n in range(10_000)]
    items[5_000] = items[5_000]._replace(record={"id": "dict"}, data=None)
    got = list(cut_batches(iter(items), 1000, 100 * 1024 * 1024))
    assert [len(b) for b in got] == [1000] * 10
    assert len(calls) <= 1000  # the one batch that holds a dict record, at most
