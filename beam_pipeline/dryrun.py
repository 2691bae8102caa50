r"""``dry-run``: what would each connector receive for one event?

Runs the same plain-Python rules as the pipeline (no Beam), so its answer is exactly
what the job does::

    $ python -m beam_pipeline dry-run --config examples/delivery.yaml \\
          --event '{"event_id":"e1","event":{"type":"heartbeat","timestamp":1764136800123}}'
"""

from __future__ import annotations

from typing import Any

from transforms import metrics
from transforms.config import CompiledConnector, DeliveryConfig, compile_connectors
from transforms.connectors import make_sink
from transforms.connectors.secrets import config_secrets
from transforms.rules.encode import FORMATS, dumps
from transforms.rules.events import MISSING, event_time_ms, get_path, split_path
from transforms.rules.naming import PrefixError, PrefixTemplate, object_name
from transforms.rules.package import PackageError, PackageFunctionError, function_error_text
from transforms.rules.route import Reveal, explain_routes


def explain(event: dict[str, Any], config: DeliveryConfig) -> list[dict[str, Any]]:
    """For each connector: whether the event routes there, why not, and the exact record.

    With a ``package.function``: ``payload`` (one record), ``payloads`` (a fan-out, in
    order), ``dropped`` (it returned None) or the ``dead_letter`` it causes.

    Why not names the conditions that decided it, inside groups too, e.g.
    ``condition failed: when[1].any[0]: metadata.geo.country_code in ['US', 'CA'] was
    false (got 'FR')``. A value is shown only if the connector's filter passes it
    unchanged (what the payload would show anyway); a denied or hashed field is not.
    """
    connectors = compile_connectors(config)
    reasons = explain_routes([(c.id, c.route) for c in connectors], event)
    out = []
    for c, reason in zip(connectors, reasons, strict=True):
        entry: dict[str, Any] = {"connector": c.id, "type": c.type, "routed": reason is None}
        if reason is not None:
            if reason.startswith("condition failed: "):
                # Again, now showing the values this connector's filter lets through.
                reason = c.route.explain(event, _revealer(c, event)) or reason
            entry["reason"] = reason
            out.append(entry)
            continue
        try:
            records = c.packager.outputs(c.filter.apply(event))
            if c.packager.function is not None:
                for record in records:
                    dumps(record)  # the Package stage's check: JSON must carry it
        except Exception as exc:  # what the Package stage dead-letters, with its reason
            if c.packager.function is None and not isinstance(exc, PackageError):
                raise
            entry["dead_letter"] = _package_letter(c, exc)
            out.append(entry)
            continue
        if not records:
            entry["dropped"] = (
                f"package.function returned None: no record (counted {metrics.DROPPED})"
            )
            out.append(entry)
            continue
        if len(records) == 1:
            entry["payload"] = records[0]
        else:  # fan-out: each record is named <event_id>#<n> (see transforms.package)
            entry["payloads"] = records
        ids = [event["event_id"]] if len(records) == 1 else fan_out_ids(event, len(records))
        if c.type in OBJECT_STORES:
            try:
                entry["destination"] = destination(c, event, ids) + "  (alone in its batch)"
            except PrefixError as exc:
                entry["dead_letter"] = {
                    "stage": "batch",
                    "reason": "prefix_unrenderable",
                    "error": str(exc),
                }
        out.append(entry)
    return out


OBJECT_STORES = ("file", "s3", "gcs", "azure_blob")
"""Connector types that write objects, whose names dry-run shows."""


def fan_out_ids(event: dict[str, Any], count: int) -> list[str]:
    """The record ids of an event a ``package.function`` fanned out: ``e1#0``, ``e1#1``..."""
    return [f"{event['event_id']}#{n}" for n in range(count)]


def _package_letter(c: CompiledConnector, exc: Exception) -> dict[str, Any]:
    """The dead letter the Package stage would write (a function's error redacted, cut)."""
    if isinstance(exc, PackageFunctionError) or not isinstance(exc, PackageError):
        text = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, PackageFunctionError):  # its record cannot be JSON
            text = (
                f"PackageFunctionError: package.function {c.packager.function} returned a "
                f"record that cannot be written as JSON: {text}"
            )
        secrets = config_secrets(c.source) if c.source is not None else ()
        return {
            "stage": "package",
            "reason": PackageFunctionError.reason,
            "error": function_error_text(text, secrets),
        }
    return {"stage": "package", "reason": exc.reason, "error": str(exc)}


def destination(c: CompiledConnector, event: dict[str, Any], ids: list[str] | None = None) -> str:
    """Where ``event`` would be written if its batch held it alone, e.g. ``s3://b/raw/...``.

    ``ids`` are its records' ids when a ``package.function`` fanned it out (one batch
    holding all of them). Raises :class:`PrefixError` when the event cannot fill the
    prefix (a dead letter).
    """
    prefix = PrefixTemplate.compile(c.deliver.prefix)
    rendered = prefix.render(c.id, event["event"]["type"], event_time_ms(event))
    names = ids if ids is not None else [event["event_id"]]
    name = object_name(rendered, c.id, names, FORMATS[c.deliver.format])
    if c.type == "file":
        return c.deliver.path.rstrip("/") + "/" + name
    sink: Any = make_sink(c.id, c.type, c.deliver)  # an object store; nothing connects
    return str(sink.location(name))


def _revealer(c: CompiledConnector, event: dict[str, Any]) -> Reveal:
    """What dry-run may show of ``event``'s value at a field, for connector ``c``."""
    try:
        passed: Any = c.filter.apply(event)
    except Exception:  # a filter that cannot apply shows nothing; Package reports it
        passed = {}

    def reveal(field: str, _event: dict[str, Any]) -> str | None:
        path = split_path(field)
        got = get_path(event, path)
        if got is MISSING:
            return "no such field"
        shown = get_path(passed, path)
        if shown is MISSING or type(shown) is not type(got) or shown != got:
            return "a value this connector's filter does not pass"
        text = repr(got)
        return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."

    return reveal


_SHOWN = 80
"""The longest value shown in a reason; longer values are cut with ``...``."""
