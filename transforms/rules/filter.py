"""Field filters: which data points of an event's groups a connector may see.

A group is any top-level object of the event (``metadata``, ``fluxdata``,
``attributes``...). Each group takes an ``allow`` list, a ``deny`` list, or both (allow
first, then deny)::

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
* A path means the same however the producer spelled the object: a dotted key is read as
  its segments, so ``deny: [geo.ip]`` removes ``{"geo": {"ip": ..}}`` and
  ``{"geo.ip": ..}`` alike (a kept dotted key keeps its spelling).
* Lists are transparent: a path reaches into every object of a list, so ``users.email``
  (also written ``users[].email``) removes ``email`` from each object of ``users``. Under
  ``allow``, list items with nothing allowed are dropped.
* Groups that no rule names pass through unchanged.
* ``hash: {paths: [metadata.user.id], key: ...}`` then replaces identifiers (paths from
  the event root, read the same way) with a keyed HMAC-SHA256 (see :class:`Hasher`).

The output shares unchanged subtrees with the input (no deep copy); later stages must
copy before they modify, which :mod:`transforms.rules.package` does.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GROUPS = ("metadata", "fluxdata")
"""The envelope's groups of data points (a filter may name any other top-level group too)."""

_DROP: Any = object()
"""What an allowed walk gives for a value with nothing allowed in it."""

_WILDCARD = re.compile(r"[*?\[]")


@dataclass(eq=False)
class _Node:
    """A trie of path patterns; ``terminal`` marks the end of a pattern (keep/drop here)."""

    exact: dict[str, _Node] = field(default_factory=dict)
    wild: list[tuple[re.Pattern[str], _Node]] = field(default_factory=list)
    wild_text: dict[str, _Node] = field(default_factory=dict)
    terminal: bool = False
    state: _State = field(init=False, repr=False)
    """This node alone as a walk state (set by :func:`compile_patterns`)."""

    def child(self, segment: str) -> _Node:
        if _WILDCARD.search(segment):
            node = self.wild_text.get(segment)
            if node is None:
                node = self.wild_text[segment] = _Node()
                self.wild.append((re.compile(fnmatch.translate(segment)), node))
            return node
        return self.exact.setdefault(segment, _Node())


MAX_MEMO_ENTRIES = 65536
"""Steps remembered per pattern trie. Event keys come from a small fixed set; past this
many (inputs whose keys are data), further steps are matched each time instead of
remembered, so memory stays bounded whatever the input."""


class _Memo:
    """What one pattern trie has remembered: its multi-node states and a count of steps."""

    __slots__ = ("entries", "states")

    def __init__(self) -> None:
        self.states: dict[tuple[int, ...], _State] = {}
        self.entries = 0


class _State:
    """The trie nodes one object's keys are matched against, with each key's step memoized.

    With wildcards a key can reach several nodes, and finding them means a regex match per
    pattern. The result depends only on (state, key), and event keys repeat from event to
    event, so each is computed once per state (a lazily built automaton). States made of
    several nodes are shared through the trie's :class:`_Memo`, so their number is bounded
    by the trie, and the steps remembered by ``MAX_MEMO_ENTRIES``.
    """

    __slots__ = ("children", "memo", "nodes", "steps")

    def __init__(self, nodes: tuple[_Node, ...], memo: _Memo):
        self.nodes = nodes
        self.memo = memo
        self.children: tuple[tuple[str, bool, _State], ...] | None = None
        """Set when this is one node without wildcards: its ``(key, terminal, state)``."""
        if len(nodes) == 1 and not nodes[0].wild:
            self.children = tuple(
                (key, child.terminal, child.state) for key, child in nodes[0].exact.items()
            )
        self.steps: dict[str, tuple[_State | None, bool]] = {}

    def step(self, key: str) -> tuple[_State | None, bool]:
        """The state reached by ``key`` (None: no pattern continues), and whether one ends."""
        hit = self.steps.get(key)
        if hit is None:
            out, whole = _step(self.nodes, key)
            nxt = None
            if len(out) == 1:
                nxt = out[0].state
            elif out:
                ids = tuple(id(n) for n in out)
                nxt = self.memo.states.get(ids)
                if nxt is None:
                    nxt = _State(tuple(out), self.memo)
                    if self.memo.entries < MAX_MEMO_ENTRIES:
                        self.memo.states[ids] = nxt
                        self.memo.entries += 1
            hit = (nxt, whole)
            if self.memo.entries < MAX_MEMO_ENTRIES:
                self.steps[key] = hit
                self.memo.entries += 1
        return hit


def normalize_pattern(pattern: str) -> list[str]:
    """Split a filter path into segments; a trailing ``.*`` means the whole subtree.

    ``[]`` after a segment (``users[].email``) is accepted and means the same as without
    it: lists are always transparent.

    Raises:
        ValueError: for an empty path or an empty segment (``a..b``).
    """
    text = pattern.replace("[]", "")
    text = text[:-2] if text.endswith(".*") else text
    segments = text.split(".")
    if not text or any(not s for s in segments):
        raise ValueError(f"filter path {pattern!r} has an empty segment")
    return segments


def _seal(node: _Node, memo: _Memo) -> None:
    """Give every node of a finished trie its walk state (children first)."""
    for child in node.exact.values():
        _seal(child, memo)
    for _, child in node.wild:
        _seal(child, memo)
    node.state = _State((node,), memo)


def compile_patterns(patterns: Iterable[str]) -> _Node:
    """Build the trie for a list of paths (see the module docstring for the syntax)."""
    root = _Node()
    for pattern in patterns:
        node = root
        for segment in normalize_pattern(pattern):
            node = node.child(segment)
        node.terminal = True
    _seal(root, _Memo())
    return root


def _step(nodes: Iterable[_Node], key: str) -> tuple[list[_Node], bool]:
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


def _dotted(obj: dict[str, Any]) -> bool:
    """Whether any key of ``obj`` is a dotted path (``"geo.ip"``)."""
    return "." in "".join(obj)


def _walk_key(state: _State, key: str) -> tuple[_State | None, bool]:
    """:meth:`_State.step` for a key that may be a dotted path: one step per segment."""
    if "." not in key:
        return state.steps.get(key) or state.step(key)
    nxt: _State | None = state
    for segment in key.split("."):
        assert nxt is not None
        nxt, whole = nxt.steps.get(segment) or nxt.step(segment)
        if whole:
            return None, True  # the rest of the key is inside a matched subtree
        if nxt is None:
            return None, False
    return nxt, False


def _allow_value(value: Any, state: _State) -> Any:
    """The allowed part of a value below a non-terminal trie state, or ``_DROP``."""
    if isinstance(value, dict):
        sub = _allow(value, state)
        return sub if sub else _DROP
    if isinstance(value, list):
        subs = [s for s in (_allow_value(v, state) for v in value) if s is not _DROP]
        return subs if subs else _DROP
    return _DROP


def _allow(obj: dict[str, Any], state: _State) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    children = state.children
    if children is not None and not _dotted(obj):
        # No wildcard here: visit the listed keys, not every key of the object.
        for key, terminal, child in children:
            if key not in obj:
                continue
            value = obj[key]
            if terminal:
                kept[key] = value
            else:
                sub = _allow_value(value, child)
                if sub is not _DROP:
                    kept[key] = sub
        return {k: kept[k] for k in obj if k in kept} if len(kept) > 1 else kept
    for key, value in obj.items():
        nxt, whole = _walk_key(state, key)
        if whole:
            kept[key] = value
        elif nxt is not None:
            sub = _allow_value(value, nxt)
            if sub is not _DROP:
                kept[key] = sub
    return kept


def _deny_value(value: Any, state: _State) -> Any:
    """A value below a non-terminal trie state, its denied parts removed.

    The same object when nothing was removed, so unchanged subtrees are shared.
    """
    if isinstance(value, dict):
        return _deny(value, state)
    if isinstance(value, list):
        subs = [_deny_value(v, state) for v in value]
        if all(a is b for a, b in zip(subs, value, strict=True)):
            return value
        return subs
    return value


def _deny(obj: dict[str, Any], state: _State) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    children = state.children
    if children is not None and not _dotted(obj):
        for key, terminal, child in children:
            if key not in obj:
                continue
            if terminal:
                if out is None:
                    out = dict(obj)
                del out[key]
            else:
                value = obj[key]
                sub = _deny_value(value, child)
                if sub is not value:
                    if out is None:
                        out = dict(obj)
                    out[key] = sub
        return obj if out is None else out
    for key, value in obj.items():
        nxt, whole = _walk_key(state, key)
        if whole:
            if out is None:
                out = dict(obj)
            del out[key]
        elif nxt is not None:
            sub = _deny_value(value, nxt)
            if sub is not value:
                if out is None:
                    out = dict(obj)
                out[key] = sub
    return obj if out is None else out


def _hash_value(value: Any, state: _State, digest: Callable[[Any], str]) -> Any:
    if isinstance(value, dict):
        return _hash(value, state, digest)
    if isinstance(value, list):
        subs = [_hash_value(v, state, digest) for v in value]
        if all(a is b for a, b in zip(subs, value, strict=True)):
            return value
        return subs
    return value


def _hash(obj: dict[str, Any], state: _State, digest: Callable[[Any], str]) -> dict[str, Any]:
    """``obj`` with every value a pattern ends at (not null) replaced by its digest."""
    out: dict[str, Any] | None = None
    for key, value in obj.items():
        nxt, whole = _walk_key(state, key)
        if whole:
            new = digest(value) if value is not None else None
        elif nxt is not None:
            new = _hash_value(value, nxt, digest)
        else:
            continue
        if new is not value:
            if out is None:
                out = dict(obj)
            out[key] = new
    return obj if out is None else out


def _has_wildcards(node: _Node) -> bool:
    return bool(node.wild) or any(_has_wildcards(c) for c in node.exact.values())


def _generate(root: _Node, kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Compile a trie without wildcards into Python source: ``_allow``/``_deny`` unrolled.

    The same results as the walk (same keys, same order, same sharing of unchanged
    objects; ``tests/test_filter_codegen.py``), without its per-key loop, tuple unpacking
    and recursive calls. Only the trie's keys reach the source, each as a string literal
    (``repr``), so a config can never inject code; the source is kept on the function
    (``__source__``) for inspection.
    """
    lines: list[str] = []
    names: dict[int, str] = {}
    scope: dict[str, Any] = {
        "_walk": _allow if kind == "allow" else _deny,
        "_value": _allow_value if kind == "allow" else _deny_value,
        "_DROP": _DROP,
    }

    def descend(k: str, child: _Node) -> list[str]:
        # Both walks: the child's function on the value under ``k`` when it is an object;
        # lists (rare) go to the general walk from the child's state.
        fn = emit(child)
        scope[f"{fn}_state"] = child.state
        return [
            f"    value = obj.get({k})",
            "    if isinstance(value, list):",
            f"        sub = _value(value, {fn}_state)",
            "    elif isinstance(value, dict):",
            f"        sub = {fn}(value)",
        ]

    def emit(node: _Node) -> str:
        name = f"_{kind}_{len(names)}"
        names[id(node)] = name
        scope[f"{name}_self"] = node.state
        # A dotted key ("geo.ip") may spell any path: the general walk reads it.
        body: list[str] = [
            '    if "." in "".join(obj):',
            f"        return _walk(obj, {name}_self)",
        ]
        if kind == "allow":
            body.append("    kept = {}")
            for key, child in node.exact.items():
                k = repr(key)
                if child.terminal:
                    body.append(f"    if {k} in obj:")
                    body.append(f"        kept[{k}] = obj[{k}]")
                else:
                    body.extend(descend(k, child))
                    body.append("    else:")
                    body.append("        sub = _DROP")
                    body.append("    if sub is not _DROP and sub:")
                    body.append(f"        kept[{k}] = sub")
            if len(node.exact) > 1:  # keys in the object's order, as the walk gives them
                body.append("    if len(kept) > 1:")
                body.append("        return {k: kept[k] for k in obj if k in kept}")
            body.append("    return kept")
        else:
            body.append("    out = None")
            for key, child in node.exact.items():
                k = repr(key)
                if child.terminal:
                    body.append(f"    if {k} in obj:")
                    body.append("        if out is None:")
                    body.append("            out = dict(obj)")
                    body.append(f"        del out[{k}]")
                else:
                    body.extend(descend(k, child))
                    body.append("    else:")
                    body.append("        sub = value")
                    body.append("    if sub is not value:")
                    body.append("        if out is None:")
                    body.append("            out = dict(obj)")
                    body.append(f"        out[{k}] = sub")
            body.append("    return obj if out is None else out")
        lines.extend([f"def {name}(obj):", *body, ""])
        return name

    top = emit(root)
    return _define("\n".join(lines), top, f"<filter {kind}>", scope)


def _define(
    source: str, name: str, filename: str, scope: dict[str, Any]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Run generated ``source`` in ``scope``; return its function ``name``, source attached."""
    exec(compile(source, filename, "exec"), scope)
    fn: Callable[[dict[str, Any]], dict[str, Any]] = scope[name]
    fn.__source__ = source  # type: ignore[attr-defined]
    return fn


def _walker(root: _Node, kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The fastest function equal to ``_allow``/``_deny`` from ``root``."""
    if not _has_wildcards(root):
        return _generate(root, kind)
    walk = _allow if kind == "allow" else _deny
    state = root.state
    return lambda obj: walk(obj, state)


@dataclass(frozen=True)
class GroupFilter:
    """The compiled allow/deny lists of one group."""

    allow: _Node | None
    deny: _Node | None
    allow_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = field(
        init=False, repr=False, compare=False
    )
    deny_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        allow = _walker(self.allow, "allow") if self.allow is not None else None
        deny = _walker(self.deny, "deny") if self.deny is not None else None
        object.__setattr__(self, "allow_fn", allow)
        object.__setattr__(self, "deny_fn", deny)

    def apply(self, group: Any) -> Any:
        """Filter one group's value (normally an object)."""
        if self.allow_fn is not None:
            group = self.allow_fn(group) if isinstance(group, dict) else {}
        if self.deny_fn is not None and isinstance(group, dict):
            group = self.deny_fn(group)
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
    root: _Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read like filter paths: dotted keys and lists cannot hide an identifier.
        object.__setattr__(self, "root", compile_patterns(".".join(p) for p in self.paths))

    def digest(self, value: Any) -> str:
        """The keyed hash of one value."""
        data = value.encode("utf-8") if isinstance(value, str) else orjson.dumps(value)
        return hmac.new(self.key, data, hashlib.sha256).hexdigest()[: self.length]

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the event with every configured path hashed (copies only those paths)."""
        return _hash(event, self.root.state, self.digest)


@dataclass(frozen=True)
class FieldFilter:
    """A connector's compiled filter over ``metadata`` and ``fluxdata``, then hashing."""

    groups: tuple[tuple[str, GroupFilter], ...]
    hasher: Hasher | None = None

    def __post_init__(self) -> None:
        # One generated function per filter replaces the method on the instance: the
        # per-event calls of the generic apply and each group's apply disappear. The
        # method stays the definition (tests/test_filter_codegen.py checks both agree).
        object.__setattr__(self, "apply", _fuse(self.groups, self.hasher))

    @classmethod
    def compile(cls, spec: Mapping[str, Any]) -> FieldFilter:
        """Compile ``{group: {allow: [...], deny: [...]}, hash: {...}}``.

        Groups not named pass through. ``hash`` is ``{paths: [dotted paths from the event
        root], key: str, length: int}``.
        """
        groups = []
        for name, rules in spec.items():
            if name == "hash" or not rules:
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


def _fuse(
    groups: tuple[tuple[str, GroupFilter], ...], hasher: Hasher | None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """:meth:`FieldFilter.apply` for these groups as one generated function.

    Group names appear in the source only as ``repr`` literals; the groups' own
    functions (generated or wildcard walks) and the hasher are passed in by name.
    """
    scope: dict[str, Any] = {}
    lines = ["def _filter(event):", "    out = dict(event)" if groups else "    out = event"]
    for n, (name, group) in enumerate(groups):
        key = repr(name)
        lines += [f"    if {key} in out:", f"        group = out[{key}]"]
        if group.allow_fn is not None:
            scope[f"_allow{n}"] = group.allow_fn
            lines.append(f"        group = _allow{n}(group) if isinstance(group, dict) else {{}}")
        if group.deny_fn is not None:
            scope[f"_deny{n}"] = group.deny_fn
            lines += ["        if isinstance(group, dict):", f"            group = _deny{n}(group)"]
        lines.append(f"        out[{key}] = group")
    if hasher is not None:
        scope["_hash"] = hasher.apply
        lines.append("    out = _hash(out)")
    lines.append("    return out")
    return _define("\n".join(lines) + "\n", "_filter", "<field filter>", scope)
