"""Routing rules that change while a streaming job runs, without a restart.

    rules = LiveRules(config, source="gs://bucket/delivery.yaml", refresh_s=60)
    rules.by_id()["ops"].route.matches(event)    # always the rules in force now

The Route, Filter and Package stages ask ``rules`` for the compiled connectors on every
chunk. When ``refresh_s`` has passed since the last read, the first caller in the worker
process re-reads ``source`` (local, ``gs://``, ``s3://``), validates it completely and,
if it is valid, swaps in its route/filter/package rules for events processed from then
on. A process-wide cache means one read per worker process per period, however many
DoFn instances share it.

What cannot change without a restart (a new graph): the set of connectors (ids and
types) and their ``deliver``/``retry`` sections, since sinks, batching and timers are
built from them. A new config that adds or removes connectors is rejected and logged
("restart required"); one that changes ``deliver``/``retry`` applies its other changes
and logs that those sections need a restart. A changed ``package.function`` reference
(set, changed or removed) is a restart too: each worker imports a function once, and a new
reference may need a package the workers do not have yet. The reload applies everything
else, keeps each connector's function in force, and logs that the function needs a
restart. A config that fails validation is rejected with every problem logged, and the
previous rules stay in force.

Why not the usual slowly-updating side input (``PeriodicImpulse``): it fails on the
DirectRunner in streaming mode (apache/beam#26577); a TTL-refreshed cache read inside
the DoFns works the same on every runner.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from transforms.config import (
    CompiledConnector,
    ConfigError,
    DeliveryConfig,
    compile_connectors,
    load_config,
)

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    loaded_at: float
    config: DeliveryConfig
    connectors: list[CompiledConnector]
    by_id: dict[str, CompiledConnector]
    version: int


_CACHE: dict[tuple[str, float], _Entry] = {}
_LOCK = threading.Lock()


def _shape(config: DeliveryConfig) -> list[tuple[str, str]]:
    return [(c.id, c.type) for c in config.connectors]


def _restart_only(config: DeliveryConfig) -> dict[str, Any]:
    return {c.id: (c.deliver, c.retry) for c in config.connectors}


def _keep_function(fresh: CompiledConnector, function: str | None) -> CompiledConnector:
    """``fresh`` with the ``package.function`` in force, in its source too.

    The source matters: a chunk carries its compiled connector to another process as its
    source (:meth:`CompiledConnector.__reduce__`), which is compiled again there.
    """
    if fresh.packager.function == function:
        return fresh
    source = fresh.source
    if source is not None:
        package = source.package.model_copy(update={"function": function})
        source = source.model_copy(update={"package": package})
    return replace(fresh, packager=replace(fresh.packager, function=function), source=source)


class LiveRules:
    """The compiled connectors of a config, optionally re-read every ``refresh_s`` seconds.

    Picklable (it carries the validated config and where to re-read it), so it travels
    inside DoFns to any runner.
    """

    def __init__(
        self, config: DeliveryConfig, source: str | None = None, refresh_s: float | None = None
    ):
        if refresh_s is not None and (source is None or refresh_s <= 0):
            raise ValueError("config refresh needs a config path and a positive refresh_s")
        self.config = config
        self.source = source
        self.refresh_s = refresh_s
        self._local: _Entry | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "source": self.source, "refresh_s": self.refresh_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["source"], state["refresh_s"])  # type: ignore[misc]

    def _entry(self) -> _Entry:
        if self.refresh_s is None or self.source is None:
            if self._local is None:
                compiled = compile_connectors(self.config)
                self._local = _Entry(0.0, self.config, compiled, {c.id: c for c in compiled}, 0)
            return self._local
        key = (self.source, self.refresh_s)
        now = time.monotonic()
        entry = _CACHE.get(key)
        if entry is not None and now - entry.loaded_at < self.refresh_s:
            return entry
        with _LOCK:
            entry = _CACHE.get(key)
            if entry is None:
                compiled = compile_connectors(self.config)
                entry = _Entry(now, self.config, compiled, {c.id: c for c in compiled}, 0)
            elif now - entry.loaded_at >= self.refresh_s:
                entry = self._reload(entry, now)
            _CACHE[key] = entry
            return entry

    def _reload(self, current: _Entry, now: float) -> _Entry:
        assert self.source is not None
        stale = replace(current, loaded_at=now)
        try:
            fresh = load_config(self.source)
        except ConfigError as exc:
            log.error("config reload rejected, previous rules stay in force: %s", exc)
            return stale
        if fresh == current.config:
            return stale
        if _shape(fresh) != _shape(current.config):
            log.error(
                "config reload rejected: %s adds, removes or retypes connectors (%s -> %s); "
                "restart required (a new graph). Previous rules stay in force.",
                self.source,
                _shape(current.config),
                _shape(fresh),
            )
            return stale
        compiled = compile_connectors(fresh)
        if _restart_only(fresh) != _restart_only(current.config):
            log.warning(
                "config reload: deliver/retry changes in %s need a restart; "
                "applying the new route/filter/package rules only",
                self.source,
            )
            old = current.by_id
            compiled = [replace(c, deliver=old[c.id].deliver) for c in compiled]
        # Compared with the functions in force (not the last file read, which a previous
        # reload may have applied without its function).
        in_force = {c.id: c.packager.function for c in current.connectors}
        if any(c.packager.function != in_force[c.id] for c in compiled):
            log.warning(
                "config reload: package.function changes in %s need a restart (%s); "
                "applying the other changes, the functions in force stay",
                self.source,
                ", ".join(
                    f"{c.id}: {in_force[c.id]} -> {c.packager.function}"
                    for c in compiled
                    if c.packager.function != in_force[c.id]
                ),
            )
            compiled = [_keep_function(c, in_force[c.id]) for c in compiled]
        log.warning("config reloaded from %s (version %d)", self.source, current.version + 1)
        return _Entry(now, fresh, compiled, {c.id: c for c in compiled}, current.version + 1)

    def connectors(self) -> list[CompiledConnector]:
        """The compiled connectors in force now, in config order."""
        return self._entry().connectors

    def by_id(self) -> dict[str, CompiledConnector]:
        """The compiled connectors in force now, by id."""
        return self._entry().by_id

    @property
    def version(self) -> int:
        """How many reloads have been applied in this process (0: the initial config)."""
        return self._entry().version


def as_rules(config: DeliveryConfig | LiveRules) -> LiveRules:
    """Accept a plain config (static rules) or LiveRules."""
    return config if isinstance(config, LiveRules) else LiveRules(config)
