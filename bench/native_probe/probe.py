r"""How much CPU per event would a native (Rust) hot path save? A measurement probe.

    /work/main/.venv/bin/python bench/native_probe/probe.py [--events 1000000] [--repeat 3]
        [--chunk 1000] [--lib /tmp/native_probe_lib]

Not product code. Runs, interleaved, best of ``--repeat`` CPU seconds of this process:

* ``hand loop``: :func:`bench.hand_loop.hand_loop`, the plain Python+orjson loop for
  ``bench/agent_like.yaml`` (3 routes, field filters, one rename each, NDJSON files of
  1,000 records).
* ``native``: the same job with the per-event work in Rust (``native_probe.project_lines``,
  built from ``src/lib.rs`` here): lines read the same way
  (:func:`transforms.rules.gzipio.open_reader`), handed over ``--chunk`` at a time, the
  returned records written as files of 1,000 per connector.
* ``native floor``: the same reading and writing around ``native_probe.roundtrip_lines``,
  which parses each line and serializes it once, no rules: one record per event, one
  folder.
* ``native serde`` / ``native floor serde``: the same two with ``serde_json::Value``
  (``preserve_order``) as the parser instead of the probe's own borrowed parser.
* ``io floor``: only the reading and writing: the lines, unparsed, into files of 1,000.

Before timing it runs both native versions on a few edge-case lines
(:data:`EDGE_CASES`) and compares their bytes with hand_loop's rules.

Then it checks that the hand loop and the native version wrote the same records per
connector: the files' lines in write order, byte for byte; if the bytes differ, the
records parsed with orjson, keyed by ``event_id`` (values, and key order separately).

The extension is imported from ``--lib`` (a folder holding the unpacked wheel or a
``native_probe*.so``); see README.md beside this file for the build.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.corpus import ensure_corpus  # noqa: E402
from bench.hand_loop import (  # noqa: E402
    BATCH,
    CONNECTORS,
    ERRORS,
    MARKETING,
    OPS,
    _errors,
    _marketing,
    _ops,
    hand_loop,
)
from transforms.rules import gzipio  # noqa: E402
from transforms.runtime import tune_gc  # noqa: E402

DEFAULT_LIB = Path(os.environ.get("NATIVE_PROBE_LIB", "/tmp/native_probe_lib"))


def _load(lib: Path) -> Any:
    sys.path.insert(0, str(lib))
    import native_probe

    return native_probe


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Writer:
    """Files of :data:`BATCH` records, ``folder/<n>.ndjson``, like the hand loop's."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.files = 0
        self.pending: list[bytes] = []

    def add(self, records: list[bytes]) -> None:
        pending = self.pending
        pending.extend(records)
        if len(pending) >= BATCH:
            start = 0
            while len(pending) - start >= BATCH:
                self._write(pending[start : start + BATCH])
                start += BATCH
            self.pending = pending[start:]

    def close(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = []

    def _write(self, records: list[bytes]) -> None:
        (self.folder / f"{self.files:06d}.ndjson").write_bytes(b"".join(records))
        self.files += 1


def native(
    project: Callable[[list[bytes]], tuple[list[bytes], ...]], corpus: Path, out: Path, chunk: int
) -> int:
    """The job with ``project`` (a ``project_lines*``) per chunk; ``out/<connector>/<n>.ndjson``."""
    writers = [_Writer(out / name) for name in CONNECTORS]
    events = 0
    with open(corpus, "rb") as raw:
        reader = gzipio.open_reader(raw)
        while lines := list(itertools.islice(reader, chunk)):
            events += len(lines)
            for writer, records in zip(writers, project(lines), strict=True):
                writer.add(records)
    for writer in writers:
        writer.close()
    return events


def native_floor(
    roundtrip: Callable[[list[bytes]], list[bytes]], corpus: Path, out: Path, chunk: int
) -> int:
    """Read, parse and serialize each event once (no rules), write ``out/all/<n>.ndjson``."""
    return _one_folder(roundtrip, corpus, out, chunk)


def io_floor(corpus: Path, out: Path, chunk: int) -> int:
    """Read the lines in chunks and write them unchanged (no parsing): the I/O around it."""
    return _one_folder(list, corpus, out, chunk)


def _one_folder(
    convert: Callable[[list[bytes]], list[bytes]], corpus: Path, out: Path, chunk: int
) -> int:
    writer = _Writer(out / "all")
    events = 0
    with open(corpus, "rb") as raw:
        reader = gzipio.open_reader(raw)
        while lines := list(itertools.islice(reader, chunk)):
            events += len(lines)
            writer.add(convert(lines))
    writer.close()
    return events


def _lines(folder: Path) -> list[bytes]:
    return [line for f in sorted(folder.glob("*.ndjson")) for line in f.read_bytes().splitlines()]


def _ordered(value: Any) -> Any:
    """``value`` with every object as a list of pairs, so key order counts in ``==``."""
    if isinstance(value, dict):
        return [(k, _ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


def compare(mine: Path, theirs: Path) -> dict[str, str]:
    """Per connector: how the two folders' records compare (bytes, values, key order)."""
    verdict: dict[str, str] = {}
    for cid in CONNECTORS:
        a, b = _lines(mine / cid), _lines(theirs / cid)
        if a == b:
            verdict[cid] = f"{len(a):,} records, byte-identical in the same order"
            continue
        pa = {r["event_id"]: r for r in map(orjson.loads, a)}
        pb = {r["event_id"]: r for r in map(orjson.loads, b)}
        differing_bytes = sum(x != y for x, y in zip(a, b, strict=False))
        if len(a) != len(b) or pa != pb:
            verdict[cid] = f"DIFFERENT values ({len(a):,} vs {len(b):,} records)"
        else:
            same_order = all(_ordered(pa[k]) == _ordered(pb[k]) for k in pa)
            verdict[cid] = (
                f"{len(a):,} records, equal values ({'same' if same_order else 'DIFFERENT'} "
                f"key order), {differing_bytes:,} differ in bytes"
            )
    return verdict


EDGE_CASES: tuple[bytes, ...] = (
    b'{"event_id":"a","event":{"type":"error"}}',
    b'{"event_id":"b","event":{"type":"heartbeat"},"metadata":7,"fluxdata":"x"}',
    b'{"event_id":"c","event":{"type":"buffer_start"},"metadata":{"error":{"code":3},'
    b'"device":{"os":"x"},"content":{"id":null},"geo":{"city":"y"}},"error":1,"sid":2,'
    b'"session_id":"s","fluxdata":{"num_errors":1,"bandwidth_kbps":[1e16,-0,-0.0,0.1,1E5,2.50,1e-7],'
    b'"playhead_position_sec":1.5e-7}}',
    b'{"event_id":"d","type":0,"event":{"ts":1,"type":"playback_stop"},"metadata":'
    b'{"user":{"id":1,"x":2},"network":{}},"fluxdata":{"a":[1e16,-0,0.1,1E5,2.50]}}',
    b'{"event_id":"e","event":{"type":"player_ready","type":"heartbeat"},"metadata":'
    b'{"geo":[],"device":1,"user":"u","player":{"\\u00e9\\/\\n":"\\ud83d\\ude00\xe2\x80\xa8"}}}',
    b'{"event_id":"f","event":{"type":5}}',
    b' {"event_id":"g","event":{"type":"bitrate_change","type":"error"},"session_id":null,'
    b'"metadata":{"error":"early","error":"\\u2029\\u0001\\t"}} \n',
)
"""Lines for edge cases of hand_loop's rules (absent keys, non-object values, duplicate
keys, escapes, U+2028/U+2029, float spellings), checked before timing."""


def check_edge_cases(project: Callable[[list[bytes]], tuple[list[bytes], ...]]) -> list[str]:
    """Where ``project`` disagrees, byte for byte, with hand_loop's rules on EDGE_CASES."""
    rules = ((OPS, _ops), (MARKETING, _marketing), (ERRORS, _errors))
    expected: list[list[bytes]] = [[], [], []]
    for line in EDGE_CASES:
        event = orjson.loads(line)
        for records, (types, package) in zip(expected, rules, strict=True):
            if event["event"]["type"] in types:
                data = orjson.dumps(package(event), option=orjson.OPT_APPEND_NEWLINE)
                data = data.replace(b"\xe2\x80\xa8", b"\\u2028")
                records.append(data.replace(b"\xe2\x80\xa9", b"\\u2029"))
    got = project(list(EDGE_CASES))
    return [
        f"{cid}: expected {want!r}, got {have!r}"
        for cid, want_list, have_list in zip(CONNECTORS, expected, got, strict=True)
        for want, have in itertools.zip_longest(want_list, have_list)
        if want != have
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1000, help="lines per native call")
    parser.add_argument("--lib", type=Path, default=DEFAULT_LIB, help="folder of the extension")
    args = parser.parse_args(argv)
    module = _load(args.lib)
    for name in ("project_lines", "project_lines_serde"):
        wrong = check_edge_cases(getattr(module, name))
        outcome = f"{len(wrong)} records differ, first: {wrong[0]}" if wrong else "byte-identical"
        print(f"edge cases ({len(EDGE_CASES)} lines), {name}: {outcome}")
    (corpus,) = ensure_corpus(args.events)
    tune_gc()
    variants: dict[str, Callable[[Path], int]] = {
        "hand loop": lambda out: hand_loop(corpus, out),
        "native": lambda out: native(module.project_lines, corpus, out, args.chunk),
        "native floor": lambda out: native_floor(module.roundtrip_lines, corpus, out, args.chunk),
        "native serde": lambda out: native(module.project_lines_serde, corpus, out, args.chunk),
        "native floor serde": lambda out: native_floor(
            module.roundtrip_lines_serde, corpus, out, args.chunk
        ),
        "io floor": lambda out: io_floor(corpus, out, args.chunk),
    }
    best = dict.fromkeys(variants, float("inf"))
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="native-probe-") as work:
        for rep in range(args.repeat):
            order = list(variants) if rep % 2 == 0 else list(reversed(variants))
            for name in order:
                target = Path(work) / f"{name.replace(' ', '_')}-{rep}"
                gc.collect()
                started = _cpu()
                events = variants[name](target)
                best[name] = min(best[name], _cpu() - started)
                if events != args.events:
                    print(f"{name}: read {events:,} events, not {args.events:,}", file=sys.stderr)
                    return 1
                if rep > 0:
                    shutil.rmtree(target)  # keep the first repetition's files only
        verdict = compare(Path(work) / "native-0", Path(work) / "hand_loop-0")
        verdict_serde = compare(Path(work) / "native_serde-0", Path(work) / "hand_loop-0")
    print(
        f"{args.events:,} events ({corpus.name}), chunk {args.chunk}, started {started_at}; "
        f"best of {args.repeat}, interleaved (CPU of this process, "
        f"load {os.getloadavg()[0]:.2f})\n"
    )
    print("| variant | CPU s | us / event | events / CPU-s |\n|---|---:|---:|---:|")
    for name, cpu in best.items():
        print(f"| {name} | {cpu:.2f} | {cpu * 1e6 / args.events:.2f} | {args.events / cpu:,.0f} |")
    texts: list[str] = []
    for name, found in (("native", verdict), ("native serde", verdict_serde)):
        print(f"\n{name} vs hand loop, per connector:")
        for cid, text in found.items():
            print(f"- {cid}: {text}")
            texts.append(text)
    return 0 if all("DIFFERENT" not in text for text in texts) else 1


if __name__ == "__main__":
    sys.exit(main())
