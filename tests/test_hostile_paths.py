"""Issue 19 item 1: event data never decides where bytes land outside the configured place.

A prefix placeholder filled from an event (``{event_type}``) becomes one safe path
segment; every rendered name stays inside ``deliver.path`` (or the bucket prefix). Checked
as properties of the naming rules and through the real job with a filesystem diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.jobs import run_job
from transforms.rules.naming import (
    MAX_SEGMENT_CHARS,
    PrefixError,
    PrefixTemplate,
    check_contained,
    safe_segment,
)

HOSTILE_TYPES = [
    "../../../escaped",
    "..",
    ".",
    "/etc/passwd",
    "play\nstart",
    "a\\..\\b",
    "tab\there",
    "nul\x00byte",
    "%2e%2e",
    "x" * 5000,
    "Ünïcödé/ü",
    ".hidden",
    "~tilde",
]

SAFE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.%~")


def _assert_safe(segment: str) -> None:
    assert segment not in ("", ".", "..")
    assert not segment.startswith(".")
    assert set(segment) <= SAFE_CHARS, segment
    assert len(segment) <= MAX_SEGMENT_CHARS


@given(st.text(min_size=1, max_size=400))
@settings(max_examples=400)
def test_any_value_becomes_one_safe_segment(value: str) -> None:
    _assert_safe(safe_segment(value))


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
@settings(max_examples=400)
def test_distinct_values_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert safe_segment(a) != safe_segment(b)


def test_distinct_long_values_sharing_a_head_stay_distinct() -> None:
    head = "y" * 1000
    assert safe_segment(head + "a") != safe_segment(head + "b")
    _assert_safe(safe_segment(head + "a"))


def test_ordinary_event_types_are_unchanged() -> None:
    for kind in ("heartbeat", "playback_start", "buffer-end", "ad.impression", "Error42"):
        assert safe_segment(kind) == kind


@pytest.mark.parametrize("kind", HOSTILE_TYPES)
def test_rendered_prefix_stays_below_its_root(kind: str) -> None:
    prefix = PrefixTemplate.compile("raw/{event_type}/{connector}/")
    rendered = prefix.render("archive", kind, None)
    check_contained(rendered)  # raises if not
    parts = rendered.split("/")
    assert parts[0] == "raw" and parts[2] == "archive" and parts[3] == ""
    _assert_safe(parts[1])


@pytest.mark.parametrize(
    "text",
    ["../x/", "a/../../b/", "/abs/", "a/./b/", "a\\b/", "a\nb/", "{event_type}/../"],
)
def test_config_prefixes_that_leave_the_root_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        PrefixTemplate.compile(text)


@pytest.mark.parametrize("name", ["../a", "a/../../b", "/a", "a/\x01/b", "a/./b", ""])
def test_check_contained_refuses_escaping_names(name: str) -> None:
    with pytest.raises(PrefixError):
        check_contained(name)


def _tree(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(folder, f), root)
        for folder, _, files in os.walk(root)
        for f in files
    }


def test_the_job_writes_hostile_event_types_inside_the_connector_path(tmp_path: Path) -> None:
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    out = work / "out"
    events = [
        {"event_id": f"e{n}", "session_id": "s", "event": {"type": kind, "timestamp": 1}}
        for n, kind in enumerate(HOSTILE_TYPES)
    ]
    (work / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (work / "delivery.yaml").write_text(
        f"""
connectors:
  - id: archive
    type: file
    deliver: {{path: "{out}/archive", prefix: "{{event_type}}/", format: ndjson}}
dead_letter: {{path: "{out}/dead_letter"}}
"""
    )
    before = _tree(tmp_path)
    code, _ = run_job(work / "delivery.yaml", work / "events.jsonl", out / "summary.json")
    assert code == 0
    created = _tree(tmp_path) - before
    outside = [p for p in created if not p.startswith("a/b/c/out/")]
    assert outside == []
    delivered = [p for p in created if p.startswith("a/b/c/out/archive/")]
    # One folder per distinct type, one level below the connector path, every event there.
    folders = {p.split("/")[5] for p in delivered}
    assert len(folders) == len(HOSTILE_TYPES)
    assert all(len(p.split("/")) == 7 for p in delivered), delivered
    lines = [
        json.loads(line) for p in delivered for line in (tmp_path / p).read_text().splitlines()
    ]
    assert sorted(e["event_id"] for e in lines) == sorted(e["event_id"] for e in events)
