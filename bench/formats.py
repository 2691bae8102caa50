"""Encode CPU and size of every file format, as ratios to ``ndjson.gz`` at its default level.

    .venv/bin/python bench/formats.py [--events 10000] [--repeat 5]

Events from ``examples.generate_events`` (seed 42), encoded in batches of 1,000 (the
default ``batch.max_events``) with the job's own :class:`~transforms.rules.encode.Encoding`;
CPU time (``time.process_time``) of the best of ``--repeat`` runs. Two shapes: raw events
(no template: the record's bytes are the input line, as Package keeps them) and flat rows
(``flatten: "_"``, as a template would give a columnar destination). Every ratio is
against ``ndjson.gz`` (gzip level 6) measured in the same run. Results: bench/RESULTS.md
("Lake formats").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's modules, not an installed copy
    sys.path.insert(0, str(ROOT))

from examples.generate_events import generate  # noqa: E402
from transforms.rules.encode import Encoding, compile_schema  # noqa: E402
from transforms.rules.events import event_time_ms  # noqa: E402
from transforms.rules.package import flatten  # noqa: E402
from transforms.rules.records import Packaged  # noqa: E402

BATCH = 1_000


def _type_of(values: set[type]) -> str:
    if values <= {bool}:
        return "BOOL"
    if values <= {int}:
        return "INT64"
    if values <= {int, float}:
        return "FLOAT64"
    if values <= {str}:
        return "STRING"
    return "JSON"


def _measure(items: Sequence[Packaged], encoding: Encoding, repeat: int) -> tuple[float, int]:
    """(best CPU seconds, bytes written) for encoding ``items`` in batches."""
    best = float("inf")
    size = 0
    for _ in range(repeat):
        began = time.process_time()
        size = 0
        for i in range(0, len(items), BATCH):
            encoded = encoding.encode(items[i : i + BATCH])
            assert not encoded.refused, encoded.refused[:1]
            size += len(encoded.data)
        best = min(best, time.process_time() - began)
    return best, size


def _label(enc: Encoding) -> str:
    label = enc.format
    if enc.format.endswith(".gz"):
        label += f" (gzip {enc.gzip_level})"
    if enc.format.endswith(".zst"):
        label += f" (zstd {enc.zstd_level})"
    if enc.format == "parquet":
        shape = "declared schema" if enc.schema else "inferred"
        label += f" ({enc.parquet_compression}, {shape})"
    if enc.format == "csv" and enc.schema:
        label += " (declared schema)"
    return label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    lines = list(generate(args.events, seed=42))
    events = [orjson.loads(line) for line in lines]
    raw = [
        Packaged(e["event_id"], event_time_ms(e), e["event"]["type"], None, line, line)
        for e, line in zip(events, lines, strict=True)
    ]
    records: list[dict[str, Any]] = [flatten(e, "_") for e in events]
    flat = [
        Packaged(e["event_id"], event_time_ms(e), e["event"]["type"], row, e)
        for e, row in zip(events, records, strict=True)
    ]
    keys = list(dict.fromkeys(k for row in records for k in row))
    types = {k: _type_of({type(r[k]) for r in records if r.get(k) is not None}) for k in keys}
    schema = compile_schema([{"name": k, "type": t} for k, t in types.items()])
    parquet = [Encoding("parquet", parquet_compression=c) for c in ("zstd", "snappy", "gzip")]
    cases: list[tuple[str, list[Packaged], list[Encoding]]] = [
        (
            "raw events",
            raw,
            [
                Encoding("ndjson.gz"),
                Encoding("ndjson.gz", gzip_level=1),
                Encoding("ndjson.zst"),
                Encoding("ndjson.zst", zstd_level=9),
                Encoding("json_array.gz"),
                Encoding("json_array.zst"),
                Encoding("csv.gz"),
                Encoding("csv.zst"),
                *parquet,
            ],
        ),
        (
            "flat rows (flatten '_')",
            flat,
            [
                Encoding("ndjson.gz"),
                Encoding("ndjson.zst"),
                Encoding("csv.gz"),
                Encoding("csv.zst"),
                *parquet,
                Encoding("parquet", parquet_compression="zstd", schema=schema),
            ],
        ),
    ]
    for title, items, encodings in cases:
        print(f"\n{title}: {len(items)} events, batches of {BATCH}, best of {args.repeat}")
        print(f"{'format':44s} {'CPU ms':>8s} {'vs gz-6':>8s} {'bytes':>10s} {'size':>6s}")
        rows: list[tuple[str, float, int]] = []
        for enc in encodings:
            rows.append((_label(enc), *_measure(items, enc, args.repeat)))
        ref: Any = rows[0]  # ndjson.gz at level 6, measured in this run
        for label, cpu, size in rows:
            print(
                f"{label:44s} {cpu * 1000:8.1f} {cpu / ref[1]:7.2f}x {size:10d} "
                f"{size / ref[2]:5.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
