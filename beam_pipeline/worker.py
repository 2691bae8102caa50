"""Entry point of ``run``'s local worker processes: Beam's SDK harness, minus unused clients.

    python -m beam_pipeline.worker [MODULE ...]

``run`` uses worker processes for large backfills (``--direct_running_mode
multi_processing``, chosen by itself above 8 MB of input, or by the user). Beam starts
each of them as ``python -m apache_beam.runners.worker.sdk_worker_main``, which imports
Beam whole: every cloud client the parent process went without
(:mod:`beam_pipeline.startup`) is imported again in every worker, ~1.3 CPU-s and ~57 MiB
each (docs/beam-limits.md).
:class:`beam_pipeline.local_runner.LocalRunner` starts them with this module instead,
passing the modules the parent may skip; it imports Beam without them, then runs Beam's
own harness, which reads everything else (control address, pipeline options) from the
environment as usual.

This module imports nothing of Beam at its top: it must run before Beam is imported.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from beam_pipeline.startup import import_beam


def worker_command(skip: Sequence[str]) -> str:
    """The shell command that starts a worker process skipping the modules in ``skip``.

    The worker finds this package where this process found it (its folder is appended
    to the worker's ``sys.path``): a worker that cannot start is never heard from, and
    Beam's runner would wait for it forever.

    >>> worker_command(["pymongo"]).split()[1]
    '-c'
    """
    root = str(Path(__file__).resolve().parents[1])
    code = (
        f"import sys; sys.path.append({root!r}); "
        f"from beam_pipeline.worker import main; main({list(skip)!r})"
    )
    return " ".join(shlex.quote(word) for word in (sys.executable, "-c", code))


def main(argv: Sequence[str] | None = None) -> None:
    """Run Beam's SDK harness after importing Beam without the modules named in ``argv``."""
    import_beam(sys.argv[1:] if argv is None else argv)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main([])


if __name__ == "__main__":
    main()
