"""``compression: gzip | zstd | none`` on every text format, and zstd input (issue 23 item 3).

Output: ``format`` (ndjson, json_array, csv) and ``compression`` are orthogonal; the old
compressed format names (``ndjson.gz``...) mean the same as the pair. Input: a backfill
file may be zstd (detected by its magic number, like gzip), read as a stream; a damaged
or truncated one is one ``unreadable_input`` dead letter after the lines before the
damage, as a damaged gzip is.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from isal import igzip

from examples.generate_events import generate
from tests.jobs import run_job, write_config
from transforms.config import ConfigError, parse_config
from transforms.connectors import CONNECTORS, make_sink
from transforms.connectors.base import DeliveryBatch
from transforms.parse import DEAD_LETTER, UNREADABLE, _ReadChunks, open_lines
from transforms.rules import compress
from transforms.rules.encode import CONTENT_TYPES, FORMATS, Encoding, encode_batch
from transforms.rules.records import Packaged

pytest_plugins = ["tests.standins.object_stores"]

MIB = 1 << 20
TEXT_FORMATS = ("ndjson", "json_array", "csv")
CODECS = ("gzip", "zstd", "none")
SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ""}
EXTENSION = {"ndjson": ".ndjson", "json_array": ".json", "csv": ".csv"}
LEGACY = {"ndjson.gz", "ndjson.zst", "csv.gz", "csv.zst"}


def deliver_of(kind: str, fields: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The validated ``deliver`` section of a ``kind`` connector with ``fields``."""
    where: dict[str, Any] = {
        "file": {"path": "/tmp/out"},
        "s3": {"bucket": "telemetry"},
        "gcs": {"bucket": "telemetry"},
        "azure_blob": {
            "container": "telemetry",
            "connection_string": "${env:TEST_COMPRESSION_AZURE}",
        },
    }[kind]
    monkeypatch.setenv(
        "TEST_COMPRESSION_AZURE",
        "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;",
    )
    return CONNECTORS[kind].deliver_model.model_validate({**where, **fields})


def unzstd(data: bytes) -> bytes:
    return (
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    )


def uncompress(data: bytes, codec: str) -> bytes:
    return {"gzip": gzip.decompress, "zstd": unzstd, "none": bytes}[codec](data)


# -- config: format x compression -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "s3", "gcs", "azure_blob"])
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize("codec", CODECS)
def test_every_text_format_takes_every_compression_on_every_file_connector(
    kind: str, fmt: str, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver = deliver_of(kind, {"format": fmt, "compression": codec}, monkeypatch)
    assert deliver.compression == codec
    assert deliver.format == fmt + SUFFIX[codec]
    encoding = deliver.encoding()
    assert encoding.extension == EXTENSION[fmt] + SUFFIX[codec]
    assert FORMATS[deliver.format] == encoding.extension


@pytest.mark.parametrize("kind", ["file", "s3"])
@pytest.mark.parametrize("legacy", sorted(LEGACY))
def test_a_compressed_format_name_is_the_format_with_its_compression(
    kind: str, legacy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, suffix = legacy.partition(".")
    codec = {"gz": "gzip", "zst": "zstd"}[suffix]
    old = deliver_of(kind, {"format": legacy}, monkeypatch)
    new = deliver_of(kind, {"format": base, "compression": codec}, monkeypatch)
    both = deliver_of(kind, {"format": legacy, "compression": codec}, monkeypatch)  # agree
    assert old == new == both
    assert (old.format, old.compression) == (legacy, codec)


def test_defaults_keep_their_format_and_compression_alone_changes_the_codec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Object stores default to ndjson.gz, files to ndjson: as before.
    assert deliver_of("s3", {}, monkeypatch).format == "ndjson.gz"
    assert deliver_of("s3", {}, monkeypatch).compression == "gzip"
    assert deliver_of("file", {}, monkeypatch).format == "ndjson"
    assert deliver_of("file", {}, monkeypatch).compression == "none"
    # compression alone is about the default format, never a contradiction of it.
    assert deliver_of("s3", {"compression": "none"}, monkeypatch).format == "ndjson"
    assert deliver_of("s3", {"compression": "zstd"}, monkeypatch).format == "ndjson.zst"
    assert deliver_of("file", {"compression": "gzip"}, monkeypatch).format == "ndjson.gz"


def test_a_validated_section_validates_again_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sections are re-validated from their dump (the workers, the live rules): the full
    # name and its codec agree, so a second pass changes nothing. References resolve first.
    monkeypatch.setenv("TEST_COMPRESSION_FORMAT", "json_array")
    deliver = "format: '${env:TEST_COMPRESSION_FORMAT}', compression: zstd"
    first = parse_config(config_text(tmp_path, deliver)).connectors[0].deliver_config
    assert (first.format, first.compression) == ("json_array.zst", "zstd")
    again = CONNECTORS["file"].deliver_model.model_validate(first.model_dump())
    assert again == first
    parquet = deliver_of("s3", {"format": "parquet"}, monkeypatch)
    assert parquet.compression is None
    assert CONNECTORS["s3"].deliver_model.model_validate(parquet.model_dump()) == parquet


def config_text(tmp_path: Path, deliver: str) -> str:
    return f"""
connectors:
  - id: lake
    type: file
    deliver: {{path: {tmp_path / "out"}, {deliver}}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""


@pytest.mark.parametrize(
    ("deliver", "fix"),
    [
        ("format: ndjson.gz, compression: zstd", "format: ndjson, compression: zstd"),
        ("format: ndjson.gz, compression: none", "format: ndjson, compression: none"),
        ("format: csv.zst, compression: gzip", "format: csv, compression: gzip"),
        ("format: parquet, compression: gzip", "parquet_compression: gzip"),
        ("format: parquet, compression: none", "parquet_compression: none"),
        ("format: avro, compression: zstd", "deflate"),
        ("format: ndjson, compression: snappy", "compression"),
    ],
)
def test_a_contradicting_or_misplaced_compression_is_a_config_error_naming_the_fix(
    tmp_path: Path, deliver: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text(tmp_path, deliver))
    assert fix in str(raised.value)


# -- encoding: every combination, deterministic ------------------------------------------------

_records = st.lists(
    st.dictionaries(
        st.text(min_size=1, max_size=6),
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
        min_size=1,
        max_size=5,
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _records,
    st.sampled_from(TEXT_FORMATS),
    st.sampled_from(CODECS),
    st.integers(1, 9),
    st.integers(1, 19),
)
def test_compression_changes_bytes_not_content_and_is_deterministic(
    records: list[dict[str, Any]], fmt: str, codec: str, gzip_level: int, zstd_level: int
) -> None:
    name = fmt + SUFFIX[codec]
    encoding = Encoding(name, gzip_level=gzip_level, zstd_level=zstd_level)
    data = encoding.encode(records).data
    assert data == Encoding(name, gzip_level=gzip_level, zstd_level=zstd_level).encode(records).data
    assert uncompress(data, codec) == encode_batch(records, fmt)
    if codec == "gzip":
        assert data[4:8] == b"\0\0\0\0"  # no mtime in the header
    if codec == "zstd":
        params = zstandard.get_frame_parameters(data)
        assert params.content_size == len(encode_batch(records, fmt)) and params.has_checksum


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_content_types_follow_the_compressed_formats(fmt: str, codec: str) -> None:
    name = fmt + SUFFIX[codec]
    assert CONTENT_TYPES[name] == {"gzip": "application/gzip", "zstd": "application/zstd"}[codec]
    assert set(CONTENT_TYPES) == set(FORMATS)


def items(n: int) -> list[Packaged]:
    out = []
    for line in generate(n, seed=5):
        event = orjson.loads(line)
        out.append(Packaged(event["event_id"], None, event["event"]["type"], event, line))
    return out


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize("codec", CODECS)
def test_file_names_derive_from_content_never_from_the_compressed_bytes(
    tmp_path: Path, fmt: str, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = DeliveryBatch("lake", "p/", items(40))
    names = set()
    for level in (1, 9):
        out = tmp_path / f"level{level}"
        deliver = deliver_of(
            "file",
            {
                "path": str(out),
                "format": fmt,
                "compression": codec,
                "gzip_level": level,
                "zstd_level": level,
            },
            monkeypatch,
        )
        sink = make_sink("lake", "file", deliver)
        sink.open()
        sink.write(batch)
        (written,) = [p for p in out.rglob("*") if p.is_file()]
        assert written.name.endswith(EXTENSION[fmt] + SUFFIX[codec])
        body = uncompress(written.read_bytes(), codec)
        if fmt == "json_array":
            assert [r["event_id"] for r in json.loads(body)] == [i.event_id for i in batch.items]
        names.add(str(written.relative_to(out)))
    assert len(names) == 1


@pytest.mark.parametrize("object_store", ["s3", "gcs", "azure_blob"], indirect=True)
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_object_stores_write_a_compressed_json_array(
    object_store: Any, tmp_path: Path, codec: str
) -> None:
    bucket = object_store.new_bucket()
    deliver = {**object_store.deliver(bucket), "format": "json_array", "compression": codec}
    body = ", ".join(f"{k}: '{v}'" for k, v in deliver.items())
    cfg = f"""
connectors:
  - id: lake
    type: {object_store.kind}
    deliver: {{{body}}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""
    sink = make_sink("lake", object_store.kind, parse_config(cfg).connectors[0].deliver_config)
    sink.open()
    try:
        batch = DeliveryBatch("lake", "p/", items(3))
        assert sink.write(batch).events == 3
    finally:
        sink.close()
    (name,) = object_store.names(bucket)
    assert name.startswith("p/lake-") and name.endswith(".json" + SUFFIX[codec])
    assert object_store.content_type(bucket, name) == f"application/{codec}"
    records = json.loads(uncompress(object_store.read(bucket, name), codec))
    assert [r["event_id"] for r in records] == [i.event_id for i in batch.items]


# -- input: zstd files -------------------------------------------------------------------------


def lines(n: int, seed: int = 7) -> list[bytes]:
    return list(generate(n, seed=seed))


def zstd_frame(data: bytes, level: int = 3, *, streamed: bool = False) -> bytes:
    """One zstd frame of ``data``; ``streamed``: as a pipe writes it (no content size)."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    if not streamed:
        return compressor.compress(data)
    out = io.BytesIO()
    with compressor.stream_writer(out, closefd=False) as writer:
        for start in range(0, len(data), 4096):
            writer.write(data[start : start + 4096])
    return out.getvalue()


def skippable_frame(payload: bytes) -> bytes:
    return b"\x50\x2a\x4d\x18" + len(payload).to_bytes(4, "little") + payload


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the hypothesis tests (each example rewrites its file)."""
    return tmp_path_factory.mktemp("compression")


def read_file(path: Path, chunk_lines: int = 1000) -> tuple[list[bytes], list[Any]]:
    """Every line ``_ReadChunks`` reads from ``path`` (in order) and its dead letters."""
    reader = _ReadChunks(chunk_lines)
    reader.setup()
    got: list[bytes] = []
    letters: list[Any] = []
    for out in reader.process((str(path), 0, 1)):
        if isinstance(out, beam.pvalue.TaggedOutput):
            assert out.tag == DEAD_LETTER
            letters += out.value
        else:
            got += out[2]
    return got, letters


@pytest.mark.parametrize("name", ["events.jsonl.zst", "events.jsonl"])
def test_zstd_input_is_read_by_its_content_whatever_its_name(tmp_path: Path, name: str) -> None:
    text = lines(500)
    body = b"\n".join(text) + b"\n"
    path = tmp_path / name
    # Several frames as zstd tools make them: with and without content size, a skippable
    # frame (pzstd's), a BOM at the start of the text.
    half = len(body) // 2
    path.write_bytes(
        zstd_frame(b"\xef\xbb\xbf" + body[:half], 1)
        + skippable_frame(b"meta")
        + zstd_frame(body[half:], 19, streamed=True)
    )
    assert list(open_lines(str(path))) == text
    assert read_file(path) == (text, [])


def test_a_zstd_file_of_one_empty_frame_has_no_lines(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl.zst"
    path.write_bytes(zstd_frame(b""))
    assert read_file(path) == ([], [])


def _single(n: int) -> tuple[list[bytes], bytes]:
    text = lines(n, seed=9)
    return text, zstd_frame(b"\n".join(text) + b"\n", 3, streamed=True)


_TEXT, _PACKED = _single(3000)


@settings(max_examples=40, deadline=None)
@given(st.integers(4, len(_PACKED) - 1))
def test_a_truncated_zstd_input_gives_its_lines_then_one_dead_letter(
    folder: Path, cut: int
) -> None:
    # Truncation anywhere inside the frame: zstandard's own stream reader just ends early,
    # so without a check this would lose the rest of the file silently.
    path = folder / "truncated.jsonl.zst"
    path.write_bytes(_PACKED[:cut])
    got, letters = read_file(path)
    assert got == _TEXT[: len(got)]  # the lines before the damage, none cut short
    (letter,) = letters
    assert (letter.stage, letter.reason) == ("read", UNREADABLE)
    assert letter.original == {"path": str(path), "lines_before": len(got)}
    assert "EOFError" in letter.error and "truncated" in letter.error


def test_a_cut_between_two_frames_is_a_whole_file(tmp_path: Path) -> None:
    text = lines(20)
    path = tmp_path / "two.jsonl.zst"
    first = zstd_frame(b"\n".join(text[:10]) + b"\n")
    path.write_bytes(first + zstd_frame(b"\n".join(text[10:]) + b"\n"))
    assert read_file(path) == (text, [])
    path.write_bytes(first)  # a valid zstd file of its own
    assert read_file(path) == (text[:10], [])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([b"\x28\xb5\x2f\xfd", b"\x5f\x2a\x4d\x18"]), st.binary(max_size=4096))
def test_random_bytes_after_the_zstd_magic_are_one_dead_letter_never_a_crash(
    folder: Path, magic: bytes, rest: bytes
) -> None:
    path = folder / "random.jsonl.zst"
    path.write_bytes(magic + rest)
    _lines, letters = read_file(path)
    # Random bytes may happen to form a valid (empty or skippable) frame: then they are a
    # file of no lines, or of the lines they decode to; otherwise one dead letter.
    assert len(letters) <= 1
    if letters:
        assert letters[0].reason == UNREADABLE and letters[0].stage == "read"


@pytest.mark.parametrize("seed", range(5))
def test_noise_after_the_zstd_magic_is_unreadable_not_read_as_lines(
    tmp_path: Path, seed: int
) -> None:
    path = tmp_path / "noise.jsonl"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + random.Random(seed).randbytes(64 * 1024))
    got, (letter,) = read_file(path)
    assert got == [] and letter.reason == UNREADABLE and "ZstdError" in letter.error


@settings(max_examples=60, deadline=None)
@given(st.integers(4, len(_PACKED) - 1), st.integers(1, 255))  # the magic kept
def test_a_corrupt_byte_is_caught_or_harmless_never_a_crash(
    folder: Path, at: int, flip: int
) -> None:
    damaged = bytearray(_PACKED)
    damaged[at] ^= flip
    path = folder / "corrupt.jsonl.zst"
    path.write_bytes(bytes(damaged))
    got, letters = read_file(path)
    assert len(letters) <= 1
    if not letters:  # the checksum vouches for what was read
        assert got == _TEXT
    else:
        assert letters[0].reason == UNREADABLE


def test_a_frame_asking_for_a_huge_window_is_refused_not_allocated(tmp_path: Path) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    compressor = zstandard.ZstdCompressor(compression_params=params)
    out = io.BytesIO()
    with compressor.stream_writer(out, closefd=False) as writer:
        writer.write(b"\n".join(lines(10)) + b"\n")
    path = tmp_path / "window.jsonl.zst"
    path.write_bytes(out.getvalue())
    got, (letter,) = read_file(path)
    assert got == [] and letter.reason == UNREADABLE
    assert "memory" in letter.error or "window" in letter.error


def test_a_zstd_bomb_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    # 256 MiB of one byte, no line feed: ~8 KiB of zstd (a ratio of ~30,000). Read as a
    # stream, it is one too_large line whose start is kept, never 256 MiB in memory.
    size = 256 * MIB
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    out = io.BytesIO()
    with compressor.stream_writer(out, closefd=False) as writer:
        block = b"x" * MIB
        for _ in range(size // MIB):
            writer.write(block)
    assert len(out.getvalue()) < 64 * 1024
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(out.getvalue())
    reader = _ReadChunks(5000)
    reader.setup()
    tracemalloc.start()
    try:
        result = list(reader.process((str(path), 0, 1)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    (tagged,) = result
    (letter,) = tagged.value
    assert letter.reason == "too_large" and letter.to_json_dict()["original_bytes"] == size


def test_the_job_reads_zstd_input_and_reports_a_truncated_one(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = lines(300, seed=3)
    (inputs / "good.jsonl.zst").write_bytes(zstd_frame(b"\n".join(good) + b"\n"))
    (inputs / "damaged.jsonl.zst").write_bytes(_PACKED[: len(_PACKED) // 2])
    out = tmp_path / "out"
    config = write_config(
        out, [{"id": "all", "type": "file", "deliver": {"path": str(out / "all")}}]
    )
    code, summary = run_job(config, inputs / "*", tmp_path / "summary.json")
    assert code == 0
    counts = summary["input"]
    assert counts["balanced"] and counts["invalid_reasons"] == {"unreadable_input": 1}
    assert len(good) < counts["events"] < len(good) + len(_TEXT)


def test_compress_detects_each_codec_by_its_magic() -> None:
    assert compress.sniff(b"\x1f\x8b\x08\x00") == "gzip"
    assert compress.sniff(b"\x28\xb5\x2f\xfd") == "zstd"
    assert compress.sniff(b"\x5a\x2a\x4d\x18") == "zstd"  # a skippable frame first
    assert compress.sniff(b'{"ev') == "none" and compress.sniff(b"") == "none"


# -- input: gzip through ISA-L ------------------------------------------------------------------

_GZ_TEXT = lines(2000, seed=11)
_GZ = gzip.compress(b"\n".join(_GZ_TEXT) + b"\n", mtime=0)


def test_gzip_input_is_read_through_isa_l() -> None:
    # ISA-L's reader decompresses ~1.15x as fast as zlib-ng's (bench/RESULTS.md, Session 13).
    reader = compress.open_reader(io.BytesIO(_GZ), "gzip")
    assert isinstance(reader.raw, igzip.IGzipFile)  # type: ignore[attr-defined]
    assert reader.read().splitlines() == _GZ_TEXT


@settings(max_examples=80, deadline=None)
@given(st.integers(0, len(_GZ) - 1), st.integers(1, 255), st.booleans())
def test_damaged_gzip_raises_only_what_read_reports(at: int, flip: int, cut: bool) -> None:
    damaged = _GZ[:at] if cut else _GZ[:at] + bytes([_GZ[at] ^ flip]) + _GZ[at + 1 :]
    reader = compress.open_reader(io.BytesIO(damaged), "gzip")
    try:
        data = reader.read()
    except compress.DAMAGED:
        return  # the Read stage's dead letter
    # Bytes the format ignores (the header's mtime, flags of extra fields...) or a cut
    # that leaves a whole member: never other content than the file's.
    assert data.splitlines() == _GZ_TEXT or (cut and data == b"")
