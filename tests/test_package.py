from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conftest import make_event
from transforms.rules.package import (
    Packager,
    Template,
    TemplateError,
    format_time,
    load_named_template,
)


def test_values_then_rename(event: dict[str, Any]) -> None:
    p = Packager.compile(
        values={"event.type": {"heartbeat": "hb"}, "metadata.geo.country_code": {"US": "USA"}},
        rename={"session_id": "sid", "metadata.geo": "geo", "event.type": "kind"},
    )
    out = p.apply(event)
    assert out["sid"] == "s1" and "session_id" not in out
    assert out["geo"] == {"country_code": "USA"} and "geo" not in out["metadata"]
    assert out["kind"] == "hb" and "type" not in out["event"]


def test_rename_creates_parents_and_ignores_missing(event: dict[str, Any]) -> None:
    out = Packager.compile(rename={"fluxdata.num_errors": "stats.qoe.errors", "nope.x": "y"}).apply(
        event
    )
    assert out["stats"] == {"qoe": {"errors": 0}}
    assert "y" not in out


def test_values_only_map_scalars_and_keep_types(event: dict[str, Any]) -> None:
    e = make_event(fluxdata={"live": True, "n": 1, "obj": {"a": 1}})
    out = Packager.compile(
        values={"fluxdata.live": {True: "yes"}, "fluxdata.obj": {"x": "y"}}
    ).apply(e)
    assert out["fluxdata"]["live"] == "yes"
    assert out["fluxdata"]["obj"] == {"a": 1}


def test_input_never_modified(event: dict[str, Any]) -> None:
    before = copy.deepcopy(event)
    Packager.compile(
        values={"event.type": {"heartbeat": "hb"}},
        rename={"metadata.device.os": "os", "session_id": "sid"},
        template="flat_event",
    ).apply(event)
    assert event == before


def test_inline_template_features(event: dict[str, Any]) -> None:
    t = Template.compile(
        {
            "fields": {
                "source": {"const": "video"},
                "kind": "event.type",
                "at": {"path": "event.timestamp", "format": "iso8601"},
                "at_s": {"path": "event.timestamp", "format": "epoch_s"},
                "host": {"path": "metadata.device.model", "default": "unknown"},
                "skipped": {"path": "metadata.absent"},
                "nested.country": "metadata.geo.country_code",
                "*": {"path": "fluxdata"},
                "all": {"path": "$"},
            }
        }
    )
    out = t.apply(event)
    assert out["source"] == "video"
    assert out["kind"] == "heartbeat"
    assert out["at"] == "2025-11-26T06:00:00.123Z"
    assert out["at_s"] == pytest.approx(1764136800.123)
    assert out["host"] == "unknown"
    assert "skipped" not in out
    assert out["nested"] == {"country": "US"}
    assert out["num_errors"] == 0 and out["playhead_position_sec"] == 12.5
    assert out["all"] == event


def test_flatten_template(event: dict[str, Any]) -> None:
    out = load_named_template("flat_event").apply(event)
    assert out["metadata.device.os"] == "iOS"
    assert out["fluxdata.num_errors"] == 0
    assert out["time"] == "2025-11-26T06:00:00.123Z"
    assert all(not isinstance(v, dict) for v in out.values())


def test_iso_timestamps_in_and_out() -> None:
    assert format_time("2025-11-26T06:00:00.123Z", "epoch_ms") == 1764136800123
    assert format_time("2025-11-26T06:00:00.123", "epoch_ms") == 1764136800123  # naive is UTC
    assert format_time("2025-11-26T07:00:00.123+01:00", "iso8601") == "2025-11-26T06:00:00.123Z"
    assert format_time("not a time", "iso8601") == "not a time"
    assert format_time(True, "epoch_ms") is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"fields": {}}, "non-empty 'fields'"),
        ({"fields": {"a": {"path": "x", "const": 1}}}, "exactly one of"),
        ({"fields": {"a": {"path": "x", "format": "rfc"}}}, "format"),
        ({"fields": {"a": {"pth": "x"}}}, "unknown keys"),
        ({"fields": {"a": "x"}, "extra": 1}, "unknown keys"),
        ({"fields": {"a": 5}}, "path string or a mapping"),
        ({"fields": {"a": "x"}, "flatten": ""}, "separator"),
    ],
)
def test_bad_templates(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.compile(spec)


def test_unknown_named_template_lists_the_available_ones() -> None:
    with pytest.raises(TemplateError, match="flat_event"):
        load_named_template("nope")


def test_flatten_drops_empty_objects_and_keeps_lists() -> None:
    from transforms.rules.package import flatten

    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, {"x": 2}], "e": {}}, ".") == {
        "a.b": 1,
        "d": [1, {"x": 2}],
    }
