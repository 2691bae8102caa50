r"""``dry-run``: what would each connector receive for one event?

Runs the same plain-Python rules as the pipeline (no Beam), so its answer is exactly
what the job does::

    $ python -m beam_pipeline dry-run --config examples/delivery.yaml \\
          --event '{"event_id":"e1","event":{"type":"heartbeat","timestamp":1764136800123}}'
"""

from __future__ import annotations

from typing import Any

from transforms.config import DeliveryConfig, compile_connectors
from transforms.rules.encode import FORMATS
from transforms.rules.events import event_time_ms
from transforms.rules.naming import PrefixError, PrefixTemplate, object_name


def explain(event: dict[str, Any], config: DeliveryConfig) -> list[dict[str, Any]]:
    """For each connector: whether the event routes there, why not, and the exact record."""
    out = []
    for c in compile_connectors(config):
        reason = c.route.explain(event)
        entry: dict[str, Any] = {"connector": c.id, "type": c.type, "routed": reason is None}
        if reason is not None:
            entry["reason"] = reason
            out.append(entry)
            continue
        record = c.packager.apply(c.filter.apply(event))
        entry["payload"] = record
        if c.type == "file":
            prefix = PrefixTemplate.compile(c.deliver.prefix)
            try:
                rendered = prefix.render(c.id, event["event"]["type"], event_time_ms(event))
                entry["destination"] = (
                    c.deliver.path.rstrip("/")
                    + "/"
                    + object_name(rendered, c.id, [event["event_id"]], FORMATS[c.deliver.format])
                    + "  (alone in its batch)"
                )
            except PrefixError as exc:
                entry["dead_letter"] = str(exc)
        out.append(entry)
    return out
