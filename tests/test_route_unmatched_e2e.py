"""End to end through the batch job: route groups, the new ops and a catch-all connector.

Exact counts per connector, and conservation: every event is routed to some connector or
counted ``unmatched``, and an event a catch-all takes is routed, not unmatched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import transforms.live
from tests.conftest import make_event
from tests.jobs import run_job
from transforms.config import ConfigError, load_config
from transforms.live import LiveRules


def write_config(
    path: Path, out: Path, rest_route: str = "{unmatched: true, exclude_events: [seek]}"
) -> None:
    path.write_text(
        f"""
connectors:
  - id: errors
    type: file
    route: {{events: [error]}}
    deliver: {{path: "{out}/errors", format: ndjson}}
  - id: apple_na
    type: file
    route:
      events: [heartbeat]
      when:
        - {{field: metadata.device.os, op: contains, value: OS}}
        - any:
            - {{field: metadata.geo.country_code, op: in, value: [US, CA]}}
            - all:
                - {{field: fluxdata.num_errors, op: gt, value: 0}}
                - not: {{field: metadata.user.subscription, op: eq, value: free}}
        - {{field: metadata.player.name, op: starts_with, value: hls}}
        - not: {{field: metadata.content.id, op: ends_with, value: -test}}
    deliver: {{path: "{out}/apple_na", format: ndjson}}
  - id: rest
    type: file
    route: {rest_route}
    deliver: {{path: "{out}/rest", format: ndjson}}
dead_letter: {{path: "{out}/dl"}}
"""
    )


def corpus() -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Events and, by hand, the ids each connector must receive."""

    def hb(eid: str, os: str, country: str, errors: int = 0, **extra: Any) -> dict[str, Any]:
        metadata = {
            "device": {"os": os},
            "geo": {"country_code": country},
            "player": {"name": extra.pop("player", "hls.js")},
            "content": {"id": extra.pop("content", "c1")},
            **extra,
        }
        return make_event(eid, "heartbeat", metadata=metadata, fluxdata={"num_errors": errors})

    events = [
        hb("us-ios", "iOS", "US"),  # apple_na: contains OS, in US
        hb("ca-tvos", "tvOS", "CA"),  # apple_na
        hb("fr-ios-paid-errors", "iOS", "FR", 2, user={"subscription": "paid"}),  # any.all
        hb("fr-ios-nosub-errors", "iOS", "FR", 1),  # not: missing subscription -> holds
        hb("fr-ios-free-errors", "iOS", "FR", 1, user={"subscription": "free"}),  # rest
        hb("fr-ios-paid-clean", "iOS", "FR", 0, user={"subscription": "paid"}),  # rest
        hb("us-android", "Android", "US"),  # rest: no "OS" in Android
        hb("us-ios-shaka", "iOS", "US", player="Shaka"),  # rest: starts_with fails
        hb("us-ios-test", "iOS", "US", content="c9-test"),  # rest: not ends_with fails
        make_event("err-1", "error"),  # errors
        make_event("err-2", "error"),  # errors
        make_event("seek-1", "seek"),  # nobody: rest excludes seek -> unmatched
        make_event("seek-2", "seek"),  # unmatched
    ]
    want = {
        "errors": {"err-1", "err-2"},
        "apple_na": {"us-ios", "ca-tvos", "fr-ios-paid-errors", "fr-ios-nosub-errors"},
        "rest": {
            "fr-ios-free-errors",
            "fr-ios-paid-clean",
            "us-android",
            "us-ios-shaka",
            "us-ios-test",
        },
    }
    return events, want


def delivered(folder: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for f in sorted(folder.rglob("*.ndjson"))
        for line in f.read_text().splitlines()
        if line
    ]


def test_catch_all_and_groups_through_the_batch_job(tmp_path: Path) -> None:
    events, want = corpus()
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path / "out")
    code, summary = run_job(cfg, source, tmp_path / "summary.json", "--chunk-lines", "4")
    assert code == 0
    rows = {r["id"]: r for r in summary["connectors"]}
    for cid, ids in want.items():
        got = delivered(tmp_path / "out" / cid)
        assert sorted(got) == sorted(ids), cid  # each exactly once
        assert rows[cid]["routed"] == rows[cid]["delivered"] == len(ids), cid
        assert rows[cid]["dead_lettered"] == 0, cid
    # Conservation: routed to exactly one connector here, or unmatched (the two seeks).
    assert summary["input"]["events"] == len(events)
    assert summary["input"]["unmatched"] == 2
    assert sum(len(ids) for ids in want.values()) + 2 == len(events)
    assert summary["balanced"] and summary["input"]["balanced"]


def test_without_a_catch_all_the_same_events_are_unmatched(tmp_path: Path) -> None:
    """The catch-all's events are exactly those that were unmatched before it existed."""
    events, want = corpus()
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path / "out", "{events: [no_such_type]}")
    code, summary = run_job(cfg, source, tmp_path / "summary.json")
    assert code == 0
    assert summary["input"]["unmatched"] == len(want["rest"]) + 2
    assert delivered(tmp_path / "out" / "rest") == []


class FakeClock:
    """``time.monotonic`` of transforms.live, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_live_reload_switches_a_catch_all_and_refuses_all_catch_alls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(transforms.live, "time", clock)
    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path / "out", "{events: [no_such_type]}")
    rules = LiveRules(load_config(str(cfg)), str(cfg), refresh_s=60)
    assert not rules.by_id()["rest"].route.unmatched
    write_config(cfg, tmp_path / "out")
    clock.now += 60
    assert rules.by_id()["rest"].route.unmatched and rules.version == 1
    # A reload making every connector a catch-all fails validation: the rules stay.
    text = cfg.read_text().replace("route: {events: [error]}", "route: {unmatched: true}")
    text = text.replace("      events: [heartbeat]\n", "      unmatched: true\n")
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="every connector is a catch-all"):
        load_config(str(cfg))
    clock.now += 60
    assert rules.version == 1
    assert not rules.by_id()["errors"].route.unmatched
