"""Several workers reading one file: together they read each chunk exactly once.

``ReadEventChunks(shards=n)`` hands each file to ``n`` readers; reader ``k`` keeps the
chunks whose index is ``k`` modulo ``n``. These tests run the reading DoFn directly.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
import zstandard

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.test_startup import write_config
from transforms.parse import DEAD_LETTER, ReadEventChunks, _ReadChunks


def read(path: Path, chunk_lines: int, shards: int) -> tuple[list[Any], list[Any]]:
    """Every shard's chunks (sorted by index) and dead letters, for one file."""
    chunks, letters = [], []
    for mine in range(shards):
        reader = _ReadChunks(chunk_lines)
        reader.setup()
        for out in reader.process((str(path), mine, shards)):
            if isinstance(out, beam.pvalue.TaggedOutput):
                assert out.tag == DEAD_LETTER
                letters += out.value
            else:
                assert out[1] % shards == mine  # the shard keeps only its own chunks
                chunks.append(out)
    return sorted(chunks, key=lambda c: c[1]), letters


PACK = {
    "gz": gzip.compress,
    "zst": zstandard.ZstdCompressor(write_checksum=True).compress,
}
"""Each compressed input the reader takes, by suffix."""


@pytest.mark.parametrize("suffix", sorted(PACK))
@pytest.mark.parametrize("shards", [2, 3, 7])
def test_shards_together_read_every_chunk_once(tmp_path: Path, shards: int, suffix: str) -> None:
    path = tmp_path / f"events.jsonl.{suffix}"
    path.write_bytes(PACK[suffix](b"\n".join(generate(23, seed=1)) + b"\n"))
    whole, _ = read(path, 5, 1)
    assert [c[1] for c in whole] == [0, 1, 2, 3, 4]
    assert [len(c[2]) for c in whole] == [5, 5, 5, 5, 3]
    assert read(path, 5, shards) == (whole, [])


@pytest.mark.parametrize("suffix", sorted(PACK))
@pytest.mark.parametrize("shards", [2, 3])
def test_damage_is_reported_once_by_the_shard_it_falls_in(
    tmp_path: Path, shards: int, suffix: str
) -> None:
    packed = PACK[suffix](b"\n".join(generate(20_000, seed=4)) + b"\n")
    path = tmp_path / f"damaged.jsonl.{suffix}"
    path.write_bytes(packed[: len(packed) // 2])
    whole, [letter] = read(path, 1000, 1)
    chunks, letters = read(path, 1000, shards)
    assert chunks == whole
    assert [(d.reason, d.original) for d in letters] == [(letter.reason, letter.original)]


def test_shards_must_be_positive() -> None:
    with pytest.raises(ValueError, match="shards must be at least 1"):
        ReadEventChunks(["x"], shards=0)


def _run(tmp: Path, source: Path, out: str, *extra: str) -> dict[str, bytes]:
    folder = tmp / out
    folder.mkdir()
    config = write_config(folder)
    argv = ["run", "--config", str(config), "--input", str(source), "--no-progress"]
    assert main([*argv, "--chunk-lines", "100", *extra]) == 0
    return {str(p.relative_to(folder / "out")): p.read_bytes() for p in (folder / "out").rglob("*")}


def test_read_shards_option_writes_the_same_files(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl.gz"
    source.write_bytes(gzip.compress(b"\n".join(generate(1_050, seed=2)) + b"\n"))
    whole = _run(tmp_path, source, "whole")
    assert len(whole) == 2  # 1,050 events in full objects of 1,000, across the chunks of 100
    assert _run(tmp_path, source, "sharded", "--read-shards", "3") == whole


def test_read_shards_must_be_positive_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(generate(3, seed=2)) + b"\n")
    argv = ["run", "--config", str(write_config(tmp_path)), "--input", str(source)]
    assert main([*argv, "--read-shards", "0"]) == 2
    assert "--read-shards must be at least 1" in capsys.readouterr().err
