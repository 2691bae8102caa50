"""End to end: each template construct of issue 21, and the new shipped templates, in a run.

One batch run (``run`` on the README's command, tests/jobs.py) of six hand-written events
through one file connector per construct (concat, cast, map, strftime format, when) and
one per new shipped template (datadog_logs_tagged, amplitude_event, bigquery_row). Every
expected record below is written by hand from the README, never computed with
transforms.rules; two events carry a bitrate no ``cast: int`` accepts and must be dead
letters (``package_cast_failed``) of exactly the connectors that cast it, while every
other event is delivered and the run's counts add up.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.jobs import run_job

E1 = {
    "event_id": "s1-1",
    "session_id": "s1",
    "event": {"type": "heartbeat", "timestamp": 1764136800123},  # 2025-11-26T06:00:00.123Z
    "metadata": {
        "device": {"os": "iOS", "type": "mobile", "model": "iPhone15,2"},
        "player": {"name": "hls.js", "version": "1.5.7"},
        "content": {"id": "c1", "live": False},
        "geo": {"country_code": "US"},
        "user": {"id": "u12345"},
        "error": {"code": "stale"},  # not an error event: `when` must leave it out
    },
    "fluxdata": {"rendition_video_bitrate_kbps": "4500", "num_errors": 0},
}
E2 = {
    "event_id": "s2-1",
    "session_id": "s2",
    # 23:30 at UTC-5 is 04:30 UTC the next day
    "event": {"type": "error", "timestamp": "2025-11-26T23:30:00-05:00"},
    "metadata": {
        "device": {"os": "android", "type": "tv"},
        "player": {"name": "ExoPlayer"},
        "content": {"id": 42, "live": "TRUE"},
        "geo": {"country_code": "CA"},
        "error": {"code": 4001},
    },
    "fluxdata": {"rendition_video_bitrate_kbps": 6000, "playhead_position_sec": 7, "num_errors": 1},
}
E3 = {  # bitrate "fast": no int
    "event_id": "s3-1",
    "session_id": "s3",
    "event": {"type": "heartbeat", "timestamp": 1764136805000},
    "metadata": {"device": {"os": "Roku"}, "player": {"name": "Roku"}},
    "fluxdata": {"rendition_video_bitrate_kbps": "fast"},
}
E4 = {
    "event_id": "s4-1",
    "session_id": "s4",
    "event": {"type": "buffer_start", "timestamp": 1764136810999},
    "metadata": {"device": {"os": "IOS"}, "geo": {"country_code": "GB"}},
    "fluxdata": {"rendition_video_bitrate_kbps": 4500.0, "buffer_length_ms": "800"},
}
E5 = {  # bitrate "2500kbps": no int
    "event_id": "s5-1",
    "session_id": "s5",
    "event": {"type": "error", "timestamp": 1764136820000},
    "metadata": {"device": {"os": "tvOS"}, "geo": {"country_code": "US"}, "error": {"code": 7}},
    "fluxdata": {"rendition_video_bitrate_kbps": "2500kbps"},
}
E6 = {  # no device, a null bitrate
    "event_id": "s6-1",
    "event": {"type": "heartbeat", "timestamp": 1764136830000},
    "metadata": {"geo": {"country_code": "US"}},
    "fluxdata": {"rendition_video_bitrate_kbps": None, "playhead_position_sec": "12.5"},
}
EVENTS = [E1, E2, E3, E4, E5, E6]
CAST_FAILURES = {"s3-1", "s5-1"}

CONNECTORS = {
    "concat": """
        fields:
          id: event_id
          tags: {concat: ["os:", {path: metadata.device.os}, ",country:",
                          {path: metadata.geo.country_code}]}
          player: {concat: ["p=", {path: metadata.player.name, default: none}]}""",
    "cast": """
        fields:
          id: event_id
          bitrate: {path: fluxdata.rendition_video_bitrate_kbps, cast: int}""",
    "map": """
        fields:
          id: event_id
          os: {path: metadata.device.os, map: {ios: iOS, android: Android},
               map_default: other, case_insensitive: true}""",
    "format": """
        fields:
          id: event_id
          day: {path: event.timestamp, format: "%Y-%m-%d"}
          hour: {path: event.timestamp, format: "%Y%m%d%H", cast: int}""",
    "when": """
        fields:
          id: event_id
          error_code: {path: metadata.error.code, cast: string,
                       when: {field: event.type, op: eq, value: error}}""",
}
SHIPPED = ("datadog_logs_tagged", "amplitude_event", "bigquery_row")


def config(out: Path) -> str:
    parts = ["connectors:"]
    for cid, template in CONNECTORS.items():
        parts.append(
            f"""  - id: {cid}
    type: file
    package:
      template:{template}
    deliver: {{path: "{out}/{cid}", format: ndjson}}"""
        )
    for name in SHIPPED:
        parts.append(
            f"""  - id: {name}
    type: file
    package: {{template: {name}}}
    deliver: {{path: "{out}/{name}", format: ndjson}}"""
        )
    parts.append(f'dead_letter: {{path: "{out}/dead_letter"}}')
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("templates_e2e")
    (tmp / "delivery.yaml").write_text(config(tmp / "out"))
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    code, summary = run_job(tmp / "delivery.yaml", tmp / "events.jsonl", tmp / "summary.json")
    assert code == 0, summary
    return tmp / "out", summary


def records(out: Path, cid: str) -> dict[str, dict[str, Any]]:
    got = [
        json.loads(line)
        for f in sorted((out / cid).rglob("*.ndjson"))
        for line in f.read_text().splitlines()
    ]
    key = {"datadog_logs_tagged": "event_id", "amplitude_event": "insert_id"}.get(cid)
    by_id = {r[key] if key else r.get("id", r.get("event_id")): r for r in got}
    assert len(by_id) == len(got), f"{cid}: duplicates"
    return by_id


def dead_letters(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted((out / "dead_letter").rglob("*.ndjson"))
        for line in f.read_text().splitlines()
    ]


def test_concat(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    assert records(out, "concat") == {
        "s1-1": {"id": "s1-1", "tags": "os:iOS,country:US", "player": "p=hls.js"},
        "s2-1": {"id": "s2-1", "tags": "os:android,country:CA", "player": "p=ExoPlayer"},
        "s3-1": {"id": "s3-1", "player": "p=Roku"},  # no country: no tags
        "s4-1": {"id": "s4-1", "tags": "os:IOS,country:GB", "player": "p=none"},
        "s5-1": {"id": "s5-1", "tags": "os:tvOS,country:US", "player": "p=none"},
        "s6-1": {"id": "s6-1", "player": "p=none"},  # no os: no tags
    }


def test_cast_failures_dead_letter_exactly_the_bad_events(run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = run
    assert records(out, "cast") == {
        "s1-1": {"id": "s1-1", "bitrate": 4500},
        "s2-1": {"id": "s2-1", "bitrate": 6000},
        "s4-1": {"id": "s4-1", "bitrate": 4500},
        "s6-1": {"id": "s6-1", "bitrate": None},
    }
    letters = dead_letters(out)
    casting = ("cast", "amplitude_event", "bigquery_row")  # the connectors that cast bitrate
    assert sorted((d["connector"], d["event_id"]) for d in letters) == sorted(
        (cid, eid) for cid in casting for eid in CAST_FAILURES
    )
    for d in letters:
        assert d["stage"] == "package" and d["reason"] == "package_cast_failed"
        shown = {"s3-1": "'fast'", "s5-1": "'2500kbps'"}[d["event_id"]]
        assert "bitrate" in d["error"] and shown in d["error"] and "int" in d["error"]
        assert d["event"] == next(e for e in EVENTS if e["event_id"] == d["event_id"])
    rows = {r["id"]: r for r in summary["connectors"]}
    for cid in [*CONNECTORS, *SHIPPED]:
        failed = len(CAST_FAILURES) if cid in casting else 0
        assert rows[cid]["routed"] == len(EVENTS), cid
        assert rows[cid]["delivered"] == len(EVENTS) - failed, cid
        assert rows[cid]["dead_lettered"] == failed, cid
    assert summary["balanced"]


def test_map(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    assert {k: r.get("os") for k, r in records(out, "map").items()} == {
        "s1-1": "iOS",
        "s2-1": "Android",
        "s3-1": "other",
        "s4-1": "iOS",
        "s5-1": "other",
        "s6-1": None,  # no os: no field
    }
    assert "os" not in records(out, "map")["s6-1"]


def test_strftime_format(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    got = {k: (r["day"], r["hour"]) for k, r in records(out, "format").items()}
    assert got == {
        "s1-1": ("2025-11-26", 2025112606),
        "s2-1": ("2025-11-27", 2025112704),
        "s3-1": ("2025-11-26", 2025112606),
        "s4-1": ("2025-11-26", 2025112606),
        "s5-1": ("2025-11-26", 2025112606),
        "s6-1": ("2025-11-26", 2025112606),
    }


def test_when(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    assert records(out, "when") == {
        "s1-1": {"id": "s1-1"},  # a heartbeat with an error code: left out
        "s2-1": {"id": "s2-1", "error_code": "4001"},
        "s3-1": {"id": "s3-1"},
        "s4-1": {"id": "s4-1"},
        "s5-1": {"id": "s5-1", "error_code": "7"},
        "s6-1": {"id": "s6-1"},
    }


def test_datadog_tagged_template(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    logs = records(out, "datadog_logs_tagged")
    assert {k: r["ddtags"] for k, r in logs.items()} == {
        "s1-1": "source:video-telemetry,os:iOS,country:US,player:hls.js,event_type:heartbeat",
        "s2-1": "source:video-telemetry,os:android,country:CA,player:ExoPlayer,event_type:error",
        "s3-1": "source:video-telemetry,os:Roku,country:unknown,player:Roku,event_type:heartbeat",
        "s4-1": "source:video-telemetry,os:IOS,country:GB,player:unknown,event_type:buffer_start",
        "s5-1": "source:video-telemetry,os:tvOS,country:US,player:unknown,event_type:error",
        "s6-1": "source:video-telemetry,os:unknown,country:US,player:unknown,event_type:heartbeat",
    }
    # Datadog's tag syntax: comma-separated key:value pairs, every key present once.
    for log in logs.values():
        pairs = [t.split(":", 1) for t in log["ddtags"].split(",")]
        assert [k for k, _ in pairs] == ["source", "os", "country", "player", "event_type"]
    assert logs["s1-1"] == {
        **E1,
        "ddsource": "video-player",
        "ddtags": logs["s1-1"]["ddtags"],
        "service": "video-telemetry",
        "hostname": "iPhone15,2",
        "message": "heartbeat",
        "timestamp": 1764136800123,
    }


def test_amplitude_template(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    events = records(out, "amplitude_event")
    assert set(events) == {"s1-1", "s2-1", "s4-1", "s6-1"}
    assert events["s1-1"] == {
        "user_id": "u12345",
        "event_type": "heartbeat",
        "time": 1764136800123,
        "insert_id": "s1-1",
        "platform": "iOS",
        "os_name": "iOS",
        "device_model": "iPhone15,2",
        "country": "US",
        "app_version": "1.5.7",
        "event_properties": {
            "player_session_id": "s1",
            "player": "hls.js",
            "content_id": "c1",
            "live": False,
            "bitrate_kbps": 4500,
            "num_errors": 0,
        },
    }
    assert events["s2-1"]["time"] == 1764217800000  # 2025-11-27T04:30:00Z
    assert events["s2-1"]["platform"] == "Android"
    assert events["s2-1"]["event_properties"]["error_code"] == "4001"
    assert events["s2-1"]["event_properties"]["content_id"] == "42"
    assert events["s2-1"]["event_properties"]["live"] is True
    assert events["s2-1"]["event_properties"]["playhead_sec"] == 7.0
    assert events["s4-1"]["event_properties"]["buffer_length_ms"] == 800
    # Amplitude's required fields: event_type, a time in ms, and user_id or device_id
    # (here only events with a user have one; the template leaves device_id to the producer).
    for e in events.values():
        assert isinstance(e["event_type"], str) and type(e["time"]) is int


# The BigQuery schema in templates/bigquery_row.yaml, as JSON types of an insertAll row.
BQ_TYPES = {
    "event_id": str,
    "session_id": str,
    "event_type": str,
    "event_time": str,
    "event_day": str,
    "os": str,
    "device_type": str,
    "country": str,
    "player": str,
    "content_id": str,
    "is_live": bool,
    "bitrate_kbps": int,
    "bandwidth_kbps": int,
    "buffer_length_ms": int,
    "playhead_sec": float,
    "num_errors": int,
    "error_code": str,
}


def test_bigquery_row_template(run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run
    rows = records(out, "bigquery_row")
    assert set(rows) == {"s1-1", "s2-1", "s4-1", "s6-1"}
    for row in rows.values():
        assert set(row) <= set(BQ_TYPES)
        for column, value in row.items():
            assert value is None or type(value) is BQ_TYPES[column], (column, value)
    assert rows["s2-1"] == {
        "event_id": "s2-1",
        "session_id": "s2",
        "event_type": "error",
        "event_time": "2025-11-27T04:30:00.000Z",
        "event_day": "2025-11-27",
        "os": "Android",
        "device_type": "tv",
        "country": "CA",
        "player": "ExoPlayer",
        "content_id": "42",
        "is_live": True,
        "bitrate_kbps": 6000,
        "playhead_sec": 7.0,
        "num_errors": 1,
        "error_code": "4001",
    }
    assert rows["s6-1"] == {
        "event_id": "s6-1",
        "event_type": "heartbeat",
        "event_time": "2025-11-26T06:00:30.000Z",
        "event_day": "2025-11-26",
        "country": "US",
        "bitrate_kbps": None,
        "playhead_sec": 12.5,
    }
    assert Counter(r["os"] for r in rows.values() if "os" in r) == {"iOS": 2, "Android": 1}
