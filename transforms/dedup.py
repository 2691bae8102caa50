"""Dedup stage (streaming): each ``event_id`` goes on once per window, before Route.

Pub/Sub delivers at least once: a message whose ack deadline passes while the job still
holds it (a stall, a restart, a lost ack) comes back, and in streaming a copy lands in
another batch, hence in an object of another name. So the streaming job drops copies
right after Parse, once per event for every connector::

    events = parsed.events | "Dedup" >> DropDuplicates(window_s=600)

Semantics: the first copy of an ``event_id`` goes on; a copy arriving while the id is
remembered is dropped and counted (``telemetry/duplicates``, in the run summary). An id
is remembered for at least ``window_s`` and at most twice that after it was first seen
(processing time), so within ``window_s`` delivery is exactly once to destinations that
store by name (object stores, files, Elasticsearch by ``_id``); a copy arriving later
is delivered again: at least once. Copies are recognised by ``event_id`` only, so a
producer that republishes an event with the same id is deduplicated too.

How, and why not Beam's ``Deduplicate``: Beam's transform keys every event by its id,
so every event pays a keyed-state read, a write and a timer on the runner (on Prism and
Flink each is a call between the runner and the SDK harness). Here events are keyed by a
stable hash of their id into :data:`DEFAULT_SHARDS` shards, so one Pub/Sub pull costs at
most that many keyed elements. Each shard keeps two generations of 16-byte digests of
the ids it saw (bag state, appended to, never rewritten) and rotates them on a
processing-time timer every ``window_s``: the older generation is cleared, so memory
holds at most two windows of ids, 16 bytes each, whatever the ids' length. A worker keeps
the shard's ids as a Python set between bundles and checks a small version token in
state before trusting it, so a shard that moved to another worker and back is re-read,
never trusted stale. A watermark timer at the end of the global window clears a shard
when the input ends (a drained job must not wait for a pending processing-time timer).
Measured: bench/RESULTS.md ("Dedup cost").
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import metrics
from transforms.rules.naming import stable_shard
from transforms.rules.records import Chunk, raw_of

DEFAULT_DEDUP_WINDOW_S = 600.0
"""How long an ``event_id`` is remembered by default (``--dedup-window-s``): 10 minutes."""

DEFAULT_SHARDS = 4
"""Keys the dedup state is spread over: its parallelism, and its cost per Pub/Sub pull."""

DIGEST_BYTES = 16
"""Each remembered id is a 128-bit BLAKE2b digest: fixed memory per id, whatever its length."""

_GENERATIONS = (
    BagStateSpec("ids_0", BytesCoder()),
    BagStateSpec("ids_1", BytesCoder()),
)
_META = ReadModifyWriteStateSpec("meta", BytesCoder())
_ROTATE = TimerSpec("rotate", TimeDomain.REAL_TIME)
_END = TimerSpec("end_of_input", TimeDomain.WATERMARK)
_IDS_0 = beam.DoFn.StateParam(_GENERATIONS[0])
_IDS_1 = beam.DoFn.StateParam(_GENERATIONS[1])
_META_STATE = beam.DoFn.StateParam(_META)
_ROTATE_TIMER = beam.DoFn.TimerParam(_ROTATE)
_END_TIMER = beam.DoFn.TimerParam(_END)


_KNOWN: dict[tuple[str, str], tuple[bytes, list[set[bytes]]]] = {}
"""(stage, shard) -> (token, ids per generation): the worker process's copy of the state,
shared by every instance of the DoFn in the process (a runner may hand a shard's bundles
to any of them), trusted only while the token matches the state's."""
_KNOWN_LOCK = threading.Lock()


def digest(event_id: str) -> bytes:
    """The fixed-size form of an id the state keeps, e.g. ``digest("e-1")`` (16 bytes)."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _split(packed: Iterable[bytes]) -> set[bytes]:
    """The digests of a generation: each bag value is the digests one bundle added."""
    out: set[bytes] = set()
    for value in packed:
        out.update(value[i : i + DIGEST_BYTES] for i in range(0, len(value), DIGEST_BYTES))
    return out


class Meta:
    """What a shard's ``meta`` state holds: current generation, rotation pending, version.

    Encoded as 10 bytes: generation (0/1), rotation armed (0/1), an 8-byte random token
    that changes with every change of the shard's ids.
    """

    __slots__ = ("armed", "current", "token")

    def __init__(self, current: int = 0, armed: bool = False, token: bytes = b""):
        self.current = current
        self.armed = armed
        self.token = token

    @classmethod
    def decode(cls, data: bytes | None) -> Meta:
        """The meta of state bytes; None or empty (a fresh shard): generation 0, no token."""
        if not data:
            return cls()
        return cls(data[0], bool(data[1]), data[2:])

    def encode(self) -> bytes:
        """The 10 (or, before the first id, 2) bytes the state holds."""
        return bytes((self.current, int(self.armed))) + self.token


def _by_shard(events: Chunk, shards: int) -> Iterator[tuple[str, Chunk]]:
    """Split one chunk of events by the shard of their ``event_id``, keeping raw lines."""
    raw = raw_of(events)
    if shards <= 1:
        yield "0", Chunk(events, raw=raw)
        return
    parts: dict[int, list[int]] = {}
    for n, event in enumerate(events):
        parts.setdefault(stable_shard(event["event_id"], shards), []).append(n)
    for shard, indices in parts.items():
        yield (
            str(shard),
            Chunk(
                [events[n] for n in indices],
                raw=None if raw is None else [raw[n] for n in indices],
            ),
        )


class _FirstCopies(beam.DoFn):
    """Per shard: pass the events whose id this shard has not seen; count the rest."""

    def __init__(self, window_s: float, clock: Callable[[], float] | None):
        self.window_s = window_s
        self.clock = clock
        self.stage = uuid.uuid4().hex  # the same in every copy of this DoFn (pickled)

    def _rotation_due(self) -> Timestamp:
        now = Timestamp.of(self.clock()) if self.clock is not None else Timestamp.now()
        return now + Duration(micros=int(self.window_s * 1_000_000))

    def setup(self) -> None:
        self.duplicates = Metrics.counter(metrics.PIPELINE, metrics.DUPLICATES)

    def _ids(self, shard: str, meta: Meta, bags: tuple[Any, Any]) -> list[set[bytes]]:
        with _KNOWN_LOCK:
            cached = _KNOWN.get((self.stage, shard))
        if cached is not None and meta.token and cached[0] == meta.token:
            return cached[1]
        return [_split(bags[0].read()), _split(bags[1].read())]

    def _remember(self, shard: str, token: bytes, generations: list[set[bytes]] | None) -> None:
        with _KNOWN_LOCK:
            if generations is None:
                _KNOWN.pop((self.stage, shard), None)
            else:
                _KNOWN[(self.stage, shard)] = (token, generations)

    def process(
        self,
        element: tuple[str, Chunk],
        ids_0: Any = _IDS_0,
        ids_1: Any = _IDS_1,
        meta_state: Any = _META_STATE,
        rotate: Any = _ROTATE_TIMER,
        end: Any = _END_TIMER,
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterator[Chunk]:
        shard, events = element
        meta = Meta.decode(meta_state.read())
        bags = (ids_0, ids_1)
        generations = self._ids(shard, meta, bags)
        old, current = generations[1 - meta.current], generations[meta.current]
        raw = raw_of(events)
        kept: list[int] = []
        added: list[bytes] = []
        new: set[bytes] = set()  # ids first seen in this element (a copy may follow at once)
        for n, event in enumerate(events):
            key = digest(event["event_id"])
            if key in current or key in old or key in new:
                continue
            new.add(key)
            added.append(key)
            kept.append(n)
        if len(kept) < len(events):
            Metrics.counter(metrics.PIPELINE, metrics.DUPLICATES).inc(len(events) - len(kept))
        if added:
            # The shared sets change before the state commits: forget them until then, so
            # a failed bundle's ids are never trusted as seen (its retry re-reads state).
            self._remember(shard, b"", None)
            current.update(new)
            bags[meta.current].add(b"".join(added))
            meta.token = os.urandom(8)
            if not meta.armed:
                meta.armed = True
                rotate.set(self._rotation_due())
                end.set(window.end)
            meta_state.write(meta.encode())
        self._remember(shard, meta.token, generations)
        if kept:
            if len(kept) == len(events):
                yield Chunk(events, raw=raw)
            else:
                yield Chunk(
                    [events[n] for n in kept],
                    raw=None if raw is None else [raw[n] for n in kept],
                )

    @on_timer(_ROTATE)
    def _rotate(
        self,
        key: Any = beam.DoFn.KeyParam,
        ids_0: Any = _IDS_0,
        ids_1: Any = _IDS_1,
        meta_state: Any = _META_STATE,
        rotate: Any = _ROTATE_TIMER,
    ) -> None:
        meta = Meta.decode(meta_state.read())
        bags = (ids_0, ids_1)
        generations = self._ids(key, meta, bags)
        self._remember(key, b"", None)  # as in process: untrusted until written
        older = 1 - meta.current
        bags[older].clear()
        generations[older] = set()
        meta.current = older  # the cleared one takes the new ids
        if not generations[1 - older]:
            # Nothing remembered any more: no timer, no state (a quiet shard costs nothing).
            meta_state.clear()
            self._remember(key, b"", None)
            return
        meta.token = os.urandom(8)
        rotate.set(self._rotation_due())
        meta_state.write(meta.encode())
        self._remember(key, meta.token, generations)

    @on_timer(_END)
    def _end(
        self,
        key: Any = beam.DoFn.KeyParam,
        ids_0: Any = _IDS_0,
        ids_1: Any = _IDS_1,
        meta_state: Any = _META_STATE,
        rotate: Any = _ROTATE_TIMER,
    ) -> None:
        ids_0.clear()
        ids_1.clear()
        meta_state.clear()
        rotate.clear()
        self._remember(key, b"", None)


class DropDuplicates(beam.PTransform):
    """Streaming: chunks of events in, the same chunks without copies out (module doc).

    ``window_s``: how long an id is remembered (at least; at most twice that).
    ``shards``: keys of the state (parallelism); the shard is a stable hash of the id, so
    every copy of an event meets the state its first copy left. ``clock``: for tests, the
    processing clock of the rotation timer (TestStream needs a fake one starting at 0).
    """

    def __init__(
        self,
        window_s: float,
        shards: int = DEFAULT_SHARDS,
        clock: Callable[[], float] | None = None,
    ):
        super().__init__()
        if not 0 < window_s <= 86400:
            raise ValueError(f"window_s must be above 0 and at most 86400, got {window_s!r}")
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards!r}")
        self.window_s = window_s
        self.shards = shards
        self.clock = clock

    def expand(self, events: Any) -> Any:
        """Chunks of events in, chunks of first copies out (empty ones are not emitted)."""
        shards = self.shards
        keyed = events | "ByShard" >> beam.FlatMap(_by_shard, shards).with_output_types(
            beam.typehints.Tuple[str, Chunk]
        )
        first = beam.ParDo(_FirstCopies(self.window_s, self.clock)).with_output_types(Chunk)
        return keyed | "FirstCopies" >> first
