r"""Find or build (once) Beam's Prism runner for the installed apache-beam.

    make prism                    # or: python scripts/fetch_prism.py; prints the binary's path
    prism_path()                  # what `run --streaming` uses when no --runner is given

Prism is Beam's portable local runner (Go), the job's embedded streaming engine. Beam's
Python SDK downloads its binary from GitHub releases on first use; machines without that
access (these ones) build the same program from the Go module proxy instead::

    GOBIN=<cache> go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam version>

In order, the first that works:

1. ``$PRISM_LOCATION``, when set (a binary you built or downloaded yourself);
2. the cache, ``$PRISM_CACHE`` (default ``~/.cache/telemetry-delivery/prism``)
   ``/v<beam>/prism``: a second call is instant and offline;
3. ``go install`` as above, when ``go`` is on the PATH (~2 minutes and ~0.9 GB of module
   cache the first time);
4. Beam's own download (``PrismJobServer.local_bin``), which works where GitHub does.

Without Go and without GitHub access: download ``apache_beam-v<beam>-prism-<os>-<arch>.zip``
from https://github.com/apache/beam/releases on another machine, unzip it and set
``PRISM_LOCATION`` to the binary, or run streaming on ``--runner DirectRunner`` (a
functional stand-in only: see docs/beam-limits.md).

Exit status: 0 and the binary's path on stdout; 1 with the reason on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TextIO

MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def beam_version() -> str:
    """The installed apache-beam's version, e.g. ``2.77.0``."""
    from importlib.metadata import version

    return version("apache-beam")


def cache_dir() -> Path:
    """Where built binaries are kept, one folder per Beam version."""
    root = os.environ.get("PRISM_CACHE") or "~/.cache/telemetry-delivery/prism"
    return Path(root).expanduser() / f"v{beam_version()}"


class PrismUnavailable(RuntimeError):
    """No Prism binary can be found, built or downloaded here; the message says what to do."""


def prism_path(build: bool = True, log: TextIO = sys.stderr) -> str:
    """The path of a Prism binary for the installed Beam (see the module docstring).

    Raises:
        PrismUnavailable: with every attempt's reason and the ways out.
    """
    given = os.environ.get("PRISM_LOCATION")
    if given:
        if not os.access(given, os.X_OK):
            raise PrismUnavailable(f"PRISM_LOCATION={given} is not an executable file")
        return given
    target = cache_dir() / "prism"
    if os.access(target, os.X_OK):
        return str(target)
    problems: list[str] = []
    if build:
        go = shutil.which("go")
        if go is None:
            problems.append("`go` is not on the PATH")
        else:
            print(
                f"building Prism {beam_version()} with Go into {target.parent} (once; ~2 min)",
                file=log,
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, GOBIN=str(target.parent), CGO_ENABLED="0")
            done = subprocess.run(
                [go, "install", f"{MODULE}@v{beam_version()}"],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode == 0 and os.access(target, os.X_OK):
                return str(target)
            problems.append(f"go install failed: {done.stderr.strip()[-2000:]}")
        try:
            import platform

            from apache_beam.runners.portability.prism_runner import PrismJobServer

            url = PrismJobServer._construct_download_url(
                "v" + beam_version(),
                "https://github.com/apache/beam/releases/download",
                platform.system().lower(),
                platform.machine().lower(),
            )
            path = PrismJobServer.local_bin(url, str(target.parent))
            if os.access(path, os.X_OK):
                return path
            problems.append(f"Beam's download gave {path}, which is not executable")
        except Exception as exc:  # any network or archive failure: say it, try nothing else
            problems.append(f"Beam's download failed: {type(exc).__name__}: {exc}")
    raise PrismUnavailable(
        "no Prism binary for the streaming engine: "
        + "; ".join(problems or ["not built yet (run `make prism`)"])
        + ". Fix: install Go (https://go.dev/dl/) and run `make prism`, or set "
        "PRISM_LOCATION to a Prism binary of this Beam version, or run with "
        "--runner DirectRunner (a functional stand-in, not a latency reference)"
    )


def main() -> int:
    """Print the binary's path, building it if need be."""
    try:
        print(prism_path())
    except PrismUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
