"""Partitions by any field: ``{field:PATH}`` and ``{field:PATH|DEFAULT}`` prefix placeholders.

The value comes from the record the connector writes (after its filter and package), so a
field the connector's filter denies can never reach an object name; it becomes exactly
one safe path segment below the configured prefix, whatever it holds; a missing value
takes the default, or without one makes the event a ``prefix_unrenderable`` dead letter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main as cli_main
from bench import bound, corpus
from tests.jobs import delivered_files, write_config
from transforms.config import compile_connectors, parse_config
from transforms.rules.naming import (
    MAX_SEGMENT_CHARS,
    PrefixError,
    PrefixTemplate,
    key_by_prefix,
    object_name,
    safe_segment,
)
from transforms.rules.records import Packaged

COUNTRY = "country={field:metadata.geo.country_code}/{year}/"
HOSTILE = [
    "../../etc",
    "..",
    ".",
    "/",
    "a/b",
    "line\nbreak",
    "nul\x00",
    "back\\slash",
    "%2e%2e%2f",
    "{year}",
    "x" * (1 << 20),
    "é/" * 300,
]


def _item(record: dict[str, Any], n: int = 0, as_bytes: bool = False) -> Packaged:
    data = orjson.dumps(record) if as_bytes else None
    return Packaged(
        f"e{n}",
        1764136800123,
        "heartbeat",
        None if as_bytes else record,
        {"event_id": f"e{n}"},
        data,
    )


def _segments_below(name: str, root: str) -> list[str]:
    assert name.startswith(root)
    return name[len(root) :].split("/")


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.text(min_size=1, max_size=300), st.sampled_from(HOSTILE)),
    as_bytes=st.booleans(),
)
def test_any_value_stays_one_segment_below_the_configured_prefix(
    value: str, as_bytes: bool
) -> None:
    prefix = PrefixTemplate.compile("raw/country={field:metadata.geo.country_code}/{year}/")
    item = _item({"metadata": {"geo": {"country_code": value}}}, as_bytes=as_bytes)
    groups, failed = key_by_prefix(prefix, "lake", [item])
    assert failed == []
    (key,) = groups
    name = object_name(key, "lake", ["e0"], ".ndjson")
    parts = _segments_below(name, "raw/country=")
    assert parts == [safe_segment(value), "2025", parts[2]]
    assert len(parts[0]) <= MAX_SEGMENT_CHARS
    assert parts[2].startswith("lake-")


def test_a_huge_value_is_cut_and_hashed_not_kept() -> None:
    big = "../" * 400_000
    prefix = PrefixTemplate.compile("{field:v}/")
    key = prefix.render("c", "t", None, {"v": big})
    assert key == safe_segment(big) + "/"
    assert "~" in key and len(key) <= MAX_SEGMENT_CHARS + 1
    assert key != prefix.render("c", "t", None, {"v": big + "x"})


def test_a_field_the_filter_denies_never_reaches_a_name(tmp_path: Path) -> None:
    config = parse_config(
        yaml.safe_dump(
            {
                "connectors": [
                    {
                        "id": "lake",
                        "type": "file",
                        "filter": {"metadata": {"deny": ["geo.country_code", "user"]}},
                        "deliver": {
                            "path": str(tmp_path),
                            "prefix": "c={field:metadata.geo.country_code|none}/"
                            "u={field:metadata.user.id|none}/",
                        },
                    }
                ],
                "dead_letter": {"path": str(tmp_path / "dl")},
            }
        )
    )
    (connector,) = compile_connectors(config)
    event = {
        "event_id": "e1",
        "event": {"type": "heartbeat", "timestamp": 1764136800123},
        "metadata": {"geo": {"country_code": "SECRET-US"}, "user": {"id": "SECRET-u1"}},
    }
    record = connector.packager.apply(connector.filter.apply(event))
    groups, failed = key_by_prefix(
        PrefixTemplate.compile(connector.deliver.prefix), "lake", [_item(record)]
    )
    assert (list(groups), failed) == (["c=none/u=none/"], [])


def test_values_of_every_kind() -> None:
    prefix = PrefixTemplate.compile("{field:v|missing}/")

    def render(record: dict[str, Any]) -> str:
        return prefix.render("c", "t", None, record)

    assert render({"v": "US"}) == "US/"
    assert render({"v": 4500}) == "4500/"
    assert render({"v": 12.5}) == "12.5/"
    assert render({"v": True}) == "true/"
    for absent in ({}, {"v": None}, {"v": ""}, {"v": {"a": 1}}, {"v": [1]}, {"w": "US"}):
        assert render(absent) == "missing/"
    # A record a template flattened with "." holds the path as one key.
    assert PrefixTemplate.compile("{field:metadata.geo.cc}/").render(
        "c", "t", None, {"metadata.geo.cc": "FR"}
    ) == ("FR/")


def test_a_missing_value_without_a_default_is_a_dead_letter_naming_the_path() -> None:
    prefix = PrefixTemplate.compile(COUNTRY)
    items = [
        _item({"metadata": {"geo": {"country_code": "US"}}}, 0),
        _item({"metadata": {"geo": {"country_code": {"secret": "SECRET"}}}}, 1),
        _item({"metadata": {}}, 2, as_bytes=True),
    ]
    groups, failed = key_by_prefix(prefix, "lake", items)
    assert {k: [i.event_id for i in v] for k, v in groups.items()} == {"country=US/2025/": ["e0"]}
    assert [(d.event_id, d.stage, d.reason) for d in failed] == [
        ("e1", "batch", "prefix_unrenderable"),
        ("e2", "batch", "prefix_unrenderable"),
    ]
    for letter in failed:
        assert "metadata.geo.country_code" in letter.error
        assert "SECRET" not in letter.error
        assert "|" in letter.error  # the fix: give a default


def test_without_a_record_a_field_placeholder_shows_as_written() -> None:
    # validate and dry-run check the rest of a prefix before there is a record.
    prefix = PrefixTemplate.compile("c={field:a.b|none}/d={field:x}/{year}/")
    assert prefix.render("c", "t", 1764136800123) == "c={field:a.b|none}/d={field:x}/2025/"
    with pytest.raises(PrefixError, match="event time"):
        prefix.render("c", "t", None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{field}/", "PATH"),
        ("{field:}/", "PATH"),
        ("{field:a..b}/", "empty"),
        ("{field:.a}/", "empty"),
        ("{field:a|}/", "default"),
        ("{field:a|../x}/", "default"),
        ("{field:a|b/c}/", "default"),
        ("{field:a|.hidden}/", "default"),
        ("{field!r:a}/", "conversion"),
        ("{field:{year}}/", "PATH"),
        ("{year:04}/", "format"),
        ("{fields:a}/", "unknown"),
    ],
)
def test_validate_refuses_bad_placeholders_with_the_fix(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        PrefixTemplate.compile(text)
    assert "e.g." in str(caught.value) or "allowed" in str(caught.value)


def test_validate_names_a_bad_placeholder_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "delivery.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "connectors": [
                    {
                        "id": "lake",
                        "type": "file",
                        "deliver": {"path": str(tmp_path), "prefix": "{field:a|../up}/"},
                    }
                ],
                "dead_letter": {"path": str(tmp_path / "dl")},
            }
        ),
        encoding="utf-8",
    )
    assert cli_main(["validate", "--config", str(path)]) == 1


def test_the_job_partitions_by_a_field_as_the_bound_does(tmp_path: Path) -> None:
    (events,) = corpus.ensure_corpus(3_000, seed=5, folder=tmp_path / "cache")

    def config(out: Path) -> Path:
        return write_config(
            out,
            [
                {
                    "id": "lake",
                    "type": "file",
                    "filter": {"metadata": {"deny": ["user"]}},
                    "deliver": {
                        "path": str(out / "lake"),
                        "prefix": "country={field:metadata.geo.country_code|unknown}/"
                        "os={field:metadata.device.os|unknown}/{year}/",
                        "format": "ndjson",
                        "batch": {"max_events": 100},
                    },
                }
            ],
        )

    job_out, bound_out = tmp_path / "job", tmp_path / "bound"
    code = cli_main(
        ["run", "--config", str(config(job_out)), "--input", str(events), "--no-progress"]
    )
    assert code == 0
    bound.run_bound(str(config(bound_out)), [str(events)])
    job_files, bound_files = delivered_files(job_out), delivered_files(bound_out)
    assert job_files == bound_files
    countries = {name.split("/")[1] for name in job_files}
    assert len(countries) > 3 and all(c.startswith("country=") for c in countries)
    for name, data in job_files.items():
        country = name.split("/")[1].removeprefix("country=")
        for line in data.splitlines():
            record = orjson.loads(line)
            assert safe_segment(record["metadata"]["geo"].get("country_code") or "unknown") == (
                country
            )
