r"""Dataflow Flex Template launcher: validate the config, build the graph, submit, return.

The template's Docker image runs this file (``FLEX_TEMPLATE_PYTHON_PY_FILE``) with the
template parameters (``metadata.json``) and Dataflow's own options as flags::

    python templates/dataflow/main.py --config=gs://b/delivery.yaml \
        --subscription=projects/P/subscriptions/player-events \
        --runner=DataflowRunner --project=P --region=europe-west1 \
        --temp_location=gs://b/tmp --setup_file=/template/setup.py ...

It builds the same graph as ``python -m beam_pipeline run`` (``build_pipeline`` for
``--input``, ``build_streaming_pipeline`` for ``--subscription``/``--topic``) but does not
wait for the job or print a summary: a Flex Template launcher must return once the job
is submitted (a streaming job never finishes), and the counts are in the Dataflow UI as
Beam metrics. A config that fails validation stops the launch with every problem listed
in the launcher's log, before any worker starts.

Without ``--runner`` it submits to Dataflow. With Beam's ``--dry_run=True`` the graph is
built and translated for Dataflow and nothing is submitted (tests/test_dataflow.py).

Exit codes: 0 submitted (or translated, in a dry run); 2 bad parameters or config.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.options import DeliveryOptions
from beam_pipeline.pipeline import build_pipeline, build_streaming_pipeline
from transforms.config import ConfigError, load_config


class LaunchError(ValueError):
    """Template parameters that cannot make a job; the message says which and why."""


def build(argv: Sequence[str]) -> Any:
    """The job's pipeline, built from template parameters and Dataflow options.

    Raises:
        LaunchError: a missing or contradictory parameter.
        ConfigError: the config does not validate (every problem listed).
    """
    import apache_beam as beam

    options = PipelineOptions(list(argv))
    job = options.view_as(DeliveryOptions)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DataflowRunner"
    if not job.config:
        raise LaunchError("parameter config is required: the delivery config YAML (gs://...)")
    sources = [name for name in ("input", "subscription", "topic") if getattr(job, name)]
    if len(sources) != 1:
        raise LaunchError(
            "give exactly one of input (batch), subscription or topic (streaming); "
            f"got {', '.join(sources) or 'none'}"
        )
    if job.config_refresh_s is not None and job.config_refresh_s <= 0:
        raise LaunchError(f"config_refresh_s must be positive, not {job.config_refresh_s}")
    if job.chunk_lines < 1:
        raise LaunchError(f"chunk_lines must be at least 1, not {job.chunk_lines}")
    config = load_config(job.config)
    streaming = job.subscription is not None or job.topic is not None
    if streaming:
        standard.streaming = True
    elif job.config_refresh_s is not None:
        raise LaunchError("config_refresh_s applies to streaming jobs (subscription or topic)")
    pipeline = beam.Pipeline(options=options)
    if streaming:
        build_streaming_pipeline(
            pipeline,
            config,
            job.subscription,
            job.topic,
            job.timestamp_attribute,
            config_source=job.config,
            config_refresh_s=job.config_refresh_s,
        )
    else:
        build_pipeline(pipeline, config, list(job.input), job.chunk_lines)
    return pipeline


def main(argv: Sequence[str] | None = None) -> int:
    """Build and submit the job; print its id. Returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        pipeline = build(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = pipeline.run()
    job_id = getattr(result, "job_id", None)
    submitted = job_id() if callable(job_id) else None
    print(f"submitted Dataflow job {submitted}" if submitted else "job graph translated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
