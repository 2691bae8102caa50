from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from beam_pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"version", "input", "connectors", "balanced", "elapsed_s"}
CONNECTOR_KEYS = {
    "dropped",
    "fanned_out",
    "sink_overclaimed",
    "id",
    "type",
    "in",
    "routed",
    "delivered",
    "dead_lettered",
    "retrying",
    "writes",
    "bytes",
    "retried_immediate",
    "retried_delayed",
    "replayed",
    "retry_due",
    "retry_waiting",
    "already_present",
    "possible_duplicates",
    "spilled",
    "freshness",
    "dead_letter_reasons",
    "balanced",
    "events_per_write",
}


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, bytes] = {}
        self.cells: list[str] = []
        self._figure: str | None = None
        self._in_td = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure":
            self._figure = a.get("id")
        if tag == "img" and self._figure:
            src = a["src"] or ""
            assert src.startswith("data:image/png;base64,")
            self.images[self._figure] = base64.b64decode(src.split(",", 1)[1])
        self._in_td = tag == "td"

    def handle_data(self, data: str) -> None:
        if self._in_td:
            self.cells.append(data)


def test_summary_schema_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text((REPO / "examples" / "delivery.yaml").read_text().replace("./out/", f"{out}/"))
    summary = tmp_path / "summary.json"
    assert (
        main(
            [
                "run",
                "--config",
                str(cfg),
                "--input",
                str(REPO / "examples" / "events.jsonl.gz"),
                "--summary-json",
                str(summary),
            ]
        )
        == 0
    )
    data = json.loads(summary.read_text())
    assert set(data) == SUMMARY_KEYS and data["version"] == 1
    assert all(set(c) == CONNECTOR_KEYS for c in data["connectors"])
    assert set(data["connectors"][0]["freshness"]) == {
        "events",
        "unknown",
        "buckets",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    }
    sizes = {c["id"]: c["events_per_write"] for c in data["connectors"]}
    assert set(sizes["archive"]) == {
        "count",
        "sum",
        "min",
        "max",
        "mean",
        "p50_low",
        "p50_high",
        "buckets",
    }
    # The sample's marketing connector writes its 78 events in one file.
    assert sizes["marketing"]["buckets"] == [[77, 90, 1]]
    assert (sizes["marketing"]["min"], sizes["marketing"]["p50_low"]) == (78, 78)
    assert all(sizes[c["id"]]["count"] == c["writes"] for c in data["connectors"])

    report = tmp_path / "report.html"
    assert main(["report", "--summary-json", str(summary), str(summary), "--out", str(report)]) == 0
    page = Images()
    page.feed(report.read_text())
    assert set(page.images) == {"volume", "freshness", "failures"}
    for png in page.images.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    # Two summaries are added up: archive delivered 5000 twice.
    assert "archive" in page.cells and "10000" in page.cells
    assert "78 / p50 78 / 78" in page.cells  # marketing's one file, twice
    assert re.search(r"Conservation .*: OK", report.read_text())


def test_progress_reaches_every_byte(tmp_path: Path) -> None:
    from transforms.progress import PROGRESS

    out = tmp_path / "out"
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text((REPO / "examples" / "delivery.yaml").read_text().replace("./out/", f"{out}/"))
    sample = REPO / "examples" / "events.jsonl.gz"
    assert main(["run", "--config", str(cfg), "--input", str(sample), "--no-progress"]) == 0
    line = PROGRESS.line()
    size = sample.stat().st_size
    assert PROGRESS.total_bytes == size and sum(PROGRESS.positions.values()) == size
    assert PROGRESS.lines == 5006 and PROGRESS.finished == {str(sample)}
    assert "(100%)" in line and "files 1/1" in line


def test_merged_summaries_balance_with_dropped_records_and_not_without_them() -> None:
    from beam_pipeline.report import merge

    row = {
        "id": "amp",
        "type": "http",
        "in": 10,
        "delivered": 6,
        "dead_lettered": 1,
        "retrying": 1,
        "dropped": 2,  # a package.function returned None for two events
        "writes": 1,
        "bytes": 100,
        "freshness": {"buckets": [0], "unknown": 0},
    }
    run = {"input": {"events": 10}, "connectors": [row], "balanced": True}
    assert merge([run, run])["balanced"] is True
    lost = {**run, "connectors": [{**row, "dropped": 0}]}
    assert merge([lost, lost])["balanced"] is False
