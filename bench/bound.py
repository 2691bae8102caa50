r"""The plain-Python bound: the job's own rules in one single-process loop, no Beam.

    python bench/bound.py --config delivery.yaml --input 'events*.jsonl.gz' \\
        [--chunk-lines 5000] [--summary-json bound.json]

This is the baseline every benchmark figure is a ratio against (see the design's
"Measuring"). It applies exactly the functions the pipeline applies, in one loop:

1. read each input file (plain or gzip, detected by content) in chunks of
   ``chunk_lines`` raw lines, the job's deterministic chunk boundaries;
2. :func:`~transforms.rules.events.parse_line` each non-blank line;
3. :func:`~transforms.rules.route.route_events` on the chunk (so catch-alls get only what
   no other connector took), then per connector :meth:`FieldFilter.apply` and
   :meth:`Packager.apply` on every event it took, serializing the record as Package does
   for connectors that send JSON (for a connector that changes
   nothing, :func:`~transforms.rules.encode.line_json` of the event's line instead; for a
   ``package.function``, its records, fanned out and dropped as Package does);
4. key the records by rendered prefix (:func:`~transforms.rules.naming.key_by_prefix`) and
   collect them as ``CutBatches`` does (:class:`~transforms.rules.naming.BatchFiller`:
   sorted runs on disk past its budget);
5. after the last chunk, merge each (connector, prefix)'s runs and cut them every
   ``batch.max_events`` and ``batch.max_bytes`` (:func:`~transforms.rules.naming.merge_runs`,
   :func:`~transforms.rules.naming.cut_batches`), writing each batch with the connector's
   own sink (:class:`FileSink.write`: :func:`encode_batch` and the content-derived
   :func:`object_name`).

So it writes the same files, byte for byte, as ``python -m beam_pipeline run`` (with any
``--chunk-lines``: the objects do not depend on it; ``tests/test_bench_regression.py``
checks it). Invalid lines,
package failures and unrenderable prefixes are counted, not written: the benchmark
corpora have none. Batches are written one at a time on the calling thread.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transforms.config import CompiledConnector, compile_connectors, load_config  # noqa: E402
from transforms.connectors import make_sink  # noqa: E402
from transforms.connectors.base import DeliveryBatch, Sink  # noqa: E402
from transforms.rules import gzipio  # noqa: E402
from transforms.rules.encode import dumps, line_json  # noqa: E402
from transforms.rules.events import event_time_ms, parse_line  # noqa: E402
from transforms.rules.naming import (  # noqa: E402
    BatchFiller,
    PrefixTemplate,
    cut_batches,
    key_by_prefix,
    merge_runs,
)
from transforms.rules.records import DeadLetter, Packaged  # noqa: E402
from transforms.rules.route import route_events  # noqa: E402

DEFAULT_CHUNK_LINES = 5000
"""The job's default ``--chunk-lines`` (``transforms.parse``, not imported: it imports Beam)."""


@dataclass
class ConnectorCounts:
    """What the bound did for one connector."""

    routed: int = 0
    delivered: int = 0
    writes: int = 0
    bytes: int = 0
    failed: int = 0
    dropped: int = 0
    """Events a ``package.function`` returned no record for (the job's ``dropped``)."""


@dataclass
class BoundResult:
    """Counts of one bound run, comparable with the job's summary."""

    lines_read: int = 0
    events: int = 0
    invalid: int = 0
    blank_lines: int = 0
    unmatched: int = 0
    elapsed_s: float = 0.0
    connectors: dict[str, ConnectorCounts] = field(default_factory=dict)


def read_lines(path: str) -> Iterator[bytes]:
    """Yield a JSON-lines file's lines without newline, as ``transforms.parse.open_lines``."""
    with open(path, "rb") as raw:
        stream: Any = raw
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            stream = gzipio.open_reader(raw)
        else:
            raw.seek(0)
        for line in stream:
            yield line.rstrip(b"\r\n")


def read_chunks(path: str, chunk_lines: int) -> Iterator[list[bytes]]:
    """Yield a file's lines in chunks of ``chunk_lines`` (the last one may be shorter)."""
    chunk: list[bytes] = []
    for line in read_lines(path):
        chunk.append(line)
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Bound:
    """The loop's state: compiled rules, one open sink and the batch layout per connector."""

    def __init__(self, connectors: Sequence[CompiledConnector]):
        self.connectors = list(connectors)
        self.sinks: dict[str, Sink] = {}
        self.layout: dict[str, tuple[PrefixTemplate, int, int | None]] = {}
        self.result = BoundResult(connectors={c.id: ConnectorCounts() for c in connectors})
        self.folder = tempfile.mkdtemp(prefix="bound-batches-")
        self.filler = BatchFiller(self.folder)
        for c in self.connectors:
            sink = make_sink(c.id, c.type, c.deliver)
            sink.open()
            self.sinks[c.id] = sink
            prefix = PrefixTemplate.compile(getattr(c.deliver, "prefix", ""))
            batch = c.deliver.batch
            self.layout[c.id] = (prefix, batch.max_events, batch.max_bytes)

    def close(self) -> None:
        """Close every sink; remove the spilled runs."""
        for sink in self.sinks.values():
            sink.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def run_chunk(self, lines: list[bytes]) -> None:
        """Parse, route, filter, package, cut and write one chunk of raw lines."""
        res = self.result
        res.lines_read += len(lines)
        events: list[dict[str, Any]] = []
        kept: list[bytes] = []  # each event's line
        for line in lines:
            if not line.strip():
                res.blank_lines += 1
                continue
            parsed = parse_line(line)
            if isinstance(parsed, DeadLetter):
                res.invalid += 1
            else:
                events.append(parsed)
                kept.append(line)
        res.events += len(events)
        kinds = [event["event"]["type"] for event in events]
        # Route's own function, so catch-alls (route.unmatched) get what the job gives them.
        per_connector, unmatched = route_events([c.route for c in self.connectors], events, kinds)
        for c, hits in zip(self.connectors, per_connector, strict=True):
            counts = res.connectors[c.id]
            filter_apply, package = c.filter.apply, c.packager.apply
            items: list[Packaged] = []
            if c.packager.function is not None:
                for i in hits:
                    counts.routed += 1
                    items.extend(self._function_records(c, events[i], kept[i], counts))
                if items:
                    self._cut_and_write(c.id, items, counts)
                continue
            for i in hits:
                event = events[i]
                counts.routed += 1
                # An unchanged event is sent as its line, as Package does.
                data = line_json(kept[i]) if c.sends_lines else None
                if data is not None:
                    record = event
                else:
                    filtered = filter_apply(event)
                    try:
                        record = package(filtered)
                        # Serialized once, as Package does for connectors sending JSON.
                        data = dumps(record) if c.record_json else None
                    except Exception:  # the job dead-letters it (stage: package)
                        counts.failed += 1
                        continue
                items.append(
                    Packaged(
                        event["event_id"],
                        event_time_ms(event),
                        event["event"]["type"],
                        record if data is None else None,
                        kept[i],  # the line, as Package keeps it (Packaged.event)
                        data,
                    )
                )
            if items:
                self._cut_and_write(c.id, items, counts)
        res.unmatched += unmatched

    @staticmethod
    def _function_records(
        c: CompiledConnector, event: dict[str, Any], line: bytes, counts: ConnectorCounts
    ) -> list[Packaged]:
        """A ``package.function``'s records of one event, as Package makes them.

        None (dropped), one, or several named ``<event_id>#<n>``; always serialized.
        """
        try:
            records = c.packager.outputs(c.filter.apply(event))
            datas = [dumps(r) for r in records]
        except Exception:  # the job dead-letters it (package_function_failed)
            counts.failed += 1
            return []
        if not records:
            counts.dropped += 1
            return []
        body = event["event"]
        stamp = body.get("timestamp")
        time_ms = stamp if type(stamp) is int else event_time_ms(event)
        many = len(records) > 1
        return [
            Packaged(
                f"{event['event_id']}#{k}" if many else event["event_id"],
                time_ms,
                body["type"],
                None if c.record_json else record,
                line,
                data if c.record_json else None,
            )
            for k, (record, data) in enumerate(zip(records, datas, strict=True))
        ]

    def _cut_and_write(self, cid: str, items: list[Packaged], counts: ConnectorCounts) -> None:
        prefix = self.layout[cid][0]
        # The job's own keying: rendered prefix groups; what cannot be filed (no event
        # time, no value for a {field:...}) is dead-lettered there.
        by_prefix, failed = key_by_prefix(prefix, cid, items)
        counts.failed += len(failed)
        for key, group in by_prefix.items():
            self.filler.add(cid, key, group)

    def finish(self) -> None:
        """Write every (connector, prefix)'s records as the job's Batch stage cuts them."""
        for (cid, key), spilled in self.filler.finish():
            counts = self.result.connectors[cid]
            sink = self.sinks[cid]
            _, max_events, max_bytes = self.layout[cid]
            for batch in cut_batches(merge_runs([spilled]), max_events, max_bytes):
                written = sink.write(DeliveryBatch(cid, key, batch))
                counts.delivered += written.events
                counts.writes += 1
                counts.bytes += written.bytes
            os.remove(spilled.path)


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Local paths matched by the patterns (globs), without duplicates, sorted.

    Raises:
        FileNotFoundError: naming a pattern that matches nothing.
    """
    found: set[str] = set()
    for pattern in patterns:
        matched = glob.glob(pattern)
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no files")
        found.update(matched)
    return sorted(found)


def run_bound(
    config_path: str, inputs: Sequence[str], chunk_lines: int = DEFAULT_CHUNK_LINES
) -> BoundResult:
    """Run the bound over ``inputs`` (globs) with the connectors of ``config_path``."""
    started = time.perf_counter()
    bound = Bound(compile_connectors(load_config(config_path)))
    try:
        for path in expand_inputs(inputs):
            for chunk in read_chunks(path, chunk_lines):
                bound.run_chunk(chunk)
        bound.finish()
    finally:
        bound.close()
    bound.result.elapsed_s = time.perf_counter() - started
    return bound.result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--input", action="append", required=True)
    parser.add_argument("--chunk-lines", type=int, default=DEFAULT_CHUNK_LINES)
    parser.add_argument("--summary-json", default=None)
    args = parser.parse_args(argv)
    result = run_bound(args.config, args.input, args.chunk_lines)
    text = json.dumps(asdict(result), indent=2)
    if args.summary_json:
        Path(args.summary_json).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
