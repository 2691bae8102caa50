"""Routing rules: does an event go to a connector?

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
* ``when`` conditions must all hold. A condition on a missing field is false, except
  ``ne``, ``not_in`` and ``exists: false``, which are true.
* Numeric ops (``gt gte lt lte``) are false unless both sides are numbers; booleans are
  not numbers. ``eq``/``in`` never equate a boolean with a number (``true`` is not ``1``).
* ``regex`` is a search (not a full match) and applies to strings only.
* ``sample_sessions`` keeps a fraction of sessions, decided by a stable hash of
  ``session_id`` (``event_id`` when there is no session), so all events of a session
  go or none do, on every worker and every run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from transforms.rules.events import MISSING, path_getter, split_path

OPS = ("eq", "ne", "in", "not_in", "exists", "gt", "gte", "lt", "lte", "regex")
"""The condition operators, as written in ``route.when[].op``."""

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
            regex that does not compile. Config validation calls this, so a bad rule is
            reported before the pipeline starts.
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
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"regex {value!r} does not compile: {exc}") from exc

        def search(e: dict[str, Any]) -> bool:
            got = get(e)
            return isinstance(got, str) and pattern.search(got) is not None

        return search
    raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")


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
        when: Iterable[dict[str, Any]] = (),
        sample_sessions: float = 1.0,
    ) -> RouteRule:
        """Compile a ``route`` config section (see the module docstring)."""
        conditions = tuple(
            (
                f"{c['field']} {c['op']} {c.get('value')!r}",
                compile_condition(c["field"], c["op"], c.get("value")),
            )
            for c in when
        )
        return cls(frozenset(events), frozenset(exclude_events), conditions, sample_sessions)

    def explain(self, event: dict[str, Any]) -> str | None:
        """Return None if the event routes here, else a short reason why it does not."""
        etype = event["event"]["type"]
        if etype in self.exclude_events:
            return f"event type {etype!r} is in exclude_events"
        if self.events and etype not in self.events:
            return f"event type {etype!r} is not in events"
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
