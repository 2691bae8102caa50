"""Connectors: one module per destination type, each implementing :class:`~.base.Sink`.

Batching (:mod:`transforms.batch`), retries, metrics and dead letters (:mod:`transforms.deliver`)
are shared code; a connector only opens its client, writes one batch, and classifies its
errors.

A connector module declares ``CONNECTOR_TYPES`` (a mapping of type name to
:class:`~.base.ConnectorSpec`); :data:`CONNECTORS` gathers them when this package is
imported, from two places, and nothing else needs editing to add one:

- every module of this package (``transforms/connectors/<name>.py``);
- every module named by an installed distribution's entry point in the group
  :data:`ENTRY_POINT_GROUP`, for a connector kept outside this repository::

      # the plug-in's pyproject.toml
      [project.entry-points."telemetry_delivery.connectors"]
      line_hook = "my_company.line_hook"     # a module declaring CONNECTOR_TYPES

  (install the plug-in on the workers too: they import this package, and so discover it).

The config's ``type`` values (``transforms.config.TYPE_NAMES``) are the keys of
:data:`CONNECTORS`; ``tests/test_connector_contract.py`` runs each through the shared
compliance checks (``docs/writing-a-connector.md``). Connector modules import their
client libraries lazily (in ``Sink.open``), so validating a config stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from transforms.connectors.base import ConnectorSpec, Sink

ENTRY_POINT_GROUP = "telemetry_delivery.connectors"
"""The entry-point group whose modules are discovered as connector modules."""

LISTED_FIRST = (
    "file",
    "s3",
    "gcs",
    "azure_blob",
    "http",
    "datadog_logs",
    "splunk_hec",
    "new_relic",
    "elasticsearch",
    "pubsub",
)
"""The order messages and docs list the built-in types in (families together); any other
discovered type follows, by name. Only an order: which types exist is what is discovered."""


def _package_modules() -> Iterable[ModuleType]:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        yield importlib.import_module(f"{__name__}.{info.name}")


def _entry_point_modules() -> Iterable[ModuleType]:
    for entry in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        module = entry.load()
        if not isinstance(module, ModuleType):
            raise RuntimeError(
                f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} must name a module "
                f"declaring CONNECTOR_TYPES, not {entry.value!r}"
            )
        yield module


def discover() -> dict[str, ConnectorSpec]:
    """Every connector type declared by a module of this package or an entry point.

    >>> list(discover())[:3]
    ['file', 's3', 'gcs']

    Raises:
        RuntimeError: a type declared twice, or a declaration that is not a
            ``ConnectorSpec`` (so a typo fails at startup, not at the first batch).
    """
    found: dict[str, ConnectorSpec] = {}
    where: dict[str, str] = {}
    for module in (*_package_modules(), *_entry_point_modules()):
        for name, spec in getattr(module, "CONNECTOR_TYPES", {}).items():
            if name in found:
                raise RuntimeError(
                    f"connector type {name!r} is declared twice "
                    f"({where[name]} and {module.__name__})"
                )
            if not isinstance(spec, ConnectorSpec):
                raise RuntimeError(
                    f"{module.__name__}.CONNECTOR_TYPES[{name!r}] is not a ConnectorSpec"
                )
            found[name] = spec
            where[name] = module.__name__
    rank = {name: n for n, name in enumerate(LISTED_FIRST)}
    order = sorted(found, key=lambda name: (rank.get(name, len(rank)), name))
    return {name: found[name] for name in order}


CONNECTORS: dict[str, ConnectorSpec] = discover()
"""Every implemented connector type, by type name (in :data:`LISTED_FIRST` order)."""


def connector_module(spec: ConnectorSpec) -> ModuleType:
    """The module that declares ``spec`` (where its sink class is defined)."""
    return sys.modules[spec.make_sink.__module__]


def make_sink(connector_id: str, connector_type: str, deliver: Any) -> Sink:
    """Build the sink for a connector type from its validated ``deliver`` config."""
    try:
        spec = CONNECTORS[connector_type]
    except KeyError:
        raise ValueError(f"connector type {connector_type!r} has no sink in this version") from None
    return spec.make_sink(connector_id, deliver)
