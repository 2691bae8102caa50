"""Field filters: which data points of ``metadata`` and ``fluxdata`` a connector may see.

Each group takes an ``allow`` list, a ``deny`` list, or both (allow first, then deny)::

    f = FieldFilter.compile({
        "metadata": {"allow": ["device.*", "player.*", "content.title"]},
        "fluxdata": {"deny": ["playhead_position_sec"]},
    })
    f.apply(event)   # a new event; the input is never modified

Path semantics:

* A path is dotted and relative to the group (``device.os`` inside ``metadata``).
* A path names a leaf or a whole subtree: ``device`` and ``device.*`` both mean
  everything under ``device``.
* ``*`` (and ``?``, ``[...]``) are wildcards within one path segment:
  ``geo.country_*`` matches ``geo.country_code``; ``*.id`` matches ``user.id`` and
  ``content.id``.
* An empty ``allow`` list removes the whole group's content (the group becomes ``{}``);
  an allow list applied to a group that is not an object also yields ``{}``.
* Fields outside ``metadata`` and ``fluxdata`` are never filtered.
* ``hash: {paths: [metadata.user.id], key: ...}`` then replaces identifiers (paths from
  the event root) with a keyed HMAC-SHA256 (see :class:`Hasher`).

The output shares unchanged subtrees with the input (no deep copy); later stages must
copy before they modify, which :mod:`transforms.rules.package` does.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from transforms.rules.events import get_path

GROUPS = ("metadata", "fluxdata")
"""The event groups a filter applies to."""

_WILDCARD = re.compile(r"[*?\[]")


@dataclass
class _Node:
    """A trie of path patterns; ``terminal`` marks the end of a pattern (keep/drop here)."""

    exact: dict[str, _Node] = field(default_factory=dict)
    wild: list[tuple[re.Pattern[str], _Node]] = field(default_factory=list)
    wild_text: dict[str, _Node] = field(default_factory=dict)
    terminal: bool = False

    def child(self, segment: str) -> _Node:
        if _WILDCARD.search(segment):
            node = self.wild_text.get(segment)
            if node is None:
                node = self.wild_text[segment] = _Node()
                self.wild.append((re.compile(fnmatch.translate(segment)), node))
            return node
        return self.exact.setdefault(segment, _Node())


def normalize_pattern(pattern: str) -> list[str]:
    """Split a filter path into segments; a trailing ``.*`` means the whole subtree.

    Raises:
        ValueError: for an empty path or an empty segment (``a..b``).
    """
    text = pattern[:-2] if pattern.endswith(".*") else pattern
    segments = text.split(".")
    if not text or any(not s for s in segments):
        raise ValueError(f"filter path {pattern!r} has an empty segment")
    return segments


def compile_patterns(patterns: Iterable[str]) -> _Node:
    """Build the trie for a list of paths (see the module docstring for the syntax)."""
    root = _Node()
    for pattern in patterns:
        node = root
        for segment in normalize_pattern(pattern):
            node = node.child(segment)
        node.terminal = True
    return root


def _step(nodes: list[_Node], key: str) -> tuple[list[_Node], bool]:
    """The trie nodes reached from ``nodes`` by ``key``, and whether any ends there."""
    out: list[_Node] = []
    for node in nodes:
        hit = node.exact.get(key)
        if hit is not None:
            out.append(hit)
        for regex, wnode in node.wild:
            if regex.match(key):
                out.append(wnode)
    return out, any(n.terminal for n in out)


def _allow(obj: dict[str, Any], nodes: list[_Node]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    if len(nodes) == 1 and not nodes[0].wild:
        # Fast path (no wildcard here): visit the listed keys, not every key of the object.
        for key, child in nodes[0].exact.items():
            if key not in obj:
                continue
            value = obj[key]
            if child.terminal:
                kept[key] = value
            elif isinstance(value, dict):
                sub = _allow(value, [child])
                if sub:
                    kept[key] = sub
        return {k: kept[k] for k in obj if k in kept} if len(kept) > 1 else kept
    for key, value in obj.items():
        nxt, whole = _step(nodes, key)
        if whole:
            kept[key] = value
        elif nxt and isinstance(value, dict):
            sub = _allow(value, nxt)
            if sub:
                kept[key] = sub
    return kept


def _deny(obj: dict[str, Any], nodes: list[_Node]) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    if len(nodes) == 1 and not nodes[0].wild:
        for key, child in nodes[0].exact.items():
            if key not in obj:
                continue
            if child.terminal:
                if out is None:
                    out = dict(obj)
                del out[key]
            elif isinstance(obj[key], dict):
                sub = _deny(obj[key], [child])
                if sub is not obj[key]:
                    if out is None:
                        out = dict(obj)
                    out[key] = sub
        return obj if out is None else out
    for key, value in obj.items():
        nxt, whole = _step(nodes, key)
        if not nxt:
            continue
        if whole:
            if out is None:
                out = dict(obj)
            del out[key]
        elif isinstance(value, dict):
            sub = _deny(value, nxt)
            if sub is not value:
                if out is None:
                    out = dict(obj)
                out[key] = sub
    return obj if out is None else out


@dataclass(frozen=True)
class GroupFilter:
    """The compiled allow/deny lists of one group."""

    allow: _Node | None
    deny: _Node | None

    def apply(self, group: Any) -> Any:
        """Filter one group's value (normally an object)."""
        if self.allow is not None:
            group = _allow(group, [self.allow]) if isinstance(group, dict) else {}
        if self.deny is not None and isinstance(group, dict):
            group = _deny(group, [self.deny])
        return group


@dataclass(frozen=True)
class Hasher:
    """Replaces identifiers with a keyed hash, so a team can count them without seeing them.

    ``HMAC-SHA256(key, value)`` as hex, truncated to ``length`` characters. Strings are
    hashed as they are; other values as their compact JSON (``42`` -> ``"42"``). ``null``
    and absent values stay as they are. The same key gives the same hash on every worker
    and run; a different key gives unrelated hashes.
    """

    paths: tuple[tuple[str, ...], ...]
    key: bytes = field(repr=False)
    length: int = 64

    def digest(self, value: Any) -> str:
        """The keyed hash of one value."""
        data = value.encode("utf-8") if isinstance(value, str) else orjson.dumps(value)
        return hmac.new(self.key, data, hashlib.sha256).hexdigest()[: self.length]

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the event with every configured path hashed (copies only those paths)."""
        from transforms.rules.package import set_path

        for path in self.paths:
            value = get_path(event, path, None)
            if value is not None:
                event = set_path(event, path, self.digest(value))
        return event


@dataclass(frozen=True)
class FieldFilter:
    """A connector's compiled filter over ``metadata`` and ``fluxdata``, then hashing."""

    groups: tuple[tuple[str, GroupFilter], ...]
    hasher: Hasher | None = None

    @classmethod
    def compile(cls, spec: Mapping[str, Any]) -> FieldFilter:
        """Compile ``{group: {allow: [...], deny: [...]}, hash: {...}}``.

        Groups not named pass through. ``hash`` is ``{paths: [dotted paths from the event
        root], key: str, length: int}``.
        """
        groups = []
        for name in GROUPS:
            rules = spec.get(name)
            if not rules:
                continue
            allow = rules.get("allow")
            deny = rules.get("deny")
            groups.append(
                (
                    name,
                    GroupFilter(
                        allow=compile_patterns(allow) if allow is not None else None,
                        deny=compile_patterns(deny) if deny else None,
                    ),
                )
            )
        hasher = None
        hash_spec = spec.get("hash")
        if hash_spec:
            hasher = Hasher(
                tuple(tuple(p.split(".")) for p in hash_spec["paths"]),
                hash_spec["key"].encode("utf-8"),
                hash_spec.get("length", 64),
            )
        return cls(tuple(groups), hasher)

    @property
    def is_identity(self) -> bool:
        """True when the filter lets everything through (no copies needed)."""
        return not self.groups and self.hasher is None

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the filtered event (a new top-level dict; the input is untouched)."""
        out = event
        if self.groups:
            out = dict(event)
            for name, group_filter in self.groups:
                if name in out:
                    out[name] = group_filter.apply(out[name])
        if self.hasher is not None:
            out = self.hasher.apply(out)
        return out
