"""Process-wide settings for the hot path, applied once per worker process.

No Beam import: the CLI applies them in-process before a run, and a DoFn every graph has
(``ParseEvents``) applies them in worker processes (multi-processing, Flink, Dataflow).
"""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 100_000
"""Net new container objects that trigger a young collection (CPython's default: 700)."""


def tune_gc() -> None:
    """Set up the garbage collector for the hot path: freeze what exists, collect rarely.

    Importing Beam leaves ~200k long-lived objects that every full collection would walk
    again: ``gc.freeze()`` moves them out of its sight. Each chunk allocates ~150k
    containers (parsed events, packaged records) that live until their batch is written:
    with the default young threshold they are promoted and walked by full collections
    again and again. The job's hot path makes no reference cycles (tests/test_no_cycles.py
    checks that delivered batches are freed by reference counting), so its memory does not
    depend on the collector, and :data:`GC_YOUNG_THRESHOLD` makes young collections rare.
    Cyclic garbage from elsewhere is still collected, once 100k net containers have piled
    up. The measurements: bench/RESULTS.md, "Session 4".
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)


def tune_gc_once() -> None:
    """:func:`tune_gc` once per process, if nothing did it yet (the CLI does, in-process).

    Worker processes (multi-processing, Flink, Dataflow) import Beam themselves, so they
    tune here, in a DoFn every graph has. Objects alive now (modules, compiled rules) are
    never collected.
    """
    if gc.get_freeze_count() == 0:
        tune_gc()
