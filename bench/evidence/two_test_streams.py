"""Two TestStreams in one DirectRunner streaming pipeline: their outputs get mixed up.

Expected (Beam 2.77): BeamAssertException ... unexpected elements ['b'], missing elements ['a'].
See docs/beam-limits.md.
"""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

o = PipelineOptions()
o.view_as(StandardOptions).streaming = True
with beam.Pipeline(runner=BundleBasedDirectRunner(), options=o) as p:
    a = p | "A" >> TestStream().add_elements(["a"]).advance_watermark_to_infinity()
    b = p | "B" >> TestStream().add_elements(["b"]).advance_watermark_to_infinity()
    assert_that(a, equal_to(["a"]), label="OnlyA")
    assert_that(b, equal_to(["b"]), label="OnlyB")
print("OK: separate")
