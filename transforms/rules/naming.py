"""Where a batch is written: rendered prefixes and content-derived object names.

A prefix is a template rendered from each event's time (UTC)::

    p = PrefixTemplate.compile("raw/{year}/{month}/{day}/{hour}/")
    p.render(connector="archive", event_type="heartbeat", time_ms=1764136800123)
    # 'raw/2025/11/26/06/'

Placeholders: ``{year} {month} {day} {hour} {minute}`` (zero-padded, from the event
time), ``{connector}``, ``{event_type}``, and ``{field:PATH}`` or ``{field:PATH|DEFAULT}``
(partitions by any field, Hive style)::

    p = PrefixTemplate.compile("country={field:metadata.geo.country_code|unknown}/{year}/")
    p.render("lake", "heartbeat", 1764136800123, {"metadata": {"geo": {"country_code": "US"}}})
    # 'country=US/2025/'

A ``{field:...}`` value is read from the *record the connector writes* (after its filter
and package; a dotted key a template flattened, ``"metadata.geo.country_code"``, counts
too), never from the original event, so a field the connector's filter denies cannot
reach a name. A string is used as it is, a number or boolean as its JSON text (``4500``,
``true``); a missing path, ``null``, ``""``, an object or a list has no value: then
``DEFAULT`` (safe characters only: ``[A-Za-z0-9_.-]``, not starting with ``.``), or,
without one, the event cannot be filed. An event whose time is missing or unreadable
cannot fill a time placeholder either: :meth:`PrefixTemplate.render` raises
:class:`PrefixError` and the caller dead-letters that event with the reason
(``prefix_unrenderable``).

Event data never decides where bytes land outside the configured place. A value taken
from an event becomes exactly one safe path segment (:func:`safe_segment`): letters,
digits, ``_ - .`` are kept, every other byte of its UTF-8 is percent-encoded (``/`` is
``%2F``, a newline ``%0A``, ``%`` itself ``%25``), a leading dot is encoded (no ``.``,
``..`` or hidden names), and a value longer than :data:`MAX_SEGMENT_CHARS` is cut and
ends in ``~`` and a hash of the whole value. Distinct values stay distinct::

    p = PrefixTemplate.compile("{event_type}/")
    p.render("archive", "../../etc", None)      # '%2E.%2F..%2Fetc/'

A configured prefix may not leave its root either (no ``..`` or ``.`` segments, no
leading ``/``, no backslash or control character: :meth:`PrefixTemplate.compile` refuses
it), and :func:`object_name` checks every name it makes (:func:`check_contained`), also
for prefixes read back from stored retry records.

An object's name is derived from its content, ``<prefix><connector>-<digest><ext>``
where the digest hashes the batch's event ids in order, so a retried or rerun batch
rewrites the same name instead of creating a duplicate.

A backfill's batches are full across chunks and workers: each worker collects its
records per (connector, prefix) in a :class:`BatchFiller` (sorted runs on disk past a
budget), and each key's runs, merged in :func:`batch_order` (:func:`merge_runs`), are
cut every ``batch.max_events``, or before the record that would pass ``batch.max_bytes``
(:func:`cut_batches`). The order depends on the records only, so the batches, hence the
names, do not depend on how the input was chunked or spread. Plain Python, no Beam
import.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import marshal
import operator
import os
import pickle
import string
import struct
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from transforms.rules.encode import record_json
from transforms.rules.records import DeadLetter, Packaged, record_of

TIME_FIELDS = ("year", "month", "day", "hour", "minute")
FIELD = "field"
"""The placeholder that reads a value of the record: ``{field:PATH}``, ``{field:PATH|DEFAULT}``."""
PLACEHOLDERS = (*TIME_FIELDS, "connector", "event_type", FIELD)
"""The names a prefix may use."""

_FIELD_EXAMPLE = (
    "e.g. {field:metadata.geo.country_code} or {field:metadata.geo.country_code|unknown}"
)


MAX_SEGMENT_CHARS = 120
"""Longest path segment made from an event value; longer values end in ``~<hash>``."""

_SEGMENT_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_HASH_CHARS = 16


class PrefixError(ValueError):
    """A prefix that cannot be rendered for an event (e.g. it has no event time)."""


def safe_segment(value: str) -> str:
    """One path segment that says ``value`` and cannot leave its folder, on any store.

    Injective: bytes outside ``[A-Za-z0-9_.-]`` are percent-encoded (``%`` too), so
    different values give different segments; a leading ``.`` is encoded; over
    :data:`MAX_SEGMENT_CHARS` the encoded text is cut and ends in ``~`` (which encoding
    never leaves bare) and 16 hex digits of a BLAKE2b hash of the value.

        >>> safe_segment("heartbeat"), safe_segment("a/b"), safe_segment("..")
        ('heartbeat', 'a%2Fb', '%2E.')
    """
    # Long values (an event field may hold 1 MiB) are neither cached nor encoded whole.
    if len(value) > _CACHED_CHARS:
        return _safe_segment(value)
    return _cached_segment(value)


_CACHED_CHARS = 256


def _safe_segment(value: str) -> str:
    whole = value.encode("utf-8", "surrogatepass")
    # Every byte encodes to at least one character: the first MAX_SEGMENT_CHARS + 1 bytes
    # say everything the cut text can show; the hash covers the rest.
    data = whole[: MAX_SEGMENT_CHARS + 1]
    out = "".join(chr(b) if b in _SEGMENT_SAFE else f"%{b:02X}" for b in data)
    if out.startswith("."):
        out = "%2E" + out[1:]
    if len(out) > MAX_SEGMENT_CHARS:
        head = out[: MAX_SEGMENT_CHARS - _HASH_CHARS - 1]
        cut = head.rfind("%", len(head) - 2)
        if cut != -1:  # never end inside an escape
            head = head[:cut]
        digest = hashlib.blake2b(whole, digest_size=_HASH_CHARS // 2).hexdigest()
        out = f"{head}~{digest}"
    return out


_cached_segment = functools.lru_cache(maxsize=4096)(_safe_segment)


def check_contained(name: str) -> str:
    """Return ``name`` if it is a relative name that stays below its root; else raise.

    Refused: an empty name, a leading ``/``, a ``.`` or ``..`` segment, an empty segment
    before the last, a backslash or a control character. A trailing ``/`` (a folder
    prefix) is fine.

    Raises:
        PrefixError: naming what is wrong.
    """
    if not name:
        raise PrefixError("an empty object name")
    bad = next((c for c in name if c < " " or c in "\\\x7f"), None)
    if bad is not None:
        raise PrefixError(f"name {name!r} holds the character {bad!r}")
    parts = name.split("/")
    for n, part in enumerate(parts):
        if part in (".", "..") or (not part and n < len(parts) - 1):
            raise PrefixError(
                f"name {name!r} would leave its root (segment {part!r}); "
                "names must be relative, without '.', '..' or empty segments"
            )
    return name


@functools.lru_cache(maxsize=4096)
def _time_parts(minute: int) -> dict[str, str]:
    t = time.gmtime(minute * 60)
    return {
        "year": f"{t.tm_year:04d}",
        "month": f"{t.tm_mon:02d}",
        "day": f"{t.tm_mday:02d}",
        "hour": f"{t.tm_hour:02d}",
        "minute": f"{t.tm_min:02d}",
    }


@dataclass(frozen=True)
class FieldRef:
    """One ``{field:PATH|DEFAULT}`` placeholder, e.g. ``FieldRef("geo.cc", ("geo", "cc"), "none")``.

    ``default`` is the segment used when the record has no value there; None: no default,
    the event cannot be filed (a ``prefix_unrenderable`` dead letter).
    """

    path: str
    keys: tuple[str, ...]
    default: str | None

    @classmethod
    def parse(cls, text: str, spec: str) -> FieldRef:
        """Read the ``PATH|DEFAULT`` of a placeholder in prefix ``text``.

        Raises:
            ValueError: naming what is wrong and how to write it.
        """
        path, bar, default = spec.partition("|")
        if not path or "{" in spec or "}" in spec:
            raise ValueError(
                f"prefix {text!r}: {{field:...}} needs a dotted PATH of the record the "
                f"connector writes, {_FIELD_EXAMPLE}"
            )
        keys = tuple(path.split("."))
        if not all(keys):
            raise ValueError(
                f"prefix {text!r}: path {path!r} has an empty segment; {_FIELD_EXAMPLE}"
            )
        if bar and (not default or safe_segment(default) != default):
            raise ValueError(
                f"prefix {text!r}: the default {default!r} of {{field:{spec}}} must be "
                "non-empty, of letters, digits, '_', '-' and '.', not starting with '.' "
                f"(it is used as written), e.g. {{field:{path}|unknown}}"
            )
        return cls(path, keys, default if bar else None)


@dataclass(frozen=True)
class PrefixTemplate:
    """A compiled prefix template (rendered prefixes are cached per type, minute and values)."""

    text: str
    fields: frozenset[str]
    refs: tuple[FieldRef, ...] = ()
    """The ``{field:...}`` placeholders, in order; empty when the prefix reads no record."""
    _format: str = field(default="", compare=False, repr=False)
    _cache: dict[tuple[str, str, int | None, tuple[str, ...]], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def compile(cls, text: str) -> PrefixTemplate:
        """Check the placeholders once.

        Raises:
            ValueError: naming an unknown placeholder or a malformed template, with the fix.
        """
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"prefix {text!r} is malformed: {exc}") from exc
        names: set[str] = set()
        refs: list[FieldRef] = []
        pieces: list[str] = []  # the template for str.format_map, {field:..} as {_f<n>}
        for literal, name, spec, conv in parsed:
            pieces.append(literal.replace("{", "{{").replace("}", "}}"))
            if name is None:
                continue
            names.add(name)
            if name == FIELD:
                if conv:
                    raise ValueError(
                        f"prefix {text!r}: {{field}} takes no conversion ('!{conv}'); "
                        f"{_FIELD_EXAMPLE}"
                    )
                refs.append(FieldRef.parse(text, spec or ""))
                pieces.append(f"{{_f{len(refs) - 1}}}")
            elif name in PLACEHOLDERS and (spec or conv):
                raise ValueError(
                    f"prefix {text!r}: {{{name}}} takes no format or conversion; "
                    f"write it as {{{name}}}, e.g. 'raw/{{year}}/{{month}}/'"
                )
            else:
                pieces.append("{" + name + "}")
        unknown = names - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(
                f"prefix {text!r} uses unknown placeholder(s) {sorted(unknown)}; "
                f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS if p != FIELD)}, "
                "{field:PATH} and {field:PATH|DEFAULT}"
            )
        fmt = "".join(pieces)
        if text:
            sample = dict.fromkeys(names, "x") | {f"_f{n}": "x" for n in range(len(refs))}
            try:
                check_contained(fmt.format_map(sample) + "n")
            except PrefixError as exc:
                raise ValueError(
                    f"prefix {text!r} must stay inside the connector's path or bucket: {exc}"
                ) from exc
        return cls(text, frozenset(names), tuple(refs), fmt)

    @property
    def is_constant(self) -> bool:
        """True when the prefix does not depend on the event."""
        return not self.fields

    def render(
        self,
        connector: str,
        event_type: str,
        time_ms: int | None,
        record: dict[str, Any] | None = None,
    ) -> str:
        """Render the prefix for one event; raise :class:`PrefixError` if it cannot be.

        ``record`` is what the connector writes for the event (see :func:`record_of`),
        which ``{field:...}`` placeholders read; the job always gives it. Without one, each
        shows as written (``country={field:geo.cc}/2025/``), for callers that check or
        show the rest of a prefix before any record exists (``validate``, ``dry-run``).
        """
        if not self.fields:
            return self.text
        minute = time_ms // 60000 if time_ms is not None else None
        values: tuple[str, ...] = ()
        if self.refs:
            if record is None:
                values = tuple(_as_written(ref) for ref in self.refs)
            else:
                values = tuple(self._value(ref, record) for ref in self.refs)
        key = (connector, event_type, minute, values)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._render(connector, event_type, time_ms, values)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _value(self, ref: FieldRef, record: dict[str, Any]) -> str:
        found = _lookup(record, ref.keys)
        text = _value_text(found)
        if text is not None:
            return safe_segment(text)
        if ref.default is not None:
            return ref.default
        # Says what kind of thing is there, never the value itself.
        what = {
            type(None): "null",
            str: "an empty string",
            dict: "an object",
            list: "a list",
        }.get(type(found), "nothing")
        raise PrefixError(
            f"prefix {self.text!r} needs a value at {ref.path} and the record holds {what} "
            f"there. Fix: give a default, {{field:{ref.path}|unknown}}, or send the field"
        )

    def _render(
        self, connector: str, event_type: str, time_ms: int | None, values: tuple[str, ...]
    ) -> str:
        parts = {"connector": connector, "event_type": safe_segment(event_type)}
        for n, value in enumerate(values):
            parts[f"_f{n}"] = value
        if self.fields & set(TIME_FIELDS):
            if time_ms is None:
                raise PrefixError(
                    f"prefix {self.text!r} needs the event time;"
                    " event.timestamp is missing or unreadable"
                )
            try:
                parts.update(_time_parts(time_ms // 60000))
            except (OverflowError, OSError, ValueError) as exc:
                raise PrefixError(f"event time {time_ms} cannot be rendered: {exc}") from exc
        return self._format.format_map(parts)


_ABSENT = object()


def _as_written(ref: FieldRef) -> str:
    default = "" if ref.default is None else "|" + ref.default
    return f"{{field:{ref.path}{default}}}"


def _lookup(obj: Any, keys: tuple[str, ...]) -> Any:
    """The value at ``keys`` in ``obj``, a dotted key counting as its segments; else absent.

    ``_lookup({"a.b": 1}, ("a", "b"))`` and ``_lookup({"a": {"b": 1}}, ("a", "b"))`` are 1.
    """
    if not isinstance(obj, dict):
        return _ABSENT
    for n in range(len(keys), 0, -1):  # the longest dotted key first
        key = keys[0] if n == 1 else ".".join(keys[:n])
        if key in obj:
            found = obj[key] if n == len(keys) else _lookup(obj[key], keys[n:])
            if found is not _ABSENT:
                return found
    return _ABSENT


def _value_text(value: Any) -> str | None:
    """A value as the text of a segment: strings as they are, numbers and booleans as JSON.

    None for what no segment can say: absent, null, ``""``, objects and lists.
    """
    kind = type(value)
    if kind is str:
        return value or None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            return repr(value)
    return None


def batch_digest(event_ids: Iterable[str]) -> str:
    """A stable 20-hex-digit digest of a batch's event ids, in order."""
    # Length-prefixed (ids may contain any character), hashed in one call.
    parts = [event_id.encode("utf-8") for event_id in event_ids]
    stream = b"".join([len(data).to_bytes(4, "big") + data for data in parts])
    return hashlib.blake2b(stream, digest_size=10).hexdigest()


def object_name(prefix: str, connector: str, event_ids: Iterable[str], extension: str) -> str:
    """The content-derived name of a batch: ``<prefix><connector>-<digest><extension>``.

    Raises:
        PrefixError: if the name would leave its root (:func:`check_contained`), e.g. a
            prefix from a tampered retry record.
    """
    return check_contained(f"{prefix}{connector}-{batch_digest(event_ids)}{extension}")


def stable_shard(key: str, shards: int) -> int:
    """A shard in ``range(shards)`` chosen by a stable hash of ``key`` (same on every worker)."""
    if shards <= 1:
        return 0
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def key_by_prefix(
    prefix: PrefixTemplate, cid: str, items: list[Packaged]
) -> tuple[dict[str, list[Packaged]], list[DeadLetter]]:
    """Group connector ``cid``'s records by rendered prefix, in input order.

    Returns the non-empty groups (prefix -> records, each in input order, groups in order
    of first appearance) and a dead letter for each record whose prefix cannot be
    rendered. Every record ends in exactly one of the two::

        p = PrefixTemplate.compile("{event_type}/")
        key_by_prefix(p, "errors", [error1, seek1, error2])
        # ({"error/": [error1, error2], "seek/": [seek1]}, [])

    A constant prefix renders nothing: ``items`` itself is the one group. A prefix with
    ``{field:...}`` reads each item's record (:func:`record_of`: parsed back from ``data``
    when Package kept only the bytes).
    """
    if prefix.is_constant:
        return ({prefix.text: items} if items else {}), []
    groups: dict[str, list[Packaged]] = {}
    failed: list[DeadLetter] = []
    reads = bool(prefix.refs)
    for item in items:
        try:
            record = record_of(item) if reads else None
            key = prefix.render(cid, item.event_type, item.time_ms, record)
        except ValueError as exc:  # a PrefixError, or a record that cannot be read back
            failed.append(
                DeadLetter.for_event("batch", cid, item.event, "prefix_unrenderable", str(exc))
            )
            continue
        groups.setdefault(key, []).append(item)
    return groups, failed


# -- full objects in backfills -----------------------------------------------------------

SPILL_EVENTS = 20_000
"""Records one backfill worker holds before it writes them to disk as sorted runs."""

FRAME_EVENTS = 64
"""Records per frame, the unit a merge reads back (~80 KiB per run held at a time)."""
_HEADER = struct.Struct(">IB")  # a frame's length and encoding (marshal, or pickle)
_WRITE_BYTES = 1 << 18
"""Frames are written in groups of about this many bytes (one ``writev`` each)."""
_WRITE_PARTS = 512  # and at most this many buffers per writev (IOV_MAX is 1024 on Linux)

_FIELDS_ORDER = operator.itemgetter(1, 0, 5)
"""``(time_ms, event_id, data)``: :func:`batch_order` for records that have an event time
and JSON bytes (nearly all), computed in C."""


def batch_order(item: Packaged) -> tuple[Any, ...]:
    """Where a record sits in its (connector, prefix)'s backfill objects: by content only.

    Event time first (records without one before the others), then ``event_id``, then the
    record's bytes; so objects hold consecutive stretches of time, and the order is the
    same however the input was chunked or spread over workers. Records equal in all three
    write the same bytes under the same name in either order.

        sorted(items, key=batch_order)  # e.g. [(t=1000, "b"), (t=1000, "c"), (t=2000, "a")]
    """
    t = item.time_ms
    data = item.data
    if data is None:
        try:
            data = orjson.dumps(item.record)
        except TypeError:
            data = repr(item.record).encode("utf-8", "surrogatepass")
    return (t is not None, t if t is not None else 0, item.event_id, data)


def _has_fields_order(items: list[Packaged]) -> bool:
    """True when :data:`_FIELDS_ORDER` orders ``items`` as :func:`batch_order` does."""
    return None not in map(_TIME, items) and None not in map(_DATA, items)


_TIME = operator.itemgetter(1)
_DATA = operator.itemgetter(5)


class SpilledRuns(NamedTuple):
    """One worker's records of one (connector, prefix), on disk as sorted runs.

    ``path`` is the file, ``runs`` each run's ``(offset, length)`` in it, ``events`` how
    many records in all. :func:`merge_runs` reads them back in :func:`batch_order`.
    ``by_fields`` says every record has an event time and JSON bytes, so the merge may
    compare ``(time_ms, event_id, data)`` directly (the same order, without a Python call
    per record).
    """

    path: str
    runs: tuple[tuple[int, int], ...]
    events: int
    by_fields: bool = False


class BatchFiller:
    """Collects one backfill worker's records per (connector, prefix), with bounded memory.

    Records are held until ``budget`` of them are, then each (connector, prefix)'s are
    sorted (:func:`batch_order`) and appended to that key's file below ``folder`` as one
    run, in frames of ``frame`` records; :meth:`finish` writes what is left and says where
    everything is::

        filler = BatchFiller("/tmp/spill")
        filler.add("archive", "heartbeat/06/", records)       # any number of times
        for (cid, prefix), spilled in filler.finish():        # one per key
            for batch in cut_batches(merge_runs([spilled, ...]), 1000): ...

    Every worker's runs of a key, merged, give that key's records in one order, whatever
    the chunks and the workers were: the objects cut from it are the same on every run.
    """

    def __init__(self, folder: str, budget: int = SPILL_EVENTS, frame: int = FRAME_EVENTS):
        self.folder = folder
        self.budget = budget
        self.frame = frame
        self.held = 0
        self.pending: dict[tuple[str, str], list[Packaged]] = {}
        self.files: dict[tuple[str, str], tuple[str, list[tuple[int, int]], int, bool]] = {}

    def add(self, cid: str, prefix: str, items: Iterable[Packaged]) -> None:
        """Take ``items`` (records of connector ``cid`` under ``prefix``)."""
        held = self.pending.get((cid, prefix))
        if held is None:
            held = self.pending[(cid, prefix)] = []
        before = len(held)
        held.extend(items)
        self.held += len(held) - before
        if self.held >= self.budget:
            self.spill()

    def spill(self) -> None:
        """Write every held record to disk, one sorted run per (connector, prefix)."""
        for key, items in self.pending.items():
            if items:
                self._write_run(key, items)
        self.pending = {}
        self.held = 0

    def finish(self) -> list[tuple[tuple[str, str], SpilledRuns]]:
        """Spill what is held; return each key's :class:`SpilledRuns`, and start afresh.

        Heaviest key first (most records; then by key): dealt to workers in turn in this
        order, as Beam's local runner deals a GroupByKey's keys, no worker's share of the
        records exceeds another's by more than the heaviest key's.
        """
        self.spill()
        out = [
            (key, SpilledRuns(path, tuple(runs), n, by_fields))
            for key, (path, runs, n, by_fields) in self.files.items()
        ]
        out.sort(key=_heaviest_first)
        self.files = {}
        return out

    def _write_run(self, key: tuple[str, str], items: list[Packaged]) -> None:
        by_fields = _has_fields_order(items)
        items.sort(key=_FIELDS_ORDER if by_fields else batch_order)
        known = self.files.get(key)
        if known is None:
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, f"{uuid.uuid4().hex}.run")
            known = self.files[key] = (path, [], 0, True)
        path, runs, count, all_by_fields = known
        step = self.frame
        # A few frames per write: one system call per frame cost as much as the bytes; a
        # blob of the whole run would be a fresh allocation as large as the run on every
        # spill. Headers and bodies go in one writev, never joined (a copy of every byte).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            offset = end = os.fstat(fd).st_size
            parts: list[bytes] = []
            size = 0
            for n in range(0, len(items), step):
                header, body = _frame(items[n : n + step])
                parts += (header, body)
                size += len(body)
                if size >= _WRITE_BYTES or len(parts) >= _WRITE_PARTS:
                    end += _write_all(fd, parts)
                    parts, size = [], 0
            if parts:
                end += _write_all(fd, parts)
        finally:
            os.close(fd)
        runs.append((offset, end - offset))
        self.files[key] = (path, runs, count + len(items), all_by_fields and by_fields)


def _heaviest_first(entry: tuple[tuple[str, str], SpilledRuns]) -> tuple[int, tuple[str, str]]:
    key, spilled = entry
    return -spilled.events, key


def _frame(items: list[Packaged]) -> list[bytes]:
    """A frame as its header and its body."""
    # By column (one tuple per field): cheaper to write and read than a tuple per record.
    columns = list(zip(*items, strict=True))
    try:
        body, kind = marshal.dumps(columns), 0
    except ValueError:  # a subclass of a builtin (marshal takes exact types only)
        body, kind = pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL), 1
    return [_HEADER.pack(len(body), kind), body]


def _write_all(fd: int, parts: list[bytes]) -> int:
    """Write ``parts`` in order at the end of ``fd``; return how many bytes that was."""
    total = sum(map(len, parts))
    done = os.writev(fd, parts)
    if done < total:  # a short write (a signal; a full disk raises on the next): go on
        rest = memoryview(b"".join(parts))[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    return total


def _read_frames(fd: int, offset: int, length: int) -> Iterator[list[Packaged]]:
    """One run's frames in order, each a list of records; one read per frame."""
    end = offset + length
    make = functools.partial(tuple.__new__, Packaged)
    head = _HEADER.size
    if offset >= end:
        return
    size, kind = _HEADER.unpack(os.pread(fd, head, offset))
    offset += head
    while True:
        # Each read takes this frame's body and the next frame's header.
        more = head if offset + size < end else 0
        block = os.pread(fd, size + more, offset)
        body = memoryview(block)[:size] if more else block  # a view, not a copy
        columns = marshal.loads(body) if kind == 0 else pickle.loads(body)
        yield list(map(make, zip(*columns, strict=True)))
        if not more:
            return
        offset += size + head
        size, kind = _HEADER.unpack_from(block, size)


def merge_runs(spilled: Iterable[SpilledRuns]) -> Iterator[Packaged]:
    """Every record of some :class:`SpilledRuns` of one key, in :func:`batch_order`.

    Reads each run a frame at a time: memory is a frame per run, never a whole key.
    """
    return itertools.chain.from_iterable(_merge_frames(spilled))


def _merge_frames(spilled: Iterable[SpilledRuns]) -> Iterator[list[Packaged]]:
    fds: list[int] = []
    try:
        runs: list[Iterator[list[Packaged]]] = []
        by_fields = True
        for part in spilled:
            fd = os.open(part.path, os.O_RDONLY)
            fds.append(fd)
            runs.extend(_read_frames(fd, offset, length) for offset, length in part.runs)
            by_fields = by_fields and part.by_fields
        if len(runs) == 1:  # in order already (a sparse key, or a small backfill)
            yield from runs[0]
            return
        key: Any = _FIELDS_ORDER if by_fields else batch_order
        # Merged a frame at a time, not a record at a time: every buffered record up to the
        # smallest of the buffers' last keys comes before anything still on disk (each run
        # is sorted), so those records are taken from every buffer and sorted together
        # (in C: timsort merges the sorted pieces), and the buffer(s) used up are refilled.
        buffers: list[tuple[list[Packaged], int, Iterator[list[Packaged]]]] = []
        for run in runs:
            first = next(run, None)
            if first:
                buffers.append((first, 0, run))
        while buffers:
            cutoff = min(key(frame[-1]) for frame, _, _ in buffers)
            taken: list[Packaged] = []
            kept = []
            for frame, start, run in buffers:
                n = bisect.bisect_right(frame, cutoff, start, key=key)
                taken.extend(frame[start:n])
                if n < len(frame):
                    kept.append((frame, n, run))
                    continue
                following = next(run, None)
                if following:
                    kept.append((following, 0, run))
            buffers = kept
            taken.sort(key=key)
            yield taken
    finally:
        for fd in fds:
            os.close(fd)


def cut_batches(
    items: Iterable[Packaged], size: int, max_bytes: int | None = None
) -> Iterator[list[Packaged]]:
    """``items`` in batches of at most ``size`` records and ``max_bytes`` bytes, in order.

    A batch ends at ``size`` records, or when the next record would take it past
    ``max_bytes`` (each record counted by :func:`record_size`: its NDJSON line before
    compression), whichever comes first; a record larger than ``max_bytes`` on its own is
    a batch of one, never dropped or split. Each batch is given once the records after
    it that decide it are read (at most ``size`` ahead); only the last may be short.
    Without ``max_bytes`` only the count cuts::

        list(cut_batches("abcde", 2))                  # [["a", "b"], ["c", "d"], ["e"]]
        # records of 700, 700, 700 and 3000 bytes, max_bytes 2048:
        cut_batches([r1, r2, r3, big], 1000, 2048)   # [r1, r2], [r3], [big]
    """
    stream = iter(items)
    if max_bytes is None:
        while batch := list(itertools.islice(stream, size)):
            yield batch
        return
    # Up to ``size`` records at a time, sized in C (nearly every record carries its JSON
    # bytes, and a Python call per record was most of the cut's CPU), then cut where the
    # running total passes max_bytes; what is left starts the next batch.
    ahead: list[Packaged] = []
    sizes: list[int] = []
    while True:
        more = list(itertools.islice(stream, size - len(ahead)))
        if more:
            ahead += more
            sizes += _sizes(more)
        if not ahead:
            return
        ends = list(itertools.accumulate(sizes))
        n = max(bisect.bisect_right(ends, max_bytes), 1)  # a record alone may pass it
        if n == len(ahead):
            yield ahead
            ahead, sizes = [], []
        else:
            yield ahead[:n]
            del ahead[:n], sizes[:n]


def _sizes(items: list[Packaged]) -> list[int]:
    """:func:`record_size` of each of ``items``, in C when every one has its bytes."""
    try:
        return [n + 1 for n in map(len, map(_DATA, items))]
    except TypeError:  # a record kept as a dict (data None): serialized to be measured
        return list(map(record_size, items))


MIN_BATCH_BYTES = 1024
"""Smallest ``batch.max_bytes`` (1 KiB): below it nearly every object holds one record."""
MAX_BATCH_BYTES = 5 * 1024**3
"""Largest ``batch.max_bytes`` (5 GiB): S3's limit for one upload, the strictest store's."""


def record_size(item: Packaged) -> int:
    """The bytes one record adds to a batch under ``batch.max_bytes``.

    Its JSON as the encoder writes it (:func:`~transforms.rules.encode.record_json`: the
    bytes Package made, else the record serialized), plus one for the newline, before
    any compression: a batch's sizes add up to its uncompressed NDJSON object exactly.
    ``{"id":"e1"}`` counts 12. Other formats (Avro, Parquet, CSV) differ by their framing
    and types; the cap is on this JSON measure for every format.
    """
    return len(record_json(item)) + 1


def check_max_bytes(value: int | None) -> int | None:
    """``value`` if it is None or a ``batch.max_bytes`` in 1 KiB..5 GiB, else raise.

    ``check_max_bytes(67108864)`` (64 MiB) is 67108864; ``check_max_bytes(512)`` raises.

    Raises:
        ValueError: naming the value, the range and an example.
    """
    if value is not None and not MIN_BATCH_BYTES <= value <= MAX_BATCH_BYTES:
        raise ValueError(
            f"max_bytes {value} is outside 1 KiB to 5 GiB ({MIN_BATCH_BYTES} to "
            f"{MAX_BATCH_BYTES} bytes of uncompressed records per object); e.g. "
            "max_bytes: 67108864 for 64 MiB, or leave it out to cut by max_events only"
        )
    return value
