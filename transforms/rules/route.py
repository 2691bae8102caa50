r"""Routing rules: does an event go to a connector?

A rule is compiled once from the connector's ``route`` config and then called per event::

    rule = RouteRule.compile(
        events=["heartbeat", "error"],
        exclude_events=[],
        when=[{"field": "metadata.geo.country_code", "op": "in", "value": ["US", "CA"]}],
        sample_sessions=1.0,
    )
    rule.matches(event)   # True / False
    rule.explain(event)   # None when it matches, else the reason it does not

Semantics (fixed by the config contract):

* ``events`` empty or omitted means every type; ``exclude_events`` always wins.
* ``when`` items must all hold. An item is a condition ``{field, op, value}`` or a group:
  ``{any: [items]}`` (one holds), ``{all: [items]}`` (every one holds), ``{not: item}``;
  groups nest up to :data:`MAX_DEPTH` levels (see :func:`compile_when`).
* A condition on a missing field is false, except ``ne``, ``not_in`` and
  ``exists: false``, which are true; inside ``not`` that answer is then negated.
* ``contains`` is a substring test on a string field, or list membership (compared as
  ``eq`` compares) on a list field; ``starts_with``/``ends_with`` take a string value and
  are false on non-strings. ``{field: metadata.device.os, op: contains, value: OS}``
  routes ``"iOS"`` and ``"tvOS"``.
* Numeric ops (``gt gte lt lte``) are false unless both sides are numbers; booleans are
  not numbers. ``eq``/``in`` never equate a boolean with a number (``true`` is not ``1``).
* ``regex`` is a search (not a full match) and applies to strings only. It runs on RE2,
  whose time is linear in the value's length, so no value (up to 1 MiB) can make
  routing slow. See `Regex syntax`_.
* ``sample_sessions`` keeps a fraction of sessions, decided by a stable hash of
  ``session_id`` (``event_id`` when there is no session), so all events of a session
  go or none do, on every worker and every run.
* ``unmatched: true`` makes a catch-all: it receives only the events that no connector
  without ``unmatched`` routed, further narrowed by its own rule. It is decided on the
  original event against the other rules (:func:`route_events`), so every runner gives
  the same answer. An event a catch-all takes is routed, not ``unmatched``.

Regex syntax
------------

``regex`` patterns use RE2 syntax (https://github.com/google/re2/wiki/Syntax), which is
Python's ``re`` syntax without the constructs that need backtracking. Config validation
refuses those, naming the construct, rather than run them on another engine:
backreferences (``\1``, ``(?P=name)``), lookahead and lookbehind (``(?=..)``, ``(?!..)``,
``(?<=..)``, ``(?<!..)``), atomic groups ``(?>..)``, possessive quantifiers (``a*+``),
conditionals, comments ``(?#..)``, the inline flags ``x a u L`` (RE2 has ``i m s U``),
``\Z`` (write ``\z``), ``\uXXXX`` / ``\N{..}`` (write ``\x{e9}``), counts above 1000,
and ``{,n}`` (RE2 would read it as text; write ``{0,n}``). Where both engines accept a
pattern the answer is the same (a tested property), except:

* ``\w``, ``\d``, ``\s`` and ``\b`` are ASCII-only: ``^\w+$`` does not match ``"café"``.
  For any script write Unicode classes: ``[\pL\pN_]`` (a word character), ``\pL``,
  ``\p{Greek}``, ``\p{Nd}``.
* ``$`` (without ``(?m)``) is the end of the value only, not also before a final newline.

Examples: ``{field: metadata.player.name, op: regex, value: "^(hls|Shaka)"}`` routes
``"hls.js"``; ``value: "(i)OS\1"`` is a config error (backreference).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import re2

from transforms.rules.events import MISSING, path_getter, split_path

Op = Literal[
    "eq",
    "ne",
    "in",
    "not_in",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "regex",
    "contains",
    "starts_with",
    "ends_with",
]
"""A condition operator, as written in ``route.when[].op`` (the config model's type)."""

OPS: tuple[str, ...] = get_args(Op)
"""The condition operators, in the order the docs list them."""

GROUPS = ("any", "all", "not")
"""The group keys of a ``when`` item: ``{any: [...]}``, ``{all: [...]}``, ``{not: item}``."""

MAX_DEPTH = 32
"""How deeply groups may nest. Deeper is a config error, not a stack overflow."""

Predicate = Callable[[dict[str, Any]], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """Equality that never equates a boolean with a number."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def compile_condition(field: str, op: str, value: Any) -> Predicate:
    """Compile one ``{field, op, value}`` condition into a predicate over events.

    Raises:
        ValueError: for an unknown op, a ``value`` of the wrong kind for the op, or a
            regex RE2 cannot run (see :func:`compile_regex`). Config validation calls
            this, so a bad rule is reported before the pipeline starts.
    """
    get = path_getter(split_path(field))
    if op == "exists":
        if not isinstance(value, bool):
            raise ValueError(f"op 'exists' needs value true or false, got {value!r}")
        want = value
        return lambda e: (get(e) is not MISSING) == want
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise ValueError(f"op {op!r} needs a list value, got {value!r}")
        choices = list(value)
        if choices and all(isinstance(c, str) for c in choices):
            # Strings only: a set lookup gives the same answers (only a string equals a
            # string; MISSING and booleans are not strings) without a call per choice.
            strings = frozenset(choices)
            if op == "in":
                return lambda e: isinstance(got := get(e), str) and got in strings
            return lambda e: not (isinstance(got := get(e), str) and got in strings)
        if op == "in":
            return lambda e: _member(get(e), choices)
        return lambda e: not _member(get(e), choices)
    if op == "eq":
        return lambda e: _same(get(e), value)
    if op == "ne":
        return lambda e: not _same(get(e), value)
    if op in ("gt", "gte", "lt", "lte"):
        if not _is_number(value):
            raise ValueError(f"op {op!r} needs a number value, got {value!r}")
        compare: Callable[[Any], bool] = {
            "gt": lambda x: x > value,
            "gte": lambda x: x >= value,
            "lt": lambda x: x < value,
            "lte": lambda x: x <= value,
        }[op]

        def numeric(e: dict[str, Any]) -> bool:
            got = get(e)
            return _is_number(got) and compare(got)

        return numeric
    if op == "regex":
        if not isinstance(value, str):
            raise ValueError(f"op 'regex' needs a string pattern, got {value!r}")
        pattern = compile_regex(value)

        def search(e: dict[str, Any]) -> bool:
            got = get(e)
            # Searching UTF-8 bytes skips the binding's per-call mapping of offsets back
            # to str positions (a yes/no needs none). surrogatepass: a lone surrogate is
            # searched as the invalid UTF-8 it encodes to, never an exception.
            return (
                isinstance(got, str)
                and pattern.search(got.encode("utf-8", "surrogatepass")) is not None
            )

        return search
    if op == "contains":
        if isinstance(value, (list, dict)) or value is MISSING:
            raise ValueError(
                f"op 'contains' needs a string (a substring, or a list member) or a single "
                f"number, boolean or null (a list member), got {value!r}"
            )
        return _contains(get, value)
    if op in ("starts_with", "ends_with"):
        if not isinstance(value, str):
            raise ValueError(f"op {op!r} needs a string value, got {value!r}")
        affix = value
        if op == "starts_with":
            return lambda e: isinstance(got := get(e), str) and got.startswith(affix)
        return lambda e: isinstance(got := get(e), str) and got.endswith(affix)
    raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")


def _contains(get: Callable[[dict[str, Any]], Any], value: Any) -> Predicate:
    """``contains``: a substring of a string field, or a member of a list field.

    List members compare as ``eq`` does: ``true`` is not a member of ``[1]``.
    """
    if isinstance(value, str):
        text = value

        def contains_text(e: dict[str, Any]) -> bool:
            got = get(e)
            if isinstance(got, str):
                return text in got
            # Only a string equals a string, so ``in`` is the eq membership here.
            return isinstance(got, list) and text in got

        return contains_text

    def contains_member(e: dict[str, Any]) -> bool:
        got = get(e)
        return isinstance(got, list) and any(_same(x, value) for x in got)

    return contains_member


Reveal = Callable[[str, dict[str, Any]], str | None]
"""What dry-run may show of an event's value at a field path (None: nothing)."""


@dataclass(frozen=True)
class When:
    """A compiled ``when`` item: one condition, or a group of items.

    ``test`` answers for an event; the rest serves :meth:`describe` (dry-run's "why")::

        item = When.compile({"any": [{"field": "a", "op": "eq", "value": 1},
                                     {"not": {"field": "b", "op": "exists", "value": True}}]})
        item.test({"a": 2, "b": 0})                      # False
        item.describe({"a": 2, "b": 0}, "when[0]")
        # "when[0].any[0]: a eq 1 was false; when[0].any[1].not: b exists True was true"
    """

    kind: str
    """``condition``, ``any``, ``all`` or ``not``."""
    test: Predicate
    children: tuple[When, ...] = ()
    field: str = ""
    text: str = ""
    """For a condition: ``field op value`` as written, e.g. ``metadata.device.os eq 'iOS'``."""

    @classmethod
    def compile(cls, spec: Any, where: str = "when", depth: int = 0) -> When:
        """Compile a condition or group; ``where`` is its place, for error messages.

        Raises:
            ValueError: naming ``where`` (e.g. ``when[1].any[0]``) and what is wrong.
        """
        if depth > MAX_DEPTH:
            raise ValueError(
                f"{where}: groups nest deeper than {MAX_DEPTH} levels. Fix: flatten the "
                "condition (all of a list of all-groups is one all-group)."
            )
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"{where}: expected a condition {{field, op, value}} or a group "
                f"{{any: [...]}}, {{all: [...]}} or {{not: ...}}, got {spec!r}"
            )
        groups = [k for k in spec if k in GROUPS]
        if groups:
            if len(spec) != 1:
                raise ValueError(
                    f"{where}: a group has exactly one key (any, all or not), got "
                    f"{', '.join(map(str, spec))}. Fix: nest them, e.g. "
                    "{all: [{any: [...]}, {not: ...}]}."
                )
            return cls._group(groups[0], spec[groups[0]], where, depth)
        keys = set(spec)
        if "field" not in keys or "op" not in keys or keys - {"field", "op", "value"}:
            extra = sorted(map(str, keys - {"field", "op", "value"}))
            raise ValueError(
                f"{where}: expected a condition {{field, op, value}} or a group "
                "{any: [...]}, {all: [...]} or {not: ...}, got keys "
                f"{', '.join(sorted(map(str, keys))) or 'none'}"
                + (f" (unknown: {', '.join(extra)})" if extra else "")
            )
        field, op, value = spec["field"], spec["op"], spec.get("value")
        if not isinstance(field, str) or not isinstance(op, str):
            raise ValueError(f"{where}: field and op must be strings, got {field!r}, {op!r}")
        try:
            predicate = compile_condition(field, op, value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return cls("condition", predicate, field=field, text=f"{field} {op} {value!r}")

    @classmethod
    def _group(cls, kind: str, body: Any, where: str, depth: int) -> When:
        if kind == "not":
            child = cls.compile(body, f"{where}.not", depth + 1)
            inner = child.test
            return cls("not", lambda e: not inner(e), (child,))
        if not isinstance(body, list) or not body:
            raise ValueError(
                f"{where}.{kind}: needs a non-empty list of conditions or groups, got "
                f"{body!r}. Fix: list at least one item, or remove the group."
            )
        children = tuple(
            cls.compile(item, f"{where}.{kind}[{i}]", depth + 1) for i, item in enumerate(body)
        )
        tests = tuple(c.test for c in children)
        if len(tests) == 1:
            return cls(kind, tests[0], children)  # any/all of one item is the item
        if kind == "any":
            return cls("any", lambda e: any(t(e) for t in tests), children)
        return cls("all", lambda e: all(t(e) for t in tests), children)

    def describe(self, event: dict[str, Any], where: str, reveal: Reveal | None = None) -> str:
        """Why this item has the value it has for ``event``, naming the conditions.

        ``reveal(field, event)`` says what to show of the event's value (e.g. ``'FR'``),
        or None to show nothing; without it no event value is shown.
        """
        if self.kind == "condition":
            held = "true" if self.test(event) else "false"
            shown = reveal(self.field, event) if reveal is not None else None
            return f"{where}: {self.text} was {held}" + (f" (got {shown})" if shown else "")
        if self.kind == "not":
            return self.children[0].describe(event, f"{where}.not", reveal)
        value = self.test(event)
        decisive = [
            (i, c) for i, c in enumerate(self.children) if c.test(event) == (self.kind == "any")
        ]
        # all: false because of its first false item; any: true because of its first true
        # item. Otherwise every item took part (all true, or all false).
        told = decisive[:1] if value == (self.kind == "any") else list(enumerate(self.children))
        return "; ".join(c.describe(event, f"{where}.{self.kind}[{i}]", reveal) for i, c in told)


def compile_when(spec: Mapping[str, Any], where: str = "when") -> Predicate:
    """Compile one ``when`` item, a condition or a group, into a predicate over events.

    ``{field, op, value}`` is a condition; ``{any: [items]}`` holds when one item holds,
    ``{all: [items]}`` when every item holds, ``{not: item}`` when the item does not.
    Groups nest (up to :data:`MAX_DEPTH`); a missing field inside ``not`` follows the
    op's missing-field rule, then is negated::

        when = compile_when({"not": {"field": "metadata.user.subscription",
                                     "op": "eq", "value": "free"}})
        when({"metadata": {}})   # True: eq on a missing field is false, negated

    Raises:
        ValueError: naming the bad part (``when.any[0]: unknown op 'nope' ...``): an
            unknown op or key, an empty ``any``/``all``, a group with two keys, too deep.
    """
    return When.compile(spec, where).test


RE2_SYNTAX = "https://github.com/google/re2/wiki/Syntax"
"""Where the accepted ``regex`` syntax is documented."""

# What RE2's compile error says -> the construct, in the words of the error we raise.
# RE2 names only the start of the offending text, e.g. "invalid perl operator: (?=".
_UNSUPPORTED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(error), construct)
    for error, construct in (
        (r"invalid escape sequence: \\[1-9]", r"backreference \N"),
        (r"invalid escape sequence: \\k", r"backreference \k<name>"),
        (r"invalid perl operator: \(\?P", "backreference (?P=name)"),
        (r"invalid perl operator: \(\?=", "lookahead (?=...)"),
        (r"invalid perl operator: \(\?!", "negative lookahead (?!...)"),
        (r"invalid perl operator: \(\?<=", "lookbehind (?<=...)"),
        (r"invalid perl operator: \(\?<!", "negative lookbehind (?<!...)"),
        (r"invalid perl operator: \(\?>", "atomic group (?>...)"),
        (r"invalid perl operator: \(\?#", "comment (?#...)"),
        (r"invalid perl operator: \(\?\(", "conditional (?(...)...)"),
        (r"invalid perl operator: \(\?[-a-zA-Z]", "inline flag; RE2 has only i, m, s and U"),
        (r"bad repetition operator: .*\+$", "possessive quantifier such as *+"),
        (r"invalid repetition size", "repetition count above 1000"),
        (r"invalid escape sequence: \\Z", r"\Z; write \z for the end of the text"),
        (r"invalid escape sequence: \\[uUN]", r"\u, \U or \N{...} escape; write \x{e9}"),
    )
)

# ``x{,n}`` and ``x{,}``: Python repeats x, RE2 reads the braces as text. Refused, so
# that no pattern quietly changes meaning. Escapes and ``\Q...\E`` are skipped, and
# ``[...]`` sets (where braces are text in both) by _outside_sets.
_OPEN_MIN_REPEAT = re.compile(r"\{,\d*\}")


def compile_regex(pattern: str) -> Any:
    """Compile a route ``regex`` pattern with RE2 (see `Regex syntax`_ above).

    ``compile_regex("^(hls|Shaka)").search(b"hls.js")`` finds a match, in time linear in
    the value's length whatever the pattern. There is no fallback to Python's ``re``.

    Raises:
        ValueError: the pattern uses a construct RE2 lacks (named in the message), or
            does not compile.
    """
    if _OPEN_MIN_REPEAT.search(_outside_sets(pattern)):
        raise ValueError(_unsupported_message(pattern, "{,n} repetition; write {0,n}"))
    options = re2.Options()
    options.log_errors = False  # the ValueError says it; RE2 would also print to stderr
    options.never_capture = True  # only "is there a match" is asked: no group bookkeeping
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = " ".join(
            a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args
        )
        for error, construct in _UNSUPPORTED:
            if error.match(detail):
                raise ValueError(_unsupported_message(pattern, construct)) from exc
        raise ValueError(
            f"regex {pattern!r} does not compile: {detail}; route regexes use RE2 "
            f"syntax: {RE2_SYNTAX}"
        ) from exc


def _unsupported_message(pattern: str, construct: str) -> str:
    return (
        f"regex {pattern!r} uses a construct RE2 does not support ({construct}); route "
        f"regexes run on RE2 so that no event can make routing slow: {RE2_SYNTAX}"
    )


def _outside_sets(pattern: str) -> str:
    r"""The pattern's text outside escapes, ``\Q...\E`` and ``[...]`` sets.

    Each such part becomes one space: ``a\{,3}[{,3}]x`` -> ``a ,3} x``.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("\\Q", i):
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
            else:
                i += 2
            out.append(" ")
        elif c == "[":
            i += 1
            if pattern.startswith("^", i):
                i += 1
            if pattern.startswith("]", i):  # a ']' first in a set is a character
                i += 1
            while i < n and pattern[i] != "]":
                if pattern[i] == "\\":
                    i += 1
                elif pattern.startswith("[:", i) and (end := pattern.find(":]", i + 2)) >= 0:
                    i = end + 1
                i += 1
            i += 1
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _member(got: Any, choices: Sequence[Any]) -> bool:
    if got is MISSING:
        return False
    return any(_same(got, c) for c in choices)


@functools.lru_cache(maxsize=65536)
def session_bucket(session_key: str) -> float:
    """Map a session id to a stable number in [0, 1): the same on every machine and run."""
    digest = hashlib.blake2b(session_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class RouteRule:
    """A connector's compiled routing rule."""

    events: frozenset[str]
    exclude_events: frozenset[str]
    conditions: tuple[tuple[str, Predicate], ...]
    sample_sessions: float
    unmatched: bool = False
    """A catch-all: it receives only events no connector without ``unmatched`` took (see
    :func:`route_events`); its own events/exclude/when/sample still narrow them."""
    items: tuple[When, ...] = dataclasses.field(default=(), repr=False, compare=False)
    """The compiled ``when`` items, for :meth:`explain`; ``conditions`` holds their tests."""
    types: frozenset[str] | None = dataclasses.field(init=False, repr=False, compare=False)
    """The event types that may match (``events`` minus ``exclude_events``); None: any
    type not excluded."""
    predicates: tuple[Predicate, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        types = self.events - self.exclude_events if self.events else None
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "predicates", tuple(p for _, p in self.conditions))

    @classmethod
    def compile(
        cls,
        events: Iterable[str] = (),
        exclude_events: Iterable[str] = (),
        when: Iterable[Mapping[str, Any]] = (),
        sample_sessions: float = 1.0,
        unmatched: bool = False,
    ) -> RouteRule:
        """Compile a ``route`` config section (see the module docstring).

        Raises:
            ValueError: a ``when`` item that does not compile, named by its place
                (``when[1].any[0]: ...``).
        """
        items = tuple(When.compile(c, f"when[{i}]") for i, c in enumerate(when))
        # A flat condition's test is compile_condition's own predicate: groups add no
        # call to the rules that do not use them.
        conditions = tuple((item.text or item.kind, item.test) for item in items)
        return cls(
            frozenset(events),
            frozenset(exclude_events),
            conditions,
            sample_sessions,
            unmatched,
            items,
        )

    def explain(self, event: dict[str, Any], reveal: Reveal | None = None) -> str | None:
        """Return None if the event routes here, else a short reason why it does not.

        For a failed ``when`` item the reason names the conditions that decided it, e.g.
        ``condition failed: when[1].any[0]: metadata.geo.country_code in ['US', 'CA']
        was false (got 'FR')``; the ``got`` part only where ``reveal`` shows the value.
        A catch-all's own rule only (see :func:`explain_routes` for the whole answer).
        """
        etype = event["event"]["type"]
        if etype in self.exclude_events:
            return f"event type {etype!r} is in exclude_events"
        if self.events and etype not in self.events:
            return f"event type {etype!r} is not in events"
        if self.items:
            for i, item in enumerate(self.items):
                if not item.test(event):
                    return "condition failed: " + item.describe(event, f"when[{i}]", reveal)
        else:
            for text, predicate in self.conditions:
                if not predicate(event):
                    return f"condition failed: {text}"
        if self.sample_sessions < 1.0:
            key = event.get("session_id")
            key = key if isinstance(key, str) else event["event_id"]
            if session_bucket(key) >= self.sample_sessions:
                return f"session sampled out (sample_sessions={self.sample_sessions})"
        return None

    def select(self, events: Sequence[dict[str, Any]], kinds: Sequence[str]) -> list[int]:
        """The indices of the ``events`` that route here, in order.

        ``kinds[i]`` is ``events[i]``'s ``event.type``, read once for all connectors. The
        answer is that of :meth:`matches` for each event. Event types are checked from
        ``kinds`` without a call per event; conditions and sampling are evaluated only
        for the events whose type may match.
        """
        types = self.types
        if types is not None:
            candidates = [i for i, kind in enumerate(kinds) if kind in types]
        else:
            excluded = self.exclude_events
            candidates = [i for i, kind in enumerate(kinds) if kind not in excluded]
        if not self.predicates and self.sample_sessions >= 1.0:
            return candidates
        admits = self._admits
        return [i for i in candidates if admits(events[i])]

    def matches(self, event: dict[str, Any]) -> bool:
        """True if the event routes to this connector (``explain`` without the words)."""
        etype = event["event"]["type"]
        types = self.types
        if types is not None:
            if etype not in types:
                return False
        elif etype in self.exclude_events:
            return False
        return self._admits(event)

    def _admits(self, event: dict[str, Any]) -> bool:
        """The conditions and the session sample, for an event whose type may match."""
        for predicate in self.predicates:
            if not predicate(event):
                return False
        if self.sample_sessions < 1.0:
            key = event.get("session_id")
            key = key if isinstance(key, str) else event["event_id"]
            return session_bucket(key) < self.sample_sessions
        return True


def route_events(
    rules: Sequence[RouteRule], events: Sequence[dict[str, Any]], kinds: Sequence[str]
) -> tuple[list[list[int]], int]:
    """Route a slice of events to every connector: the hits per rule, and how many no rule took.

    ``hits[j]`` lists, in order, the indices of the ``events`` that go to ``rules[j]``.
    The rules without ``unmatched`` are asked first; a catch-all (``unmatched: true``)
    then selects among the events none of them took, with its own rule::

        hits, unmatched = route_events([errors_only, catch_all], events, kinds)
        # every event is in hits[0] or (if catch_all's own rule admits it) in hits[1];
        # unmatched counts the events in neither.

    Decided on the original events only, so the answer is the same on every runner.
    The count is of events no connector took: an event a catch-all takes is routed.
    """
    hits: list[list[int]] = [[] for _ in rules]
    taken = [False] * len(events)
    catch_alls = []
    for j, rule in enumerate(rules):
        if rule.unmatched:
            catch_alls.append(j)
            continue
        mine = hits[j] = rule.select(events, kinds)
        for i in mine:
            taken[i] = True
    if catch_alls:
        rest = [i for i, t in enumerate(taken) if not t]
        if rest:
            sub_events = [events[i] for i in rest]
            sub_kinds = [kinds[i] for i in rest]
            for j in catch_alls:
                mine = hits[j] = [rest[k] for k in rules[j].select(sub_events, sub_kinds)]
                for i in mine:
                    taken[i] = True
    return hits, taken.count(False)


def explain_routes(
    rules: Sequence[tuple[str, RouteRule]],
    event: dict[str, Any],
    reveal: Reveal | None = None,
) -> list[str | None]:
    """:meth:`RouteRule.explain` for every ``(connector_id, rule)``, catch-alls included.

    A catch-all that the event would otherwise reach is told it was taken elsewhere:
    ``"taken by ops, archive (unmatched: true receives only events no other connector
    takes)"``. The answers agree with :func:`route_events` for a one-event slice.
    """
    takers = [cid for cid, rule in rules if not rule.unmatched and rule.matches(event)]
    out: list[str | None] = []
    for _, rule in rules:
        reason = rule.explain(event, reveal)
        if reason is None and rule.unmatched and takers:
            reason = (
                f"taken by {', '.join(takers)} (unmatched: true receives only events no "
                "other connector takes)"
            )
        out.append(reason)
    return out
