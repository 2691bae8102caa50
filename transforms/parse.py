"""Read and Parse stages: input files -> chunks of raw lines -> chunks of events.

The pipeline moves *chunks* (lists of up to ``chunk_lines`` lines or events, and of about
``chunk_bytes`` at most) rather than single events: Beam's per-element cost dominates
telemetry work, and a chunk keeps every stage's semantics per event while paying that
cost once per thousands of events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from orjson import JSONDecodeError, loads

import transforms.coders  # noqa: F401  (registers the chunk coders)
from transforms import metrics
from transforms.progress import PROGRESS
from transforms.pubsub_read import PubSubReading
from transforms.rules import compress
from transforms.rules.events import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_ORIGINAL_CHARS,
    parse_line,
    too_deep,
    too_large,
)
from transforms.rules.records import Chunk, DeadLetter
from transforms.runtime import tune_gc_once

DEFAULT_CHUNK_LINES = 5000
"""Lines per chunk: large enough to amortize Beam's per-element cost, small enough for memory."""

DEFAULT_CHUNK_BYTES = 8 << 20
"""Bytes per chunk at most, about (8 MiB): a chunk also ends at the line that reaches this.

Typical events (~700 bytes) fill 5,000 lines in ~3.5 MB, so this cut is for fat lines:
without it 5,000 lines of up to 1 MiB each would make a 5 GB chunk. A chunk holds at most
``DEFAULT_CHUNK_BYTES`` plus one line."""

SLICE_LINES = 250
"""Lines per slice: Parse hands each chunk on in slices of this many lines.

A chunk of 5,000 parsed events is megabytes of Python objects, more than a core's caches:
stage after stage over the whole chunk, every event came back from memory each time.
Slices of 250 events go through Route, Filter and Package while still cached (the
measurement: bench/RESULTS.md, "Slices"). Batch gathers every record of a (connector,
prefix) whatever slice it came in, so files and object names do not depend on slices."""

DEAD_LETTER = "dead_letter"
"""Tag of every stage's failure output (lists of :class:`DeadLetter`)."""


BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark: skipped at the start of a file (editors on Windows write one)."""


class LongLine(bytes):
    """A line over :data:`MAX_EVENT_BYTES`, as :func:`open_lines` gives it: its first bytes.

    The bytes are the line's first :data:`MAX_ORIGINAL_CHARS` (what its dead letter
    keeps); ``size`` is its full length without the line break. The rest was read past,
    never held: a 50 MiB line costs a 1 MiB read buffer, not 50 MiB.
    """

    size: int


def open_lines(path: str, progress_every: int = 0) -> Iterator[bytes]:
    r"""Yield the lines of a JSON-lines file (plain, gzip or zstd, by content), no newline.

    A line over :data:`MAX_EVENT_BYTES` comes as a :class:`LongLine` (its start and its
    length), read in pieces of at most that size, so memory stays bounded whatever the
    input (a file with no line feed at all is one long line, and a compressed file is
    decompressed as a stream: :func:`~transforms.rules.compress.open_reader`). A UTF-8
    byte order mark at the start of the file is skipped. Line ends (``\n``, ``\r\n``) are
    removed.

    With ``progress_every``, report the bytes read to :data:`PROGRESS` every that many lines.
    """
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        head = raw.read(compress.SNIFF_BYTES)
        raw.seek(0)
        stream: Any = raw
        codec = compress.sniff(head)
        if codec != "none":
            stream = compress.open_reader(raw, codec)
            if stream.peek(3)[:3] == BOM:
                stream.read(3)
        elif head[:3] == BOM:
            raw.seek(3)
        readline = stream.readline
        # A line at the limit, with its CR LF, still comes whole in one read.
        limit = MAX_EVENT_BYTES + 2
        n = 0
        while line := readline(limit):
            if len(line) == limit and line[-1] != 10:  # no LF within the limit: a long line
                yield _long_line(line, readline, limit)
            else:
                yield line.rstrip(b"\r\n")
            n += 1
            if progress_every and n == progress_every:
                PROGRESS.advance(path, raw.tell(), n)
                n = 0
        if progress_every:
            PROGRESS.advance(path, raw.tell(), n, done=True)
    finally:
        raw.close()


def _long_line(start: bytes, readline: Any, limit: int) -> bytes:
    """Read past the rest of a long line that begins with ``start``; its :class:`LongLine`.

    ``start`` is ``limit`` bytes without a line feed; only when what follows is nothing
    but the CRs of its end is the line not long after all (then it is the line itself).
    """
    size = len(start)
    carriage_returns = len(start) - len(start.rstrip(b"\r"))  # trailing CRs read so far
    while (piece := readline(limit)) and piece[-1] != 10:
        size += len(piece)
        kept = piece.rstrip(b"\r")
        carriage_returns = carriage_returns + len(piece) if not kept else len(piece) - len(kept)
    if piece:  # the piece with the line feed; the CRs before it are the line's end too
        kept = piece.rstrip(b"\r\n")
        size = size - carriage_returns if not kept else size + len(kept)
    else:  # the file ends inside the line
        size -= carriage_returns
    if size <= MAX_EVENT_BYTES:  # e.g. 1 MiB then CR CR LF: within ``start``
        return start[:size]
    line = LongLine(start[:MAX_ORIGINAL_CHARS])
    line.size = size
    return line


UNREADABLE = "unreadable_input"
"""Reason of the dead letter for an input file that cannot be read to its end."""


def unreadable(path: str, lines: int, exc: BaseException) -> DeadLetter:
    """The dead letter of a file whose rest cannot be read after ``lines`` lines."""
    return DeadLetter(
        stage="read",
        reason=UNREADABLE,
        error=f"{path}: {type(exc).__name__}: {exc}; the {lines} line(s) before were read",
        original={"path": path, "lines_before": lines},
    )


class _ReadChunks(beam.DoFn):
    def __init__(self, chunk_lines: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.chunk_lines = chunk_lines
        self.chunk_bytes = chunk_bytes

    def setup(self) -> None:
        ns = metrics.PIPELINE
        self.lines = Metrics.counter(ns, metrics.LINES_READ)
        self.invalid = Metrics.counter(ns, metrics.INVALID)

    def process(self, shard: tuple[str, int, int]) -> Iterator[Any]:
        path, mine, shards = shard
        chunk = Chunk()
        index = lines = taken = held = 0  # taken, held: lines and bytes of chunk ``index``
        keep = mine == 0  # whether chunk ``index`` is this shard's
        size, max_bytes = self.chunk_lines, self.chunk_bytes
        try:
            for line in open_lines(path, progress_every=size if shards == 1 else 0):
                lines += 1
                taken += 1
                held += len(line)
                if type(line) is LongLine:
                    # Never parsed, so counted here (lines_read = events + invalid + blank).
                    if keep:
                        self.lines.inc()
                        self.invalid.inc()
                        yield beam.pvalue.TaggedOutput(DEAD_LETTER, [too_large(line, line.size)])
                elif keep:
                    chunk.append(line)
                # Cut where the lines alone say, so every shard and every rerun cuts alike.
                if taken == size or held >= max_bytes:  # chunk ``index`` ends here
                    if chunk:
                        yield path, index, chunk
                        chunk = Chunk()
                    index += 1
                    taken = held = 0
                    keep = index % shards == mine
        except compress.DAMAGED as exc:
            # Every line read so far goes on; the unreadable rest is one dead letter and
            # counts as one invalid line, so lines_read = events + invalid + blank holds.
            # Only damage that rereading cannot fix: an I/O error (a flaky network read)
            # still fails the bundle, so the runner retries it as before. Every shard of
            # the file meets the damage; the one that owns the chunk it falls in reports it.
            if keep:
                self.lines.inc()
                self.invalid.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, [unreadable(path, lines, exc)])
        if chunk:
            yield path, index, chunk


class ReadEventChunks(beam.PTransform):
    """Read JSON-lines files (globs; local, gs://, s3://; plain, gzip or zstd) as chunks of lines.

    Main output ``chunks``: ``(path, chunk_index, [line_bytes, ...])``; chunk boundaries
    are deterministic (a chunk ends after ``chunk_lines`` lines, or at the line that
    brings it to ``chunk_bytes``, whichever comes first), so reruns cut the same way.
    With ``shards`` > 1 each file is read by that many workers at once, each
    keeping every ``shards``-th chunk (gzip and zstd cannot be split, so each decompresses
    the whole file, but parses only its own chunks): the same chunks, spread over worker
    processes, for inputs with fewer files than workers.

    Tagged output ``dead_letter``: a line over :data:`MAX_EVENT_BYTES` (read past in
    pieces, never held whole; see :func:`open_lines`) is a ``too_large`` dead letter with
    its first 64 KiB and its length, counted as an invalid line. A file that cannot be
    read to its end (truncated or corrupt gzip or zstd: :data:`~transforms.rules.compress.DAMAGED`)
    gives its lines up to the damage (less what the last 1 MiB read held: a failing read
    returns nothing), then one :class:`DeadLetter` (``stage: read``, reason
    ``unreadable_input``) naming the file and the lines before.

    Example::

        read = p | "Read" >> ReadEventChunks(["data/*.jsonl.gz"])
        chunks, unreadable = read.chunks, read[DEAD_LETTER]
    """

    def __init__(
        self,
        patterns: list[str],
        chunk_lines: int = DEFAULT_CHUNK_LINES,
        shards: int = 1,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.patterns = patterns
        self.chunk_lines = chunk_lines
        self.shards = shards
        self.chunk_bytes = chunk_bytes

    def expand(self, pbegin: Any) -> Any:
        shards = self.shards
        return (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.FlatMap(lambda m: [(m.path, k, shards) for k in range(shards)])
            | "Spread" >> beam.Reshuffle()
            | "Chunks"
            >> beam.ParDo(_ReadChunks(self.chunk_lines, self.chunk_bytes))
            .with_output_types(beam.typehints.Tuple[str, int, Chunk])
            .with_outputs(DEAD_LETTER, main="chunks")
        )


class _ParseChunk(beam.DoFn):
    def __init__(self, slice_lines: int = SLICE_LINES):
        self.slice_lines = slice_lines

    def setup(self) -> None:
        tune_gc_once()
        ns = metrics.PIPELINE
        self.lines = Metrics.counter(ns, metrics.LINES_READ)
        self.blank = Metrics.counter(ns, metrics.BLANK_LINES)
        self.invalid = Metrics.counter(ns, metrics.INVALID)
        self.valid = Metrics.counter(ns, metrics.EVENTS)

    def process(self, chunk: tuple[Any, ...]) -> Iterator[Any]:
        lines: list[bytes] = chunk[2]
        attributes: list[dict[str, str] | None] | None = chunk[3] if len(chunk) > 3 else None
        # Messages (chunks with attributes) exist nowhere else: their dead letters keep all.
        whole = attributes is not None
        refused: list[DeadLetter] = []
        blank = valid = 0
        size = self.slice_lines
        for start in range(0, len(lines), size):
            raw: list[bytes | None] = []
            events = Chunk(raw=raw)
            for n in range(start, min(start + size, len(lines))):
                line = lines[n]
                # parse_line's checks for the common case, inlined (this loop runs once
                # per event); anything else goes to parse_line, which says what is wrong.
                parsed: Any = None
                if len(line) <= MAX_EVENT_BYTES:
                    try:
                        parsed = loads(line)
                    except JSONDecodeError:
                        parsed = None  # parse_line below says why
                if not (
                    type(parsed) is dict
                    and type(eid := parsed.get("event_id")) is str
                    and eid
                    and type(body := parsed.get("event")) is dict
                    and type(kind := body.get("type")) is str
                    and kind
                    # Brackets bound the depth from above: only a line with many is measured
                    # (find, a memchr, skips counting the lists most events do not have).
                    and (
                        line.count(b"{") + (line.count(b"[") if line.find(b"[") >= 0 else 0)
                        <= MAX_DEPTH
                        or not too_deep(parsed)
                    )
                ):
                    if not line.strip():
                        blank += 1
                        continue
                    parsed = parse_line(line, whole)
                    if isinstance(parsed, DeadLetter):
                        refused.append(parsed)
                        continue
                if attributes is not None and attributes[n] and "attributes" not in parsed:
                    parsed["attributes"] = attributes[n]
                    raw.append(None)  # the line alone is no longer the event
                else:
                    raw.append(line)
                events.append(parsed)
            valid += len(events)
            # Each slice goes down the fused stages before the next is parsed.
            if events:
                yield events
        self.lines.inc(len(lines))
        self.blank.inc(blank)
        self.invalid.inc(len(refused))
        self.valid.inc(valid)
        if refused:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, refused)


class ParseEvents(beam.PTransform):
    """Parse chunks of raw lines into chunks of events; invalid lines become dead letters.

    Main output: lists of event dicts (:class:`Chunk`), each chunk in slices of up to
    ``slice_lines`` lines (:data:`SLICE_LINES`; a slice without an event is not sent);
    each slice's ``raw`` holds the events' lines (see
    :attr:`Chunk.raw`). Tagged output ``dead_letter``: lists of :class:`DeadLetter`
    (``stage: parse``; the reasons of :func:`~transforms.rules.events.parse_line`, e.g.
    ``bad_json``, ``too_deep``). Blank lines are skipped and counted. Counts add up:
    ``events + invalid + blank_lines = lines_read``.

    A chunk of Pub/Sub messages (``("pubsub", 0, [data, ...], [attributes, ...])``, see
    :class:`ReadPubSubChunks`) gives dead letters that keep each message's whole data: a
    file's line keeps its first 64 KiB (the file still has the rest), a message exists
    nowhere else.
    """

    def __init__(self, slice_lines: int = SLICE_LINES):
        super().__init__()
        self.slice_lines = slice_lines

    def expand(self, chunks: Any) -> Any:
        parse = beam.ParDo(_ParseChunk(self.slice_lines)).with_output_types(Chunk)
        return chunks | parse.with_outputs(DEAD_LETTER, main="events")


class _MessagesToChunk(beam.DoFn):
    def process(self, messages: list[Any]) -> Iterator[tuple[str, int, list[bytes], list[Any]]]:
        yield "pubsub", 0, [m.data for m in messages], [m.attributes or None for m in messages]


class ReadPubSubChunks(beam.PTransform):
    """Read events from Pub/Sub (message data = one event) as chunks, like :class:`ReadEventChunks`.

    Message attributes are kept: a message's attributes, when it has any, appear on its
    event as a top-level ``attributes`` object (unless the event already has one), so
    routes can use them (``field: attributes.tenant``). Messages are grouped into chunks
    of up to ``max_chunk`` *within a bundle* (``BatchElements``), which never waits for
    more messages, so chunking adds no latency.

    Elements are ``("pubsub", 0, [data, ...], [attributes, ...])``. ``reading`` picks
    Beam's reader or the portable one (:mod:`transforms.pubsub_read`).
    """

    def __init__(
        self,
        subscription: str | None = None,
        topic: str | None = None,
        timestamp_attribute: str | None = None,
        max_chunk: int = 500,
        reading: PubSubReading | None = None,
    ):
        super().__init__()
        if (subscription is None) == (topic is None):
            raise ValueError("give exactly one of subscription or topic")
        self.subscription = subscription
        self.topic = topic
        self.timestamp_attribute = timestamp_attribute
        self.max_chunk = max_chunk
        self.reading = reading or PubSubReading()

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "ReadPubSub"
            >> self.reading.read(self.subscription, self.topic, self.timestamp_attribute)
            | "Gather" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_chunk)
            | "Chunks" >> beam.ParDo(_MessagesToChunk())
        )
