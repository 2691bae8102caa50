"""``batch.max_bytes``: objects cut by size as well as by count, on both Batch paths.

An object is cut when adding the next record would take its records past ``max_bytes``
(each record counted as the NDJSON line the encoder writes for it: its JSON plus the
newline, before compression) or at ``max_events``, whichever comes first; a record larger
than ``max_bytes`` goes alone in its own object, never dropped, never split. Proven as a
property of the plain-Python cut (:func:`~transforms.rules.naming.cut_batches`), then
through the backfill transform (full objects and per-chunk cut) and the streaming one.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.batch import CutBatches, StreamBatches, layouts
from transforms.config import ConfigError, parse_config
from transforms.connectors.base import OBJECT_MAX_BYTES
from transforms.rules.encode import encode_batch
from transforms.rules.naming import (
    MAX_BATCH_BYTES,
    MIN_BATCH_BYTES,
    check_max_bytes,
    cut_batches,
    record_size,
)
from transforms.rules.records import Chunk, Packaged

# -- the rule ----------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["\u2028", "a\u2029b", "é" * 40, '\x00\n"\\']
)


@st.composite
def items(draw: Any, max_size: int = 60) -> list[Packaged]:
    rows = draw(
        st.lists(
            st.tuples(text, st.integers(0, 3000), st.booleans()),
            max_size=max_size,
        )
    )
    out = []
    for n, (value, pad, as_bytes) in enumerate(rows):
        record = {"id": f"e{n}", "v": value, "pad": "x" * pad}
        # Package keeps the serialized record (the usual) or the dict (encode serializes).
        data = encode_batch([record], "ndjson")[:-1] if as_bytes else None
        out.append(
            Packaged(f"e{n}", 1764136800000 + n, "t", None if as_bytes else record, {}, data)
        )
    return out


def ndjson_bytes(batch: list[Packaged]) -> int:
    return sum(record_size(item) for item in batch)


def test_a_record_counts_as_the_ndjson_line_the_encoder_writes() -> None:
    record = {"id": "e1", "v": "a\u2028b"}  # the encoder escapes U+2028: 6 bytes, not 3
    as_dict = Packaged("e1", None, "t", record, {})
    as_bytes = Packaged("e1", None, "t", None, {}, encode_batch([record], "ndjson")[:-1])
    line = encode_batch([as_dict], "ndjson")
    assert record_size(as_dict) == record_size(as_bytes) == len(line)
    assert b"\\u2028" in line


@settings(max_examples=200, deadline=None)
@given(batch=items())
def test_the_sizes_add_up_to_the_uncompressed_ndjson_object(batch: list[Packaged]) -> None:
    assert ndjson_bytes(batch) == len(encode_batch(batch, "ndjson"))


@settings(max_examples=300, deadline=None)
@given(
    batch=items(),
    max_events=st.integers(1, 30),
    max_bytes=st.integers(MIN_BATCH_BYTES, 12_000),
)
def test_objects_stay_under_max_bytes_unless_they_hold_one_record(
    batch: list[Packaged], max_events: int, max_bytes: int
) -> None:
    cut = list(cut_batches(batch, max_events, max_bytes))
    # Nothing lost, nothing split or repeated, order kept.
    assert [i for b in cut for i in b] == batch
    for b in cut:
        assert 0 < len(b) <= max_events
        assert ndjson_bytes(b) <= max_bytes or len(b) == 1
    # Full: each object but the last was cut because the next record would not fit.
    for b, after in itertools.pairwise(cut):
        assert len(b) == max_events or ndjson_bytes(b) + record_size(after[0]) > max_bytes


def test_a_record_larger_than_max_bytes_goes_alone() -> None:
    small = [Packaged(f"s{n}", n, "t", {"n": n}, {}) for n in range(3)]
    big = Packaged("big", 9, "t", {"pad": "x" * 5000}, {})
    cut = list(cut_batches([small[0], big, small[1], small[2]], 100, 2048))
    assert [[i.event_id for i in b] for b in cut] == [["s0"], ["big"], ["s1", "s2"]]


def test_without_max_bytes_only_the_count_cuts() -> None:
    batch = [Packaged(f"e{n}", n, "t", {"pad": "x" * 4000}, {}) for n in range(7)]
    assert [len(b) for b in cut_batches(batch, 3)] == [3, 3, 1]
    assert [len(b) for b in cut_batches(batch, 3, None)] == [3, 3, 1]


@pytest.mark.parametrize("value", [0, -1, MIN_BATCH_BYTES - 1, MAX_BATCH_BYTES + 1, 10**30])
def test_max_bytes_out_of_range_is_refused_with_the_range(value: int) -> None:
    with pytest.raises(ValueError, match=r"max_bytes.*1 KiB.*5 GiB") as caught:
        check_max_bytes(value)
    assert str(value) in str(caught.value)


@pytest.mark.parametrize("value", [None, MIN_BATCH_BYTES, 64 * 2**20, MAX_BATCH_BYTES])
def test_max_bytes_in_range_is_kept(value: int | None) -> None:
    assert check_max_bytes(value) == value


# -- the Beam stages ---------------------------------------------------------------------


def config_text(out: Path) -> str:
    return f"""
connectors:
  - id: lake
    type: file
    deliver: {{path: "{out}/lake", prefix: "{{event_type}}/", format: ndjson,
               batch: {{max_events: 50, max_wait_s: 5, max_bytes: {MAX_BYTES}}}}}
  - id: plain
    type: file
    deliver: {{path: "{out}/plain", format: ndjson, batch: {{max_events: 4, max_wait_s: 5}}}}
dead_letter: {{path: "{out}/dl"}}
"""


MAX_BYTES = 2048


def records(n: int) -> list[Packaged]:
    kinds = ["heartbeat", "error"]
    out = []
    for i in range(n):
        record = {"id": f"e{i:03d}", "pad": "x" * ((i * 397) % 900)}
        if i == 7:
            record["pad"] = "y" * 3000  # larger than max_bytes: alone in its object
        data = encode_batch([record], "ndjson")[:-1]
        out.append(Packaged(f"e{i:03d}", 1764136800000 + i, kinds[i % 2], None, {}, data))
    return out


def shapes(batches: Any) -> Any:
    return batches | beam.Map(
        lambda b: (b.connector_id, b.prefix, tuple(i.event_id for i in b.items), sum_sizes(b))
    )


def sum_sizes(batch: Any) -> int:
    return sum(record_size(i) for i in batch.items)


def check(got: list[tuple[str, str, tuple[str, ...], int]], sent: list[Packaged]) -> None:
    """Every record in exactly one object; only ``lake`` capped by bytes; a prefix per type."""
    ids = sorted(i for cid, _, b, _ in got if cid == "lake" for i in b)
    assert ids == sorted(i.event_id for i in sent)
    for cid, prefix, b, size in got:
        assert len(b) <= (50 if cid == "lake" else 4)
        if cid == "lake":
            assert size <= MAX_BYTES or len(b) == 1, (prefix, b, size)
    assert any(cid == "lake" and b == ("e007",) for cid, _, b, _ in got)
    assert any(cid == "plain" and size > MAX_BYTES for cid, _, _, size in got), "plain uncapped"


@pytest.mark.parametrize("shared_disk", [True, False])
def test_backfill_objects_are_capped_by_bytes(tmp_path: Path, shared_disk: bool) -> None:
    config = parse_config(config_text(tmp_path))
    assert layouts(config)["lake"].max_bytes == MAX_BYTES
    assert layouts(config)["plain"].max_bytes == OBJECT_MAX_BYTES  # the default cap
    sent = records(60)
    chunks = [sent[:25], sent[25:]]
    elements = [(cid, Chunk(part)) for part in chunks for cid in ("lake", "plain")]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        cut = (
            p
            | beam.Create(elements)
            | CutBatches(config, folder=str(tmp_path / "spill"), shared_disk=shared_disk)
        )
        assert_that(
            shapes(cut.batches),
            lambda got: check(got, sent),
        )
        assert_that(cut.dead_letter, equal_to([]), label="NoDeadLetters")


def test_full_backfill_objects_by_bytes_are_the_greedy_cut_of_the_merged_order(
    tmp_path: Path,
) -> None:
    config = parse_config(config_text(tmp_path))
    sent = records(60)
    elements = [("lake", Chunk(sent[n : n + 9])) for n in range(0, 60, 9)]
    want: list[tuple[str, tuple[str, ...]]] = []
    for kind in ("heartbeat", "error"):
        group = [i for i in sent if i.event_type == kind]  # already in batch order
        want.extend(
            (f"{kind}/", tuple(i.event_id for i in b)) for b in greedy(group, 50, MAX_BYTES)
        )
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        cut = p | beam.Create(elements) | CutBatches(config, folder=str(tmp_path / "spill"))
        got = cut.batches | beam.Map(lambda b: (b.prefix, tuple(i.event_id for i in b.items)))
        assert_that(got, equal_to(want))


def greedy(group: list[Packaged], max_events: int, max_bytes: int) -> list[list[Packaged]]:
    """The cut written out by hand: close an object when the next record would not fit."""
    out: list[list[Packaged]] = [[]]
    for item in group:
        size = len(json.dumps(json.loads(item.data or b""), separators=(",", ":"))) + 1
        used = sum(
            len(json.dumps(json.loads(i.data or b""), separators=(",", ":"))) + 1 for i in out[-1]
        )
        if out[-1] and (len(out[-1]) == max_events or used + size > max_bytes):
            out.append([])
        out[-1].append(item)
    return [b for b in out if b]


def test_streaming_batches_are_capped_by_bytes(tmp_path: Path) -> None:
    config = parse_config(config_text(tmp_path))
    sent = records(60)
    stream = (
        TestStream()
        .add_elements([("lake", Chunk(sent[:30])), ("plain", Chunk(sent[:30]))])
        .advance_processing_time(6)
        .add_elements([("lake", Chunk(sent[30:])), ("plain", Chunk(sent[30:]))])
        .advance_processing_time(6)
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with BeamTestPipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        out = p | stream | StreamBatches(config, clock=lambda: 0.0)
        assert_that(
            shapes(out["batches"]),
            lambda got: check(got, sent),
        )


# -- the config --------------------------------------------------------------------------


def yaml_with(out: Path, batch: str) -> str:
    return f"""
connectors:
  - id: lake
    type: s3
    deliver: {{bucket: telemetry, format: ndjson.gz, batch: {batch}}}
dead_letter: {{path: "{out}/dl"}}
"""


def test_config_reads_max_bytes_and_objects_default_to_100_mib(tmp_path: Path) -> None:
    config = parse_config(yaml_with(tmp_path, "{max_events: 1000, max_bytes: 67108864}"))
    assert layouts(config)["lake"].max_bytes == 64 * 2**20
    for batch in ("{max_events: 10}", "{max_events: 10, max_bytes: null}", "{}"):
        assert layouts(parse_config(yaml_with(tmp_path, batch)))["lake"].max_bytes == 100 * 2**20
    no_batch = yaml_with(tmp_path, "{}").replace(", batch: {}", "")
    assert layouts(parse_config(no_batch))["lake"].max_bytes == 100 * 2**20
    # API connectors batch by their own request limits: no default cap there.
    api = f"""
connectors:
  - {{id: hook, type: http, deliver: {{endpoint: "http://127.0.0.1:9/x"}}}}
dead_letter: {{path: "{tmp_path}/dl"}}
"""
    assert layouts(parse_config(api))["hook"].max_bytes is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("512", "1 KiB to 5 GiB"),
        ("6000000000", "1 KiB to 5 GiB"),
        ("-1", "1 KiB to 5 GiB"),
        ("1.5", "integer"),
        ("'64MB'", "integer"),
    ],
)
def test_config_refuses_max_bytes_out_of_range(tmp_path: Path, value: str, why: str) -> None:
    with pytest.raises(ConfigError, match=r"deliver\.batch\.max_bytes") as caught:
        parse_config(yaml_with(tmp_path, f"{{max_bytes: {value}}}"))
    assert why in str(caught.value) and "unknown key" not in str(caught.value)


def test_dead_letters_refuse_max_bytes_rather_than_ignore_it(tmp_path: Path) -> None:
    text = yaml_with(tmp_path, "{max_events: 10}").replace(
        f'dead_letter: {{path: "{tmp_path}/dl"}}',
        f'dead_letter: {{path: "{tmp_path}/dl", batch: {{max_bytes: 65536}}}}',
    )
    with pytest.raises(ConfigError, match=r"dead_letter.*max_bytes applies to connectors only"):
        parse_config(text)


def test_the_job_and_the_bound_cut_the_same_objects_by_bytes(tmp_path: Path) -> None:
    """Through ``run`` (a real input file): no object passes ``max_bytes`` unless it holds
    one record, every event once, and the benchmark's bound writes the same files."""
    from bench import bound
    from examples.generate_events import generate
    from tests.jobs import delivered_files, run_job

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in generate(300, seed=5)))
    job, base = tmp_path / "job", tmp_path / "bound"
    for out in (job, base):
        out.mkdir()
        (out / "delivery.yaml").write_text(config_text(out))
    code, summary = run_job(job / "delivery.yaml", events, tmp_path / "summary.json")
    assert code == 0 and summary["balanced"], summary
    bound.run_bound(str(base / "delivery.yaml"), [str(events)])
    got, want = delivered_files(job), delivered_files(base)
    assert sorted(got) == sorted(want) and all(got[n] == want[n] for n in got)
    lake = [data for name, data in got.items() if name.startswith("lake/")]
    ids = [json.loads(line)["event_id"] for data in lake for line in data.splitlines()]
    assert sorted(ids) == sorted(
        json.loads(line)["event_id"] for line in events.read_bytes().splitlines()
    )
    assert all(len(data) <= MAX_BYTES or data.count(b"\n") == 1 for data in lake)
    assert any(
        data.count(b"\n") < 50 and len(data) > MAX_BYTES // 2 for data in lake
    )  # cut by size
