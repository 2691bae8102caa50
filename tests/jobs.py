"""Run the README's batch command in this process, as the end-to-end tests do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from beam_pipeline.cli import main


def run_job(config: Path, inputs: Path | str, summary: Path, *extra: str) -> tuple[int, Any]:
    """``run --config C --input I --summary-json S --no-progress [extra]``.

    Returns the exit code and the summary JSON (None when the run wrote none).
    """
    argv = ["run", "--config", str(config), "--input", str(inputs)]
    code = main([*argv, "--summary-json", str(summary), "--no-progress", *extra])
    return code, json.loads(summary.read_text()) if summary.exists() else None
