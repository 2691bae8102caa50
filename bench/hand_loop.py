r"""The issue's "plain Python+orjson loop", written by hand for ``bench/agent_like.yaml``.

    python bench/hand_loop.py [--events 1000000] [--repeat 3]

Issue 8 compares the job with a C log agent and with "a plain Python+orjson loop on the
same job". This script is that loop for the job shaped like the agent's
(``bench/agent_like.yaml``: 3 routes by event type, allow/deny field filters, one rename
each, NDJSON files of 1,000 records): no config, no rule objects, no dead letters, no
file names from content; the three connectors' rules written out as straight-line
Python over ``orjson.loads`` and ``orjson.dumps``. It streams like the job (one line at
a time, records freed once written) with the job's garbage-collector settings
(:func:`transforms.runtime.tune_gc`).

It is a ceiling, not a product: what any per-event Python design pays at least on this
corpus. In the same command it runs the bound (``bench/bound.py``, the product's own
rules) on the same input, checks that both wrote the same records in the same order per
connector (the bound's files concatenated in input order vs the loop's), and prints CPU
per event for both, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.corpus import ensure_corpus  # noqa: E402
from transforms.rules import gzipio  # noqa: E402
from transforms.runtime import tune_gc  # noqa: E402

CONFIG = ROOT / "bench" / "agent_like.yaml"
BATCH = 1000
OPS = frozenset(("heartbeat", "error", "buffer_start", "buffer_end", "bitrate_change"))
MARKETING = frozenset(("player_ready", "playback_start", "playback_complete", "playback_stop"))
ERRORS = frozenset(("error", "buffer_start"))
CONNECTORS = ("ops", "marketing", "errors")


def _ops(event: dict[str, Any]) -> dict[str, Any]:
    # metadata allow [device.*, player.*, geo.country_code]; fluxdata deny
    # [playhead_position_sec]; rename session_id -> sid.
    out = dict(event)
    md = event.get("metadata")
    if isinstance(md, dict):
        kept = {}
        for key, value in md.items():
            if key == "device" or key == "player":
                kept[key] = value
            elif key == "geo" and isinstance(value, dict) and "country_code" in value:
                kept[key] = {"country_code": value["country_code"]}
        out["metadata"] = kept
    elif "metadata" in event:
        out["metadata"] = {}
    fd = event.get("fluxdata")
    if isinstance(fd, dict) and "playhead_position_sec" in fd:
        fd = dict(fd)
        del fd["playhead_position_sec"]
        out["fluxdata"] = fd
    if "session_id" in out:
        out["sid"] = out.pop("session_id")
    return out


def _marketing(event: dict[str, Any]) -> dict[str, Any]:
    # metadata deny [network, user.id]; fluxdata allow []; rename event.type -> type.
    out = dict(event)
    md = event.get("metadata")
    if isinstance(md, dict):
        md = dict(md)
        md.pop("network", None)
        user = md.get("user")
        if isinstance(user, dict) and "id" in user:
            user = dict(user)
            del user["id"]
            md["user"] = user
        out["metadata"] = md
    if "fluxdata" in event:
        out["fluxdata"] = {}
    body = dict(out["event"])
    out["event"] = body
    out["type"] = body.pop("type")
    return out


def _errors(event: dict[str, Any]) -> dict[str, Any]:
    # metadata allow [device.type, content.id, error]; fluxdata allow [bandwidth_kbps,
    # num_errors]; rename metadata.error -> error.
    out = dict(event)
    md = event.get("metadata")
    kept: dict[str, Any] = {}
    if isinstance(md, dict):
        for key, value in md.items():
            if key == "device" or key == "content":
                leaf = "type" if key == "device" else "id"
                if isinstance(value, dict) and leaf in value:
                    kept[key] = {leaf: value[leaf]}
            elif key == "error":
                kept[key] = value
        out["metadata"] = kept
    elif "metadata" in event:
        out["metadata"] = kept
    fd = event.get("fluxdata")
    if isinstance(fd, dict):
        out["fluxdata"] = {k: v for k, v in fd.items() if k in ("bandwidth_kbps", "num_errors")}
    elif "fluxdata" in event:
        out["fluxdata"] = {}
    if "error" in kept:
        kept = dict(kept)
        out["metadata"] = kept
        out["error"] = kept.pop("error")
    return out


def hand_loop(corpus: Path, out: Path) -> int:
    """Run the loop over ``corpus``; write ``out/<connector>/<n>.ndjson``. Returns events."""
    connectors: list[tuple[str, frozenset[str], Callable[[dict[str, Any]], dict[str, Any]]]]
    connectors = [("ops", OPS, _ops), ("marketing", MARKETING, _marketing)]
    connectors.append(("errors", ERRORS, _errors))
    pending: dict[str, list[bytes]] = {name: [] for name, _, _ in connectors}
    files = dict.fromkeys(pending, 0)
    for name in pending:
        (out / name).mkdir(parents=True, exist_ok=True)

    def flush(name: str) -> None:
        (out / name / f"{files[name]:06d}.ndjson").write_bytes(b"".join(pending[name]))
        files[name] += 1
        pending[name] = []

    loads, dumps, newline = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    separators = re.compile(b"\xe2\x80[\xa8\xa9]").search  # the job's check (encode.dumps)
    events = 0
    with open(corpus, "rb") as raw:
        for line in gzipio.open_reader(raw):
            event = loads(line)
            events += 1
            kind = event["event"]["type"]
            for name, types, package in connectors:
                if kind in types:
                    records = pending[name]
                    data = dumps(package(event), option=newline)
                    if separators(data) is not None:  # the job's contract: U+2028/U+2029 escaped
                        data = data.replace(b"\xe2\x80\xa8", b"\\u2028")
                        data = data.replace(b"\xe2\x80\xa9", b"\\u2029")
                    records.append(data)
                    if len(records) == BATCH:
                        flush(name)
    for name, records in pending.items():
        if records:
            flush(name)
    return events


def records(folder: Path) -> dict[str, list[bytes]]:
    """Each connector's records (lines of its files below ``folder/<id>``), sorted.

    Sorted because the bound names files by content, not in write order; records are
    whole lines with their event ids, so equal sorted lists mean the same records.
    """
    return {
        cid: sorted(
            line for f in (folder / cid).rglob("*.ndjson") for line in f.read_bytes().splitlines()
        )
        for cid in CONNECTORS
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    (corpus,) = ensure_corpus(args.events)
    tune_gc()
    from bench.bound import run_bound

    best = {"hand loop": float("inf"), "bound": float("inf")}
    with tempfile.TemporaryDirectory(prefix="hand-loop-") as work:
        for rep in range(args.repeat):
            for variant in best if rep % 2 == 0 else reversed(list(best)):
                target = Path(work) / f"{variant.replace(' ', '_')}-{rep}"
                target.mkdir()
                gc.collect()
                started = _cpu()
                if variant == "hand loop":
                    hand_loop(corpus, target)
                else:
                    cwd = os.getcwd()
                    os.chdir(target)  # agent_like.yaml writes below ./out/agent_like
                    try:
                        run_bound(str(CONFIG), [str(corpus)])
                    finally:
                        os.chdir(cwd)
                best[variant] = min(best[variant], _cpu() - started)
        loop_out = Path(work) / "hand_loop-0"
        bound_out = Path(work) / "bound-0" / "out" / "agent_like"
        mine, theirs = records(loop_out), records(bound_out)
        differ = [cid for cid in CONNECTORS if mine[cid] != theirs[cid]]
        if differ:
            print(f"different records for {differ}: not the same job", file=sys.stderr)
            return 1
    print(
        f"{args.events:,} events, bench/agent_like.yaml, same records per connector; "
        f"best of {args.repeat} (CPU of this process, load {os.getloadavg()[0]:.2f})\n"
    )
    print("| variant | CPU s | us / event | events / CPU-s |\n|---|---:|---:|---:|")
    for variant, cpu in best.items():
        print(
            f"| {variant} | {cpu:.2f} | {cpu * 1e6 / args.events:.2f} | {args.events / cpu:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
