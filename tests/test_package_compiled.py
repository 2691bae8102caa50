"""Compiled packaging (templates, flatten, ISO-8601 cache) against the code it replaced."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.rules.events import MISSING, get_path
from transforms.rules.package import Packager, Template, flatten, format_time, pop_path, set_path


def reference_iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def reference_flatten(obj: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict):
            out.update(reference_flatten(value, sep, name))
        else:
            out[name] = value
    return out


def reference_template(template: Template, record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in template.fields:
        value = f.value(record)
        if value is MISSING:
            continue
        if f.target is None:
            if isinstance(value, dict):
                out.update(value)
        elif len(f.target) == 1:
            out[f.target[0]] = value
        else:
            out = set_path(out, f.target, value)
    return reference_flatten(out, template.flatten_sep) if template.flatten_sep else out


def outcome(fn: Any, ms: int) -> tuple[str, str]:
    """The text, or the error's type and message (out-of-range years)."""
    try:
        return "ok", fn(ms)
    except (ValueError, OverflowError, OSError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=500, deadline=None)
@given(ms=st.integers(-(10**17), 10**17) | st.integers(1_700_000_000_000, 1_800_000_000_000))
def test_iso_cache_gives_the_same_text(ms: int) -> None:
    expected = outcome(reference_iso, ms)
    assert outcome(lambda m: format_time(m, "iso8601"), ms) == expected
    assert outcome(lambda m: format_time(m, "iso8601"), ms) == expected  # cached


@pytest.mark.parametrize("ms", [10**20, -(10**20), -62_135_596_800_001, 253_402_300_800_000])
def test_iso_out_of_range_raises_like_before(ms: int) -> None:
    assert outcome(lambda m: format_time(m, "iso8601"), ms) == outcome(reference_iso, ms)


KEYS = st.sampled_from(["a", "b", "a.b", "", "c_d"])
TREES = st.recursive(
    st.integers(0, 3) | st.none() | st.lists(st.integers(0, 1), max_size=1),
    lambda inner: st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(tree=st.dictionaries(KEYS, TREES, max_size=5), sep=st.sampled_from([".", "_"]))
def test_flatten_same_keys_values_and_order(tree: dict[str, Any], sep: str) -> None:
    got, expected = flatten(tree, sep), reference_flatten(tree, sep)
    assert list(got.items()) == list(expected.items())


FIELD_SPECS = st.one_of(
    st.sampled_from(["a", "b", "a.b", "$", "t"]),
    st.fixed_dictionaries({"path": st.sampled_from(["a", "x", "a.b", "t"])}).map(dict),
    st.fixed_dictionaries(
        {"path": st.sampled_from(["x", "a"]), "default": st.sampled_from([0, "d", None])}
    ).map(dict),
    st.fixed_dictionaries({"const": st.sampled_from([1, "k", {"n": {"m": 1}}])}).map(dict),
    st.fixed_dictionaries(
        {"path": st.just("t"), "format": st.sampled_from(["iso8601", "epoch_s", "epoch_ms"])}
    ).map(dict),
)


@settings(max_examples=400, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(["a", "b", "a.b", "c", "*", "t.x"]), FIELD_SPECS),
    sep=st.sampled_from([None, ".", "_"]),
    record=st.fixed_dictionaries(
        {"a": TREES, "b": TREES, "t": st.sampled_from([1764136800123, "2025-11-26T06:00:00Z"])}
    ),
)
def test_template_plans_build_the_same_record(
    fields: dict[str, Any], sep: str | None, record: dict[str, Any]
) -> None:
    if not fields:
        return
    spec: dict[str, Any] = {"fields": fields}
    if sep is not None:
        spec["flatten"] = sep
    template = Template.compile(spec)
    got, expected = template.apply(record), reference_template(template, record)
    assert list(got.items()) == list(expected.items())


def reference_packager(p: Packager, event: dict[str, Any]) -> dict[str, Any]:
    record = event
    for path, mapping in p.values:
        got = get_path(record, path)
        if got is MISSING or isinstance(got, (dict, list)):
            continue
        try:
            new = mapping[got]
        except (KeyError, TypeError):
            continue
        if isinstance(got, bool) != isinstance(new, bool) or new != got:
            record = set_path(record, path, new)
    for src, dst in p.renames:
        record, value = pop_path(record, src)
        if value is not MISSING:
            record = set_path(record, dst, value)
    return p.template.apply(record) if p.template else record


@pytest.mark.parametrize(
    "rename",
    [
        {"session_id": "sid"},
        {"session_id": "event_id"},  # onto an existing key: it is replaced in place
        {"nope": "x"},
        {"session_id": "a", "a": "b"},
        {"metadata.geo": "geo", "session_id": "sid"},
    ],
)
def test_top_level_renames_equal_pop_then_set(
    rename: dict[str, str], event: dict[str, Any]
) -> None:
    p = Packager.compile(values={"event.type": {"heartbeat": "hb"}}, rename=rename)
    got, expected = p.apply(event), reference_packager(p, event)
    assert list(got.items()) == list(expected.items())
    assert event["session_id"] == "s1"  # the input is never modified
