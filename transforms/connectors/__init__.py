"""Connectors: one module per destination type, each implementing :class:`~.base.Sink`.

Batching, retries, metrics and dead letters are shared code in :mod:`transforms.deliver`;
a connector only opens its client, writes one batch, and classifies its errors.

Each module in this package that declares ``CONNECTOR_TYPES`` (a mapping of type name to
:class:`~.base.ConnectorSpec`) is discovered here; nothing else needs editing to add one.
Connector modules import their client libraries lazily (in ``Sink.open``), so validating
a config stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from transforms.connectors.base import ConnectorSpec, Sink


def _discover() -> dict[str, ConnectorSpec]:
    found: dict[str, ConnectorSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, spec in getattr(module, "CONNECTOR_TYPES", {}).items():
            if name in found:
                raise RuntimeError(f"connector type {name!r} is declared twice ({info.name})")
            found[name] = spec
    return found


CONNECTORS: dict[str, ConnectorSpec] = _discover()
"""Every implemented connector type, by type name."""


def make_sink(connector_id: str, connector_type: str, deliver: Any) -> Sink:
    """Build the sink for a connector type from its validated ``deliver`` config."""
    try:
        spec = CONNECTORS[connector_type]
    except KeyError:
        raise ValueError(f"connector type {connector_type!r} has no sink in this version") from None
    return spec.make_sink(connector_id, deliver)
