"""gzip (stdlib zlib, zlib-ng, ISA-L) and zstd: speed and size per level, against the stdlib.

    .venv/bin/python bench/compression.py [--events 20000] [--repeat 3]

The corpus is the bench's events (``examples.generate_events``, seed 42) as NDJSON in
batches of 1,000 (the default ``batch.max_events``), each batch compressed on its own as
a connector does. Speed is MB of *uncompressed* data per CPU-second (``time.process_time``,
one thread), the median of ``--repeat`` runs; ratio is compressed / uncompressed bytes.
Every row is also given against the stdlib's zlib at level 6 measured in the same process,
so the machine's load cancels out (``x speed``: how many times faster; ``x size``: how
many times the bytes).

Decompression reads the whole corpus as one input file (one gzip member, one zstd frame),
1 MiB at a time, as the Read stage does: the stdlib's ``GzipFile``, zlib-ng's
``GzipNGFile``, ISA-L's ``IGzipFile``, zstandard's stream reader, and the job's own reader
(:func:`transforms.rules.compress.open_reader`, with its truncation check); then the Read
stage's own loop (:func:`transforms.parse.open_lines`, lines cut as the job cuts them) on
plain, gzip (ISA-L's reader, and zlib-ng's as before) and zstd files. Results:
bench/RESULTS.md ("Session 13: compression re-measured").
"""

from __future__ import annotations

import argparse
import gzip
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import zstandard
from isal import igzip
from zlib_ng import gzip_ng

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's modules, not an installed copy
    sys.path.insert(0, str(ROOT))

from examples.generate_events import generate  # noqa: E402
from transforms.parse import open_lines  # noqa: E402
from transforms.rules import compress, gzipio  # noqa: E402
from transforms.rules.encode import zstd_compress  # noqa: E402

BATCH = 1_000
MB = 1e6
READ = 1 << 20


def _compressors() -> list[tuple[str, Callable[[bytes], bytes]]]:
    rows: list[tuple[str, Callable[[bytes], bytes]]] = []
    for n in (6, 1, 9):
        rows.append((f"gzip, stdlib zlib {n}", partial(gzip.compress, compresslevel=n, mtime=0)))
    for n in (1, 2, 3, 6, 9):
        rows.append((f"gzip, zlib-ng {n}", partial(gzip_ng.compress, compresslevel=n, mtime=0)))
    for n in (0, 1, 2, 3):
        rows.append((f"gzip, ISA-L {n}", partial(igzip.compress, compresslevel=n, mtime=0)))
    for n in (1, 2, 6):
        rows.append((f"gzip_level {n} (the job)", partial(gzipio.compress, level=n)))
    for n in (1, 3, 6, 9, 12, 19):
        rows.append((f"zstd {n}", partial(zstd_compress, level=n)))
    return rows


def _median_cpu(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.process_time()
        result = run()
        times.append(time.process_time() - began)
    return statistics.median(times), result


def _drain(stream: Any) -> int:
    n = 0
    while block := stream.read(READ):
        n += len(block)
    return n


def _zstd_plain(raw: io.BytesIO) -> Any:
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


def _readers(whole: bytes) -> list[tuple[str, bytes, Callable[[io.BytesIO], Any]]]:
    gz = gzip.compress(whole, compresslevel=6, mtime=0)
    zst = zstd_compress(whole, 3)
    return [
        ("gzip 6, stdlib GzipFile", gz, lambda raw: gzip.GzipFile(fileobj=raw)),
        ("gzip 6, zlib-ng GzipNGFile (before)", gz, lambda raw: gzip_ng.GzipNGFile(fileobj=raw)),
        ("gzip 6, ISA-L IGzipFile (the job)", gz, lambda raw: igzip.IGzipFile(fileobj=raw)),
        ("zstd 3, zstandard stream_reader", zst, _zstd_plain),
        (
            "zstd 3, compress.open_reader (the job)",
            zst,
            partial(compress.open_reader, codec="zstd"),
        ),
    ]


def _compressed_sizes(fn: Callable[[bytes], bytes], batches: list[bytes]) -> list[int]:
    return [len(fn(b)) for b in batches]


def _read(opener: Callable[[io.BytesIO], Any], packed: bytes) -> int:
    return _drain(opener(io.BytesIO(packed)))


def _lines(path: str) -> int:
    n = 0
    for _line in open_lines(path):
        n += 1
    return n


def _zlib_ng_reader(raw: Any) -> Any:
    return io.BufferedReader(gzip_ng.GzipNGFile(fileobj=raw), buffer_size=gzipio.READ_BUFFER)


def _read_stage(whole: bytes, repeat: int) -> None:
    """The Read stage's own loop (:func:`open_lines`: decompress and cut lines) per input."""
    print("\nthe Read stage's lines (open_lines, one file)")
    print(f"{'input':40s} {'MB/s':>7s} {'x speed':>8s}")
    job_reader = gzipio.open_reader
    with tempfile.TemporaryDirectory() as folder:
        files = {
            "plain": whole,
            "gzip 6 (ISA-L reader, the job)": gzip.compress(whole, mtime=0),
            "gzip 6 (zlib-ng reader, before)": gzip.compress(whole, mtime=0),
            "zstd 3": zstd_compress(whole, 3),
        }
        base: float | None = None
        for label, data in files.items():
            path = Path(folder) / "input"
            path.write_bytes(data)
            gzipio.open_reader = _zlib_ng_reader if "zlib-ng" in label else job_reader
            try:
                cpu, _n = _median_cpu(partial(_lines, str(path)), repeat)
            finally:
                gzipio.open_reader = job_reader
            speed = len(whole) / MB / cpu
            base = base or speed
            print(f"{label:40s} {speed:7.0f} {speed / base:7.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    lines = list(generate(args.events, seed=42))
    batches = [b"\n".join(lines[i : i + BATCH]) + b"\n" for i in range(0, len(lines), BATCH)]
    total = sum(map(len, batches))
    print(
        f"{len(lines)} events, {len(batches)} batches of {BATCH}, {total / MB:.1f} MB of NDJSON; "
        f"median CPU of {args.repeat}"
    )
    print(
        f"\ncompress (each batch alone)\n{'codec':36s} {'MB/s':>7s} {'ratio':>6s} "
        f"{'x speed':>8s} {'x size':>7s}"
    )
    ref: tuple[float, float] | None = None
    for label, fn in _compressors():
        cpu, sizes = _median_cpu(partial(_compressed_sizes, fn, batches), args.repeat)
        speed, ratio = total / MB / cpu, sum(sizes) / total
        ref = ref or (speed, ratio)  # the first row: stdlib zlib 6
        print(
            f"{label:36s} {speed:7.0f} {ratio:6.3f} {speed / ref[0]:7.2f}x {ratio / ref[1]:6.2f}x"
        )
    whole = b"".join(batches)
    print(f"\ndecompress (one file, {READ >> 20} MiB reads)")
    print(f"{'reader':40s} {'MB/s':>7s} {'x speed':>8s}")
    base: float | None = None
    for label, packed, opener in _readers(whole):
        cpu, n = _median_cpu(partial(_read, opener, packed), args.repeat)
        assert n == len(whole), (label, n)
        speed = n / MB / cpu
        base = base or speed
        print(f"{label:40s} {speed:7.0f} {speed / base:7.2f}x")
    _read_stage(whole, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
