"""Events per write in the run summary: small objects are visible, and the figures are true.

The summary gives, per connector, how many events each write (a file, an object, or one
``write`` of an API connector's batch) held: exact min and max, the mean, and the p50 as
the bounds of its histogram bucket. Proven against the files themselves: a job on a
sparse connector writes files whose events are counted here independently, and every
figure (and every bucket of the histogram) must agree with those counts.
"""

from __future__ import annotations

import gzip
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.report import merge, render
from beam_pipeline.summary import events_per_write, format_summary
from bench import corpus
from bench import run as bench_run
from tests.jobs import run_job, write_config
from transforms import metrics
from transforms.rules.delivery import WriteResult
from transforms.rules.retry import Outcome

# -- the buckets -------------------------------------------------------------------------


@given(st.integers(0, 10**9))
def test_every_size_falls_in_exactly_the_bucket_whose_bounds_hold_it(events: int) -> None:
    bucket = metrics.events_per_write_bucket(events)
    low, high = metrics.events_per_write_bounds(bucket)
    assert low <= events <= high
    # Contiguous: the next size is either in this bucket or starts the next non-empty one.
    after = metrics.events_per_write_bucket(high + 1)
    assert after > bucket and metrics.events_per_write_bounds(after)[0] == high + 1
    # Log-spaced: a bucket spans at most a factor 2**(1/4) (plus integer rounding).
    assert high <= max(low, low * 2 ** (1 / 4))
    assert metrics.events_per_write_counter(events) == f"events_per_write.{low}-{high}"


def test_the_p50_is_the_bucket_of_the_lower_median_clamped_to_min_and_max() -> None:
    sizes = [3, 380, 400, 410, 1000]
    counters = {}
    for n in sizes:
        name = metrics.events_per_write_counter(n)
        counters[name] = counters.get(name, 0) + 1
    got = events_per_write(counters, (len(sizes), sum(sizes), 3, 1000))
    assert (got["min"], got["max"], got["count"], got["mean"]) == (3, 1000, 5, 438.6)
    assert got["p50_low"] <= 400 <= got["p50_high"]
    assert (got["p50_low"], got["p50_high"]) == metrics.events_per_write_bounds(
        metrics.events_per_write_bucket(400)
    )
    one = events_per_write({metrics.events_per_write_counter(78): 2}, (2, 156, 78, 78))
    assert (one["p50_low"], one["p50_high"]) == (78, 78)  # clamped: every write held 78
    assert events_per_write({}, None)["p50_low"] is None


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=60))
def test_the_figures_of_any_sizes_are_their_min_max_mean_and_lower_median_bucket(
    sizes: list[int],
) -> None:
    counters: dict[str, int] = {"delivered": sum(sizes)}  # other counters are not read
    for n in sizes:
        name = metrics.events_per_write_counter(n)
        counters[name] = counters.get(name, 0) + 1
    got = events_per_write(counters, (len(sizes), sum(sizes), min(sizes), max(sizes)))
    assert (got["count"], got["sum"], got["min"], got["max"]) == (
        len(sizes),
        sum(sizes),
        min(sizes),
        max(sizes),
    )
    assert got["mean"] == round(sum(sizes) / len(sizes), 1)
    median = statistics.median_low(sizes)
    low, high = metrics.events_per_write_bounds(metrics.events_per_write_bucket(median))
    assert (got["p50_low"], got["p50_high"]) == (max(low, min(sizes)), min(high, max(sizes)))
    assert [n for _, _, n in got["buckets"]] == [
        sum(1 for s in sizes if lo <= s <= hi) for lo, hi, _ in got["buckets"]
    ]


@given(st.lists(st.tuples(st.integers(0, 500), st.booleans()), max_size=6))
def test_a_batch_outcome_keeps_the_events_of_each_write_it_counts(
    writes: list[tuple[int, bool]],
) -> None:
    # An API batch partly delivered, the rest on immediate retries: one write per attempt.
    outcome = Outcome()
    for n, (events, existed) in enumerate(writes):
        outcome.add(WriteResult(f"w{n}", events, 10 * events, existed))
    counted = [events for events, existed in writes if events or existed]
    assert outcome.sizes == counted
    assert len(outcome.sizes) == outcome.writes
    assert sum(outcome.sizes) == outcome.delivered


# -- through the job ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.ensure_corpus(3_000, seed=5, folder=tmp_path_factory.mktemp("cache"))[0]


def _events_in(path: Path) -> int:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.count(b"\n")


CONFIGS = st.fixed_dictionaries(
    {
        "max_events": st.sampled_from([7, 40, 333, 1000]),
        "prefix": st.sampled_from(["", "{event_type}/", "{event_type}/{hour}/"]),
        "events": st.sampled_from(
            [["playback_start", "error"], ["error"], ["heartbeat", "seek"], None]
        ),
        "format": st.sampled_from(["ndjson", "ndjson.gz"]),
        "chunk_lines": st.sampled_from(["5000", "211"]),
    }
)


@settings(max_examples=6, deadline=None)
@given(CONFIGS)
def test_the_summary_agrees_with_the_files_the_job_wrote(
    events_file: Path, cfg: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory(prefix="epw-") as tmp:
        out = Path(tmp)
        route = {"events": cfg["events"]} if cfg["events"] else {}
        config = write_config(
            out,
            [
                {
                    "id": "sparse",
                    "type": "file",
                    "route": route,
                    "deliver": {
                        "path": str(out / "sparse"),
                        "prefix": cfg["prefix"],
                        "format": cfg["format"],
                        "batch": {"max_events": cfg["max_events"]},
                    },
                }
            ],
        )
        code, summary = run_job(
            config, events_file, out / "summary.json", "--chunk-lines", cfg["chunk_lines"]
        )
        assert code == 0
        sizes = sorted(_events_in(p) for p in (out / "sparse").rglob("*") if p.is_file())
        nbytes = sum(p.stat().st_size for p in (out / "sparse").rglob("*") if p.is_file())
    row = summary["connectors"][0]
    got = row["events_per_write"]
    assert sizes and row["writes"] == len(sizes) == got["count"]
    assert row["delivered"] == sum(sizes) and row["bytes"] == nbytes
    assert (got["min"], got["max"]) == (sizes[0], sizes[-1])
    assert got["mean"] == round(sum(sizes) / len(sizes), 1)
    median = statistics.median_low(sizes)
    assert got["p50_low"] <= median <= got["p50_high"]
    assert sizes[0] <= got["p50_low"] and got["p50_high"] <= sizes[-1]
    # Every bucket holds exactly the files whose size is within its bounds.
    for low, high, count in got["buckets"]:
        assert count == sum(1 for n in sizes if low <= n <= high), (low, high)
    assert sum(count for _, _, count in got["buckets"]) == len(sizes)

    text = format_summary(summary)
    p50 = (
        f"{got['p50_low']}"
        if got["p50_low"] == got["p50_high"]
        else f"{got['p50_low']}-{got['p50_high']}"
    )
    line = next(x for x in text.splitlines() if x.startswith("sparse "))
    assert f"{sizes[0]} / p50 {p50} / {sizes[-1]}" in line
    assert text.endswith("conservation (in = delivered + retrying + dead-lettered + dropped): OK")

    # The report adds runs up bucket by bucket: twice the run is the same sizes twice.
    twice = merge([summary, summary])["connectors"][0]["events_per_write"]
    assert (twice["count"], twice["min"], twice["max"]) == (2 * len(sizes), sizes[0], sizes[-1])
    assert twice["p50_low"] <= median <= twice["p50_high"]
    assert f"{sizes[0]} / p50 {p50} / {sizes[-1]}" in render([summary])

    # make bench: objects per connector and their sizes, from the same summary.
    objects = bench_run.objects_of(summary)
    assert objects["sparse"] == {
        "writes": len(sizes),
        "bytes": nbytes,
        "min": sizes[0],
        "p50_low": got["p50_low"],
        "p50_high": got["p50_high"],
        "max": sizes[-1],
    }


def test_a_connector_that_wrote_nothing_shows_no_sizes(events_file: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [
            {
                "id": "nobody",
                "type": "file",
                "route": {"events": ["no_such_type"]},
                "deliver": {"path": str(tmp_path / "nobody"), "format": "ndjson"},
            }
        ],
    )
    code, summary = run_job(config, events_file, tmp_path / "summary.json")
    assert code == 0
    got = summary["connectors"][0]["events_per_write"]
    assert got["count"] == 0 and got["min"] is None and got["p50_low"] is None
    assert got["buckets"] == []
    line = next(x for x in format_summary(summary).splitlines() if x.startswith("nobody "))
    assert " - " in line or line.rstrip().endswith("-") or "  -  " in line


def test_the_bench_table_lists_objects_per_connector_and_their_sizes() -> None:
    row = bench_run.Row(
        events=1_000_000,
        connectors=2,
        variant="job",
        runs=1,
        wall_s=1.0,
        cpu_s=1.0,
        peak_rss_mib=1.0,
        tree_rss_mib=1.0,
        inner_s=1.0,
        deliveries=10,
        load1=(0.0, 0.0),
        objects={
            "archive_0": {
                "writes": 1000,
                "bytes": 52_000_000,
                "min": 12,
                "p50_low": 1000,
                "p50_high": 1000,
                "max": 1000,
            },
            "marketing_0": {
                "writes": 0,
                "bytes": 0,
                "min": None,
                "p50_low": None,
                "p50_high": None,
                "max": None,
            },
        },
    )
    table = bench_run.objects_table([row])
    lines = table.splitlines()
    assert lines[0].startswith("| events | conn | connector | objects |")
    assert "| 1,000,000 | 2 | archive_0 | 1,000 | 12 | 1000 | 1000 | 52,000,000 | 52,000 |" in table
    assert "| 1,000,000 | 2 | marketing_0 | 0 | - | - | - | 0 | - |" in table
