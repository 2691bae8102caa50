"""The floor under CPU per event: what any job must do that reads JSON and writes these files.

    python bench/floor.py --events 200000 --connectors 5 --repeat 3

For one corpus and benchmark config (``bench/corpus.py``) it times, in this one process
and on the same data:

* ``bound``: the plain-Python bound's whole loop (``bench/bound.py``: parse, route,
  filter, package, encode, write);
* ``floor``: only the work no implementation of this product can skip: decompress and
  split the input, ``orjson.loads`` every line, and encode every delivered batch exactly
  as the bound writes it (``orjson.dumps`` per record, then gzip at the connector's level
  for ``ndjson.gz``, with ``transforms.rules.gzipio`` as the job does; the same with the
  stdlib's zlib for comparison). The records to encode are the bound's own packaged records, made
  beforehand and not timed; writing the bytes out is not timed either.

CPU is ``time.process_time()`` of this process (one thread). Events per CPU-second of the
floor is the most any job can reach with orjson and these compressors on this machine for
this config, whatever it does about route, filter, package or Beam; the issue's target
(100k events per CPU-second) can be compared with it directly. Best of ``--repeat``
interleaved rounds (the least disturbed by other load).
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.bound import Bound, read_chunks  # noqa: E402
from bench.corpus import DEFAULT_SEED, bench_config, ensure_corpus  # noqa: E402
from transforms.config import CompiledConnector, compile_connectors, load_config  # noqa: E402
from transforms.connectors.base import DeliveryBatch, Sink, WriteResult  # noqa: E402
from transforms.rules import gzipio  # noqa: E402
from transforms.rules.encode import GZIP_LEVEL, encode_batch  # noqa: E402

CHUNK_LINES = 5000


class _Recorder(Sink):
    """A sink that keeps each batch (with its format and gzip level) instead of writing."""

    def __init__(self, fmt: str, level: int, kept: list[tuple[DeliveryBatch, str, int]]):
        self.fmt, self.level, self.kept = fmt, level, kept

    def write(self, batch: DeliveryBatch) -> WriteResult:
        self.kept.append((batch, self.fmt, self.level))
        return WriteResult("", len(batch.items), 0)


class _Capture(Bound):
    """The bound, keeping each batch it would write."""

    def __init__(self, connectors: list[CompiledConnector]):
        super().__init__(connectors)
        self.batches: list[tuple[DeliveryBatch, str, int]] = []
        for c in self.connectors:
            self.sinks[c.id].close()
            level = getattr(c.deliver, "gzip_level", GZIP_LEVEL)
            self.sinks[c.id] = _Recorder(c.deliver.format, level, self.batches)


def time_bound(config: Path, corpus: Path) -> float:
    """CPU seconds of the bound's whole loop (it writes its files below the config's out)."""
    bound = Bound(compile_connectors(load_config(str(config))))
    start = time.process_time()
    for lines in read_chunks(str(corpus), CHUNK_LINES):
        bound.run_chunk(lines)
    cpu = time.process_time() - start
    bound.close()
    return cpu


def _read(corpus: Path, reader: Callable[[BinaryIO], Any]) -> float:
    """CPU seconds of decompressing and splitting ``corpus`` and ``orjson.loads`` of each line."""
    start = time.process_time()
    with open(corpus, "rb") as raw:
        for line in reader(raw):
            if line.strip():
                orjson.loads(line)
    return time.process_time() - start


def _encode(batches: list[tuple[DeliveryBatch, str, int]], stdlib: bool = False) -> float:
    """CPU seconds of encoding every batch as the job does (or with the stdlib's gzip)."""
    start = time.process_time()
    for batch, fmt, level in batches:
        if stdlib and fmt == "ndjson.gz":
            gzip.compress(encode_batch(batch.items, "ndjson"), compresslevel=level, mtime=0)
        else:
            encode_batch(batch.items, fmt, gzip_level=level)
    return time.process_time() - start


def time_floor(corpus: Path, batches: list[tuple[DeliveryBatch, str, int]]) -> dict[str, float]:
    """CPU seconds of each part of the floor, with the job's gzip (zlib-ng) and the stdlib's."""
    start = time.process_time()
    for batch, fmt, _ in batches:
        encode_batch(batch.items, "ndjson" if fmt == "ndjson.gz" else fmt)
    json_only = time.process_time() - start
    return {
        "read": _read(corpus, gzipio.open_reader),
        "encode": _encode(batches),
        "json": json_only,
        "read_stdlib": _read(
            corpus, lambda raw: io.BufferedReader(gzip.GzipFile(fileobj=raw), gzipio.READ_BUFFER)
        ),
        "encode_stdlib": _encode(batches, stdlib=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--connectors", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--gzip-level", type=int, default=None, help="encode the floor's gzip at this level"
    )
    args = parser.parse_args(argv)
    corpus = ensure_corpus(args.events, args.seed)[0]
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        config = bench_config(args.connectors, Path(tmp) / "out", Path(tmp) / "delivery.yaml")
        capture = _Capture(compile_connectors(load_config(str(config))))
        for lines in read_chunks(str(corpus), CHUNK_LINES):
            capture.run_chunk(lines)
        if args.gzip_level is not None:
            capture.batches = [(b, f, args.gzip_level) for b, f, _ in capture.batches]
        deliveries = sum(len(b.items) for b, _, _ in capture.batches)
        bounds: list[float] = []
        parts: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            bounds.append(time_bound(config, corpus))
            for name, cpu in time_floor(corpus, capture.batches).items():
                parts.setdefault(name, []).append(cpu)
    n = args.events
    bound = min(bounds)
    best = {name: min(cpus) for name, cpus in parts.items()}
    floor = best["read"] + best["encode"]
    floor_stdlib = best["read_stdlib"] + best["encode_stdlib"]
    print(
        f"{n:,} events, {args.connectors} connectors, {deliveries:,} deliveries; best of "
        f"{args.repeat}; CPU-s (events per CPU-second)"
    )
    print("| part | CPU s | us / event | events / CPU-s |")
    print("|---|---:|---:|---:|")
    for name, cpu in (
        ("read + orjson.loads (zlib-ng, as the job)", best["read"]),
        ("encode: dumps + gzip (as the job: ISA-L at 1-2, else zlib-ng)", best["encode"]),
        ("  of which dumps (same batches, no gzip)", best["json"]),
        ("floor (sum)", floor),
        ("read + orjson.loads (stdlib gzip)", best["read_stdlib"]),
        ("encode: dumps + gzip (stdlib zlib)", best["encode_stdlib"]),
        ("floor with the stdlib's zlib (sum)", floor_stdlib),
        ("bound (whole loop)", bound),
    ):
        print(f"| {name} | {cpu:.2f} | {cpu / n * 1e6:.1f} | {n / cpu:,.0f} |")
    print(f"floor / bound CPU: {floor / bound:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
