"""Start-up of a local batch run: import Beam without the cloud clients the run never uses.

``import apache_beam`` imports, among much else, every cloud filesystem plugin Beam
finds installed, and with them the Google Cloud Storage, Azure Blob and boto3 client
libraries, plus the BigQuery client and pymongo (``apache_beam.io`` imports its BigQuery
and MongoDB connectors). With ``apache-beam[gcp,aws]`` and ``azure-storage-blob``
installed, as this project needs, that is ~0.8 of the ~2.3 CPU-seconds a local ``run``
spent before its first event (docs/beam-limits.md has the measurements). Beam imports
each of these behind ``try``/``except ImportError`` and simply goes without them, so a
run whose command line and config name no ``gs://``, ``s3://`` or ``azfs://`` location
can skip them::

    skipped = import_beam(modules_to_skip(argv))   # before anything else imports Beam

Only a local batch run skips anything: a run that names another ``--runner``, or
streams, imports Beam whole. A plugin whose scheme appears anywhere in the arguments or
the config stays (and so does every plugin when the config is not a local file). The
skip lasts only while Beam is first imported: an explicit import later works as usual,
and when Beam is already imported (a test process, an embedding program) nothing changes.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transforms.config import ENV_REF

FILESYSTEM_PLUGINS = {
    "gs": "apache_beam.io.gcp.gcsfilesystem",
    "s3": "apache_beam.io.aws.s3filesystem",
    "azfs": "apache_beam.io.azure.blobstoragefilesystem",
}
"""Beam's filesystem plugin per URL scheme; each imports its cloud client library."""

UNUSED_BY_BATCH_RUNS = ("apache_beam.io.gcp.bigquery", "pymongo", "google.cloud.dataflow")
"""What a local batch run never uses: the BigQuery and MongoDB connectors that
``apache_beam.io`` imports, and the Dataflow API client the Dataflow runner module
imports. Beam imports each inside ``try``/``except ImportError``; skipping BigQuery also
skips the rest of its ``try`` (Pub/Sub, gcsio), which the job imports itself when it
needs them."""

SKIP_WARNERS = {"pymongo": "apache_beam.io.mongodbio"}
"""The logger of the Beam module that logs a warning when the given module is missing."""

SCHEME = re.compile(r"\b(gs|s3|azfs)://")

WHOLE_BEAM_FLAGS = ("--runner", "--streaming", "--subscription", "--topic")
"""Flags after which Beam is imported whole (another runner, or a streaming run)."""


def modules_to_skip(argv: Sequence[str]) -> tuple[str, ...]:
    """The modules a ``run`` with these arguments can do without (see the module doc).

    ``argv`` is what follows ``run``. Empty for another runner, a streaming run, or a
    config that is not a readable local file.
    """
    flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    if flags.intersection(WHOLE_BEAM_FLAGS):
        return ()
    config = _config_path(argv)
    if config is None or "://" in config:
        return ()
    try:
        config_text = Path(config).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()  # the run reports the missing config itself
    # A location may also come from the environment, as ``${env:NAME}`` in the config.
    referenced = [os.environ.get(name, "") for name in ENV_REF.findall(config_text)]
    named = {m.group(1) for m in SCHEME.finditer("\n".join([*argv, config_text, *referenced]))}
    plugins = [module for scheme, module in FILESYSTEM_PLUGINS.items() if scheme not in named]
    return (*plugins, *UNUSED_BY_BATCH_RUNS)


def _config_path(argv: Sequence[str]) -> str | None:
    for n, arg in enumerate(argv):
        if arg == "--config" and n + 1 < len(argv):
            return argv[n + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


class _Skip(importlib.abc.MetaPathFinder):
    """Answers "not installed" for the given modules, as Beam's guarded imports expect."""

    def __init__(self, modules: Iterable[str]):
        self.modules = frozenset(modules)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname in self.modules:
            raise ModuleNotFoundError(f"{fullname} is not needed by this run", name=fullname)
        return None


def import_beam(skip: Iterable[str] = ()) -> tuple[str, ...]:
    """Import ``apache_beam`` without the modules in ``skip``; return those it went without.

    Also keeps numpy's OpenBLAS to one thread (unless ``OPENBLAS_NUM_THREADS`` is set). A
    no-op (returning ``()``) when Beam is already imported.
    """
    if "apache_beam" in sys.modules:
        return ()
    # Beam's coders import numpy, whose OpenBLAS starts a thread per core that spins for
    # a while; nothing in the job calls BLAS (-0.1 CPU-s per run). Workers inherit it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    finder = _Skip(skip)
    # Beam's MongoDB module warns "Could not find a compatible bson package" without it.
    quiet = [logging.getLogger(SKIP_WARNERS[m]) for m in finder.modules if m in SKIP_WARNERS]
    sys.meta_path.insert(0, finder)
    for logger in quiet:
        logger.disabled = True
    try:
        import apache_beam  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
        for logger in quiet:
            logger.disabled = False
    return tuple(sorted(m for m in finder.modules if m not in sys.modules))
