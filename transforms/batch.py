"""Batch stage: cut each connector's packaged records into :class:`DeliveryBatch` es.

Both paths key every record by its connector's rendered prefix
(:func:`~transforms.rules.naming.key_by_prefix`), so a batch only ever holds records bound
for one place::

    # connector "errors", deliver: {prefix: "{event_type}/", batch: {max_events: 3}}
    # records e1..e5 of type error, e6 of type seek:
    #   DeliveryBatch("errors", "error/", [e1, e2, e3])
    #   DeliveryBatch("errors", "error/", [e4, e5])
    #   DeliveryBatch("errors", "seek/", [e6])

- :class:`CutBatches` (backfill) gathers each (connector, prefix)'s records from every
  chunk and worker and cuts them every ``batch.max_events`` (or, with ``batch.max_bytes``,
  before the record that would take a batch past that many bytes of NDJSON, whichever
  comes first) in an order that depends on the records only (event time, then event id),
  so every object is full but the last one per prefix (per prefix and shard on a
  cluster, with ``batch.shards``), and a rerun, with any chunk size or number of
  workers, writes the same batches and therefore the same content-derived file and
  object names.
- :class:`StreamBatches` (streaming) keys records by ``(connector, prefix, shard)`` and
  bulks them with ``GroupIntoBatches`` per connector, by count and by time.

A record whose prefix cannot be rendered (a time placeholder and no event time) is a
dead letter (``stage: batch``, ``reason: prefix_unrenderable``) on the tagged output
``dead_letter``; nothing is dropped. Delivering the batches is :mod:`transforms.deliver`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms.coders import ESTIMATED_BYTES_PER_ITEM
from transforms.config import DeliveryConfig
from transforms.connectors.base import DeliveryBatch
from transforms.parse import DEAD_LETTER
from transforms.rules.naming import (
    SPILL_EVENTS,
    BatchFiller,
    PrefixTemplate,
    SpilledRuns,
    batch_order,
    cut_batches,
    key_by_prefix,
    merge_runs,
    stable_shard,
)
from transforms.rules.records import Chunk, Packaged


class Layout(NamedTuple):
    """How one connector's records are batched: its prefix and its ``batch`` limits.

    ``max_bytes`` is None when only ``max_events`` cuts (the default).
    """

    prefix: PrefixTemplate
    max_events: int
    shards: int
    max_bytes: int | None = None


def layouts(config: DeliveryConfig) -> dict[str, Layout]:
    """Each connector's :class:`Layout`, by connector id, e.g. ``{"archive": Layout(...)}``."""
    out: dict[str, Layout] = {}
    for c in config.connectors:
        deliver = c.deliver_config
        prefix = PrefixTemplate.compile(getattr(deliver, "prefix", ""))
        limits = deliver.batch
        out[c.id] = Layout(prefix, limits.max_events, limits.shards, limits.max_bytes)
    return out


class _Fill(beam.DoFn):
    """Keys each slice's records by prefix and hands them to a :class:`BatchFiller`.

    Its keys leave heaviest first: the local runner's workers get a GroupByKey's keys in
    turn (docs/beam-limits.md), so the cut stage's records are then spread evenly.
    """

    def __init__(self, config: DeliveryConfig, folder: str, budget: int):
        self.config = config
        self.folder = folder
        self.budget = budget

    def setup(self) -> None:
        self.layout = layouts(self.config)

    def start_bundle(self) -> None:
        self.filler = BatchFiller(self.folder, self.budget)

    def process(self, element: tuple[str, list[Packaged]]) -> Iterator[Any]:
        cid, items = element
        groups, failed = key_by_prefix(self.layout[cid].prefix, cid, items)
        add = self.filler.add
        for key, group in groups.items():
            add(cid, key, group)
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)

    def finish_bundle(self) -> Iterator[Any]:
        for key, spilled in self.filler.finish():
            yield GlobalWindows.windowed_value((key, spilled))


SPENT = "spent"
"""Tag of the spilled files a key's batches were cut from (removed once they are out)."""


class _Cut(beam.DoFn):
    """Merges one (connector, prefix)'s runs and cuts them by ``max_events``/``max_bytes``."""

    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.layout = layouts(self.config)

    def process(self, element: tuple[tuple[str, str], Iterable[SpilledRuns]]) -> Iterator[Any]:
        (cid, prefix), parts = element
        parts = list(parts)
        layout = self.layout[cid]
        for batch in cut_batches(merge_runs(parts), layout.max_events, layout.max_bytes):
            yield DeliveryBatch(cid, prefix, Chunk(batch))
        for part in parts:
            yield beam.pvalue.TaggedOutput(SPENT, part.path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    with contextlib.suppress(OSError):  # the folder goes with its last file
        os.rmdir(os.path.dirname(path))


_PART_RECORDS = 1000
"""At most this many records of one key travel through the shuffle as one element."""
_PART_BYTES = 4 << 20
"""... and at most about this many bytes (serialized records and raw input lines)."""


def _approx_bytes(item: Packaged) -> int:
    """A record's weight in a part: its serialized bytes and raw line, or the coders' guess."""
    data, event = item.data, item.event
    return (len(data) if data is not None else ESTIMATED_BYTES_PER_ITEM) + (
        len(event) if isinstance(event, bytes) else ESTIMATED_BYTES_PER_ITEM
    )


def _sharded(
    cid: str, groups: dict[str, list[Packaged]], shards: int
) -> Iterator[tuple[tuple[str, str, int], Packaged]]:
    """Each record of ``key_by_prefix``'s groups with its ``(connector, prefix, shard)``."""
    for prefix, group in groups.items():
        for item in group:
            yield (cid, prefix, stable_shard(item.event_id, shards)), item


class _Gather(beam.DoFn):
    """Keys records by ``(connector, prefix, shard)`` and hands them on in parts (no shared disk).

    One shuffle element per record made the shuffle pay its per-element cost (encoding,
    the runner's bookkeeping) 1.6 million times for 1M events x 5 connectors; a bundle's
    records of one key go on together instead, as a :class:`Chunk` (one pickle), in parts
    of at most ``_PART_RECORDS`` records (and ``budget``) or about ``_PART_BYTES``. At
    most ``budget`` records wait in a worker: past it, every part goes on.
    """

    def __init__(self, config: DeliveryConfig, budget: int):
        self.config = config
        self.budget = budget
        self.part_records = max(1, min(_PART_RECORDS, budget))

    def setup(self) -> None:
        self.layout = layouts(self.config)

    def start_bundle(self) -> None:
        self.parts: dict[tuple[str, str, int], list[Packaged]] = {}
        self.weights: dict[tuple[str, str, int], int] = {}
        self.waiting = 0

    def process(self, element: tuple[str, list[Packaged]]) -> Iterator[Any]:
        cid, items = element
        layout = self.layout[cid]
        groups, failed = key_by_prefix(layout.prefix, cid, items)
        parts, weights = self.parts, self.weights
        for key, item in _sharded(cid, groups, layout.shards):
            part = parts.setdefault(key, [])
            part.append(item)
            weights[key] = weight = weights.get(key, 0) + _approx_bytes(item)
            self.waiting += 1
            if len(part) >= self.part_records or weight >= _PART_BYTES:
                yield self._take(key)
        if self.waiting > self.budget:
            for key in list(parts):
                yield self._take(key)
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)

    def finish_bundle(self) -> Iterator[Any]:
        for key in list(self.parts):
            yield GlobalWindows.windowed_value(self._take(key))

    def _take(self, key: tuple[str, str, int]) -> tuple[tuple[str, str, int], Chunk]:
        part = self.parts.pop(key)
        del self.weights[key]
        self.waiting -= len(part)
        return key, Chunk(part)


class _CutGroup(beam.DoFn):
    """Sorts one (connector, prefix, shard)'s grouped records and cuts them (no shared disk).

    A key's records come from the runner's shuffle in parts, in any order. Up to ``budget`` of them
    are sorted in memory; a larger key goes through a :class:`BatchFiller` in a folder of
    this worker's own, removed when the key is done.
    """

    def __init__(self, config: DeliveryConfig, budget: int):
        self.config = config
        self.budget = budget

    def setup(self) -> None:
        self.layout = layouts(self.config)

    def process(
        self, element: tuple[tuple[str, str, int], Iterable[list[Packaged]]]
    ) -> Iterator[Any]:
        (cid, prefix, _), parts = element
        layout = self.layout[cid]
        rest = itertools.chain.from_iterable(parts)
        head = list(itertools.islice(rest, self.budget + 1))
        if len(head) <= self.budget:
            head.sort(key=batch_order)
            for batch in cut_batches(head, layout.max_events, layout.max_bytes):
                yield DeliveryBatch(cid, prefix, Chunk(batch))
            return
        folder = tempfile.mkdtemp(prefix="telemetry-delivery-cut-")
        try:
            filler = BatchFiller(folder, self.budget)
            filler.add(cid, prefix, head)
            while part := list(itertools.islice(rest, _FILL_STEP)):
                filler.add(cid, prefix, part)
            runs = [spilled for _, spilled in filler.finish()]
            for batch in cut_batches(merge_runs(runs), layout.max_events, layout.max_bytes):
                yield DeliveryBatch(cid, prefix, Chunk(batch))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


_FILL_STEP = 1000
"""Records handed to the filler at a time by :class:`_CutGroup`."""


class _Outputs(dict[str, Any]):
    """CutBatches' outputs, by tag and as attributes (``cut.batches``), like a ParDo's."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class CutBatches(beam.PTransform):
    """``(connector_id, [Packaged])`` -> :class:`DeliveryBatch` es of ``batch.max_events``.

    Every (connector, prefix)'s objects hold ``batch.max_events`` records but its last one,
    or, with ``batch.max_bytes``, as many as fit in that many bytes (each record counted as
    its uncompressed NDJSON line, :func:`~transforms.rules.naming.record_size`; a larger
    record alone), across chunks, files and workers: each worker collects its records per key with
    bounded memory (:class:`~transforms.rules.naming.BatchFiller`: sorted runs on local
    disk beyond :data:`~transforms.rules.naming.SPILL_EVENTS` records), a ``GroupByKey``
    brings each key's runs together, and one merge in
    :func:`~transforms.rules.naming.batch_order` (event time, then id) is cut every
    ``max_events``, each batch going on as soon as it is full. The order depends on the
    records only, so the objects (names and bytes) are the same for any
    ``--chunk-lines``, worker count or read shards, on a rerun and on any runner whose
    workers share ``folder`` (a local temporary folder by default; removed once read).

    The runs are files, so every worker must see ``folder``: true of the single-machine
    runners backfills use (the FnApiRunner, Prism, Flink's embedded cluster). On a
    cluster (Dataflow, a Flink cluster; ``shared_disk=False``, as the job chooses with
    :func:`beam_pipeline.runners.shares_local_disk`) the records themselves go through
    the runner's shuffle, keyed by ``(connector, prefix, shard)`` (``batch.shards``, a
    stable hash of the event id, default 1), and the worker that gets a key sorts them
    (in memory up to ``budget``, else sorted runs on its own disk) and cuts them the same
    way: the same objects with one shard; with N, full but the last per shard, so a hot
    prefix is cut by N workers.

    Outputs ``batches`` and, tagged ``dead_letter``, events whose prefix cannot be
    rendered (``prefix_unrenderable``).
    """

    def __init__(
        self,
        config: DeliveryConfig,
        folder: str | None = None,
        budget: int = SPILL_EVENTS,
        shared_disk: bool = True,
    ):
        super().__init__()
        self.config = config
        self.folder = folder
        self.budget = budget
        self.shared_disk = shared_disk

    def expand(self, records: Any) -> Any:
        """Outputs ``batches`` and ``dead_letter``."""
        if not self.shared_disk:
            gather = beam.ParDo(_Gather(self.config, self.budget)).with_output_types(
                # A typed key gives the GroupByKey a deterministic key coder.
                beam.typehints.Tuple[beam.typehints.Tuple[str, str, int], Chunk]
            )
            keyed = records | "Key" >> gather.with_outputs(DEAD_LETTER, main="keyed")
            cut = (
                keyed.keyed
                | "Group" >> beam.GroupByKey()
                | "CutGroup"
                >> beam.ParDo(_CutGroup(self.config, self.budget)).with_output_types(DeliveryBatch)
            )
            return _Outputs({"batches": cut, DEAD_LETTER: keyed[DEAD_LETTER]})
        # One folder per job, named when the graph is built: every worker writes below it.
        folder = self.folder or os.path.join(
            tempfile.gettempdir(), "telemetry-delivery", f"batches-{uuid.uuid4().hex}"
        )
        fill = beam.ParDo(_Fill(self.config, folder, self.budget)).with_output_types(
            beam.typehints.Tuple[beam.typehints.Tuple[str, str], SpilledRuns]
        )
        filled = records | "Fill" >> fill.with_outputs(DEAD_LETTER, main="runs")
        cut = (
            filled.runs
            | "Runs" >> beam.GroupByKey()
            | "Cut"
            >> beam.ParDo(_Cut(self.config))
            .with_output_types(DeliveryBatch)
            .with_outputs(SPENT, main="batches")
        )
        _ = cut[SPENT] | "Settle" >> beam.Reshuffle() | "Remove" >> beam.Map(_remove)
        return _Outputs({"batches": cut.batches, DEAD_LETTER: filled[DEAD_LETTER]})


class _KeyByPrefix(beam.DoFn):
    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.layout = layouts(self.config)

    def process(self, element: tuple[str, list[Packaged]]) -> Iterator[Any]:
        cid, items = element
        layout = self.layout[cid]
        groups, failed = key_by_prefix(layout.prefix, cid, items)
        yield from _sharded(cid, groups, layout.shards)
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)


class _ByConnector(beam.PartitionFn):
    def __init__(self, ids: list[str]):
        self.index = {cid: n for n, cid in enumerate(ids)}

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return self.index[element[0][0]]


def _same(element: Any) -> Any:
    return element


def _to_batch(element: tuple[tuple[str, str, int], list[Packaged]]) -> DeliveryBatch:
    (cid, prefix, _), items = element
    return DeliveryBatch(cid, prefix, items)


def _to_batches(
    element: tuple[tuple[str, str, int], list[Packaged]], max_events: int, max_bytes: int
) -> Iterator[DeliveryBatch]:
    """One ``GroupIntoBatches`` batch as batches of at most ``max_bytes`` (in its order)."""
    (cid, prefix, _), items = element
    for batch in cut_batches(items, max_events, max_bytes):
        yield DeliveryBatch(cid, prefix, batch)


class StreamBatches(beam.PTransform):
    """Streaming bulking: ``GroupIntoBatches`` per connector, by count and by time.

    Events are keyed by ``(connector, rendered prefix, shard)``; each connector gets its
    own ``GroupIntoBatches(max_events, max_wait_s)`` (labels ``Batch/<connector id>``),
    so a batch holds at most ``batch.max_events`` events and no event waits more than
    ``batch.max_wait_s`` of processing time, also when traffic stops (the buffering timer
    fires without new input). With ``batch.max_bytes`` each of those batches is then cut
    by size (:func:`~transforms.rules.naming.cut_batches`, in its own order), since Beam
    Python's ``GroupIntoBatches`` has no byte limit: no batch passes ``max_bytes`` unless
    it is one record, though a byte-cut batch may be short of ``max_bytes``: e.g.
    ``max_events: 1000, max_bytes: 1048576`` and 1,000 records of 700 bytes (700,000 B in
    all, held until full or ``max_wait_s``) go out as one batch; of 1,500 bytes, as
    batches of 699 and 301. ``batch.shards`` spreads one hot connector over that many
    keys (hence workers); the shard is a stable hash of ``event_id``, so a redelivered
    Pub/Sub message lands in the same shard. We shard explicitly rather than with
    ``GroupIntoBatches.WithShardedKey``: on the DirectRunner the latter never flushes its
    buffer at the end of the stream (see docs/beam-limits.md).

    Output: :class:`DeliveryBatch`; tagged ``dead_letter``: events whose prefix cannot be
    rendered. Redelivered events were dropped before Route (:mod:`transforms.dedup`).
    ``clock`` is for tests (TestStream needs a fake clock starting at 0).
    """

    def __init__(self, config: DeliveryConfig, clock: Any = None):
        super().__init__()
        self.config = config
        self.clock = clock

    def expand(self, records: Any) -> Any:
        """Outputs ``batches`` and ``dead_letter``; the step labels are update contracts."""
        keyed = records | "Key" >> beam.ParDo(_KeyByPrefix(self.config)).with_outputs(
            DEAD_LETTER, main="keyed"
        )
        ids = [c.id for c in self.config.connectors]
        parts = keyed.keyed | "ByConnector" >> beam.Partition(_ByConnector(ids), len(ids))
        batches = []
        for connector, part in zip(self.config.connectors, parts, strict=True):
            limits = connector.deliver_config.batch
            extra = {"clock": self.clock} if self.clock is not None else {}
            # A typed key gives GroupIntoBatches a deterministic key coder (Partition erases
            # the element type).
            part = part | f"Typed/{connector.id}" >> beam.Map(_same).with_output_types(
                beam.typehints.Tuple[beam.typehints.Tuple[str, str, int], Any]
            )
            grouped = part | f"Batch/{connector.id}" >> beam.GroupIntoBatches(
                limits.max_events, limits.max_wait_s, **extra
            )
            max_bytes = limits.max_bytes
            if max_bytes is None:
                to_batch = beam.Map(_to_batch)
            else:
                # Python's GroupIntoBatches (2.77) counts elements only (Java's has
                # ofByteSize): its batches are split by size on the way out.
                to_batch = beam.FlatMap(_to_batches, limits.max_events, max_bytes)
            batches.append(grouped | f"ToBatch/{connector.id}" >> to_batch)
        merged = batches | "Batches" >> beam.Flatten()
        return {"batches": merged, DEAD_LETTER: keyed[DEAD_LETTER]}
