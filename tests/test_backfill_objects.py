"""Backfill objects: full objects across chunks, deterministic, and the bound writing the same.

A backfill writes every (connector, prefix)'s records in objects of ``batch.max_events``
except the last one, whatever the chunk size (``--chunk-lines``), the number of worker
processes or read shards: the set of objects (names and bytes) depends on the input and
the config only. Proven as a property of the plain-Python rules, simulating any split of
the input over workers, and through the real job.

The bound (bench/bound.py) must write exactly the job's files for every config, catch-all
connectors (``route.unmatched: true``) included: an event a catch-all takes is written
there, and ``unmatched`` counts only the events no connector took.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main as cli_main
from bench import bound, corpus
from tests.jobs import delivered_files, write_config
from transforms.rules.encode import encode_batch
from transforms.rules.naming import (
    BatchFiller,
    PrefixTemplate,
    batch_order,
    cut_batches,
    key_by_prefix,
    merge_runs,
    object_name,
)
from transforms.rules.records import Packaged

# -- the rule, as a property -------------------------------------------------------------


@st.composite
def packaged(draw: Any) -> list[Packaged]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["heartbeat", "error", "seek"]),
                st.one_of(st.none(), st.integers(1764136800000, 1764136800000 + 3 * 3_600_000)),
                st.integers(0, 30),  # event ids repeat: the input may hold duplicates
                st.booleans(),  # kept as bytes (Package's usual) or as a dict
                st.sampled_from([0, 0, 10, 300, 1500]),  # padding: records of many sizes
            ),
            max_size=120,
        )
    )
    out = []
    for kind, time_ms, n, as_bytes, pad in rows:
        record = {"id": f"e{n}", "type": kind, "t": time_ms} | ({"pad": "x" * pad} if pad else {})
        data = json.dumps(record).encode() if as_bytes else None
        event = {"event_id": f"e{n}", "event": {"type": kind}}
        out.append(Packaged(f"e{n}", time_ms, kind, None if as_bytes else record, event, data))
    return out


def _shape(cid: str, key: str, items: list[Packaged]) -> tuple[str, str, tuple[Any, ...]]:
    name = object_name(key, cid, [i.event_id for i in items], ".ndjson")
    body = tuple(i.data if i.data is not None else json.dumps(i.record).encode() for i in items)
    return cid, name, body


def _size(items: list[Packaged]) -> int:
    """The bytes of ``items`` as one uncompressed NDJSON object (what max_bytes caps)."""
    return len(encode_batch(items, "ndjson"))


def _run(
    items: list[Packaged],
    prefix: PrefixTemplate,
    max_events: int,
    max_bytes: int | None,
    chunk: int,
    workers: int,
    budget: int,
    seed: int,
    folder: Path,
) -> list[tuple[str, str, tuple[Any, ...]]]:
    """What the job does: chunks keyed by prefix, spread over workers, runs merged and cut."""
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    shuffle = random.Random(seed)
    shuffle.shuffle(chunks)  # any worker may take any chunk, in any order
    fillers = [BatchFiller(str(folder), budget) for _ in range(workers)]
    for n, part in enumerate(chunks):
        groups, _ = key_by_prefix(prefix, "c", part)
        for key, group in groups.items():
            fillers[n % workers].add("c", key, group)
    spilled: dict[tuple[str, str], list[Any]] = {}
    for filler in fillers:
        for key, runs in filler.finish():
            spilled.setdefault(key, []).append(runs)
    out = []
    for (cid, key), runs in spilled.items():
        shuffle.shuffle(runs)  # a GroupByKey gives them in any order
        batches = list(cut_batches(merge_runs(runs), max_events, max_bytes))
        for batch, after in itertools.pairwise(batches):  # full but the last
            assert len(batch) == max_events or (
                max_bytes is not None and _size(batch) + _size(after[:1]) > max_bytes
            )
        assert 0 < len(batches[-1]) <= max_events
        for batch in batches:  # under max_bytes, or one record that passes it alone
            assert max_bytes is None or len(batch) == 1 or _size(batch) <= max_bytes
        for batch in batches:
            out.append(_shape(cid, key, batch))
    return sorted(out)


@settings(max_examples=150, deadline=None)
@given(
    items=packaged(),
    text=st.sampled_from(["", "{event_type}/", "{hour}/{event_type}/"]),
    max_events=st.integers(1, 25),
    max_bytes=st.one_of(st.none(), st.integers(1024, 6000)),
    splits=st.lists(
        st.tuples(st.integers(1, 60), st.integers(1, 4), st.integers(1, 50), st.integers()),
        min_size=2,
        max_size=3,
    ),
)
def test_the_objects_do_not_depend_on_chunks_workers_or_order(
    tmp_path_factory: Any,
    items: list[Packaged],
    text: str,
    max_events: int,
    max_bytes: int | None,
    splits: list[tuple[int, int, int, int]],
) -> None:
    prefix = PrefixTemplate.compile(text)
    folder = tmp_path_factory.mktemp("spill")
    results = [_run(items, prefix, max_events, max_bytes, *split, folder) for split in splits]
    assert all(r == results[0] for r in results[1:])
    # The reference: each prefix's records in batch order, a new object whenever the next
    # record would pass max_events or max_bytes (a record alone may pass max_bytes).
    groups, failed = key_by_prefix(prefix, "c", items)
    expected = []
    for key, group in groups.items():
        batch: list[Packaged] = []
        for item in sorted(group, key=batch_order):
            if batch and (
                len(batch) == max_events
                or (max_bytes is not None and _size(batch) + _size([item]) > max_bytes)
            ):
                expected.append(_shape("c", key, batch))
                batch = []
            batch.append(item)
        if batch:
            expected.append(_shape("c", key, batch))
    assert results[0] == sorted(expected)
    assert sum(len(body) for _, _, body in results[0]) == len(items) - len(failed)


def test_a_filler_never_holds_more_than_its_budget(tmp_path: Path) -> None:
    filler = BatchFiller(str(tmp_path), budget=50)
    rows = [Packaged(f"e{n}", n, "t", None, b"{}", b"{}") for n in range(1000)]
    for start in range(0, 1000, 7):
        filler.add("c", "p/", rows[start : start + 7])
        assert filler.held <= 50 + 7
    ((key, runs),) = filler.finish()
    assert key == ("c", "p/") and runs.events == 1000 and len(runs.runs) >= 1000 // 57
    assert [i.event_id for i in merge_runs([runs])] == [f"e{n}" for n in range(1000)]


def _catch_all_config(out: Path) -> Path:
    return write_config(
        out,
        [
            {
                "id": "errors",
                "type": "file",
                "route": {"events": ["error"]},
                "deliver": {"path": str(out / "errors"), "format": "ndjson"},
            },
            {
                "id": "us_heartbeats",
                "type": "file",
                "route": {
                    "events": ["heartbeat"],
                    "when": [{"field": "metadata.geo.country_code", "op": "eq", "value": "US"}],
                },
                "deliver": {"path": str(out / "us"), "format": "ndjson"},
            },
            {
                "id": "everything_else",
                "type": "file",
                "route": {"unmatched": True, "exclude_events": ["seek"]},
                "deliver": {
                    "path": str(out / "rest"),
                    "prefix": "{event_type}/",
                    "format": "ndjson",
                    "batch": {"max_events": 300},
                },
            },
        ],
    )


def test_the_bound_writes_what_the_job_writes_for_a_catch_all(tmp_path: Path) -> None:
    (events,) = corpus.ensure_corpus(4_000, seed=11, folder=tmp_path / "cache")
    job_out, bound_out = tmp_path / "job", tmp_path / "bound"
    summary_path = tmp_path / "summary.json"
    code = cli_main(
        [
            "run",
            "--config",
            str(_catch_all_config(job_out)),
            "--input",
            str(events),
            "--no-progress",
            "--chunk-lines",
            "1000",
            "--summary-json",
            str(summary_path),
        ]
    )
    assert code == 0
    result = bound.run_bound(str(_catch_all_config(bound_out)), [str(events)], 1000)

    job_files, bound_files = delivered_files(job_out), delivered_files(bound_out)
    assert any(name.startswith("rest/") for name in job_files), "the catch-all got events"
    assert sorted(job_files) == sorted(bound_files)
    assert [n for n in job_files if job_files[n] != bound_files[n]] == []
    summary = json.loads(summary_path.read_text())
    delivered = {c["id"]: c["delivered"] for c in summary["connectors"]}
    assert delivered == {cid: c.delivered for cid, c in result.connectors.items()}
    assert delivered["everything_else"] > 0
    assert result.unmatched == summary["input"]["unmatched"]


# -- the job -----------------------------------------------------------------------------


def _sparse_config(out: Path) -> Path:
    return write_config(
        out,
        [
            {
                "id": "sparse",
                "type": "file",
                "route": {"events": ["playback_start", "error"]},
                "deliver": {
                    "path": str(out / "sparse"),
                    "format": "ndjson",
                    "batch": {"max_events": 40},
                },
            },
            {
                "id": "archive",
                "type": "file",
                "deliver": {
                    "path": str(out / "archive"),
                    "prefix": "{event_type}/{hour}/",
                    "format": "ndjson.gz",
                    "batch": {"max_events": 300},
                },
            },
        ],
    )


WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


@pytest.mark.parametrize(
    ("chunk_lines", "extra"),
    [
        ("5000", []),
        ("137", []),
        # Worker processes: the integration tier.
        pytest.param("700", WORKERS, marks=pytest.mark.integration),
        pytest.param("61", [*WORKERS, "--read-shards", "2"], marks=pytest.mark.integration),
    ],
)
def test_the_job_writes_full_objects_whatever_the_chunks_and_workers(
    tmp_path: Path, chunk_lines: str, extra: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = corpus.ensure_corpus(6_000, seed=3, parts=2, folder=tmp_path / "cache")
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill))
    monkeypatch.setattr("tempfile.tempdir", None)
    reference = tmp_path / "reference"
    run = ["run", "--input", str(parts[0]), "--input", str(parts[1]), "--no-progress"]
    assert cli_main([*run, "--config", str(_sparse_config(reference))]) == 0
    out = tmp_path / "out"
    summary_path = tmp_path / "summary.json"
    config = str(_sparse_config(out))
    options = ["--chunk-lines", chunk_lines, *extra, "--summary-json", str(summary_path)]
    code = cli_main([*run, "--config", config, *options])
    assert code == 0
    got, want = delivered_files(out), delivered_files(reference)
    assert sorted(got) == sorted(want)
    assert [n for n in got if got[n] != want[n]] == []
    summary = json.loads(summary_path.read_text())
    rows = {c["id"]: c for c in summary["connectors"]}
    sparse = rows["sparse"]
    assert sparse["writes"] == -(-sparse["delivered"] // 40)  # full objects but the last
    per_prefix: dict[str, list[int]] = {}
    for name, data in got.items():
        if name.startswith("archive/"):
            events = gzip.decompress(data).count(b"\n")
            per_prefix.setdefault(name.rsplit("/", 1)[0], []).append(events)
    assert rows["archive"]["writes"] == sum(len(sizes) for sizes in per_prefix.values())
    assert any(len(sizes) > 1 for sizes in per_prefix.values())
    for sizes in per_prefix.values():  # every object of a prefix is full but one
        assert sorted(sizes)[1:] == [300] * (len(sizes) - 1)
    assert [p for p in spill.rglob("*") if p.is_file()] == [], "no spilled run is left"


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 40)),  # few times: many ties on time
            st.integers(0, 60),  # ids repeat: ties on (time, id), broken by the bytes
            st.integers(0, 3),
            st.booleans(),  # kept as bytes or as a dict (then ordered by batch_order)
        ),
        max_size=400,
    ),
    budget=st.integers(1, 120),
    frame=st.integers(1, 9),
    workers=st.integers(1, 3),
)
def test_merged_runs_come_back_in_batch_order(
    tmp_path_factory: Any,
    rows: list[tuple[int | None, int, int, bool]],
    budget: int,
    frame: int,
    workers: int,
) -> None:
    """Many runs of many frames each, merged: the records of all, in batch order."""
    items = []
    for n, (t, i, v, as_bytes) in enumerate(rows):
        record = {"v": v, "n": n % 5}
        data = json.dumps(record).encode() if as_bytes else None
        items.append(Packaged(f"e{i}", t, "t", None if as_bytes else record, {"n": n}, data))
    folder = str(tmp_path_factory.mktemp("spill"))
    fillers = [BatchFiller(folder, budget, frame) for _ in range(workers)]
    for n in range(0, len(items), 7):
        fillers[n % workers].add("c", "p/", items[n : n + 7])
    parts = [runs for filler in fillers for _, runs in filler.finish()]
    merged = list(merge_runs(parts))
    assert [batch_order(i) for i in merged] == sorted(batch_order(i) for i in items)
    assert sorted(i.event["n"] for i in merged) == list(range(len(items)))  # each once


# -- balance: the cut stage's records spread evenly over the workers ---------------------


def _deal(keys: list[tuple[str, str]], workers: int) -> list[list[tuple[str, str]]]:
    """The keys each worker gets from Beam 2.77's FnApiRunner, given their first-seen order.

    Its GroupByKey buffer (``fn_api_runner/execution.py``, ``GroupingBuffer``) is the real
    one here: keys appended in ``keys``' order, then ``partition(workers)``.
    """
    from apache_beam.coders import coder_impl, coders
    from apache_beam.runners.portability.fn_api_runner.execution import GroupingBuffer
    from apache_beam.transforms import core, window

    pair = coders.TupleCoder([coders.StrUtf8Coder(), coders.StrUtf8Coder()])
    pre = coders.WindowedValueCoder(
        coders.TupleCoder([pair, coders.VarIntCoder()]), coders.GlobalWindowCoder()
    )
    post = coders.WindowedValueCoder(
        coders.TupleCoder([pair, coders.IterableCoder(coders.VarIntCoder())]),
        coders.GlobalWindowCoder(),
    )
    buffer = GroupingBuffer(pre, post, core.Windowing(window.GlobalWindows()))
    impl = pre.get_impl()
    for key in keys:
        buffer.append(impl.encode_nested(window.GlobalWindows.windowed_value((key, 0))))
    post_impl = post.get_impl()
    dealt = []
    for streams in buffer.partition(workers):
        stream = coder_impl.create_InputStream(b"".join(streams))
        own = []
        while stream.size() > 0:
            own.append(post_impl.decode_from_stream(stream, True).value[0])
        dealt.append(own)
    return dealt


def test_beams_local_runner_deals_grouped_keys_to_workers_in_turn() -> None:
    """The fact the order below relies on (docs/beam-limits.md); a Beam upgrade may change it."""
    keys = [("c", f"p{n}/") for n in range(7)]
    assert _deal(keys, 2) == [keys[0::2], keys[1::2]]
    assert _deal(keys, 3) == [keys[0::3], keys[1::3], keys[2::3]]


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(1, 400), min_size=1, max_size=40),
    workers=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_the_cut_stage_gets_balanced_records_per_worker(
    tmp_path_factory: Any, counts: list[int], workers: int, seed: int
) -> None:
    """Keys dealt in turn in the order a filler gives them: no worker's records exceed
    another's by more than the heaviest key's (the whole of one key is cut in one place).
    """
    rng = random.Random(seed)
    order = [n for n, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(order)  # the records of every key arrive mixed, in any order
    filler = BatchFiller(str(tmp_path_factory.mktemp("spill")), budget=10**6)
    for n, k in enumerate(order):
        filler.add("c", f"k{k}/", [Packaged(f"e{n}", n, "t", None, b"{}", b"{}")])
    spilled = dict(filler.finish())
    loads = [sum(spilled[key].events for key in own) for own in _deal(list(spilled), workers)]
    assert sum(loads) == len(order)
    assert max(loads) - min(loads) <= max(counts)
