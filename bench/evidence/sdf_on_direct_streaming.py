"""Any splittable DoFn on the DirectRunner's streaming engine (BundleBasedDirectRunner) fails.

Expected (Beam 2.77): RuntimeError: Transform node ... ProcessKeyedElements/GroupByKey/GroupByKey,
_GroupByKeyOnly) was not replaced as expected. See docs/beam-limits.md.
"""

import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.transforms.periodicsequence import PeriodicImpulse

options = PipelineOptions()
options.view_as(StandardOptions).streaming = True
now = time.time()
with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
    _ = p | PeriodicImpulse(now, now + 2, 0.5) | beam.Map(print)
