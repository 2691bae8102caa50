"""The runner of a local batch ``run``: Beam's FnApiRunner, with lighter worker processes.

In one process (the default) it is exactly Beam's FnApiRunner. With ``--direct_running_mode
multi_processing`` (which ``run`` picks itself above 8 MB of input) Beam starts
each worker process with a fixed command, ``<python> -m
apache_beam.runners.worker.sdk_worker_main``, written into the pipeline's environment.
:class:`LocalRunner` swaps that command for :func:`beam_pipeline.worker.worker_command`,
so that each worker imports Beam without the cloud clients the run does not use, as the
parent process did. Only that exact command is replaced: should a Beam release spell it
otherwise, its own worker runs, as before (slower to start, same results).

    runner = LocalRunner(skip=modules_to_skip(argv))
    pipeline = beam.Pipeline(runner=runner, options=options)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_pipeline.worker import worker_command

BEAM_WORKER_COMMAND = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
"""The command FnApiRunner writes for ``multi_processing`` workers (Beam 2.77, fn_runner.py)."""


class LocalRunner(FnApiRunner):
    """FnApiRunner whose worker processes skip the modules in ``skip`` when importing Beam."""

    def __init__(self, skip: Sequence[str] = ()):
        super().__init__()
        self.worker_command = worker_command(skip)

    def run_via_runner_api(self, pipeline_proto: Any, options: Any) -> Any:
        """Run ``pipeline_proto`` with Beam's worker command replaced (see the module doc)."""
        use_workers(pipeline_proto, self.worker_command)
        return super().run_via_runner_api(pipeline_proto, options)


def use_workers(pipeline_proto: Any, command: str) -> int:
    """Replace Beam's worker command by ``command`` in the proto; return how many were."""
    replaced = 0
    for environment in pipeline_proto.components.environments.values():
        if (
            environment.urn == python_urns.SUBPROCESS_SDK
            and environment.payload == BEAM_WORKER_COMMAND.encode("utf-8")
        ):
            environment.payload = command.encode("utf-8")
            replaced += 1
    return replaced
