from __future__ import annotations

import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from transforms.config import ConfigError, DeliveryConfig, load_config, parse_config
from transforms.connectors.base import StrictModel

REPO = Path(__file__).resolve().parents[1]

GOOD = """
connectors:
  - id: ops
    type: file
    route:
      events: [heartbeat]
      when: [{field: metadata.geo.country_code, op: in, value: [US]}]
    filter: {metadata: {allow: ["device.*"]}}
    package: {rename: {session_id: sid}}
    deliver: {path: /tmp/x, format: ndjson}
dead_letter: {path: /tmp/dl}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert "cfg.yaml" in str(info.value)
    return info.value.problems


def test_example_config_is_valid() -> None:
    config = load_config(str(REPO / "examples" / "delivery.yaml"))
    assert [c.id for c in config.connectors] == ["ops_qoe", "marketing", "archive"]


def test_defaults() -> None:
    c = parse_config(GOOD).connectors[0]
    assert c.deliver_config.batch.max_events == 1000
    assert c.deliver_config.batch.max_wait_s == 30
    assert c.retry.immediate == 3
    assert sum(c.retry.delayed_schedule_s) == 7200


def test_every_problem_is_listed_with_its_path_and_a_fix() -> None:
    text = """
connectors:
  - id: Bad-Id
    type: file
    route:
      evnts: [heartbeat]
      when: [{field: a.b, op: like, value: 1}, {field: a.b, op: regex, value: "("}]
      sample_sessions: 2
    filter: {metadata: {allow: ["a..b"]}}
    package: {template: nope}
    deliver: {path: /tmp/x, fromat: ndjson, prefix: "{yr}/"}
  - id: two
    type: carrier_pigeon
    deliver: {}
dead_letter: {}
"""
    found = "\n".join(problems(text))
    assert "connectors[0](id=Bad-Id).id" in found
    assert "route.evnts: unknown key" in found and "did you mean 'events'" in found
    assert "when[0].op" in found and "'eq'" in found
    assert "when[1]" in found and "does not compile" in found
    assert "sample_sessions" in found
    assert "empty segment" in found
    assert "no template named 'nope'" in found
    assert "deliver.fromat: unknown key" in found and "did you mean 'format'" in found
    assert "unknown placeholder" in found
    assert "connectors[1](id=two).type" in found
    assert "dead_letter: give exactly one of path (a directory) or topic" in found


def test_unset_secret_is_an_error_and_set_secret_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD.replace("path: /tmp/x", "path: '${env:OUT_DIR_FOR_TEST}'")  # quoted in flow style
    monkeypatch.delenv("OUT_DIR_FOR_TEST", raising=False)
    found = "\n".join(problems(text))
    assert "OUT_DIR_FOR_TEST is not set" in found and "export OUT_DIR_FOR_TEST" in found
    monkeypatch.setenv("OUT_DIR_FOR_TEST", "/tmp/resolved")
    assert parse_config(text).connectors[0].deliver_config.path == "/tmp/resolved"
    assert "not a valid secret reference" in "\n".join(
        problems(GOOD.replace("/tmp/x", "'${NOPE}'"))
    )


def test_duplicate_ids_and_reserved_types() -> None:
    dup = GOOD + GOOD.split("connectors:")[1].split("dead_letter")[0]
    text = "connectors:" + dup.split("connectors:")[1]
    text = text.replace("dead_letter: {path: /tmp/dl}", "") + "dead_letter: {path: /tmp/dl}\n"
    assert any("used twice" in p for p in problems(text))


def test_not_yaml_and_not_a_mapping() -> None:
    assert "not valid YAML" in problems("a: [")[0]
    assert "YAML mapping" in problems("- 1\n- 2")[0]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


@pytest.mark.integration  # starts a process
def test_validate_command(tmp_path: Path) -> None:
    ok = run_cli("validate", "--config", "examples/delivery.yaml")
    assert ok.returncode == 0 and "OK, 3 connector(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("op: in", "op: within").replace("format: ndjson", "format: xml"))
    out = run_cli("validate", "--config", str(bad))
    assert out.returncode == 1
    assert str(bad) in out.stderr and "2 problem(s)" in out.stderr
    missing = run_cli("validate", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 1 and "cannot read the file" in missing.stderr


def test_the_old_name_retry_topic_is_read_as_retry_location(tmp_path: Path) -> None:
    base = {"connectors": [{"id": "c", "type": "file", "deliver": {"path": str(tmp_path)}}]}
    base["dead_letter"] = {"path": str(tmp_path / "dl")}
    old = DeliveryConfig.model_validate({**base, "retry_topic": str(tmp_path / "retry")})
    assert old.retry_location == str(tmp_path / "retry")
    assert old == DeliveryConfig.model_validate({**base, "retry_location": old.retry_location})
    with pytest.raises(ValidationError, match="not both"):
        DeliveryConfig.model_validate({**base, "retry_topic": "a", "retry_location": "b"})


# -- a boolean is not a number ------------------------------------------------------------


def _leaves(annotation: Any) -> set[Any]:
    """The plain types an annotation accepts (unions, Optional and Annotated opened)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaves(args[0])
    if args and origin in (typing.Union, types.UnionType):
        return set().union(*(_leaves(a) for a in args))
    return {annotation}


def _numeric_fields() -> list[tuple[type[BaseModel], str]]:
    """Every config field (of every section model, every connector's deliver included) that
    takes an int or a float and not a bool."""
    import transforms.connectors  # noqa: F401  (registers every connector's models)

    seen: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [StrictModel]
    while todo:
        model = todo.pop()
        seen.append(model)
        todo.extend(model.__subclasses__())
    out = []
    for model in seen:
        for name, field in model.model_fields.items():
            leaves = _leaves(field.annotation)
            if leaves & {int, float} and not leaves & {bool, Any}:
                out.append((model, name))
    return out


def test_there_are_numeric_fields_to_check() -> None:
    names = {name for _, name in _numeric_fields()}
    assert {"max_events", "max_wait_s", "immediate", "sample_sessions"} <= names


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_wherever_a_number_is_expected(value: bool) -> None:
    """YAML's ``true`` is not 1: ``max_events: true`` is an error naming the key, for every
    numeric field of every section (pydantic alone reads it as 1)."""
    accepted = []
    for model, name in _numeric_fields():
        try:
            model.model_validate({name: value})
        except ValidationError as error:
            mine = [e for e in error.errors() if e["loc"][:1] == (name,)]
            if any("boolean" in e["msg"] for e in mine):
                continue
        accepted.append(f"{model.__name__}.{name}")
    assert accepted == []


def test_a_boolean_in_a_list_of_numbers_is_refused() -> None:
    found = "\n".join(
        problems(
            GOOD.replace(
                "dead_letter:", "    retry: {delayed_schedule_s: [60, true]}\ndead_letter:"
            )
        )
    )
    assert "retry.delayed_schedule_s" in found and "boolean" in found


def test_a_boolean_number_names_its_key_in_the_config() -> None:
    found = "\n".join(
        problems(GOOD.replace("format: ndjson", "format: ndjson, batch: {max_events: true}"))
    )
    assert "deliver.batch.max_events" in found and "boolean" in found


# -- a key given twice ---------------------------------------------------------------------


def test_a_key_given_twice_is_an_error_naming_it_and_its_line() -> None:
    """PyYAML keeps the last of two equal keys: a second ``filter`` or ``deliver`` would
    silently replace the first (a denied field let through, files sent elsewhere)."""
    text = GOOD.replace(
        "    deliver: {path: /tmp/x, format: ndjson}\n",
        "    deliver: {path: /tmp/x, format: ndjson}\n    filter: {metadata: {allow: ['*']}}\n",
    )
    (found,) = problems(text)
    assert "'filter'" in found and "twice" in found and "line 11" in found and "line 8" in found


@pytest.mark.parametrize(
    "mapping",
    ["{path: /tmp/x, format: ndjson, path: /tmp/y}", "{path: /tmp/x, format: ndjson, 'path': /y}"],
)
def test_a_key_given_twice_in_a_flow_mapping_is_an_error(mapping: str) -> None:
    text = GOOD.replace("{path: /tmp/x, format: ndjson}", mapping)
    assert any("'path'" in p and "twice" in p for p in problems(text))


def test_yaml_merge_keys_still_override() -> None:
    """``<<: *base`` then a key of its own is an override YAML defines, not a repeat."""
    text = """
base: &base {path: /tmp/x, format: ndjson}
connectors:
  - id: ops
    type: file
    deliver:
      <<: *base
      path: /tmp/mine
dead_letter: {path: /tmp/dl}
"""
    with pytest.raises(ConfigError) as info:  # `base` itself is an unknown top-level key
        parse_config(text, "cfg.yaml")
    assert all("twice" not in p for p in info.value.problems)


def _alias_bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(lines) + GOOD.replace("events: [heartbeat]", f"events: *l{levels - 1}")


def test_aliases_that_expand_without_end_are_an_error_not_a_hang() -> None:
    """``&anchor``/``*alias`` let a few lines stand for 9**12 values ("billion laughs"):
    the file is refused at once, before anything walks the expansion."""
    (found,) = problems(_alias_bomb(12))
    assert "aliases" in found and "values" in found


def test_aliases_of_a_normal_size_still_work() -> None:
    text = "shared: &shared {path: /tmp/x, format: ndjson}\n" + GOOD.replace(
        "{path: /tmp/x, format: ndjson}", "*shared"
    )
    assert any("shared" in p and "unknown key" in p for p in problems(text))  # only that
    assert len(problems(text)) == 1


@pytest.mark.parametrize("kind", ["large file", "endless device"])
def test_a_config_file_too_large_is_refused_without_reading_it_whole(
    tmp_path: Path, kind: str
) -> None:
    """``--config /dev/zero`` (or a log file given by mistake) is a clear error, not a job
    that reads until memory runs out."""
    if kind == "large file":
        path = tmp_path / "huge.yaml"
        with open(path, "wb") as fh:
            fh.truncate(64 * 2**20)  # sparse: 64 MiB of NULs
    else:
        path = Path("/dev/zero")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "larger than" in str(info.value) and "MiB" in str(info.value)
