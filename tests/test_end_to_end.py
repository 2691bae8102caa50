"""End to end: ``run`` on a generated file with several connectors, checked against an oracle.

The oracle below re-implements each connector's rules directly for this config (it does
not call transforms.rules), so a wiring or semantics bug in the pipeline shows up as a
difference in exactly which records each connector received.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import pytest

from beam_pipeline.cli import main
from examples.generate_events import generate

N_EVENTS = 3000
N_INVALID = 14  # every kind twice: not_json, json_array, missing_type, numeric_type,
# invalid_utf8, oversized, blank


def config(out: Path) -> str:
    return f"""
connectors:
  - id: ops
    type: file
    route:
      events: [heartbeat, error]
      when: [{{field: metadata.geo.country_code, op: in, value: [US, CA]}}]
    filter:
      metadata: {{allow: ["device.*", "content.title"]}}
      fluxdata: {{deny: [playhead_position_sec]}}
    deliver: {{path: "{out}/ops", prefix: "{{year}}/{{month}}/{{day}}/{{hour}}/",
               format: ndjson, batch: {{max_events: 100}}}}
  - id: sampled
    type: file
    route: {{sample_sessions: 0.5}}
    filter: {{metadata: {{allow: []}}, fluxdata: {{allow: [num_errors]}}}}
    package: {{template: flat_event}}
    deliver: {{path: "{out}/sampled", format: json_array, batch: {{max_events: 300}}}}
  - id: everything
    type: file
    deliver: {{path: "{out}/everything", format: avro, batch: {{max_events: 250}}}}
  - id: no_heartbeats
    type: file
    route: {{exclude_events: [heartbeat]}}
    filter: {{metadata: {{deny: [network, "user.id"]}}}}
    package:
      values: {{event.type: {{buffer_start: rebuffer_start}}}}
      rename: {{session_id: sid}}
    deliver: {{path: "{out}/no_heartbeats", format: ndjson.gz, batch: {{max_events: 400}}}}
dead_letter: {{path: "{out}/dead_letter"}}
"""


def oracle(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    def ops(e: dict[str, Any]) -> dict[str, Any] | None:
        if e["event"]["type"] not in ("heartbeat", "error"):
            return None
        if e["metadata"]["geo"]["country_code"] not in ("US", "CA"):
            return None
        meta = {}
        if "device" in e["metadata"]:
            meta["device"] = e["metadata"]["device"]
        if "title" in e["metadata"].get("content", {}):
            meta["content"] = {"title": e["metadata"]["content"]["title"]}
        flux = {k: v for k, v in e["fluxdata"].items() if k != "playhead_position_sec"}
        return {**e, "metadata": meta, "fluxdata": flux}

    def sampled(e: dict[str, Any]) -> dict[str, Any] | None:
        digest = hashlib.blake2b(e["session_id"].encode(), digest_size=8).digest()
        if int.from_bytes(digest, "big") / 2**64 >= 0.5:
            return None
        ts = e["event"]["timestamp"]
        if isinstance(ts, str):
            iso = ts
        else:
            import datetime as dt

            iso = dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S."
            )
            iso += f"{ts % 1000:03d}Z"
        out = {
            "event_id": e["event_id"],
            "session_id": e["session_id"],
            "event_type": e["event"]["type"],
        }
        out["time"] = iso
        out["fluxdata.num_errors"] = e["fluxdata"]["num_errors"]
        return out

    def no_heartbeats(e: dict[str, Any]) -> dict[str, Any] | None:
        if e["event"]["type"] == "heartbeat":
            return None
        meta = {k: v for k, v in e["metadata"].items() if k != "network"}
        meta["user"] = {k: v for k, v in meta["user"].items() if k != "id"}
        out = {k: v for k, v in e.items() if k != "session_id"}
        etype = e["event"]["type"]
        out["event"] = {
            **e["event"],
            "type": "rebuffer_start" if etype == "buffer_start" else etype,
        }
        out["metadata"] = meta
        out["sid"] = e["session_id"]
        return out

    rules = {
        "ops": ops,
        "sampled": sampled,
        "everything": lambda e: e,
        "no_heartbeats": no_heartbeats,
    }
    return {cid: [r for r in map(rule, events) if r is not None] for cid, rule in rules.items()}


def read_records(folder: Path) -> tuple[list[dict[str, Any]], list[int], dict[str, bytes]]:
    """Every record under a connector's folder, the size of each file, and each file's bytes."""
    records: list[dict[str, Any]] = []
    sizes = []
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        files[str(path.relative_to(folder))] = data
        name = path.name
        if name.endswith(".ndjson.gz"):
            batch = [json.loads(x) for x in gzip.decompress(data).decode().splitlines()]
        elif name.endswith(".ndjson"):
            batch = [json.loads(x) for x in data.decode().split("\n") if x]
        elif name.endswith(".json"):
            batch = json.loads(data)
        elif name.endswith(".avro"):
            batch = [json.loads(r["record"]) for r in fastavro.reader(io.BytesIO(data))]
        else:
            raise AssertionError(f"unexpected file {path}")
        records.extend(batch)
        sizes.append(len(batch))
    return records, sizes, files


def canonical(records: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records)


def write_corpus(folder: Path, seed: int, iso_every: int) -> tuple[Path, list[dict[str, Any]]]:
    """A gzip corpus of N_EVENTS events and N_INVALID bad lines; its path and valid events."""
    lines = list(generate(N_EVENTS, seed=seed, invalid=N_INVALID, iso_every=iso_every))
    path = folder / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    valid = []
    for line in lines:
        try:
            e = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if (
            isinstance(e, dict)
            and isinstance(e.get("event", {}).get("type"), str)
            and len(line) <= 1 << 20
        ):
            valid.append(e)
    assert len(valid) == N_EVENTS
    return path, valid


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), seed=7, iso_every=50)


def run_job(tmp: Path, source: Path, *extra: str) -> dict[str, Any]:
    cfg = tmp / "delivery.yaml"
    cfg.write_text(config(tmp / "out"))
    summary = tmp / "summary.json"
    code = main(
        [
            "run",
            "--config",
            str(cfg),
            "--input",
            str(source),
            "--summary-json",
            str(summary),
            *extra,
        ]
    )
    assert code == 0
    return json.loads(summary.read_text())


def test_each_connector_gets_exactly_its_events(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]]
) -> None:
    source, events = corpus
    summary = run_job(tmp_path, source, "--chunk-lines", "700")
    expected = oracle(events)
    rows = {r["id"]: r for r in summary["connectors"]}
    limits = {"ops": 100, "sampled": 300, "everything": 250, "no_heartbeats": 400}
    for cid, want in expected.items():
        got, sizes, _ = read_records(tmp_path / "out" / cid)
        assert canonical(got) == canonical(want), cid
        assert max(sizes) <= limits[cid], cid
        assert rows[cid]["routed"] == rows[cid]["delivered"] == len(want), cid
        assert rows[cid]["dead_lettered"] == 0 and rows[cid]["writes"] == len(sizes)
        assert len({r.get("event_id") for r in got}) == len(got), f"{cid}: duplicates"
    assert 0 < len(expected["sampled"]) < N_EVENTS
    assert summary["input"] == {
        "lines_read": N_EVENTS + N_INVALID,
        "events": N_EVENTS,
        "invalid": N_INVALID - 2,
        "blank_lines": 2,
        "unmatched": 0,
        "duplicates": 0,
        "invalid_reasons": {
            "bad_json": 2,
            "no_event_type": 4,
            "not_an_object": 2,
            "not_utf8": 2,
            "too_large": 2,
        },
        "balanced": True,
    }
    assert summary["balanced"]
    letters = [
        json.loads(line)
        for f in (tmp_path / "out" / "dead_letter").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]
    assert Counter(d["reason"] for d in letters) == {
        "bad_json": 2,
        "not_an_object": 2,
        "no_event_type": 4,
        "not_utf8": 2,
        "too_large": 2,
    }
    assert all(d["stage"] == "parse" and d["connector"] is None for d in letters)
    big = [d for d in letters if d["reason"] == "too_large"]
    assert all(d["original_truncated"] and d["original_bytes"] > 1 << 20 for d in big)


def test_rerun_rewrites_the_same_files(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]]
) -> None:
    source, _ = corpus
    run_job(tmp_path, source)
    first = {
        cid: read_records(tmp_path / "out" / cid)[2]
        for cid in ("ops", "sampled", "everything", "no_heartbeats")
    }
    run_job(tmp_path, source)
    second = {cid: read_records(tmp_path / "out" / cid)[2] for cid in first}
    assert first == second  # same names, same bytes, nothing added


def test_bad_input_arguments_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text(config(tmp_path / "out"))
    assert main(["run", "--config", str(cfg), "--input", str(tmp_path / "nothing-*.jsonl")]) == 2
    assert "matches no files" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg)]) == 2
    assert "--input is required" in capsys.readouterr().err


def truncate(packed: bytes) -> bytes:
    return packed[: len(packed) // 2]


def corrupt(packed: bytes) -> bytes:
    middle = len(packed) // 2
    return packed[:middle] + bytes(64) + packed[middle + 64 :]


@pytest.mark.parametrize(
    ("damage", "error"), [(truncate, "EOFError"), (corrupt, "")], ids=["truncated", "corrupt"]
)
def test_a_damaged_gzip_input_is_a_dead_letter_not_a_crash(
    tmp_path: Path, damage: Any, error: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = list(generate(300, seed=3))
    (inputs / "good.jsonl").write_bytes(b"\n".join(good) + b"\n")
    # ~20k events (several MiB once decompressed), damaged in the middle of the stream.
    damaged_lines = list(generate(20_000, seed=4))
    packed = gzip.compress(b"\n".join(damaged_lines) + b"\n")
    (inputs / "damaged.jsonl.gz").write_bytes(damage(packed))
    summary = run_job(tmp_path, inputs / "*")
    counts = summary["input"]
    assert counts["balanced"]
    assert counts["invalid_reasons"]["unreadable_input"] == 1
    letters = [
        json.loads(line)
        for path in (tmp_path / "out" / "dead_letter").rglob("*.ndjson")
        for line in path.read_text().splitlines()
    ]
    [letter] = [d for d in letters if d["stage"] == "read"]
    assert letter["reason"] == "unreadable_input" and letter["path"].endswith("damaged.jsonl.gz")
    assert error in letter["error"]
    assert len(letters) == counts["invalid"]  # every invalid line is a dead letter
    # What came before the damage went on: every line before it was read and parsed.
    readable = counts["events"] - len(good)
    assert 0 < readable < len(damaged_lines)
    assert letter["lines_before"] == readable + counts["invalid"] - 1 + counts["blank_lines"]
    if damage is truncate:  # cut off cleanly: nothing else is wrong with the file
        assert counts["invalid"] == 1
    delivered = sum(c["delivered"] for c in summary["connectors"])
    assert delivered > 0
