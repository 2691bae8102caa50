"""Where a batch is written: rendered prefixes and content-derived object names.

A prefix is a template rendered from each event's time (UTC)::

    p = PrefixTemplate.compile("raw/{year}/{month}/{day}/{hour}/")
    p.render(connector="archive", event_type="heartbeat", time_ms=1764136800123)
    # 'raw/2025/11/26/06/'

Placeholders: ``{year} {month} {day} {hour} {minute}`` (zero-padded, from the event
time), ``{connector}`` and ``{event_type}``. An event whose time is missing or unreadable
cannot fill a time placeholder: :meth:`PrefixTemplate.render` raises
:class:`PrefixError` and the caller dead-letters that event with the reason.

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
rewrites the same name instead of creating a duplicate. Plain Python, no Beam import.
"""

from __future__ import annotations

import functools
import hashlib
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from transforms.rules.records import DeadLetter, Packaged

TIME_FIELDS = ("year", "month", "day", "hour", "minute")
PLACEHOLDERS = (*TIME_FIELDS, "connector", "event_type")
"""The names a prefix may use."""


MAX_SEGMENT_CHARS = 120
"""Longest path segment made from an event value; longer values end in ``~<hash>``."""

_SEGMENT_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_HASH_CHARS = 16


class PrefixError(ValueError):
    """A prefix that cannot be rendered for an event (e.g. it has no event time)."""


@functools.lru_cache(maxsize=4096)
def safe_segment(value: str) -> str:
    """One path segment that says ``value`` and cannot leave its folder, on any store.

    Injective: bytes outside ``[A-Za-z0-9_.-]`` are percent-encoded (``%`` too), so
    different values give different segments; a leading ``.`` is encoded; over
    :data:`MAX_SEGMENT_CHARS` the encoded text is cut and ends in ``~`` (which encoding
    never leaves bare) and 16 hex digits of a BLAKE2b hash of the value.

        >>> safe_segment("heartbeat"), safe_segment("a/b"), safe_segment("..")
        ('heartbeat', 'a%2Fb', '%2E.')
    """
    data = value.encode("utf-8", "surrogatepass")
    out = "".join(chr(b) if b in _SEGMENT_SAFE else f"%{b:02X}" for b in data)
    if out.startswith("."):
        out = "%2E" + out[1:]
    if len(out) > MAX_SEGMENT_CHARS:
        head = out[: MAX_SEGMENT_CHARS - _HASH_CHARS - 1]
        cut = head.rfind("%", len(head) - 2)
        if cut != -1:  # never end inside an escape
            head = head[:cut]
        digest = hashlib.blake2b(data, digest_size=_HASH_CHARS // 2).hexdigest()
        out = f"{head}~{digest}"
    return out


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
class PrefixTemplate:
    """A compiled prefix template (rendered prefixes are cached per type and minute)."""

    text: str
    fields: frozenset[str]
    _cache: dict[tuple[str, str, int | None], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def compile(cls, text: str) -> PrefixTemplate:
        """Check the placeholders once.

        Raises:
            ValueError: naming an unknown placeholder or a malformed template.
        """
        try:
            names = {
                name for _, name, spec, conv in string.Formatter().parse(text) if name is not None
            }
        except ValueError as exc:
            raise ValueError(f"prefix {text!r} is malformed: {exc}") from exc
        unknown = names - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(
                f"prefix {text!r} uses unknown placeholder(s) {sorted(unknown)}; "
                f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if text:
            try:
                check_contained(text.format_map(dict.fromkeys(names, "x")) + "n")
            except PrefixError as exc:
                raise ValueError(
                    f"prefix {text!r} must stay inside the connector's path or bucket: {exc}"
                ) from exc
        return cls(text, frozenset(names))

    @property
    def is_constant(self) -> bool:
        """True when the prefix does not depend on the event."""
        return not self.fields

    def render(self, connector: str, event_type: str, time_ms: int | None) -> str:
        """Render the prefix for one event; raise :class:`PrefixError` if it cannot be."""
        if not self.fields:
            return self.text
        minute = time_ms // 60000 if time_ms is not None else None
        key = (connector, event_type, minute)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._render(connector, event_type, time_ms)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _render(self, connector: str, event_type: str, time_ms: int | None) -> str:
        values = {"connector": connector, "event_type": safe_segment(event_type)}
        if self.fields & set(TIME_FIELDS):
            if time_ms is None:
                raise PrefixError(
                    f"prefix {self.text!r} needs the event time;"
                    " event.timestamp is missing or unreadable"
                )
            try:
                values.update(_time_parts(time_ms // 60000))
            except (OverflowError, OSError, ValueError) as exc:
                raise PrefixError(f"event time {time_ms} cannot be rendered: {exc}") from exc
        return self.text.format_map(values)


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

    A constant prefix renders nothing: ``items`` itself is the one group.
    """
    if prefix.is_constant:
        return ({prefix.text: items} if items else {}), []
    groups: dict[str, list[Packaged]] = {}
    failed: list[DeadLetter] = []
    for item in items:
        try:
            key = prefix.render(cid, item.event_type, item.time_ms)
        except PrefixError as exc:
            failed.append(
                DeadLetter.for_event("batch", cid, item.event, "prefix_unrenderable", str(exc))
            )
            continue
        groups.setdefault(key, []).append(item)
    return groups, failed
