"""Where a batch is written: rendered prefixes and content-derived object names.

A prefix is a template rendered from each event's time (UTC)::

    p = PrefixTemplate.compile("raw/{year}/{month}/{day}/{hour}/")
    p.render(connector="archive", event_type="heartbeat", time_ms=1764136800123)
    # 'raw/2025/11/26/06/'

Placeholders: ``{year} {month} {day} {hour} {minute}`` (zero-padded, from the event
time), ``{connector}`` and ``{event_type}``. An event whose time is missing or unreadable
cannot fill a time placeholder: :meth:`PrefixTemplate.render` raises
:class:`PrefixError` and the caller dead-letters that event with the reason.

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

TIME_FIELDS = ("year", "month", "day", "hour", "minute")
PLACEHOLDERS = (*TIME_FIELDS, "connector", "event_type")
"""The names a prefix may use."""


class PrefixError(ValueError):
    """A prefix that cannot be rendered for an event (e.g. it has no event time)."""


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
        values = {"connector": connector, "event_type": event_type}
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
    """The content-derived name of a batch: ``<prefix><connector>-<digest><extension>``."""
    return f"{prefix}{connector}-{batch_digest(event_ids)}{extension}"


def stable_shard(key: str, shards: int) -> int:
    """A shard in ``range(shards)`` chosen by a stable hash of ``key`` (same on every worker)."""
    if shards <= 1:
        return 0
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
