"""Issue 19 item 2: a denied field never leaves, however the producer spelled the object.

A path means the same thing whether the event nests it (``{"geo": {"ip": ...}}``) or
spells it as a dotted key (``{"geo.ip": ...}``), and lists are transparent: a path
reaches into every object of a list (``users.email``, also written ``users[].email``).
Any top-level group can be filtered, not only ``metadata`` and ``fluxdata``. Checked as
properties with a leak oracle: the denied value's bytes appear nowhere in the output.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.config import ConfigError, parse_config
from transforms.rules.filter import FieldFilter

SECRET = "SECRET-7f3a9"

keys = st.sampled_from(["geo", "ip", "user", "id", "email", "a", "b", "c"])


@st.composite
def nested_with_secret(draw: Any) -> tuple[dict[str, Any], list[str]]:
    """A nested object with SECRET at a random path; returns it and that path."""
    path = draw(st.lists(keys, min_size=1, max_size=4))
    obj: Any = SECRET
    for key in reversed(path):
        siblings = draw(st.dictionaries(keys, st.integers(0, 9), max_size=2))
        siblings.pop(key, None)
        obj = {**siblings, key: obj}
    return obj, path


@st.composite
def respelled(draw: Any, obj: Any) -> Any:
    """The same data, spelled differently: nested keys collapsed into dotted keys,
    objects wrapped in lists."""
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        value = draw(respelled(value))
        if isinstance(value, dict) and value and draw(st.booleans()):
            for sub_key, sub_value in value.items():  # {"a": {"b": x}} -> {"a.b": x}
                out[f"{key}.{sub_key}"] = sub_value
            continue
        if isinstance(value, dict) and draw(st.integers(0, 3)) == 0:
            value = [value, {"other": 1}]
        out[key] = value
    return out


@given(st.data(), nested_with_secret(), st.booleans())
@settings(max_examples=500)
def test_a_denied_path_never_leaks_whatever_the_spelling(
    data: Any, built: tuple[dict[str, Any], list[str]], brackets: bool
) -> None:
    obj, path = built
    spelled = data.draw(respelled(obj))
    pattern = "[].".join(path) if brackets else ".".join(path)
    f = FieldFilter.compile({"metadata": {"deny": [pattern]}})
    out = f.apply({"event_id": "e", "metadata": spelled})
    assert SECRET.encode() not in orjson.dumps(out)


@given(st.data(), nested_with_secret())
@settings(max_examples=500)
def test_allow_keeps_what_it_names_and_only_that(
    data: Any, built: tuple[dict[str, Any], list[str]]
) -> None:
    obj, path = built
    spelled = data.draw(respelled(obj))
    kept = FieldFilter.compile({"metadata": {"allow": [".".join(path)]}})
    assert SECRET.encode() in orjson.dumps(kept.apply({"metadata": spelled}))
    other = FieldFilter.compile({"metadata": {"allow": ["zzz"]}})
    assert SECRET.encode() not in orjson.dumps(other.apply({"metadata": spelled}))


@given(st.data(), nested_with_secret())
@settings(max_examples=300)
def test_wildcard_deny_never_leaks(data: Any, built: tuple[dict[str, Any], list[str]]) -> None:
    obj, path = built
    spelled = data.draw(respelled(obj))
    pattern = ".".join(["*", *path[1:]]) if len(path) > 1 else "*"
    f = FieldFilter.compile({"metadata": {"deny": [pattern]}})
    assert SECRET.encode() not in orjson.dumps(f.apply({"metadata": spelled}))


def test_the_reported_bypass() -> None:
    f = FieldFilter.compile({"metadata": {"deny": ["geo.ip"]}})
    out = f.apply({"metadata": {"geo.ip": "1.2.3.4", "geo": {"country": "US"}}})
    assert out == {"metadata": {"geo": {"country": "US"}}}


def test_lists_of_objects_are_filtered() -> None:
    f = FieldFilter.compile({"metadata": {"deny": ["users[].email"]}})
    event = {"metadata": {"users": [{"id": 1, "email": "a@x"}, {"email": "b@x"}, 3]}}
    assert f.apply(event) == {"metadata": {"users": [{"id": 1}, {}, 3]}}
    keep = FieldFilter.compile({"metadata": {"allow": ["users.id"]}})
    assert keep.apply(event) == {"metadata": {"users": [{"id": 1}]}}


def test_dotted_keys_keep_their_spelling_when_allowed() -> None:
    f = FieldFilter.compile({"metadata": {"allow": ["geo.country"]}})
    out = f.apply({"metadata": {"geo.country": "US", "geo.ip": "1.2.3.4"}})
    assert out == {"metadata": {"geo.country": "US"}}


def test_any_top_level_group_can_be_filtered() -> None:
    f = FieldFilter.compile({"attributes": {"deny": ["token"]}, "custom": {"allow": ["a"]}})
    event = {"event_id": "e", "attributes": {"token": SECRET, "t": 1}, "custom": {"a": 1, "b": 2}}
    assert f.apply(event) == {"event_id": "e", "attributes": {"t": 1}, "custom": {"a": 1}}


def test_hashing_reaches_dotted_keys_and_lists() -> None:
    f = FieldFilter.compile({"hash": {"paths": ["metadata.user.id"], "key": "k", "length": 16}})
    out = f.apply({"metadata": {"user.id": "u1", "users": 1}})
    assert "u1" not in orjson.dumps(out).decode()
    out = f.apply({"metadata": {"user": [{"id": "u1"}, {"id": "u2"}]}})
    text = orjson.dumps(out).decode()
    assert "u1" not in text and "u2" not in text


def _config(filter_yaml: str) -> str:
    return f"""
connectors:
  - id: ops
    type: file
    filter: {filter_yaml}
    deliver: {{path: ./out/ops}}
dead_letter: {{path: ./out/dl}}
"""


def test_config_accepts_any_group_and_catches_misspelled_ones() -> None:
    parsed = parse_config(_config("{attributes: {deny: [token]}}"))
    assert parsed.connectors[0].filter.compile().apply({"attributes": {"token": 1}}) == {
        "attributes": {}
    }
    with pytest.raises(ConfigError, match="did you mean 'metadata'"):
        parse_config(_config("{metdata: {deny: [geo.ip]}}"))
    with pytest.raises(ConfigError, match="allow"):
        parse_config(_config("{attributes: {alow: [x]}}"))
