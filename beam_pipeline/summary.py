"""The end-of-run summary, read from the job's Beam metrics.

    summary = collect_summary(result, config)
    print(format_summary(summary))

Per connector: ``in`` (what this run had to settle: events routed by ``run``, dead letters
sent back by ``replay``, retry records found due by ``retry``), delivered, dead-lettered,
retrying (handed to the delayed retry), writes (files, objects or requests) and bytes, and
the conservation check ``in = delivered + retrying + dead-lettered``. The input line:
``lines_read = events + invalid + blank_lines``.
"""

from __future__ import annotations

from typing import Any

from beam_pipeline.config import DeliveryConfig
from transforms import metrics

SUMMARY_VERSION = 1
"""Bumped when the JSON summary's shape changes incompatibly."""

_COLUMNS = (
    ("connector", "id"),
    ("type", "type"),
    ("in", "in"),
    ("delivered", metrics.DELIVERED),
    ("dead-lettered", metrics.DEAD_LETTERED),
    ("retrying", "retrying"),
    ("writes", metrics.WRITES),
    ("bytes", metrics.BYTES),
)


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
    inputs: dict[str, Any] = {
        "lines_read": get(p, metrics.LINES_READ),
        "events": get(p, metrics.EVENTS),
        "invalid": get(p, metrics.INVALID),
        "blank_lines": get(p, metrics.BLANK_LINES),
        "unmatched": get(p, metrics.UNMATCHED),
    }
    inputs["balanced"] = inputs["lines_read"] == (
        inputs["events"] + inputs["invalid"] + inputs["blank_lines"]
    )
    connectors = []
    for c in config.connectors:
        ns = metrics.connector_namespace(c.id)
        row: dict[str, Any] = {"id": c.id, "type": c.type}
        for name in metrics.CONNECTOR_COUNTERS:
            row[name] = get(ns, name)
        row["retrying"] = row[metrics.RETRIED_DELAYED]
        row["in"] = row[metrics.ROUTED] + row[metrics.REPLAYED] + row[metrics.RETRY_DUE]
        settled = row[metrics.DELIVERED] + row["retrying"] + row[metrics.DEAD_LETTERED]
        row["balanced"] = row["in"] == settled
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
    lines = []
    if i["lines_read"]:
        lines.append(
            f"input: {i['lines_read']} lines = {i['events']} events"
            f" + {i['invalid']} invalid (dead-lettered) + {i['blank_lines']} blank"
            f"   {'OK' if i['balanced'] else 'MISMATCH'}"
        )
        lines.append(f"events routed to no connector: {i['unmatched']}")
        if seconds:
            lines.append(f"elapsed: {seconds:.1f} s ({i['lines_read'] / seconds:,.0f} lines/s)")
    elif seconds:
        lines.append(f"elapsed: {seconds:.1f} s")
    rows = [(*tuple(title for title, _ in _COLUMNS), "check")]
    for r in summary["connectors"]:
        check = "OK" if r["balanced"] else "MISMATCH: in != delivered + retrying + dead-lettered"
        rows.append((*tuple(str(r[key]) for _, key in _COLUMNS), check))
    waiting = {r["id"]: r[metrics.RETRY_WAITING] for r in summary["connectors"]}
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if any(waiting.values()):
        lines.append("")
        lines.append(
            "not yet due in the retry location: "
            + ", ".join(f"{cid} {n}" for cid, n in waiting.items() if n)
        )
    lines.append("")
    verdict = "OK" if summary["balanced"] else "MISMATCH"
    lines.append(f"conservation (in = delivered + retrying + dead-lettered): {verdict}")
    return "\n".join(lines)
