"""The end-of-run summary, read from the job's Beam metrics.

    summary = collect_summary(result, config)
    print(format_summary(summary))

Per connector: ``in`` (what this run had to settle: events routed by ``run``, dead letters
sent back by ``replay``, retry records found due by ``retry``, plus the extra records a
``package.function`` fanned out), delivered, dead-lettered, retrying (handed to the delayed
retry), dropped (events a ``package.function`` returned None for), writes (files, objects
or requests) and bytes, and the conservation check ``in = delivered + retrying +
dead-lettered + dropped``: an event a function turns into 3 records is 1 routed + 2
fanned out = 3 to settle, one it drops is 1 routed = 1 dropped; freshness (delivery
time minus event time) p50/p95/p99 from a histogram; events per write (how full the files,
objects or request batches were: exact min, max and mean, and the p50 as the bounds of
its histogram bucket, e.g. ``12 / p50 862-1000 / 1000``, so small objects are visible);
dead letters by reason. The input line: ``lines_read = events + invalid + blank_lines``.
"""

from __future__ import annotations

import time
from typing import Any

from transforms import metrics
from transforms.config import DeliveryConfig

SUMMARY_VERSION = 1
"""Bumped when the JSON summary's shape changes incompatibly."""

SETTLED = "delivered + retrying + dead-lettered + dropped"
"""Where every record a connector took in ends."""

_COLUMNS = (
    ("connector", "id"),
    ("type", "type"),
    ("in", "in"),
    ("delivered", metrics.DELIVERED),
    ("dead-lettered", metrics.DEAD_LETTERED),
    ("retrying", "retrying"),
    ("dropped", metrics.DROPPED),
    ("writes", metrics.WRITES),
    ("bytes", metrics.BYTES),
    ("events/write min / p50 / max", "epw"),
    ("fresh p50", "p50"),
    ("fresh p99", "p99"),
)


SETTLE_READS = 5
"""Reads of a portable job's metrics at most, until two in a row agree (see below)."""


def _portable_metrics(result: Any) -> list[Any] | None:
    """A portable run's user metrics as the job service reports them, or None.

    Read raw, not through ``result.metrics()``: Beam's ``from_monitoring_infos`` keys them
    by (step, namespace, name), and Flink's job server reports a step's counter once per
    fused stage that runs it (the dead-letter writer fed by two stages, Deliver by
    several), so all but the last value were dropped: false MISMATCHes on Flink
    (docs/beam-limits.md, "Flink's job server reports a step's counters once per stage").
    Read until two reads in a row agree (at most :data:`SETTLE_READS`, 0.2 s apart):
    Prism was seen answering short counts right after the job ended and the right ones
    a moment later. Cached on the result.
    """
    cached = getattr(result, "_telemetry_metric_infos", None)
    if cached is not None:
        return list(cached)
    service, job_id = getattr(result, "_job_service", None), getattr(result, "_job_id", None)
    if service is None or job_id is None:
        return None
    from apache_beam.metrics import monitoring_infos
    from apache_beam.portability.api import beam_job_api_pb2

    request = beam_job_api_pb2.GetJobMetricsRequest(job_id=job_id)
    infos: list[Any] = []
    previous: list[bytes] | None = None
    for attempt in range(SETTLE_READS):
        if attempt:
            time.sleep(0.2)
        reported = service.GetJobMetrics(request).metrics
        infos = [
            mi
            for mi in (list(reported.committed) or list(reported.attempted))
            if monitoring_infos.is_user_monitoring_info(mi)
        ]
        snapshot = sorted(mi.SerializeToString(deterministic=True) for mi in infos)
        if snapshot == previous:
            break
        previous = snapshot
    result._telemetry_metric_infos = infos
    return infos


def counter_values(result: Any) -> dict[tuple[str, str], int]:
    """Every counter of a finished run as ``{(namespace, name): value}``, summed over steps."""
    out: dict[tuple[str, str], int] = {}
    infos = _portable_metrics(result)
    if infos is not None:
        from apache_beam.metrics import monitoring_infos

        for mi in infos:
            if monitoring_infos.is_counter(mi):
                key = monitoring_infos.parse_namespace_and_name(mi)
                out[key] = out.get(key, 0) + int(monitoring_infos.extract_counter_value(mi))
        return out
    from apache_beam.metrics.metric import MetricsFilter

    for counter in result.metrics().query(MetricsFilter())["counters"]:
        key = (counter.key.metric.namespace, counter.key.metric.name)
        value = counter.committed if counter.committed is not None else counter.attempted
        out[key] = out.get(key, 0) + int(value or 0)
    return out


Spread = tuple[int, int, int, int]
"""A Beam distribution's ``(count, sum, min, max)``."""


def _combine(old: Spread | None, new: Spread) -> Spread:
    if old is None:
        return new
    return (old[0] + new[0], old[1] + new[1], min(old[2], new[2]), max(old[3], new[3]))


def distribution_values(result: Any) -> dict[tuple[str, str], Spread]:
    """Every distribution of a finished run: ``{(namespace, name): (count, sum, min, max)}``.

    Combined over the steps that report it.
    """
    out: dict[tuple[str, str], Spread] = {}
    infos = _portable_metrics(result)
    if infos is not None:
        from apache_beam.metrics import monitoring_infos

        for mi in infos:
            if monitoring_infos.is_distribution(mi):
                count, total, low, high = monitoring_infos.extract_distribution(mi)
                if count:
                    key = monitoring_infos.parse_namespace_and_name(mi)
                    spread = (int(count), int(total), int(low), int(high))
                    out[key] = _combine(out.get(key), spread)
        return out
    from apache_beam.metrics.metric import MetricsFilter

    for dist in result.metrics().query(MetricsFilter())["distributions"]:
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is None or not value.count:
            continue
        key = (dist.key.metric.namespace, dist.key.metric.name)
        spread = (int(value.count), int(value.sum), int(value.min), int(value.max))
        out[key] = _combine(out.get(key), spread)
    return out


def summarize(
    counters: dict[tuple[str, str], int],
    config: DeliveryConfig,
    distributions: dict[tuple[str, str], Spread] | None = None,
) -> dict[str, Any]:
    """Build the summary dict (the ``--summary-json`` schema) from metric values."""
    distributions = distributions or {}

    def get(ns: str, name: str) -> int:
        return counters.get((ns, name), 0)

    p = metrics.PIPELINE
    inputs: dict[str, Any] = {
        "lines_read": get(p, metrics.LINES_READ),
        "events": get(p, metrics.EVENTS),
        "invalid": get(p, metrics.INVALID),
        "blank_lines": get(p, metrics.BLANK_LINES),
        "unmatched": get(p, metrics.UNMATCHED),
        # Streaming: copies dropped before Route (transforms/dedup.py), so no connector
        # took them in.
        "duplicates": get(p, metrics.DUPLICATES),
    }
    inputs["invalid_reasons"] = reasons(counters, p)
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
        row["in"] = (
            row[metrics.ROUTED]
            + row[metrics.REPLAYED]
            + row[metrics.RETRY_DUE]
            + row[metrics.FANNED_OUT]
        )
        settled = (
            row[metrics.DELIVERED]
            + row["retrying"]
            + row[metrics.DEAD_LETTERED]
            + row[metrics.DROPPED]
        )
        row["balanced"] = row["in"] == settled
        row["freshness"] = freshness(
            [get(ns, n) for n in metrics.FRESHNESS_COUNTERS], get(ns, metrics.FRESHNESS_UNKNOWN)
        )
        row["dead_letter_reasons"] = reasons(counters, ns)
        row["events_per_write"] = events_per_write(
            {name: v for (space, name), v in counters.items() if space == ns},
            distributions.get((ns, metrics.EVENTS_PER_WRITE)),
        )
        connectors.append(row)
    return {
        "version": SUMMARY_VERSION,
        "input": inputs,
        "connectors": connectors,
        "balanced": inputs["balanced"] and all(r["balanced"] for r in connectors),
    }


def reasons(counters: dict[tuple[str, str], int], namespace: str) -> dict[str, int]:
    """Dead letters by reason in one namespace (``dead_lettered.<reason>`` counters)."""
    prefix = metrics.dead_letter_reason_counter("")
    return {
        name[len(prefix) :]: value
        for (ns, name), value in sorted(counters.items())
        if ns == namespace and name.startswith(prefix) and value
    }


def freshness(buckets: list[int], unknown: int) -> dict[str, Any]:
    """Freshness percentiles from the histogram: each is the upper bound of its bucket (ms).

    ``None`` when nothing was delivered with a readable event time; a value past the
    last bound (365 days) is reported as ``">365d"``.
    """
    total = sum(buckets)
    out: dict[str, Any] = {"events": total, "unknown": unknown, "buckets": buckets}
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        out[name] = None
        if not total:
            continue
        seen = 0
        for n, count in enumerate(buckets):
            seen += count
            if seen >= q * total:
                bounds = metrics.FRESHNESS_BOUNDS_MS
                out[name] = bounds[n] if n < len(bounds) else ">365d"
                break
    return out


def events_per_write(counters: dict[str, int], spread: Spread | None) -> dict[str, Any]:
    """Events per write of one connector, from its histogram counters and distribution.

    ``counters`` are the connector's counters by name (only the
    ``events_per_write.<low>-<high>`` ones are read); ``spread`` its ``events_per_write``
    distribution, which gives the exact min, max and mean. The p50 is the lower median
    write's bucket, as ``p50_low``/``p50_high`` (narrowed to min and max: when every
    write held 78 events, both are 78)::

        {"count": 16, "sum": 15012, "min": 12, "max": 1000, "mean": 938.2,
         "p50_low": 862, "p50_high": 1000, "buckets": [[12, 13, 1], [862, 1023, 15]]}

    Without writes every figure is None and ``buckets`` is empty.
    """
    buckets = []
    for name, value in counters.items():
        if value and name.startswith(metrics.EVENTS_PER_WRITE_PREFIX):
            low, _, high = name[len(metrics.EVENTS_PER_WRITE_PREFIX) :].partition("-")
            buckets.append([int(low), int(high), value])
    return size_figures(sorted(buckets), spread)


def size_figures(buckets: list[list[int]], spread: Spread | None) -> dict[str, Any]:
    """:func:`events_per_write` from ``[low, high, count]`` buckets (sorted) and a spread."""
    count = sum(n for _, _, n in buckets)
    out: dict[str, Any] = {"count": count, "sum": None, "min": None, "max": None, "mean": None}
    if spread is not None and spread[0]:
        out["sum"], out["min"], out["max"] = spread[1], spread[2], spread[3]
        out["mean"] = round(spread[1] / spread[0], 1)
    out["p50_low"] = out["p50_high"] = None
    seen = 0
    for low, high, n in buckets:
        seen += n
        if seen >= (count + 1) // 2:  # the lower median: the ceil(count / 2)-th write
            if out["min"] is not None and low <= out["max"] and high >= out["min"]:
                low, high = max(low, out["min"]), min(high, out["max"])
            out["p50_low"], out["p50_high"] = low, high
            break
    out["buckets"] = buckets
    return out


def format_sizes(sizes: dict[str, Any] | None) -> str:
    """``12 / p50 862-1000 / 1000`` (min / p50 bucket / max), or ``-`` without writes."""
    if not sizes or sizes.get("p50_low") is None:
        return "-"
    low, high = sizes["p50_low"], sizes["p50_high"]
    p50 = f"{low}" if low == high else f"{low}-{high}"
    least = "?" if sizes["min"] is None else sizes["min"]
    most = "?" if sizes["max"] is None else sizes["max"]
    return f"{least} / p50 {p50} / {most}"


def format_ms(value: Any) -> str:
    """``1500`` -> ``<=1.5s``; bucket upper bounds read as "at most"."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if value >= size:
            return f"<={value / size:g}{unit}"
    return f"<={value}ms"


def collect_summary(result: Any, config: DeliveryConfig) -> dict[str, Any]:
    """The summary of a finished run."""
    return summarize(counter_values(result), config, distribution_values(result))


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
        if i.get("duplicates"):
            lines.append(
                f"copies dropped (event_id seen within the dedup window): {i['duplicates']}"
            )
        if seconds:
            lines.append(f"elapsed: {seconds:.1f} s ({i['lines_read'] / seconds:,.0f} lines/s)")
    elif seconds:
        lines.append(f"elapsed: {seconds:.1f} s")
    rows = [(*tuple(title for title, _ in _COLUMNS), "check")]
    for r in summary["connectors"]:
        check = "OK" if r["balanced"] else f"MISMATCH: in != {SETTLED}"
        cells = {**r, "p50": format_ms(r["freshness"]["p50_ms"])}
        cells["p99"] = format_ms(r["freshness"]["p99_ms"])
        cells["epw"] = format_sizes(r.get("events_per_write"))
        rows.append((*tuple(str(cells[key]) for _, key in _COLUMNS), check))
    waiting = {r["id"]: r[metrics.RETRY_WAITING] for r in summary["connectors"]}
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    failed = {r["id"]: r["dead_letter_reasons"] for r in summary["connectors"]}
    failed["input"] = summary["input"]["invalid_reasons"]
    if any(failed.values()):
        lines.append("")
        lines.append("dead letters by reason:")
        for who, why in failed.items():
            if why:
                lines.append(f"  {who}: " + ", ".join(f"{k} {v}" for k, v in why.items()))
    if any(waiting.values()):
        lines.append("")
        lines.append(
            "not yet due in the retry location: "
            + ", ".join(f"{cid} {n}" for cid, n in waiting.items() if n)
        )
    lines.append("")
    verdict = "OK" if summary["balanced"] else "MISMATCH"
    lines.append(f"conservation (in = {SETTLED}): {verdict}")
    return "\n".join(lines)
