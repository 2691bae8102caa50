"""Connectors: one module per destination type, each implementing :class:`~.base.Sink`.

Batching, retries, metrics and dead letters are shared code in :mod:`transforms.deliver`;
a connector only opens its client, writes one batch, and classifies its errors.
"""

from __future__ import annotations

from typing import Any

from transforms.connectors.base import Sink


def make_sink(connector_id: str, connector_type: str, deliver: Any) -> Sink:
    """Build the sink for a connector type from its validated ``deliver`` config."""
    if connector_type == "file":
        from transforms.connectors.file import FileSink

        return FileSink(connector_id, deliver)
    raise ValueError(f"connector type {connector_type!r} has no sink in this version")
