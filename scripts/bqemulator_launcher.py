"""Start ``bqemulator`` (a BigQuery emulator on DuckDB) offline, from its own venv.

    python scripts/bqemulator_launcher.py ensure          # build the venv once; print its python
    python scripts/bqemulator_launcher.py start --rest-port 9050 --grpc-port 9060 --project p

``bqemulator`` 1.4.0 (PyPI) pins versions that differ from Beam's, so it lives in its own
venv, ``~/.cache/telemetry-delivery/bqemulator-venv`` (``$BQEMULATOR_VENV`` overrides),
built on first use with ``pip install bqemulator==1.4.0 numpy``. At start-up it runs
DuckDB's ``INSTALL spatial``, which downloads an extension and fails offline; ``start``
runs it with ``DuckDBEngine._load_spatial`` replaced by a no-op first (GEOGRAPHY functions
are then missing). Then point the connector at it: ``BIGQUERY_EMULATOR_HOST=127.0.0.1:9050``
or ``endpoint: http://127.0.0.1:9050``.

Its gaps (why tests/receivers/bigquery.py is the main stand-in): a row with a wrongly
typed value makes it fail the request instead of answering a per-row ``insertErrors``
entry; it stores rows with a repeated ``insertId`` again (no dedup); it mis-converts an
object into a ``JSON`` column.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VERSION = "1.4.0"
VENV = Path(
    os.environ.get("BQEMULATOR_VENV", "~/.cache/telemetry-delivery/bqemulator-venv")
).expanduser()


def venv_python(venv: Path = VENV) -> Path:
    """Where the venv's interpreter is (whether or not it exists yet)."""
    return venv / "bin" / "python"


def _installed(python: Path) -> bool:
    if not python.exists():
        return False
    probe = f"import importlib.metadata as m, numpy; assert m.version('bqemulator') == {VERSION!r}"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_venv(venv: Path = VENV) -> Path:
    """The venv's python, with bqemulator installed (built on first use).

    Raises:
        RuntimeError: naming the step that failed and its output's end.
    """
    python = venv_python(venv)
    if _installed(python):
        return python
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", f"bqemulator=={VERSION}", "numpy"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(
                f"bqemulator venv: {' '.join(step)} failed ({done.returncode}): "
                f"{(done.stdout + done.stderr)[-1500:]}"
            )
    if not _installed(python):
        raise RuntimeError(f"bqemulator venv {venv}: installed, but bqemulator is not importable")
    return python


def command(*start_args: str) -> list[str]:
    """The command that serves the emulator (after :func:`ensure_venv`)."""
    return [str(ensure_venv()), str(Path(__file__).resolve()), "--serve", *start_args]


def _serve(args: list[str]) -> int:
    """Inside the venv: skip ``INSTALL spatial`` (offline), then ``bqemulator start``."""
    from bqemulator.cli import main as bqemulator_main
    from bqemulator.storage.engine import DuckDBEngine

    DuckDBEngine._load_spatial = lambda self: None
    sys.argv = ["bqemulator", "start", *args]
    result = bqemulator_main()
    return int(result or 0)


def main(argv: list[str]) -> int:
    """``ensure``, ``start ARGS`` (``bqemulator start`` options), or ``--serve`` (internal)."""
    if argv[:1] == ["--serve"]:
        return _serve(argv[1:])
    if argv[:1] == ["ensure"]:
        print(ensure_venv())
        return 0
    if argv[:1] == ["start"]:
        cmd = command(*argv[1:])
        os.execv(cmd[0], cmd)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
