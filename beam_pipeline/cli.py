"""Command line: ``python -m beam_pipeline <command>`` (or the ``telemetry-delivery`` script).

Commands::

    run       --config FILE --input GLOB [--input GLOB ...] [any Beam pipeline option]
    run       --config FILE --streaming --subscription projects/P/subscriptions/S [Beam options]
    validate  --config FILE [--event FILE]
    dry-run   --config FILE --event JSON_OR_FILE
    retry     --config FILE [Beam options]   (process the retry location once; schedule it)
    replay    --config FILE --dead-letters PATH [--connector ID] [--since TIME] [Beam options]
    report    --summary-json PATH [PATH ...] --out report.html

``run`` without ``--runner`` uses Beam's in-process FnApiRunner (the engine behind the
DirectRunner), pinned explicitly so it needs no network and runs ``GroupIntoBatches``
and stateful stages at full speed. Any other runner (``--runner FlinkRunner``,
``--runner DataflowRunner``) is used as given.

Exit codes: 0 success; 1 the run finished but its counts do not add up, or the config
is invalid (``validate``); 2 bad usage or a config/input problem before the job starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from beam_pipeline import runners
from beam_pipeline.startup import import_beam, modules_to_skip
from transforms.config import ConfigError, DeliveryConfig, load_config
from transforms.progress import PROGRESS, ProgressPrinter
from transforms.runtime import tune_gc

USAGE = __doc__


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _load(path: str) -> DeliveryConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def cmd_validate(argv: Sequence[str]) -> int:
    """Check a config, then probe it with an event; print every problem; exit 1 if any."""
    from beam_pipeline.probe import ProbeEventError, load_probe_events, probe_config

    parser = argparse.ArgumentParser(
        prog="beam_pipeline validate", description="Check a delivery config."
    )
    parser.add_argument(
        "--config", required=True, help="Delivery config YAML (local, gs://, s3://)."
    )
    parser.add_argument(
        "--event",
        help="A file of one event (JSON) or several (JSON lines) to probe the connectors "
        "with; default: a bundled heartbeat, fitted to each connector's route.",
    )
    args = parser.parse_args(argv)
    config = _load(args.config)
    if config is None:
        return 1
    try:
        events = load_probe_events(args.event) if args.event else None
    except ProbeEventError as exc:
        return _fail(str(exc))
    report = probe_config(config, events)
    for note in report.notes:
        print(f"note: {note}")
    if report.problems:
        print(str(ConfigError(args.config, report.problems)), file=sys.stderr)
        return 1
    ids = ", ".join(f"{c.id} ({c.type})" for c in config.connectors)
    print(f"{args.config}: OK, {len(config.connectors)} connector(s): {ids}")
    return 0


def _read_events(arg: str) -> list[bytes]:
    stripped = arg.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        return [arg.encode("utf-8")]
    with open(arg, "rb") as fh:
        return [line.rstrip(b"\r\n") for line in fh if line.strip()]


def cmd_dry_run(argv: Sequence[str]) -> int:
    """Show, per connector, whether an event routes there and the exact record it gets."""
    from beam_pipeline.dryrun import explain
    from transforms.rules.events import parse_line
    from transforms.rules.records import DeadLetter

    parser = argparse.ArgumentParser(
        prog="beam_pipeline dry-run", description="Show what each connector would receive."
    )
    parser.add_argument("--config", required=True, help="Delivery config YAML.")
    parser.add_argument("--event", required=True, help="One event as JSON, or a JSON-lines file.")
    args = parser.parse_args(argv)
    config = _load(args.config)
    if config is None:
        return 2
    try:
        lines = _read_events(args.event)
    except OSError as exc:
        return _fail(f"--event is neither JSON nor a readable file: {exc}")
    for line in lines:
        parsed = parse_line(line)
        if isinstance(parsed, DeadLetter):
            report: Any = {"dead_letter": parsed.to_json_dict()}
        else:
            report = {"event_id": parsed["event_id"], "connectors": explain(parsed, config)}
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
    return 0


def _finish(
    pipeline: Any,
    config: DeliveryConfig,
    summary_json: str | None,
    run_for_s: float | None = None,
    progress: bool = False,
    drain: bool = False,
) -> int:
    """Run a built pipeline, print the summary, write it as JSON if asked.

    With ``run_for_s`` (streaming), stop the job after that many seconds. With ``drain``,
    SIGINT and SIGTERM stop the reader and the job drains (:func:`drain_on_signals`).
    """
    from apache_beam.runners.runner import PipelineState

    from beam_pipeline.summary import collect_summary, format_summary

    tune_gc()  # freeze Beam's objects, collect rarely (see its docstring)
    started = time.monotonic()
    with ProgressPrinter() if progress else contextlib.nullcontext():
        result = pipeline.run()
        if drain:
            # Installed after run(): a portable runner's job server sets its own SIGINT
            # handler when it starts, one that stops the server (and the job) at once.
            with runners.drain_on_signals():
                result.wait_until_finish()
        elif run_for_s is not None:
            time.sleep(run_for_s)
            if result.state == PipelineState.FAILED:
                print("error: the streaming job failed; see the log above", file=sys.stderr)
                return 1
            result.cancel()
        else:
            result.wait_until_finish()
    elapsed = time.monotonic() - started
    summary = collect_summary(result, config)
    summary["elapsed_s"] = round(elapsed, 3)
    print(format_summary(summary, elapsed))
    if summary_json:
        folder = os.path.dirname(summary_json)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(summary_json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    return 0 if summary["balanced"] else 1


def _options(argv: Sequence[str]) -> tuple[Any, Any, DeliveryConfig | None]:
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.options import DeliveryOptions

    options = PipelineOptions(list(argv))
    job = options.view_as(DeliveryOptions)
    if not job.config:
        print("error: --config is required: the delivery config YAML", file=sys.stderr)
        return options, job, None
    return options, job, _load(job.config)


def cmd_run(argv: Sequence[str]) -> int:
    """Run the batch job and print the per-connector summary."""
    skip = modules_to_skip(argv)
    import_beam(skip)  # first: skips cloud clients a local run never uses
    from apache_beam.io.filesystems import FileSystems

    from beam_pipeline.pipeline import build_pipeline

    options, job, config = _options(argv)
    if config is None:
        return 2
    if job.subscription or job.topic:
        return _run_streaming(options, job, config)
    if not job.input:
        return _fail("--input is required: a path or glob of JSON-lines files (plain or .gz)")
    files: dict[str, int] = {}
    # Listing runs before the pipeline (which would hand the filesystems their options):
    # without them Beam's S3 filesystem refuses to list ("Must provide one of client or
    # options") and --s3_endpoint_url, GCS and Azure options would not apply.
    FileSystems.set_options(options)
    for pattern in job.input:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # Beam raises BeamIOError and filesystem-specific errors
            return _fail(f"--input {pattern!r} cannot be listed: {exc}")
        if not matched:
            return _fail(f"--input {pattern!r} matches no files")
        files.update((m.path, m.size_in_bytes) for m in matched)
    if job.chunk_lines < 1:
        return _fail("--chunk-lines must be at least 1")
    if job.read_shards is not None and job.read_shards < 1:
        return _fail("--read-shards must be at least 1")
    if config.retry_on_pubsub or config.dead_letter.topic:
        return _fail(
            "retry_location or dead_letter is a Pub/Sub topic, which only a streaming run uses; "
            "for a batch run use a directory, gs:// or s3:// location"
        )
    runners.use_every_core(options, argv, files)
    pipeline = runners.make_pipeline(options, skip)
    shards = runners.read_shards(options, files)
    build_pipeline(pipeline, config, list(job.input), job.chunk_lines, shards)
    PROGRESS.reset(sum(files.values()), len(files))
    return _finish(pipeline, config, job.summary_json, progress=_show_progress(options, job))


def _show_progress(options: Any, job: Any) -> bool:
    """Progress only on a terminal, when reading happens in this process (see progress.py)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if job.no_progress or not sys.stderr.isatty():
        return False
    local = options.view_as(StandardOptions).runner is None
    return local and options.view_as(DirectOptions).direct_running_mode != "multi_processing"


def _run_streaming(options: Any, job: Any, config: DeliveryConfig) -> int:
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_pipeline.pipeline import build_streaming_pipeline

    if job.subscription and job.topic:
        return _fail("give --subscription or --topic, not both")
    if job.input:
        return _fail("--input is for batch runs; a streaming run reads --subscription or --topic")
    if job.config_refresh_s is not None and job.config_refresh_s <= 0:
        return _fail("--config-refresh-s must be positive")
    if not 0 <= job.dedup_window_s <= 86400:
        return _fail("--dedup-window-s must be 0 (off) to 86400 (a day)")
    options.view_as(StandardOptions).streaming = True
    if options.view_as(StandardOptions).runner is None:
        problem = runners.use_prism(options)
        if problem:
            return _fail(problem)
    runners.tune_flink_streaming(options)
    try:
        reading = runners.pubsub_reading(options, job)
    except runners.ReadingError as exc:
        return _fail(str(exc))
    with contextlib.ExitStack() as stack:
        subscription, topic = job.subscription, job.topic
        if reading.portable and topic:
            # The portable reader reads subscriptions: --topic gets one for this run.
            try:
                subscription = stack.enter_context(runners.temporary_subscription(topic))
            except Exception as exc:  # the client's errors: say which and stop
                return _fail(f"cannot create a subscription on --topic {topic}: {exc}")
            topic = None
        pipeline = runners.make_pipeline(options)
        build_streaming_pipeline(
            pipeline,
            config,
            subscription,
            topic,
            job.timestamp_attribute,
            config_source=job.config,
            config_refresh_s=job.config_refresh_s,
            reading=reading,
            dedup_window_s=job.dedup_window_s,
        )
        # The portable reader stops by itself at run_for_s, or at SIGINT/SIGTERM, and the
        # job drains and finishes; Beam's reader never stops, so that job is cancelled
        # after run_for_s (the DirectRunner: documented as a functional stand-in only).
        if not reading.portable:
            return _finish(pipeline, config, job.summary_json, job.run_for_s)
        return _finish(pipeline, config, job.summary_json, drain=True)
    return 1  # not reached: the block returns (mypy cannot tell ExitStack does not swallow)


def cmd_retry(argv: Sequence[str]) -> int:
    """Process the retry location once: redeliver what is due (see beam_pipeline.redeliver).

    Refused (exit 2) without a ``retry_location``, with a Pub/Sub one (the streaming job
    retries those itself; there is nothing to schedule), or with a Pub/Sub
    ``dead_letter.topic`` (this command writes its dead letters as files).
    """
    from beam_pipeline.redeliver import build_retry

    options, job, config = _options(argv)
    if config is None:
        return 2
    if config.retry_location is None:
        return _fail(
            f"{job.config} has no retry_location: there is nothing to retry. Fix: set "
            "retry_location to the directory, gs:// or s3:// location the run writes retries to"
        )
    if config.retry_on_pubsub:
        return _fail(
            f"{job.config}: retry_location {config.retry_location} is a Pub/Sub topic, which the "
            "streaming job (run --streaming) retries by itself from retry_subscription: "
            "there is nothing to schedule. Fix: to use the retry command, set retry_location "
            "to a directory, gs:// or s3:// location (batch runs)"
        )
    if config.dead_letter.topic:
        return _fail(
            f"{job.config}: dead_letter.topic is a Pub/Sub topic, but retry writes what it "
            "gives up on as files. Fix: set dead_letter.path to a directory, gs:// or s3://"
        )
    pipeline = runners.make_pipeline(options)
    build_retry(pipeline, config)
    return _finish(pipeline, config, job.summary_json)


def cmd_replay(argv: Sequence[str]) -> int:
    """Send dead letters back through delivery (see beam_pipeline.redeliver).

    What fails again but may be retried goes to ``retry_location``: files in the retry
    location, or messages published to it when it is a Pub/Sub topic (for the streaming
    job). Refused (exit 2) with a Pub/Sub ``dead_letter.topic``: new dead letters are files.
    """
    from beam_pipeline.redeliver import build_replay
    from transforms.rules.events import to_epoch_ms

    options, job, config = _options(argv)
    if config is None:
        return 2
    if not job.dead_letters:
        return _fail("--dead-letters is required: a dead-letter directory, file or glob")
    if config.dead_letter.topic:
        return _fail(
            f"{job.config}: dead_letter.topic is a Pub/Sub topic, but replay writes new dead "
            "letters as files. Fix: set dead_letter.path to a directory, gs:// or s3://"
        )
    since_ms = None
    if job.since:
        since_ms = to_epoch_ms(job.since)
        if since_ms is None:
            return _fail(f"--since {job.since!r} is not an ISO-8601 time or epoch milliseconds")
    if job.connector and job.connector not in {c.id for c in config.connectors}:
        return _fail(f"--connector {job.connector!r} is not a connector of {job.config}")
    pipeline = runners.make_pipeline(options)
    build_replay(pipeline, config, job.dead_letters, job.connector, since_ms)
    return _finish(pipeline, config, job.summary_json)


def cmd_report(argv: Sequence[str]) -> int:
    """Render summaries (from --summary-json) as a self-contained HTML page with plots."""
    from beam_pipeline.report import write_report

    parser = argparse.ArgumentParser(
        prog="beam_pipeline report", description="Draw a delivery report from run summaries."
    )
    parser.add_argument(
        "--summary-json", "--summary_json", nargs="+", required=True, help="Summary JSON file(s)."
    )
    parser.add_argument("--out", required=True, help="The HTML file to write.")
    args = parser.parse_args(argv)
    try:
        write_report(args.summary_json, args.out)
    except (OSError, ValueError, KeyError) as exc:
        return _fail(f"cannot make the report: {type(exc).__name__}: {exc}")
    print(f"wrote {args.out}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "dry-run": cmd_dry_run,
    "retry": cmd_retry,
    "replay": cmd_replay,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m beam_pipeline`` and the ``telemetry-delivery`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return COMMANDS[args[0]](args[1:])
