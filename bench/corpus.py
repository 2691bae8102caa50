"""Benchmark inputs: cached event corpora and delivery configs with 1 to 20 file connectors.

    python bench/corpus.py --events 1000000 [--parts 4] [--seed 42] [--cache-dir DIR]
    python bench/corpus.py --config-only --connectors 5 --out /tmp/bench-out

A corpus is ``N`` valid events from :func:`examples.generate_events.generate` (seed 42 by
default), gzipped JSON lines, cached by ``(N, seed)`` outside the repository in
``$TELEMETRY_BENCH_CACHE`` or ``~/.cache/telemetry-delivery/bench``. ``parts=k`` also
writes the same lines split into ``k`` contiguous files (for multi-worker runs, which read
one file per worker); files are written to a temporary name and renamed, so an interrupted
run never leaves a half corpus in the cache.

:func:`bench_config` writes a delivery config of ``K`` file connectors with realistic,
varied rules, cycling through five archetypes (regional variants past the first five):

=====  ================  =========================================================
index  archetype         rules
=====  ================  =========================================================
0      ``archive``       every event (then one region), raw, ``ndjson.gz``, by type/hour
1      ``ops_qoe``       5 QoE types, ``when`` country ``in``, allow/deny, values, rename
2      ``marketing``     milestones, ``sample_sessions``, deny, ``flat_event``, json_array
3      ``errors``        error/buffer types, ``in`` + ``lt``, wildcard allow, values, rename
4      ``devices``       ``exclude_events``, ``regex`` + ``gte``, sampling, ``*.id`` wildcards
=====  ================  =========================================================
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SEED = 42
GZIP_LEVEL = 6
"""The generator CLI's level; decompression cost hardly depends on it."""

REGIONS = (("US", "CA", "MX"), ("GB", "DE", "FR"), ("JP", "IN", "AU"), ("BR", "MX"))
"""Country groups used by ``when`` conditions, one per variant of an archetype."""

ARCHETYPES = ("archive", "ops_qoe", "marketing", "errors", "devices")


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The corpus cache directory (created): ``path``, ``$TELEMETRY_BENCH_CACHE`` or ~/.cache."""
    if path is None:
        path = os.environ.get("TELEMETRY_BENCH_CACHE") or (
            Path.home() / ".cache" / "telemetry-delivery" / "bench"
        )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def corpus_paths(events: int, seed: int, parts: int, folder: Path, invalid: int = 0) -> list[Path]:
    """The file names of a corpus (one file when ``parts`` is 1)."""
    stem = f"events-{events}-seed{seed}" + (f"-invalid{invalid}" if invalid else "")
    if parts == 1:
        return [folder / f"{stem}.jsonl.gz"]
    return [folder / f"{stem}-part{i + 1}of{parts}.jsonl.gz" for i in range(parts)]


def ensure_corpus(
    events: int,
    seed: int = DEFAULT_SEED,
    parts: int = 1,
    folder: str | os.PathLike[str] | None = None,
    invalid: int = 0,
) -> list[Path]:
    """Return the corpus files of ``events`` events, generating them if not cached.

    With ``parts > 1`` the lines are split into ``parts`` contiguous files of (nearly)
    equal length; their concatenation is the one-file corpus. ``invalid`` adds that many
    invalid lines (the generator's ``invalid``: bad JSON, blank lines, ...; for tests).

    Raises:
        ValueError: for ``events < 1`` or ``parts < 1``.
    """
    if events < 1 or parts < 1:
        raise ValueError(f"need events >= 1 and parts >= 1, got {events} and {parts}")
    paths = corpus_paths(events, seed, parts, cache_dir(folder), invalid)
    if all(p.exists() for p in paths):
        return paths
    from examples.generate_events import generate

    lines_total = events + invalid
    bounds = [(i + 1) * lines_total // parts for i in range(parts)]
    tmps = [p.with_name(f"{p.name}.tmp-{os.getpid()}") for p in paths]
    try:
        lines = generate(events, seed, invalid=invalid)
        written = 0
        for tmp, end in zip(tmps, bounds, strict=True):
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0
                ) as out,
            ):
                block: list[bytes] = []
                while written < end:
                    block.append(next(lines))
                    written += 1
                    if len(block) == 4096:
                        out.write(b"\n".join(block) + b"\n")
                        block = []
                if block:
                    out.write(b"\n".join(block) + b"\n")
        for tmp, path in zip(tmps, paths, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()
    return paths


def _connector(index: int, out: Path) -> dict[str, Any]:
    """The ``index``-th connector: archetype ``index % 5``, variant ``index // 5``."""
    kind = ARCHETYPES[index % len(ARCHETYPES)]
    variant = index // len(ARCHETYPES)
    region = list(REGIONS[variant % len(REGIONS)])
    cid = f"{kind}_{variant}"
    in_region = {"field": "metadata.geo.country_code", "op": "in", "value": region}
    c: dict[str, Any] = {"id": cid, "type": "file"}
    if kind == "archive":
        if variant:
            c["route"] = {"when": [in_region]}
        c["deliver"] = {
            "prefix": "{event_type}/{year}-{month}-{day}T{hour}/",
            "format": "ndjson.gz",
            "batch": {"max_events": 1000},
        }
    elif kind == "ops_qoe":
        c["route"] = {
            "events": ["heartbeat", "error", "buffer_start", "buffer_end", "bitrate_change"],
            "when": [in_region],
        }
        c["filter"] = {
            "metadata": {"allow": ["device.*", "player.*", "content.title", "geo.country_code"]},
            "fluxdata": {"deny": ["playhead_position_sec"]},
        }
        c["package"] = {
            "values": {
                "event.type": {"buffer_start": "rebuffer_start", "buffer_end": "rebuffer_end"}
            },
            "rename": {"session_id": "sid"},
        }
        c["deliver"] = {
            "prefix": "{year}/{month}/{day}/{hour}/",
            "format": "ndjson",
            "batch": {"max_events": 500},
        }
    elif kind == "marketing":
        c["route"] = {
            "events": ["player_ready", "playback_start", "playback_complete", "playback_stop"],
            "sample_sessions": (0.25, 0.5, 0.1, 1.0)[variant % 4],
        }
        c["filter"] = {
            "metadata": {"deny": ["network", "user.id"]},
            "fluxdata": {"allow": []},
        }
        c["package"] = {"template": "flat_event"}
        c["deliver"] = {
            "prefix": "{year}/{month}/{day}/",
            "format": "json_array",
            "batch": {"max_events": 1000},
        }
    elif kind == "errors":
        devices = ["mobile", "tablet"] if variant % 2 == 0 else ["tv", "desktop"]
        c["route"] = {
            "events": ["error", "buffer_start", "buffer_end"],
            "when": [
                {"field": "metadata.device.type", "op": "in", "value": devices},
                {"field": "fluxdata.bandwidth_kbps", "op": "lt", "value": 30000},
            ],
        }
        c["filter"] = {
            "metadata": {"allow": ["device", "player", "content.id", "error", "geo.country_*"]},
            "fluxdata": {
                "allow": ["buffer_length_ms", "bandwidth_kbps", "num_errors", "rendition_*"]
            },
        }
        c["package"] = {
            "values": {"metadata.device.type": {"mobile": "handheld", "tablet": "handheld"}},
            "rename": {"metadata.error": "error", "session_id": "session"},
        }
        c["deliver"] = {
            "prefix": "{connector}/{event_type}/{year}/{month}/{day}/",
            "format": "ndjson.gz",
            "batch": {"max_events": 200},
        }
    else:  # devices
        c["route"] = {
            "exclude_events": ["heartbeat"],
            "when": [
                {"field": "metadata.player.name", "op": "regex", "value": "^(hls|Shaka|AVPlayer)"},
                {"field": "fluxdata.rendition_video_bitrate_kbps", "op": "gte", "value": 1500},
            ],
            "sample_sessions": (0.5, 0.75, 0.3, 0.9)[variant % 4],
        }
        c["filter"] = {
            "metadata": {"allow": ["*.id", "device.*", "geo.country_code"], "deny": ["user.id"]},
            "fluxdata": {"deny": ["playhead_position_sec"]},
        }
        c["package"] = {"template": "flat_event"}
        c["deliver"] = {
            "prefix": "{year}/{month}/{day}/{hour}/",
            "format": ("ndjson", "ndjson.gz", "json_array", "ndjson")[variant % 4],
            "batch": {"max_events": 1000},
        }
    c["deliver"]["path"] = str(out / cid)
    return c


def bench_config_dict(connectors: int, out: str | os.PathLike[str]) -> dict[str, Any]:
    """The delivery config (as a dict) of ``connectors`` file connectors writing below ``out``.

    Raises:
        ValueError: for fewer than 1 connector.
    """
    if connectors < 1:
        raise ValueError(f"need at least 1 connector, got {connectors}")
    base = Path(out)
    return {
        "connectors": [_connector(i, base) for i in range(connectors)],
        "dead_letter": {"path": str(base / "dead_letter")},
    }


def bench_config(
    connectors: int, out: str | os.PathLike[str], path: str | os.PathLike[str]
) -> Path:
    """Write :func:`bench_config_dict` as YAML to ``path`` and return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# Generated by bench/corpus.py\n"
        + yaml.safe_dump(bench_config_dict(connectors, out), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--connectors", type=int, default=5)
    parser.add_argument("--out", default=None, help="with --config-only: the output directory")
    parser.add_argument("--config-only", action="store_true")
    args = parser.parse_args(argv)
    if args.config_only:
        out = Path(args.out or "out/bench")
        print(bench_config(args.connectors, out, out / "delivery.yaml"))
        return 0
    for path in ensure_corpus(args.events, args.seed, args.parts, args.cache_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
