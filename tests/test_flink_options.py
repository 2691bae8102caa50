"""Flink options reach the job server under Java's names, and streaming gets short bundles.

The job server maps each option name to Java's camelCase and ignores a name no
``FlinkPipelineOptions`` field has: ``--max_bundle_time_millis`` became
``maxBundleTimeMillis`` and did nothing (Beam spells it ``maxBundleTimeMills``).
"""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import runners
from beam_pipeline.options import FlinkStreamingOptions


@pytest.mark.parametrize("flag", ["--max_bundle_time_mills=250", "--max_bundle_time_millis=250"])
def test_both_spellings_send_javas_name(flag: str) -> None:
    options = PipelineOptions([flag])
    sent = options.get_all_options(retain_unknown_options=True)
    assert sent["max_bundle_time_mills"] == 250
    assert "max_bundle_time_millis" not in sent


@pytest.mark.parametrize(
    ("argv", "expected", "changed"),
    [
        (["--runner=FlinkRunner"], runners.FLINK_STREAMING_BUNDLE_MS, True),
        (["--runner=FlinkRunner", "--max_bundle_time_mills=1000"], 1000, False),
        (["--runner=FlinkRunner", "--max_bundle_time_millis=40"], 40, False),
        (["--runner=DataflowRunner"], None, False),
        ([], None, False),
    ],
)
def test_streaming_on_flink_gets_short_bundles_unless_told(
    argv: list[str], expected: int | None, changed: bool
) -> None:
    options = PipelineOptions(argv)
    assert runners.tune_flink_streaming(options) is changed
    assert options.view_as(FlinkStreamingOptions).max_bundle_time_mills == expected
