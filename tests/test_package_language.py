"""The template language's field specs beyond path/const/default/format (issue 21).

``concat``, ``cast``, ``map`` (+ ``map_default``, ``case_insensitive``), strftime
``format`` patterns and ``when``: their semantics, the order they apply in, the
combinations a template may not use, and the dead letter a failed cast becomes. Expected
values are written from the README's rules here, never computed with transforms.rules.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_event
from transforms.rules.events import MISSING
from transforms.rules.package import (
    CASTS,
    PackageCastError,
    Template,
    TemplateError,
)


def field(spec: Any, record: dict[str, Any], name: str = "f") -> Any:
    """The value a one-field template gives ``record`` (MISSING when it leaves it out).

    Checked against the field's reference :meth:`_Field.value`, so the compiled getter
    and the plain definition never drift apart.
    """
    template = Template.compile({"fields": {name: spec}})
    out = template.apply(record)
    got = out.get(name, MISSING)
    (f,) = template.fields
    reference = f.value(record)
    assert (got is MISSING and reference is MISSING) or json.dumps(got) == json.dumps(reference)
    return got


def fails_cast(spec: Any, record: dict[str, Any]) -> PackageCastError:
    with pytest.raises(PackageCastError) as info:
        Template.compile({"fields": {"f": spec}}).apply(record)
    return info.value


# -- concat ------------------------------------------------------------------------------------


def test_concat_builds_datadog_tags(event: dict[str, Any]) -> None:
    spec = {
        "concat": [
            "os:",
            {"path": "metadata.device.os"},
            ",country:",
            {"path": "metadata.geo.country_code"},
        ]
    }
    assert field(spec, event) == "os:iOS,country:US"


def test_a_missing_part_leaves_the_field_out_unless_the_part_has_a_default() -> None:
    e = make_event(metadata={"device": {"os": "iOS"}})
    parts: list[Any] = ["os:", {"path": "metadata.device.os"}, ",c:"]
    assert field({"concat": [*parts, {"path": "metadata.geo.country_code"}]}, e) is MISSING
    with_default = {"path": "metadata.geo.country_code", "default": "none"}
    assert field({"concat": [*parts, with_default]}, e) == "os:iOS,c:none"
    # The field's own default is used when a part is missing.
    spec = {"concat": [*parts, {"path": "metadata.geo.country_code"}], "default": "?"}
    assert field(spec, e) == "?"


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


def as_text(value: Any) -> str:
    """The README's rendering: a string as itself, anything else as the compact JSON the
    job writes (orjson: shortest round-trip floats such as ``1e-7``, UTF-8 kept)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_concat_renders_any_value_as_its_json_text(value: Any) -> None:
    got = field({"concat": ["<", {"path": "v"}, ">"]}, {"v": value})
    assert got == f"<{as_text(value)}>"
    if not isinstance(value, str):
        assert json.loads(got[1:-1]) == value  # the text reads back as the value


def test_concat_parts_are_full_field_specs(event: dict[str, Any]) -> None:
    spec = {
        "concat": [
            {"path": "metadata.device.os", "map": {"ios": "apple"}, "case_insensitive": True},
            "/",
            {"path": "event.timestamp", "format": "%Y"},
            "/",
            {"path": "fluxdata.playhead_position_sec", "cast": "string"},
            "/",
            {"const": 7},
            "/",
            {"concat": ["x", {"path": "event.type"}]},
        ]
    }
    assert field(spec, event) == "apple/2025/12.5/7/xheartbeat"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"concat": []}, "non-empty list"),
        ({"concat": "os:"}, "non-empty list"),
        ({"concat": [5]}, "string or a field spec"),
        (
            {"concat": [{"path": "a", "when": {"field": "a", "op": "exists", "value": True}}]},
            "when",
        ),
        ({"concat": ["a"], "path": "x"}, "exactly one of"),
    ],
)
def test_bad_concat_is_a_template_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.compile({"fields": {"tags": spec}})


# -- cast ----------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(n=INT64)
def test_cast_int_accepts_integers_integer_strings_and_integral_floats(n: int) -> None:
    assert field({"path": "v", "cast": "int"}, {"v": n}) == n
    assert field({"path": "v", "cast": "int"}, {"v": str(n)}) == n
    assert field({"path": "v", "cast": "int"}, {"v": f"+{n}" if n >= 0 else str(n)}) == n
    if abs(n) < 2**53:
        got = field({"path": "v", "cast": "int"}, {"v": float(n)})
        assert got == n and type(got) is int


@settings(max_examples=300, deadline=None)
@given(
    v=st.text(max_size=12)
    | st.floats()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
    | st.integers(2**64, 2**80)
    | st.integers(-(2**80), -(2**63) - 1)
)
def test_cast_int_refuses_everything_else(v: Any) -> None:
    integral_string = isinstance(v, str) and re.fullmatch(r"[+-]?[0-9]+", v) is not None
    integral_float = isinstance(v, float) and math.isfinite(v) and v == int(v)
    in_range = (
        not isinstance(v, bool)
        and isinstance(v, (int, str, float))
        and (
            (integral_string and -(2**63) <= int(v) <= 2**64 - 1)
            or (integral_float and -(2**63) <= int(v) <= 2**64 - 1)
            or (type(v) is int and -(2**63) <= v <= 2**64 - 1)
        )
    )
    if in_range:
        assert field({"path": "v", "cast": "int"}, {"v": v}) == int(v)
        return
    err = fails_cast({"path": "v", "cast": "int"}, {"v": v})
    assert err.reason == "package_cast_failed"
    assert "'f'" in str(err) and "int" in str(err)


@pytest.mark.parametrize("v", ["4500.0", "4_500", " 4500", "4500 ", "٤٥", "0x10", "", "1e3", True])
def test_cast_int_never_guesses(v: Any) -> None:
    fails_cast({"path": "v", "cast": "int"}, {"v": v})


@settings(max_examples=300, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_cast_float_accepts_finite_numbers_and_their_text(x: float) -> None:
    got = field({"path": "v", "cast": "float"}, {"v": x})
    assert got == x and type(got) is float
    assert field({"path": "v", "cast": "float"}, {"v": repr(x)}) == x
    assert field({"path": "v", "cast": "float"}, {"v": json.dumps(x)}) == x


@settings(max_examples=100, deadline=None)
@given(n=INT64)
def test_cast_float_of_an_integer(n: int) -> None:
    got = field({"path": "v", "cast": "float"}, {"v": n})
    assert type(got) is float and got == float(n)


@pytest.mark.parametrize(
    "v", ["nan", "NaN", "inf", "-Infinity", "1e999", "1_0", " 1", "1.", "", "0x1p3", True, [1]]
)
def test_cast_float_refuses_non_finite_and_loose_text(v: Any) -> None:
    err = fails_cast({"path": "v", "cast": "float"}, {"v": v})
    assert "float" in str(err)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_cast_string_renders_like_concat(value: Any) -> None:
    assert field({"path": "v", "cast": "string"}, {"v": value}) == (
        None if value is None else as_text(value)
    )


@settings(max_examples=200, deadline=None)
@given(word=st.sampled_from(["true", "false", "1", "0"]), data=st.data())
def test_cast_bool_accepts_true_false_1_0_in_any_case(word: str, data: st.DataObject) -> None:
    spelled = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
    assert field({"path": "v", "cast": "bool"}, {"v": spelled}) is (word in ("true", "1"))


@pytest.mark.parametrize(("v", "want"), [(True, True), (False, False), (1, True), (0, False)])
def test_cast_bool_of_booleans_and_0_1(v: Any, want: bool) -> None:
    assert field({"path": "v", "cast": "bool"}, {"v": v}) is want


@settings(max_examples=200, deadline=None)
@given(v=st.text(max_size=6) | st.integers() | st.floats() | st.lists(st.booleans(), max_size=1))
def test_cast_bool_refuses_everything_else(v: Any) -> None:
    accepted = (isinstance(v, str) and v.lower() in ("true", "false", "1", "0")) or (
        isinstance(v, (int, float)) and v in (0, 1)
    )
    if accepted:
        return
    fails_cast({"path": "v", "cast": "bool"}, {"v": v})


@pytest.mark.parametrize("cast", ["int", "float", "string", "bool"])
def test_null_stays_null_and_missing_stays_missing(cast: str) -> None:
    assert field({"path": "v", "cast": cast}, {"v": None}) is None
    assert field({"path": "v", "cast": cast}, {}) is MISSING


def test_a_cast_error_names_the_field_and_a_bounded_value() -> None:
    err = fails_cast({"path": "v", "cast": "int"}, {"v": "x" * 100_000})
    text = str(err)
    assert "'f'" in text and "int" in text
    assert len(text) < 300
    err = fails_cast({"path": "v", "cast": "int"}, {"v": "abc"})
    assert "'abc'" in str(err)


def test_unknown_cast_is_a_template_error_listing_the_casts() -> None:
    with pytest.raises(TemplateError, match="bitrate") as info:
        Template.compile({"fields": {"bitrate": {"path": "v", "cast": "integer"}}})
    for name in CASTS:
        assert name in str(info.value)
    assert set(CASTS) == {"int", "float", "string", "bool"}


# -- map -----------------------------------------------------------------------------------------


def test_map_with_and_without_default() -> None:
    m = {"ios": "iOS", "android": "Android"}
    assert field({"path": "os", "map": m}, {"os": "ios"}) == "iOS"
    assert field({"path": "os", "map": m}, {"os": "Roku"}) == "Roku"  # passes unchanged
    assert field({"path": "os", "map": m, "map_default": "other"}, {"os": "Roku"}) == "other"
    assert field({"path": "os", "map": m, "map_default": "other"}, {"os": "IOS"}) == "other"
    assert field({"path": "os", "map": m, "map_default": "other"}, {}) is MISSING
    assert field({"path": "os", "map": m, "map_default": None}, {"os": "x"}) is None


@settings(max_examples=200, deadline=None)
@given(word=st.sampled_from(["ios", "android", "straße"]), data=st.data())
def test_case_insensitive_map_compares_casefolded(word: str, data: st.DataObject) -> None:
    spelled = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
    spec = {
        "path": "os",
        "map": {"iOS": 1, "Android": 2, "STRASSE": 3},
        "map_default": 0,
        "case_insensitive": True,
    }
    assert field(spec, {"os": spelled}) == {"ios": 1, "android": 2, "straße": 3}[word]


def test_map_never_equates_booleans_with_numbers_and_skips_objects() -> None:
    spec = {"path": "v", "map": {1: "one", "x": "ex"}, "map_default": "no"}
    assert field(spec, {"v": 1}) == "one"
    assert field(spec, {"v": 1.0}) == "one"
    assert field(spec, {"v": True}) == "no"
    assert field(spec, {"v": [1]}) == "no"
    assert field(spec, {"v": {"x": 1}}) == "no"
    assert field({"path": "v", "map": {True: "yes"}}, {"v": 1}) == 1
    assert field({"path": "v", "map": {True: "yes"}}, {"v": True}) == "yes"
    assert field({"path": "v", "map": {0: "zero"}}, {"v": False}) is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "v", "map_default": "x"}, "map_default.*needs 'map'"),
        ({"path": "v", "case_insensitive": True}, "case_insensitive.*needs 'map'"),
        ({"path": "v", "map": {}}, "non-empty mapping"),
        ({"path": "v", "map": ["a"]}, "non-empty mapping"),
        ({"path": "v", "map": {"a": 1}, "case_insensitive": "yes"}, "true or false"),
        ({"path": "v", "map": {"ios": 1, "IOS": 2}, "case_insensitive": True}, "same key"),
        ({"path": "v", "map": {"a": "x"}, "cast": "int"}, "cast"),
        ({"path": "v", "map": {"a": 1}, "map_default": "z", "cast": "int"}, "cast"),
    ],
)
def test_bad_maps_are_template_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.compile({"fields": {"os": spec}})


# -- format: strftime ---------------------------------------------------------------------------


def utc(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)


@settings(max_examples=300, deadline=None)
@given(
    ms=st.integers(0, 4_102_444_800_000),  # 1970 to 2100
    pattern=st.sampled_from(["%Y-%m-%d", "%H:%M:%S.%f", "day=%j %a %b %%", "%Y%m%d%H", "%G-W%V"]),
)
def test_strftime_patterns_render_utc(ms: int, pattern: str) -> None:
    want = utc(ms).strftime(pattern)
    assert field({"path": "t", "format": pattern}, {"t": ms}) == want
    # The same instant as ISO-8601 text, to the second: events.to_epoch_ms reads a
    # fraction through a float and can lose a millisecond near 1970 (reported, not ours).
    second = ms - ms % 1000
    iso = utc(second).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert field({"path": "t", "format": pattern}, {"t": iso}) == utc(second).strftime(pattern)


def test_strftime_of_a_day_from_an_iso_time_with_an_offset() -> None:
    spec = {"path": "t", "format": "%Y-%m-%d"}
    assert field(spec, {"t": "2025-11-26T23:30:00-05:00"}) == "2025-11-27"
    assert field(spec, {"t": 1764136800123}) == "2025-11-26"


@pytest.mark.parametrize("v", ["not a time", True, None, {"a": 1}])
def test_strftime_leaves_a_non_timestamp_unchanged_like_the_named_formats(v: Any) -> None:
    assert field({"path": "t", "format": "%Y-%m-%d"}, {"t": v}) == v
    assert field({"path": "t", "format": "iso8601"}, {"t": v}) == v


@pytest.mark.parametrize("pattern", ["", "day", "%", "%%", "%Q", "%Y-%-m", "%Y%", 5, "%E", "%n"])
def test_a_pattern_that_renders_nothing_useful_is_refused(pattern: Any) -> None:
    with pytest.raises(TemplateError, match="format"):
        Template.compile({"fields": {"day": {"path": "t", "format": pattern}}})


# -- when ----------------------------------------------------------------------------------------

ERROR_ONLY = {"field": "event.type", "op": "eq", "value": "error"}


def test_when_emits_a_field_only_when_it_holds() -> None:
    spec = {"path": "fluxdata.error_code", "when": ERROR_ONLY}
    err = make_event("e1", "error", fluxdata={"error_code": 42})
    hb = make_event("e2", "heartbeat", fluxdata={"error_code": 42})
    assert field(spec, err) == 42
    assert field(spec, hb) is MISSING
    # false means absent: not the default, and no cast that could fail is tried
    guarded = {**spec, "default": 0, "cast": "int"}
    assert field(guarded, make_event("e3", "heartbeat", fluxdata={"error_code": "n/a"})) is MISSING
    with pytest.raises(PackageCastError):
        field(guarded, make_event("e4", "error", fluxdata={"error_code": "n/a"}))
    assert field(guarded, make_event("e5", "error", fluxdata={})) == 0


def test_when_takes_groups_lists_and_constants(event: dict[str, Any]) -> None:
    group = {
        "any": [
            {"field": "metadata.geo.country_code", "op": "in", "value": ["CA"]},
            {"not": {"field": "metadata.device.os", "op": "starts_with", "value": "And"}},
        ]
    }
    assert field({"const": "apple-or-canada", "when": group}, event) == "apple-or-canada"
    android = make_event(metadata={"device": {"os": "Android"}, "geo": {"country_code": "US"}})
    assert field({"const": "apple-or-canada", "when": group}, android) is MISSING
    both = [ERROR_ONLY, {"field": "fluxdata.num_errors", "op": "gt", "value": 0}]
    assert field({"path": "event.type", "when": both}, event) is MISSING
    failing = make_event(etype="error", fluxdata={"num_errors": 2})
    assert field({"path": "event.type", "when": both}, failing) == "error"


def test_when_sees_the_record_the_template_reads() -> None:
    # After values and rename: the condition names the renamed path and the mapped value.
    from transforms.rules.package import Packager

    p = Packager.compile(
        values={"event.type": {"error": "failure"}},
        rename={"event.type": "kind"},
        template={
            "fields": {
                "id": "event_id",
                "renamed": {"const": 1, "when": {"field": "kind", "op": "eq", "value": "failure"}},
                "original": {"const": 1, "when": ERROR_ONLY},
            }
        },
    )
    assert p.apply(make_event(etype="error")) == {"id": "s1-1", "renamed": 1}


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"field": "a", "op": "nope", "value": 1}, "nope"),
        ({"any": []}, "any"),
        ("event.type == error", "condition"),
        ([], "condition"),
    ],
)
def test_a_bad_when_is_a_template_error_naming_the_field(when: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=f"'code'.*{message}"):
        Template.compile({"fields": {"code": {"path": "x", "when": when}}})


# -- order and combinations ---------------------------------------------------------------------


def test_order_is_format_then_map_then_cast() -> None:
    # format -> map: a weekday name, mapped; map -> cast: the mapped text, cast.
    spec = {
        "path": "t",
        "format": "%a",
        "map": {"Sat": "1", "Sun": "1"},
        "map_default": "0",
        "cast": "bool",
    }
    assert field(spec, {"t": "2025-11-29T12:00:00Z"}) is True  # a Saturday
    assert field(spec, {"t": "2025-11-26T12:00:00Z"}) is False  # a Wednesday
    # format -> cast: the day as an INT64 partition key.
    assert field({"path": "t", "format": "%Y%m%d", "cast": "int"}, {"t": 1764136800123}) == (
        20251126
    )


def test_a_default_is_used_as_written() -> None:
    spec = {"path": "v", "default": 0, "cast": "int", "map": {5: 6}, "format": "%Y"}
    assert field(spec, {}) == 0
    assert field({"path": "v", "default": None, "cast": "int"}, {}) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"const": 1, "cast": "int"}, "const"),
        ({"const": 1, "map": {1: 2}}, "const"),
        ({"const": 1, "default": 2}, "const"),
        ({"const": "x", "format": "%Y"}, "const"),
        ({"path": "v", "cast": "int", "default": "0"}, "default"),
        ({"path": "v", "cast": "bool", "default": 1}, "default"),
        ({"path": "v", "cast": "float", "default": True}, "default"),
    ],
)
def test_combinations_that_make_no_sense_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.compile({"fields": {"f": spec}})


@pytest.mark.parametrize(
    "spec",
    [
        {"path": "fluxdata", "cast": "string"},
        {"path": "fluxdata", "map": {"a": "b"}},
        {"concat": ["a"]},
    ],
)
def test_a_spread_takes_no_cast_map_or_concat(spec: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"'\*'"):
        Template.compile({"fields": {"*": spec}})


# -- cost: a template without the new features runs today's code --------------------------------


def test_templates_without_new_features_compile_to_the_plain_getters() -> None:
    template = Template.compile(
        {
            "fields": {
                "a": "x",
                "b": {"path": "x.y", "default": 1},
                "c": {"path": "t", "format": "iso8601"},
                "d": {"const": 3},
                "e": {"path": "$"},
                "*": {"path": "m"},
            }
        }
    )
    names = [get.__name__ for _, get in template.plan]
    assert names == ["get1", "with_default", "formatted", "<lambda>", "<lambda>", "get1"]
    assert not any(f.extended for f in template.fields)
    extended = Template.compile({"fields": {"a": {"path": "x", "cast": "int"}}})
    assert extended.fields[0].extended


# -- the Package stage: a failed cast is its own dead letter ------------------------------------


def test_the_package_stage_dead_letters_a_failed_cast_with_its_reason(tmp_path: Path) -> None:
    from transforms.config import parse_config
    from transforms.live import LiveRules
    from transforms.package import _PackageChunk
    from transforms.rules.records import Chunk

    config = parse_config(
        f"""
connectors:
  - id: rows
    type: file
    package:
      template:
        fields:
          id: event_id
          bitrate: {{path: fluxdata.rendition_video_bitrate_kbps, cast: int}}
    deliver: {{path: "{tmp_path}/out"}}
dead_letter: {{path: "{tmp_path}/dl"}}
"""
    )
    good = make_event("e1", fluxdata={"rendition_video_bitrate_kbps": "4500"})
    bad = make_event("e2", fluxdata={"rendition_video_bitrate_kbps": "fast"})
    out = list(
        _PackageChunk(LiveRules(config)).process(("rows", Chunk([(good, good), (bad, bad)])))
    )
    (cid, chunk), tagged = out
    assert cid == "rows" and [p.event_id for p in chunk] == ["e1"]
    (letter,) = tagged.value
    assert letter.reason == "package_cast_failed" and letter.stage == "package"
    assert "bitrate" in letter.error and "'fast'" in letter.error
