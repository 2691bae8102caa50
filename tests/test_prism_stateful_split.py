"""Keyed state stays consistent on the default streaming engine (Prism), even when a bundle stalls.

Found by the dedup flake (issue 20): Prism 2.77 asks every slow bundle to split, stateful
stages included (``execute.go`` sets ``sdfSplittable`` on every SDK stage; ``stage.go``
splits a bundle that made no progress between two progress reports). The residual's
elements are handed to a new bundle, and ``splitBundle`` releases their keys even when the
primary still holds elements of the same key, so the residual reads the key's state
without the primary's writes, and one of the two writes is lost. Measured with the
pipeline below (20 elements of one key, the first one slow): with splitting, the state
read 0, 1, 2, 0, 1, ... and ended at 17 of 20; with ``--experiments=prism_disable_sdf_split``
it read 0..19. For the job this meant two copies of an event passing dedup, and batches
a GroupIntoBatches buffer could lose or emit twice. :func:`beam_pipeline.runners.make_pipeline`
turns splitting off on Prism (docs/beam-limits.md, "Prism splits stateful bundles").
"""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from beam_pipeline.runners import make_pipeline, use_prism

ELEMENTS = 20
STALL_S = 3.0
"""Longer than Prism's progress interval, so the bundle shows no progress and is split."""


_SEEN = beam.DoFn.StateParam(ReadModifyWriteStateSpec("seen", VarIntCoder()))


class _CountPerKey(beam.DoFn):
    """Emit how many elements of its key came before each one (read, then write back)."""

    def process(self, element: tuple[str, int], seen: Any = _SEEN) -> Any:
        _, value = element
        before = seen.read() or 0
        if value == 0:
            time.sleep(STALL_S)  # the fault: a slow element, as a stalled bundle has
        seen.write(before + 1)
        yield before


def test_a_stalled_stateful_bundle_loses_no_state_write_on_the_default_engine() -> None:
    options = PipelineOptions()
    assert use_prism(options) is None
    with make_pipeline(options) as pipeline:  # as the job builds its pipelines
        counts = (
            pipeline
            | beam.Create([("k", n) for n in range(ELEMENTS)])
            | beam.Reshuffle()
            | beam.ParDo(_CountPerKey())
        )
        # Each element of the key saw every earlier one: 0, 1, ..., 19, once each.
        assert_that(counts, equal_to(list(range(ELEMENTS))))
