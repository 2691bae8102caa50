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

    Two measured costs (bench/RESULTS.md, "Garbage collection"). Importing Beam leaves
    ~200k long-lived objects that every full collection walks again: ``gc.freeze()`` moves
    them out of its sight. And each chunk allocates ~150k containers (parsed events,
    packaged records) that live until their batch is written: with the default young
    threshold (700) they were promoted and walked by 174 full collections per 1M events,
    8.9 of 49.8 CPU-s. The job's hot path makes no reference cycles (a test checks that
    delivered batches are freed by reference counting), so its memory does not depend on
    the collector; raising the young threshold to :data:`GC_YOUNG_THRESHOLD` left 19 young
    collections and 0.6 CPU-s, with the same peak RSS. Cyclic garbage from elsewhere is
    still collected, once 100k net containers have piled up.
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
