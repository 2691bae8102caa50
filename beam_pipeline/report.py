r"""``report``: a self-contained HTML page about one or more runs, made to be looked at.

    python -m beam_pipeline report --summary-json out/summary.json [more.json ...] \
        --out report.html

It reads the summaries that ``run`` (and ``retry``/``replay``) write with
``--summary-json`` and draws, per connector:

1. **Volume**: delivered, retrying and dead-lettered events (stacked bars), with the
   conservation check ``in = delivered + retrying + dead-lettered + dropped`` marked on
   each bar.
2. **Freshness**: the histogram of delivery time minus event time, with p50, p95 and p99.
3. **Failures by reason**: dead letters per reason, per connector and for invalid input.

Its table also gives each connector's events per write (min / p50 bucket / max), so
small objects show.

Plots are PNGs embedded as base64 ``data:`` URIs, so the page is one file that opens
anywhere, offline. Several summaries are added up (e.g. a backfill in several parts).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

from beam_pipeline.summary import format_ms, format_sizes, freshness, size_figures
from transforms import metrics

_OK, _BAD = "#2e7d32", "#c62828"
_COLORS = {"delivered": "#2e7d32", "retrying": "#f9a825", "dead-lettered": "#c62828"}


def merge(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add several summaries up, connector by connector."""
    first = summaries[0]
    out: dict[str, Any] = {"input": {}, "connectors": [], "runs": len(summaries)}
    for key in ("lines_read", "events", "invalid", "blank_lines", "unmatched"):
        out["input"][key] = sum(s["input"].get(key, 0) for s in summaries)
    reasons: dict[str, int] = {}
    for s in summaries:
        for k, v in s["input"].get("invalid_reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + v
    out["input"]["invalid_reasons"] = reasons
    ids = [c["id"] for c in first["connectors"]]
    for s in summaries[1:]:
        ids += [c["id"] for c in s["connectors"] if c["id"] not in ids]
    for cid in ids:
        rows = [c for s in summaries for c in s["connectors"] if c["id"] == cid]
        row: dict[str, Any] = {"id": cid, "type": rows[0]["type"]}
        for key in ("in", "delivered", "dead_lettered", "retrying", "dropped", "writes", "bytes"):
            row[key] = sum(r.get(key, 0) for r in rows)
        buckets = [sum(b) for b in zip(*(r["freshness"]["buckets"] for r in rows), strict=True)]
        row["freshness"] = freshness(buckets, sum(r["freshness"]["unknown"] for r in rows))
        why: dict[str, int] = {}
        for r in rows:
            for k, v in r.get("dead_letter_reasons", {}).items():
                why[k] = why.get(k, 0) + v
        row["dead_letter_reasons"] = why
        row["events_per_write"] = _merged_sizes([r.get("events_per_write") for r in rows])
        settled = row["delivered"] + row["retrying"] + row["dead_lettered"] + row["dropped"]
        row["balanced"] = row["in"] == settled
        out["connectors"].append(row)
    out["balanced"] = all(r["balanced"] for r in out["connectors"])
    return out


def _merged_sizes(parts: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Events per write of several runs: histograms added, min of mins, max of maxes.

    Summaries written before events per write was counted (no such key) add nothing.
    """
    counts: dict[tuple[int, int], int] = {}
    spreads = []
    for sizes in parts:
        if not sizes:
            continue
        for low, high, n in sizes["buckets"]:
            counts[(low, high)] = counts.get((low, high), 0) + n
        if sizes.get("min") is not None and sizes.get("sum") is not None:
            spreads.append((sizes["count"], sizes["sum"], sizes["min"], sizes["max"]))
    spread = None
    if spreads:
        spread = (
            sum(s[0] for s in spreads),
            sum(s[1] for s in spreads),
            min(s[2] for s in spreads),
            max(s[3] for s in spreads),
        )
    return size_figures([[low, high, n] for (low, high), n in sorted(counts.items())], spread)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(summary: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = summary["connectors"]
    names = [r["id"] for r in rows]
    plots = {}

    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * len(rows)))
    left = [0] * len(rows)
    for label, key in (
        ("delivered", "delivered"),
        ("retrying", "retrying"),
        ("dead-lettered", "dead_lettered"),
    ):
        values = [r[key] for r in rows]
        ax.barh(names, values, left=left, color=_COLORS[label], label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, r in enumerate(rows):
        mark = "OK" if r["balanced"] else "MISMATCH"
        ax.text(
            left[y],
            y,
            f"  {r['in']:,} in: {mark}",
            va="center",
            color=_OK if r["balanced"] else _BAD,
            fontsize=9,
        )
    ax.invert_yaxis()
    ax.set_xlabel("events")
    ax.set_title("Volume per connector")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, fontsize=8, frameon=False)
    ax.set_xlim(0, max([*left, 1]) * 1.35)
    plots["volume"] = _png(fig)
    plt.close(fig)

    labels = [format_ms(b).removeprefix("<=") for b in metrics.FRESHNESS_BOUNDS_MS] + [">365d"]
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.9 * len(rows)), squeeze=False)
    for ax, r in zip(axes[:, 0], rows, strict=True):
        f = r["freshness"]
        ax.bar(range(len(labels)), f["buckets"], color="#1565c0")
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45)
        stats = ", ".join(f"{q} {format_ms(f[q + '_ms'])}" for q in ("p50", "p95", "p99"))
        ax.set_title(f"{r['id']}: freshness (delivery time - event time); {stats}", fontsize=9)
        ax.set_ylabel("events", fontsize=8)
    fig.tight_layout()
    plots["freshness"] = _png(fig)
    plt.close(fig)

    failures = [(f"{r['id']}: {k}", v) for r in rows for k, v in r["dead_letter_reasons"].items()]
    failures += [(f"input: {k}", v) for k, v in summary["input"]["invalid_reasons"].items()]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.4 * max(len(failures), 1)))
    if failures:
        ax.barh([f[0] for f in failures], [f[1] for f in failures], color=_BAD)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "no dead letters", ha="center", va="center", color=_OK)
        ax.set_axis_off()
    ax.set_title("Dead letters by reason")
    plots["failures"] = _png(fig)
    plt.close(fig)
    return plots


def render(summaries: Sequence[dict[str, Any]]) -> str:
    """The whole HTML page for these summaries."""
    summary = merge(summaries)
    plots = _plots(summary)
    i = summary["input"]
    verdict = "OK" if summary["balanced"] else "MISMATCH"
    color = _OK if summary["balanced"] else _BAD
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r["id"],
                r["type"],
                r["in"],
                r["delivered"],
                r["retrying"],
                r["dead_lettered"],
                r["writes"],
                format_sizes(r.get("events_per_write")),
                format_ms(r["freshness"]["p50_ms"]),
                format_ms(r["freshness"]["p99_ms"]),
                "OK" if r["balanced"] else "MISMATCH",
            )
        )
        + "</tr>"
        for r in summary["connectors"]
    )
    figures = "".join(
        f'<figure id="{name}"><img alt="{name}" src="{uri}"></figure>'
        for name, uri in plots.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Delivery report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .8rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.4rem; color: {color}; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Delivery report</h1>
<p class="verdict">Conservation (in = delivered + retrying + dead-lettered + dropped): {verdict}</p>
<p>{summary["runs"]} run(s): {i["lines_read"]:,} lines read, {i["events"]:,} events,
{i["invalid"]:,} invalid (dead-lettered), {i["blank_lines"]:,} blank,
{i["unmatched"]:,} routed to no connector.</p>
<table><tr><th>connector</th><th>type</th><th>in</th><th>delivered</th><th>retrying</th>
<th>dead-lettered</th><th>writes</th><th>events/write min / p50 / max</th><th>fresh p50</th>
<th>fresh p99</th><th>check</th></tr>
{rows}</table>
{figures}
</body></html>
"""


def write_report(summary_paths: Sequence[str], out: str) -> None:
    """Read summaries from JSON files and write the HTML report."""
    summaries = []
    for path in summary_paths:
        with open(path, encoding="utf-8") as fh:
            summaries.append(json.load(fh))
    page = render(summaries)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
