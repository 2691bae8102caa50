"""Run the README's batch command in this process, as the end-to-end tests do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from beam_pipeline.cli import main


def run_job(config: Path, inputs: Path | str, summary: Path, *extra: str) -> tuple[int, Any]:
    """``run --config C --input I --summary-json S --no-progress [extra]``.

    Returns the exit code and the summary JSON (None when the run wrote none).
    """
    argv = ["run", "--config", str(config), "--input", str(inputs)]
    code = main([*argv, "--summary-json", str(summary), "--no-progress", *extra])
    return code, json.loads(summary.read_text()) if summary.exists() else None


def delivered_files(folder: Path) -> dict[str, bytes]:
    """Every delivered file below ``folder`` (dead letters and the config excluded)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "delivery.yaml" and "dead_letter" not in p.parts
    }


def write_config(out: Path, connectors: list[dict[str, Any]]) -> Path:
    """``out/delivery.yaml`` with ``connectors`` and dead letters below ``out``."""
    body = {"connectors": connectors, "dead_letter": {"path": str(out / "dead_letter")}}
    path = out / "delivery.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path
