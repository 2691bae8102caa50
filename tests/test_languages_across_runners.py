"""Issue 21's "done means": every route and package construct works the same everywhere.

``examples/languages/delivery.yaml`` uses every construct of the two languages over five
file connectors (route groups ``any``/``all``/``not``, ``contains``/``starts_with``/
``ends_with``, a ``route.unmatched`` catch-all; template ``concat``, ``cast``, ``map`` +
``map_default`` + ``case_insensitive``, a strftime ``format``, ``when``; and
``package.function`` with a fan-out, drops and a raise). Its events,
``examples/languages/events.jsonl`` (one per case, and one bad line), plus 200 generated
realistic ones, run three ways:

(a) a batch job on the default runner (the README's ``run``, tests/jobs.py),
(b) a streaming job on the default engine (Prism), reading them from the Pub/Sub emulator
    (the harness of tests/test_streaming_default_engine.py), stopped with SIGTERM once
    every expected output is there (stopping drains),
(c) a batch job on Flink's embedded cluster (tests/test_flink.py's flags; flink tier),
(d) a streaming job on Flink's embedded cluster reading them from the Pub/Sub emulator
    (the same harness as (b) with test_flink's flags; flink tier), stopped as
    tests/test_flink.py's streaming test stops it: ``--run-for-s`` ends the reading, then
    Flink drains the job and it finishes by itself.

Per connector the delivered records (every output file parsed, each record a JSON value,
compared as a multiset: batches are cut differently in streaming) and the dead letters
``(connector, event_id, stage, reason)`` must be the same in all four runs, and the
summary's counts must balance and agree. Independently of the job's rules, every record
and dead letter of the hand-written events is written out below by hand from the README.
"""

from __future__ import annotations

import gzip
import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.jobs import run_job
from tests.standins.pubsub import PubSubEmulator
from tests.test_flink import flink_flags, flink_job_server_jar  # noqa: F401 (a fixture)
from tests.test_streaming_default_engine import _start_job, _wait_for

pytest_plugins = ["tests.standins.pubsub"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "languages"
N_GENERATED = 200

# Output = {connector: Counter of canonical JSON records}; letters = Counter of
# (connector, event_id, stage, reason).
Outputs = dict[str, Counter[str]]
Letters = Counter[tuple[Any, Any, str, str]]


def canonical(record: Any) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def input_lines() -> list[bytes]:
    """The example's hand-written lines, then generated events (distinct ids)."""
    lines = EXAMPLE.joinpath("events.jsonl").read_bytes().splitlines()
    return [line for line in lines if line] + list(generate(N_GENERATED, seed=21, iso_every=13))


def example_config() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.joinpath("delivery.yaml").read_text())


def connectors_into(out: Path) -> list[dict[str, Any]]:
    """The example's connectors, each writing below ``out/<id>``."""
    connectors = example_config()["connectors"]
    for c in connectors:
        c["deliver"]["path"] = str(out / c["id"])
    return connectors


def write_config(tmp: Path) -> Path:
    """The example config with every output below ``tmp/out`` (as _start_job lays it out)."""
    cfg = example_config()
    out = tmp / "out"
    cfg["connectors"] = connectors_into(out)
    cfg["dead_letter"]["path"] = str(out / "dead_letter")
    path = tmp / "delivery.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def write_input(tmp: Path) -> Path:
    path = tmp / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in input_lines()))
    return path


def parse_file(path: Path) -> list[Any]:
    """Every record of one output file (ndjson, ndjson.gz or json_array)."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if path.suffix == ".json":
        records = json.loads(data)
        assert isinstance(records, list), path
        return records
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def output_files(folder: Path) -> list[Path]:
    suffixes = (".ndjson", ".ndjson.gz", ".json")  # never a writer's ``.tmp-<uuid>`` name
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def outputs(out: Path) -> Outputs:
    ids = [c["id"] for c in example_config()["connectors"]]
    return {
        cid: Counter(canonical(r) for f in output_files(out / cid) for r in parse_file(f))
        for cid in ids
    }


def letters(out: Path) -> Letters:
    return Counter(
        (d.get("connector"), d.get("event_id"), d["stage"], d["reason"])
        for f in output_files(out / "dead_letter")
        for d in parse_file(f)
    )


COUNTS = ("routed", "in", "delivered", "dead_lettered", "retrying", "dropped", "fanned_out")


def counts(summary: dict[str, Any]) -> dict[str, Any]:
    """What must agree between runs (not writes or bytes: batches are cut differently)."""
    assert summary["balanced"], summary
    assert summary["input"]["balanced"], summary["input"]
    for row in summary["connectors"]:
        assert row["balanced"], row
        assert (
            row["in"] == row["delivered"] + row["retrying"] + row["dead_lettered"] + row["dropped"]
        ), row
    got: dict[str, Any] = {
        "input": {k: summary["input"][k] for k in ("events", "invalid", "unmatched")},
    }
    got.update({r["id"]: {k: r[k] for k in COUNTS} for r in summary["connectors"]})
    return got


# --- The independent oracle: every hand-written event's fate, from the README ---------


def _hand_ids() -> set[str]:
    """The ids of the example's hand-written events (its one bad line has none)."""
    ids = set()
    for line in EXAMPLE.joinpath("events.jsonl").read_bytes().splitlines():
        try:
            ids.add(json.loads(line)["event_id"])
        except ValueError:
            continue
    return ids


HAND = _hand_ids()
KEY = {"apple_na": "id"}  # the field naming a record's event; event_id elsewhere


def _premium(eid: str, etype: str, ts: Any, metadata: Any, fluxdata: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "session_id": f"s-{eid}",
        "event": {"type": etype, "timestamp": ts},
        "metadata": metadata,
        "fluxdata": fluxdata,
    }


def _raw(eid: str, etype: str, ts: int, os: str, country: str, **meta: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "session_id": f"s-{eid}",
        "event": {"type": etype, "timestamp": ts},
        "metadata": {
            "device": {"os": os},
            "player": {"name": "hls.js"},
            "content": {"id": "c1"},
            "geo": {"country_code": country},
            **meta,
        },
    }


T = 1764136800123  # 2025-11-26T06:00:00.123Z
EXPECTED: dict[str, list[dict[str, Any]]] = {
    # contains OS + any(in US/CA | all(errors > 0, not free)) + starts_with hls + not
    # ends_with -test, on heartbeat/playback_start.
    "apple_na": [
        {"id": "na-ios", "tags": "os:iOS,country:US", "os": "iOS", "day": "2025-11-26"},
        # FR, but 2 errors and no subscription (eq on a missing field is false: not holds);
        # 23:30 at UTC-5 is the 27th in UTC.
        {"id": "fr-tvos-errors", "tags": "os:tvOS,country:FR", "os": "tvOS", "day": "2025-11-27"},
        # "IOS" maps case-insensitively; the concat keeps the value as sent.
        {"id": "ca-caps-start", "tags": "os:IOS,country:CA", "os": "iOS", "day": "2025-11-26"},
        {"id": "us-webos", "tags": "os:webOS,country:US", "os": "other", "day": "2025-11-26"},
        # no country: the concat part's default
        {
            "id": "nocountry-ipados",
            "tags": "os:iPadOS,country:unknown",
            "os": "other",
            "day": "2025-11-26",
        },
    ],
    # bitrate exists, heartbeat/error/buffer_start; cast, format, when(all, not).
    "typed": [
        {"event_id": "na-ios", "bitrate": 4500, "hour": 2025112606, "live": False},
        {"event_id": "fr-tvos-errors", "bitrate": 6000, "hour": 2025112704, "live": False},
        {
            "event_id": "err-multi",
            "bitrate": 3000,
            "hour": 2025112606,
            "live": True,
            "error_code": "4001",
        },
        {"event_id": "err-zero", "bitrate": 2500, "hour": 2025112606, "live": False},  # code 0
        {"event_id": "na-ios-notime", "bitrate": 4500, "live": False},  # no time: no hour
        {"event_id": "ca-ios-shaka", "bitrate": 4500, "hour": 2025112606, "live": False},
    ],
    # error_records: codes fan out, a single code is one record, heartbeats are dropped.
    "error_codes": [
        {"event_id": "err-multi", "error_code": 4001},
        {"event_id": "err-multi", "error_code": 5002},
        {"event_id": "err-zero", "error_code": 0},
    ],
    # not(subscription eq free) holds without a subscription; only geo.* and
    # user.subscription of metadata pass; playhead is denied.
    "premium_eu": [
        _premium(
            "fr-tvos-errors",
            "heartbeat",
            "2025-11-26T23:30:00-05:00",
            {"geo": {"country_code": "FR"}},
            {"rendition_video_bitrate_kbps": "6000", "num_errors": 2},
        ),
        _premium(
            "de-android-buffer",
            "buffer_start",
            T + 1000,
            {"geo": {"country_code": "DE"}, "user": {"subscription": "premium"}},
            {"buffer_length_ms": 800},
        ),
    ],
    # Taken by no other connector (seek-1 is excluded here too: unmatched), as sent.
    "everything_else": [
        _raw("us-android-start", "playback_start", T, "Android", "US"),
        _raw(
            "gb-free-buffer",
            "buffer_start",
            T + 2000,
            "Android",
            "GB",
            user={"subscription": "free"},
        ),
        _raw("gb-pause", "pause", T + 3000, "Android", "GB"),
    ],
}
EXPECTED_LETTERS: Letters = Counter(
    {
        ("apple_na", "na-ios-notime", "batch", "prefix_unrenderable"): 1,
        ("typed", "fr-ios-free", "package", "package_cast_failed"): 1,  # bitrate "fast"
        ("error_codes", "err-nocode", "package", "package_function_failed"): 1,  # no code
        (None, None, "parse", "bad_json"): 1,  # the cut line
    }
)


def check_oracle(got: Outputs, got_letters: Letters) -> None:
    for cid, want in EXPECTED.items():
        key = KEY.get(cid, "event_id")
        mine = Counter({r: n for r, n in got[cid].items() if json.loads(r)[key] in HAND})
        assert mine == Counter(canonical(r) for r in want), cid
    # The generated events are well formed: every dead letter is a hand-written case.
    assert got_letters == EXPECTED_LETTERS


CONSTRUCTS = {
    "route groups": {"any", "all", "not"},
    "route ops": {"contains", "starts_with", "ends_with"},
    "catch-all": {"unmatched"},
    "template": {"concat", "cast", "map", "map_default", "case_insensitive", "when"},
    "escape hatch": {"function"},
}


def _keys_and_ops(node: Any) -> set[str]:
    """Every mapping key and every ``op`` value anywhere in a parsed YAML document."""
    found: set[str] = set()
    if isinstance(node, dict):
        found.update(str(k) for k in node)
        if isinstance(node.get("op"), str):
            found.add(node["op"])
        for value in node.values():
            found |= _keys_and_ops(value)
    elif isinstance(node, list):
        for value in node:
            found |= _keys_and_ops(value)
    return found


def test_the_example_uses_every_construct_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    """What the runs below prove holds for each construct only if the example has it."""
    cfg = example_config()
    used = _keys_and_ops(cfg)
    for what, names in CONSTRUCTS.items():
        assert names <= used, f"{what}: {sorted(names - used)} missing from the example"
    formats = [
        spec["format"]
        for c in cfg["connectors"]
        for spec in ((c.get("package") or {}).get("template") or {}).get("fields", {}).values()
        if isinstance(spec, dict) and "format" in spec
    ]
    assert any("%" in f for f in formats), "no strftime format in the example"
    assert main(["validate", "--config", str(EXAMPLE / "delivery.yaml")]) == 0
    assert "OK, 5 connector(s)" in capsys.readouterr().out


# --- (a) batch, default runner: the reference the other runs must equal --------------


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Outputs, Letters, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("languages-batch")
    code, summary = run_job(write_config(tmp), write_input(tmp), tmp / "summary.json")
    assert code == 0, summary
    return outputs(tmp / "out"), letters(tmp / "out"), counts(summary)


def test_batch_on_the_default_runner_matches_the_hand_oracle(
    reference: tuple[Outputs, Letters, dict[str, Any]],
) -> None:
    got, got_letters, summary = reference
    check_oracle(got, got_letters)
    assert summary["input"]["events"] == len(HAND) + N_GENERATED
    assert summary["input"]["invalid"] == 1
    # every connector got something from the generated events too, except premium_eu
    for cid in ("apple_na", "typed", "everything_else"):
        assert sum(got[cid].values()) > len(EXPECTED[cid]), cid
    assert summary["error_codes"]["fanned_out"] >= 1 and summary["error_codes"]["dropped"] > 0


# --- (b) streaming, default engine (Prism), from the Pub/Sub emulator ------------------


def _settled(out: Path, want: Outputs, want_letters: Letters) -> Callable[[], bool]:
    """True once every expected record and dead letter has been written."""

    def check() -> bool:
        have = outputs(out)
        return all(have[c] >= want[c] for c in want) and letters(out) >= want_letters

    return check


def _publish_and_start(tmp_path: Path, pubsub_env: PubSubEmulator, *flags: str) -> Any:
    """Publish the example's lines to a fresh subscription and start ``run --streaming``
    on it (``flags`` added); returns ``(out, process, log)``."""
    from google.cloud import pubsub_v1

    topic = pubsub_env.create_topic("languages")
    subscription = pubsub_env.create_subscription(topic)
    publisher = pubsub_v1.PublisherClient()
    for future in [publisher.publish(topic, line) for line in input_lines()]:
        future.result(timeout=30)
    out = tmp_path / "out"
    items = yaml.safe_dump(connectors_into(out), sort_keys=False)
    proc, log = _start_job(
        tmp_path,
        "\n".join("  " + line for line in items.splitlines()),
        "--subscription",
        subscription,
        *flags,
    )
    return out, proc, log


def test_streaming_on_prism_from_pubsub_equals_batch(
    tmp_path: Path,
    pubsub_env: PubSubEmulator,
    reference: tuple[Outputs, Letters, dict[str, Any]],
) -> None:
    want, want_letters, want_counts = reference
    out, proc, log = _publish_and_start(tmp_path, pubsub_env)
    try:
        _wait_for(_settled(out, want, want_letters), 180, "every expected output", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    printed = (tmp_path / "job.log").read_text()
    got, got_letters = outputs(out), letters(out)
    check_oracle(got, got_letters)
    assert got == want  # nothing more after the drain: no duplicates, nothing extra
    assert got_letters == want_letters
    summary = json.loads((out / "summary.json").read_text())
    if proc.returncode == 0:
        assert counts(summary) == want_counts
        return
    # The outputs are exact (above); only the counters may be short, by Prism's known loss
    # of values reported by concurrent first bundles (docs/beam-limits.md), which the job's
    # announcement of its counters at start-up should prevent: 0 of 16 runs lost since.
    # Anything else (a count above the batch run's, another error) fails here.
    assert "MISMATCH" in printed, printed[-3000:]
    lower = prism_lost_counts(summary, want_counts)
    pytest.xfail(f"Prism 2.77 lost counter values (docs/beam-limits.md): {lower}")


def prism_lost_counts(summary: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The counters below the batch run's, after checking none is above and some are below."""
    rows = {r["id"]: r for r in summary["connectors"]}
    lower: dict[str, Any] = {}
    for cid, expected in want.items():
        if cid == "input":
            continue
        for key, value in expected.items():
            got = rows[cid][key]
            assert got <= value, (cid, key, got, value)  # a loss, never a gain
            if got < value:
                lower[f"{cid}.{key}"] = (got, value)
    assert lower, summary
    return lower


# --- (c) batch on Flink's embedded cluster ---------------------------------------------


@pytest.mark.flink
def test_batch_on_flink_equals_batch_on_the_default_runner(
    tmp_path: Path,
    flink_job_server_jar: str,  # noqa: F811
    reference: tuple[Outputs, Letters, dict[str, Any]],
) -> None:
    want, want_letters, want_counts = reference
    summary_path = tmp_path / "summary.json"
    argv = ["run", "--config", str(write_config(tmp_path)), "--input", str(write_input(tmp_path))]
    argv += ["--summary-json", str(summary_path), "--no-progress"]
    code = main([*argv, *flink_flags(flink_job_server_jar)])
    summary = json.loads(summary_path.read_text())
    assert code == 0, summary
    got, got_letters = outputs(tmp_path / "out"), letters(tmp_path / "out")
    check_oracle(got, got_letters)
    assert got == want
    assert got_letters == want_letters
    assert counts(summary) == want_counts


# --- (d) streaming on Flink's embedded cluster, from the Pub/Sub emulator ---------------

FLINK_READ_S = 90
"""How long the Flink run reads (``--run-for-s``), counted from the command's start: the
job server and the embedded cluster start within it (under 30 s here), and every message
was published before, so the reader finds them all; what it has read is then drained."""


@pytest.mark.flink
def test_streaming_on_flink_from_pubsub_equals_batch(
    tmp_path: Path,
    pubsub_env: PubSubEmulator,
    flink_job_server_jar: str,  # noqa: F811
    reference: tuple[Outputs, Letters, dict[str, Any]],
) -> None:
    want, want_letters, want_counts = reference
    out, proc, log = _publish_and_start(
        tmp_path,
        pubsub_env,
        "--run-for-s",
        str(FLINK_READ_S),
        "--pubsub-ack",  # the embedded cluster does not checkpoint: ack on reading
        "immediate",
        *flink_flags(flink_job_server_jar),
    )
    try:
        proc.wait(timeout=FLINK_READ_S + 300)  # it stops reading, drains and ends by itself
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    printed = (tmp_path / "job.log").read_text()
    assert proc.returncode == 0, printed[-3000:]
    got, got_letters = outputs(out), letters(out)
    check_oracle(got, got_letters)
    assert got == want  # every record once: nothing missing, duplicated or extra
    assert got_letters == want_letters
    summary = json.loads((out / "summary.json").read_text())
    assert counts(summary) == want_counts
