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
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from beam_pipeline.startup import import_beam, modules_to_skip
from transforms.config import ConfigError, DeliveryConfig, load_config
from transforms.progress import PROGRESS, ProgressPrinter
from transforms.runtime import tune_gc

if TYPE_CHECKING:
    from transforms.pubsub_read import PubSubReading

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


def _pipeline(options: Any, skip: Sequence[str] = ()) -> Any:
    """A pipeline on the given runner, or a pinned local one when none is given.

    Batch: Beam's FnApiRunner, whose worker processes (if any) import Beam without the
    modules in ``skip`` (:class:`~beam_pipeline.local_runner.LocalRunner`). Streaming:
    Prism (set by :func:`_use_prism` before this); ``--runner DirectRunner`` gets the
    BundleBasedDirectRunner (the DirectRunner's streaming engine), pinned so it does not
    try to download Prism first.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    runner: Any = None
    standard = options.view_as(StandardOptions)
    if standard.streaming and standard.runner in (None, "DirectRunner"):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        runner = BundleBasedDirectRunner()
    elif standard.runner is None:
        from beam_pipeline.local_runner import LocalRunner

        runner = LocalRunner(skip)
    return beam.Pipeline(runner=runner, options=options)


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
    SIGINT and SIGTERM stop the reader and the job drains (:func:`_drain_on_signals`).
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
            with _drain_on_signals():
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
            "retry_topic or dead_letter is a Pub/Sub topic, which only a streaming run uses; "
            "for a batch run use a directory, gs:// or s3:// location"
        )
    _use_every_core(options, argv, files)
    pipeline = _pipeline(options, skip)
    shards = read_shards(options, files)
    build_pipeline(pipeline, config, list(job.input), job.chunk_lines, shards)
    PROGRESS.reset(sum(files.values()), len(files))
    return _finish(pipeline, config, job.summary_json, progress=_show_progress(options, job))


AUTO_WORKERS_MIN_BYTES = 8 * 1024 * 1024
"""Input size from which a local batch run uses a worker process per core (and file)."""

_WORKER_FLAGS = ("--runner", "--direct_num_workers", "--direct_running_mode")


def _use_every_core(options: Any, argv: Sequence[str], files: dict[str, int]) -> bool:
    """Run a large local backfill on every core: one worker process per core.

    Applies when no ``--runner``, ``--direct_num_workers`` or ``--direct_running_mode`` is
    given and the input is larger than :data:`AUTO_WORKERS_MIN_BYTES`. Gzip cannot be
    split, so with fewer files than cores each file is read by several workers, each
    parsing every n-th chunk (:func:`read_shards`). Each worker costs ~1.3 CPU-s to start
    (it imports Beam, without the clients the run skips: :mod:`beam_pipeline.worker`),
    which is why small inputs stay in one process. Measured at 1M events on one file:
    1.9-2.3x the throughput of the single-process plain-Python bound instead of 1.2-1.4x
    (bench/RESULTS.md). Prints what it chose on stderr; the flags above always win.
    """
    from apache_beam.options.pipeline_options import DirectOptions

    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    cores = os.cpu_count() or 1
    size = sum(files.values())
    if given.intersection(_WORKER_FLAGS) or not files or cores < 2:
        return False
    if size <= AUTO_WORKERS_MIN_BYTES:
        return False
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = cores
    direct.direct_running_mode = "multi_processing"
    shards = read_shards(options, files)
    each = f", {shards} reading each file" if shards > 1 else ""
    print(
        f"using {cores} worker processes for {len(files)} input file"
        f"{'s' if len(files) > 1 else ''} "
        f"({size / 2**20:.0f} MiB){each}; --direct_num_workers 1 runs in this process",
        file=sys.stderr,
    )
    return True


def read_shards(options: Any, files: dict[str, int]) -> int:
    """How many workers read each input file (``ReadEventChunks(shards=...)``).

    ``--read-shards`` when given. Otherwise 1 in one process; with worker processes
    (``--direct_running_mode multi_processing``) and fewer files than workers, enough for
    every worker to have a share of the input.
    """
    from apache_beam.options.pipeline_options import DirectOptions

    from beam_pipeline.options import DeliveryOptions

    given = options.view_as(DeliveryOptions).read_shards
    if given is not None:
        return int(given)
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing" or not files:
        return 1
    workers = direct.direct_num_workers or os.cpu_count() or 1
    return -(-workers // len(files)) if len(files) < workers else 1


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
    options.view_as(StandardOptions).streaming = True
    if options.view_as(StandardOptions).runner is None:
        problem = _use_prism(options)
        if problem:
            return _fail(problem)
    try:
        reading = _pubsub_reading(options, job)
    except ReadingError as exc:
        return _fail(str(exc))
    with contextlib.ExitStack() as stack:
        subscription, topic = job.subscription, job.topic
        if reading.portable and topic:
            # The portable reader reads subscriptions: --topic gets one for this run.
            try:
                subscription = stack.enter_context(_temporary_subscription(topic))
            except Exception as exc:  # the client's errors: say which and stop
                return _fail(f"cannot create a subscription on --topic {topic}: {exc}")
            topic = None
        pipeline = _pipeline(options)
        build_streaming_pipeline(
            pipeline,
            config,
            subscription,
            topic,
            job.timestamp_attribute,
            config_source=job.config,
            config_refresh_s=job.config_refresh_s,
            reading=reading,
        )
        # The portable reader stops by itself at run_for_s, or at SIGINT/SIGTERM, and the
        # job drains and finishes; Beam's reader never stops, so that job is cancelled
        # after run_for_s (the DirectRunner: documented as a functional stand-in only).
        if not reading.portable:
            return _finish(pipeline, config, job.summary_json, job.run_for_s)
        return _finish(pipeline, config, job.summary_json, drain=True)
    return 1  # not reached: the block returns (mypy cannot tell ExitStack does not swallow)


@contextlib.contextmanager
def _temporary_subscription(topic: str) -> Iterator[str]:
    """A pull subscription on ``topic`` for this run only (``--topic``), deleted after it.

    As with Beam's ``ReadFromPubSub(topic=...)``, only messages published after the run
    starts are read. The name is the topic's with ``-td-`` and a random suffix.
    """
    import uuid

    from google.cloud import pubsub_v1

    if not topic.startswith("projects/") or "/topics/" not in topic:
        raise ValueError("expected projects/P/topics/T")
    project, short = topic.split("/")[1], topic.rsplit("/", 1)[-1]
    name = f"projects/{project}/subscriptions/{short[:200]}-td-{uuid.uuid4().hex[:12]}"
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(
        request={"name": name, "topic": topic, "ack_deadline_seconds": 60}, timeout=30
    )
    print(f"reading --topic through the temporary subscription {name}", file=sys.stderr)
    try:
        yield name
    finally:
        try:
            subscriber.delete_subscription(request={"subscription": name}, timeout=30)
        except Exception as exc:  # leave it, say so: Pub/Sub expires idle ones after 31 days
            print(f"warning: cannot delete subscription {name}: {exc}", file=sys.stderr)
        subscriber.close()


def _use_prism(options: Any) -> str | None:
    """Make Prism the runner of a streaming run that names none; a problem, or None.

    Prism (Beam's portable local runner) is the embedded streaming engine: the binary
    comes from :func:`beam_pipeline.prism.prism_path` (built once with Go, cached), the
    SDK harness runs in this process (``LOOPBACK``) unless ``--environment_type`` says
    otherwise.
    """
    from apache_beam.options.pipeline_options import (
        PortableOptions,
        PrismRunnerOptions,
        StandardOptions,
    )

    from beam_pipeline.prism import PrismUnavailable, prism_path

    prism = options.view_as(PrismRunnerOptions)
    if not prism.prism_location:
        try:
            prism.prism_location = prism_path()
        except PrismUnavailable as exc:
            return str(exc)
    portable = options.view_as(PortableOptions)
    if not portable.environment_type:
        portable.environment_type = "LOOPBACK"
    options.view_as(StandardOptions).runner = "PrismRunner"
    return None


@contextlib.contextmanager
def _drain_on_signals() -> Iterator[None]:
    """SIGINT/SIGTERM stop the portable reader, so the job drains and ends by itself.

    Draining: open batches flush, dead letters are written and held retries go back to
    their topic before the job finishes (the reader ends, so the watermark reaches the
    end). It needs the reader in this process (``LOOPBACK``: the default engine); on a
    cluster use the runner's own drain (Flink stop --drain, ``gcloud dataflow jobs
    drain``). A second signal stops at once, as the signal would without this.
    """
    import signal

    from transforms.pubsub_read import STOP

    previous: dict[int, Any] = {}

    def drain(signum: int, frame: Any) -> None:
        if STOP.is_set():
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        print(
            f"{signal.Signals(signum).name}: stopping the read and draining "
            "(again to stop at once)",
            file=sys.stderr,
        )
        STOP.set()

    STOP.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, drain)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


PORTABLE_RUNNERS = ("flink", "portable", "prism")
"""Runners (names without "Runner", any case) that get the portable Pub/Sub reader."""


class ReadingError(ValueError):
    """A streaming run whose Pub/Sub acknowledgement would be unsafe or never happen."""


def _pubsub_reading(options: Any, job: Any) -> PubSubReading:
    """How to read Pub/Sub, from ``--pubsub-reader``, ``--pubsub-ack`` and the runner.

    Raises:
        ReadingError: for the portable reader on Flink without checkpointing, unless
            ``--pubsub-ack immediate`` is asked for explicitly (Flink finalizes bundles
            only on checkpoints: ``finalize`` would never ack, and choosing ``immediate``
            silently would risk losing messages in flight).
    """
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_pipeline.options import FlinkStreamingOptions
    from transforms.pubsub_read import MAX_LEASE_S, PubSubReading

    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    family = name.rsplit(".", 1)[-1].lower().removesuffix("runner")
    portable = job.pubsub_reader == "portable" or (
        job.pubsub_reader == "auto" and family in PORTABLE_RUNNERS
    )
    interval_ms = options.view_as(FlinkStreamingOptions).checkpointing_interval or 0
    ack = job.pubsub_ack
    if portable and not interval_ms and family != "prism" and ack != "immediate":
        raise ReadingError(
            "the portable Pub/Sub reader acks after Flink checkpoints: set "
            "--checkpointing_interval (e.g. 60000), or accept losing the messages in flight "
            "on a failure with --pubsub-ack immediate"
        )
    if ack == "auto":
        ack = "finalize"
    if portable and ack == "immediate":
        print(
            "note: Pub/Sub messages are acked as soon as they are read (--pubsub-ack "
            "immediate): a failure can lose those still in the job.",
            file=sys.stderr,
        )
    # A message waits up to one checkpoint interval for its ack: lease it for two.
    lease_s = min(MAX_LEASE_S, 2 * interval_ms // 1000 + 30) if interval_ms else None
    if portable and ack == "finalize" and interval_ms > MAX_LEASE_S * 1000 // 2:
        print(
            f"note: --checkpointing_interval {interval_ms} ms is long for Pub/Sub leases "
            f"(at most {MAX_LEASE_S} s): messages may be redelivered before they are acked.",
            file=sys.stderr,
        )
    stop_at = time.time() + job.run_for_s if portable and job.run_for_s else None
    return PubSubReading(portable=portable, ack=ack, stop_at=stop_at, lease_s=lease_s)


def cmd_retry(argv: Sequence[str]) -> int:
    """Process the retry location once: redeliver what is due (see beam_pipeline.redeliver).

    Refused (exit 2) without a ``retry_topic``, with a Pub/Sub one (the streaming job
    retries those itself; there is nothing to schedule), or with a Pub/Sub
    ``dead_letter.topic`` (this command writes its dead letters as files).
    """
    from beam_pipeline.redeliver import build_retry

    options, job, config = _options(argv)
    if config is None:
        return 2
    if config.retry_topic is None:
        return _fail(
            f"{job.config} has no retry_topic: there is nothing to retry. Fix: set "
            "retry_topic to the directory, gs:// or s3:// location the run writes retries to"
        )
    if config.retry_on_pubsub:
        return _fail(
            f"{job.config}: retry_topic {config.retry_topic} is a Pub/Sub topic, which the "
            "streaming job (run --streaming) retries by itself from retry_subscription: "
            "there is nothing to schedule. Fix: to use the retry command, set retry_topic "
            "to a directory, gs:// or s3:// location (batch runs)"
        )
    if config.dead_letter.topic:
        return _fail(
            f"{job.config}: dead_letter.topic is a Pub/Sub topic, but retry writes what it "
            "gives up on as files. Fix: set dead_letter.path to a directory, gs:// or s3://"
        )
    pipeline = _pipeline(options)
    build_retry(pipeline, config)
    return _finish(pipeline, config, job.summary_json)


def cmd_replay(argv: Sequence[str]) -> int:
    """Send dead letters back through delivery (see beam_pipeline.redeliver).

    What fails again but may be retried goes to ``retry_topic``: files in the retry
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
    pipeline = _pipeline(options)
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
