"""The end-of-run summary, read from the job's Beam metrics.

    summary = collect_summary(result, config)
    print(format_summary(summary))

Per connector: events routed, delivered, dead-lettered, retrying, writes (files, objects or
requests) and bytes, and the conservation check ``routed = delivered + retrying +
dead-lettered``. The input line: ``lines_read = events + invalid + blank_lines``.
"""

from __future__ import annotations

from typing import Any

from beam_pipeline.config import DeliveryConfig
from transforms import metrics

SUMMARY_VERSION = 1
"""Bumped when the JSON summary's shape changes incompatibly."""


def counter_values(result: Any) -> dict[tuple[str, str], int]:
    """Every counter of a finished run as ``{(namespace, name): value}``."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[tuple[str, str], int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        key = (counter.key.metric.namespace, counter.key.metric.name)
        value = counter.committed if counter.committed is not None else counter.attempted
        out[key] = out.get(key, 0) + int(value or 0)
    return out


def summarize(counters: dict[tuple[str, str], int], config: DeliveryConfig) -> dict[str, Any]:
    """Build the summary dict (the ``--summary-json`` schema) from counter values."""

    def get(ns: str, name: str) -> int:
        return counters.get((ns, name), 0)

    p = metrics.PIPELINE
    inputs = {
        "lines_read": get(p, metrics.LINES_READ),
        "events": get(p, metrics.EVENTS),
        "invalid": get(p, metrics.INVALID),
        "blank_lines": get(p, metrics.BLANK_LINES),
        "unmatched": get(p, metrics.UNMATCHED),
    }
    inputs["balanced"] = (
        inputs["lines_read"] == inputs["events"] + inputs["invalid"] + inputs["blank_lines"]
    )
    connectors = []
    for c in config.connectors:
        ns = metrics.connector_namespace(c.id)
        row: dict[str, Any] = {"id": c.id, "type": c.type}
        for name in metrics.CONNECTOR_COUNTERS:
            row[name] = get(ns, name)
        row["retrying"] = 0
        row["balanced"] = (
            row[metrics.ROUTED]
            == row[metrics.DELIVERED] + row["retrying"] + row[metrics.DEAD_LETTERED]
        )
        connectors.append(row)
    return {
        "version": SUMMARY_VERSION,
        "input": inputs,
        "connectors": connectors,
        "balanced": inputs["balanced"] and all(r["balanced"] for r in connectors),
    }


def collect_summary(result: Any, config: DeliveryConfig) -> dict[str, Any]:
    """The summary of a finished run."""
    return summarize(counter_values(result), config)


def format_summary(summary: dict[str, Any], seconds: float | None = None) -> str:
    """A plain-text table for the terminal."""
    i = summary["input"]
    lines = [
        f"input: {i['lines_read']} lines = {i['events']} events"
        f" + {i['invalid']} invalid (dead-lettered)"
        f" + {i['blank_lines']} blank   {'OK' if i['balanced'] else 'MISMATCH'}",
        f"events routed to no connector: {i['unmatched']}",
    ]
    if seconds is not None and seconds > 0:
        lines.append(f"elapsed: {seconds:.1f} s ({i['lines_read'] / seconds:,.0f} lines/s)")
    header = (
        "connector",
        "type",
        "routed",
        "delivered",
        "dead-lettered",
        "retrying",
        "writes",
        "bytes",
        "check",
    )
    rows = [header]
    for r in summary["connectors"]:
        check = (
            "OK" if r["balanced"] else "MISMATCH: routed != delivered + retrying + dead-lettered"
        )
        rows.append(
            (
                r["id"],
                r["type"],
                str(r["routed"]),
                str(r["delivered"]),
                str(r["dead_lettered"]),
                str(r["retrying"]),
                str(r["writes"]),
                str(r["bytes"]),
                check,
            )
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines.append("")
    for row in rows:
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
        )
    lines.append("")
    lines.append(
        "conservation (routed = delivered + retrying + dead-lettered): "
        + ("OK" if summary["balanced"] else "MISMATCH")
    )
    return "\n".join(lines)
