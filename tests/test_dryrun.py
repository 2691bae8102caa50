"""dry-run shows where each object-store connector would write, and package dead letters.

The file connector's name is checked against what the batch job really writes for the
same single event (an independent oracle: the job's own output tree); the object stores
share the naming and differ only by address, which each sink's ``location`` spells.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from beam_pipeline.dryrun import explain
from tests.conftest import make_event
from tests.jobs import run_job
from transforms.config import parse_config

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UJtDO;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def config_text(out: Path) -> str:
    return f"""
connectors:
  - id: local
    type: file
    deliver: {{path: "{out}/local", prefix: "{{event_type}}/{{year}}/", format: ndjson.gz}}
  - id: lake
    type: s3
    deliver: {{bucket: telemetry, prefix: "raw/{{year}}/{{month}}/", format: ndjson}}
  - id: gcs_lake
    type: gcs
    deliver: {{bucket: telemetry-gcs, prefix: "g/{{day}}/", format: avro}}
  - id: blob
    type: azure_blob
    deliver:
      container: telemetry
      connection_string: ${{env:TEST_AZURE_CONNECTION}}
      prefix: "b/"
      format: json_array
  - id: typed
    type: file
    package:
      template:
        fields:
          bitrate: {{path: fluxdata.rendition_video_bitrate_kbps, cast: int}}
    deliver: {{path: "{out}/typed", format: ndjson}}
dead_letter: {{path: "{out}/dead_letter"}}
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_AZURE_CONNECTION", AZURITE)
    path = tmp_path / "delivery.yaml"
    path.write_text(config_text(tmp_path / "out"))
    return path


@pytest.mark.integration  # starts a process
def test_every_object_store_shows_its_address_and_the_file_one_is_where_the_job_writes(
    tmp_path: Path, config_file: Path
) -> None:
    event = make_event(event_id="e-1", fluxdata={"rendition_video_bitrate_kbps": 4500})
    entries = {e["connector"]: e for e in explain(event, parse_config(config_file.read_text()))}
    shown = {
        cid: entries[cid]["destination"].split("  ")[0]
        for cid in ("local", "lake", "gcs_lake", "blob")
    }
    assert shown["lake"].startswith("s3://telemetry/raw/2025/11/lake-")
    assert shown["lake"].endswith(".ndjson")
    assert shown["gcs_lake"].startswith("gs://telemetry-gcs/g/26/gcs_lake-")
    assert shown["blob"].startswith("azfs://devstoreaccount1/telemetry/b/blob-")
    assert AZURITE.split("AccountKey=")[1][:20] not in json.dumps(entries)

    source = tmp_path / "one.jsonl"
    source.write_bytes(orjson.dumps(event) + b"\n")
    code, summary = run_job(config_file, source, tmp_path / "summary.json")
    assert code == 0, summary
    written = [p for p in (tmp_path / "out" / "local").rglob("*") if p.is_file()]
    assert [str(p) for p in written] == [shown["local"]]


def test_a_failed_cast_shows_the_dead_letter_the_package_stage_would_write(
    config_file: Path,
) -> None:
    event = make_event(event_id="e-2", fluxdata={"rendition_video_bitrate_kbps": "fast"})
    entries = {e["connector"]: e for e in explain(event, parse_config(config_file.read_text()))}
    letter = entries["typed"]["dead_letter"]
    assert (letter["stage"], letter["reason"]) == ("package", "package_cast_failed")
    assert "bitrate" in letter["error"] and "payload" not in entries["typed"]
    assert "payload" in entries["local"]  # the other connectors are unaffected
