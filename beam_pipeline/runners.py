"""Runner policy: which engine a run gets, and how it reads, when the user does not say.

The command line (:mod:`beam_pipeline.cli`) parses and reports; this module decides:

* batch without ``--runner``: Beam's in-process FnApiRunner (:func:`make_pipeline`), on
  every core for a large input (:func:`use_every_core`, :func:`read_shards`);
* streaming without ``--runner``: Prism, Beam's portable local runner (:func:`use_prism`),
  which stops by draining on SIGINT/SIGTERM (:func:`drain_on_signals`);
* how Pub/Sub is read and acknowledged on each runner (:func:`pubsub_reading`), and a
  subscription of its own for ``--topic`` (:func:`temporary_subscription`).

Every choice here yields to the flag that names it explicitly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transforms.pubsub_read import PubSubReading


NO_PRISM_SPLITS = "prism_disable_sdf_split"
"""The Prism experiment that keeps every bundle whole (see :func:`make_pipeline`)."""


def make_pipeline(options: Any, skip: Sequence[str] = ()) -> Any:
    """A pipeline on the given runner, or a pinned local one when none is given.

    Batch: Beam's FnApiRunner, whose worker processes (if any) import Beam without the
    modules in ``skip`` (:class:`~beam_pipeline.local_runner.LocalRunner`). Streaming:
    Prism (set by :func:`use_prism` before this); ``--runner DirectRunner`` gets the
    BundleBasedDirectRunner (the DirectRunner's streaming engine), pinned so it does not
    try to download Prism first.

    On Prism, default or asked for, dynamic splitting is off (:data:`NO_PRISM_SPLITS`):
    Prism 2.77 splits any bundle that shows no progress, stateful ones included, and hands
    the residual's keys to a new bundle that reads their state without the primary's
    writes, so one of the writes is lost (dedup passed two copies of an event; a
    GroupIntoBatches buffer can lose or repeat elements). The job needs no splitting: its
    Pub/Sub reader ends every bundle after one pull. Evidence: docs/beam-limits.md,
    "Prism splits stateful bundles"; tests/test_prism_stateful_split.py.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import DebugOptions, StandardOptions

    if runner_family(options) == "prism":
        debug = options.view_as(DebugOptions)
        if not debug.lookup_experiment(NO_PRISM_SPLITS):
            debug.add_experiment(NO_PRISM_SPLITS)
    runner: Any = None
    standard = options.view_as(StandardOptions)
    if standard.streaming and standard.runner in (None, "DirectRunner"):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        runner = BundleBasedDirectRunner()
    elif standard.runner is None:
        from beam_pipeline.local_runner import LocalRunner

        runner = LocalRunner(skip)
    return beam.Pipeline(runner=runner, options=options)


AUTO_WORKERS_MIN_BYTES = 8 * 1024 * 1024
"""Input size from which a local batch run uses a worker process per core (and file)."""

_WORKER_FLAGS = ("--runner", "--direct_num_workers", "--direct_running_mode")


def use_every_core(options: Any, argv: Sequence[str], files: dict[str, int]) -> bool:
    """Run a large local backfill on every core: one worker process per core.

    Applies when no ``--runner``, ``--direct_num_workers`` or ``--direct_running_mode`` is
    given and the input is larger than :data:`AUTO_WORKERS_MIN_BYTES`. Gzip cannot be
    split, so with fewer files than cores each file is read by several workers, each
    parsing every n-th chunk (:func:`read_shards`). Each worker costs ~1.3 CPU-s to start
    (it imports Beam, without the clients the run skips: :mod:`beam_pipeline.worker`),
    which is why small inputs stay in one process (the measurements: bench/RESULTS.md).
    Prints what it chose on stderr; the flags above always win.
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


@contextlib.contextmanager
def temporary_subscription(topic: str) -> Iterator[str]:
    """A pull subscription on ``topic`` for this run only (``--topic``), deleted after it.

    As with Beam's ``ReadFromPubSub(topic=...)``, only messages published after the run
    starts are read. The name is the topic's with ``-td-`` and a random suffix.
    """
    import uuid

    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

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


def use_prism(options: Any) -> str | None:
    """Make Prism the runner of a streaming run that names none; a problem, or None.

    Prism (Beam's portable local runner) is the embedded streaming engine: the binary
    comes from :func:`beam_pipeline.prism.prism_path` (built once with Go, cached), the
    SDK harness runs in this process (``LOOPBACK``) unless ``--environment_type`` says
    otherwise. :func:`make_pipeline` keeps its bundles whole.
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
def drain_on_signals() -> Iterator[None]:
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


def runner_family(options: Any) -> str:
    """The runner's name without "Runner", lower case: ``"flink"``, ``"prism"``, ``""``."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    return name.rsplit(".", 1)[-1].lower().removesuffix("runner")


_ONE_MACHINE = {"fnapi", "direct", "bundlebaseddirect", "switchingdirect", "prism", "testdirect"}


def shares_local_disk(pipeline: Any) -> bool:
    """Whether every worker of ``pipeline``'s runner is on this machine (one local disk).

    True for the FnApiRunner, the DirectRunner, Prism and Flink's embedded cluster
    (``--flink_master=[local]``/``[auto]``); False for Dataflow, a Flink cluster and any
    runner not known here. Where it holds, backfills spill each (connector, prefix)'s
    records to local disk and hand on only the files' paths; elsewhere the records go
    through the runner's shuffle (:class:`transforms.batch.CutBatches`).
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    runner = getattr(pipeline, "runner", None)
    if isinstance(runner, FnApiRunner):  # LocalRunner (beam_pipeline/local_runner.py) too
        return True
    name = type(runner).__name__ if runner is not None else ""
    family = name.lower().removesuffix("runner") or runner_family(pipeline.options)
    if family == "flink":
        from apache_beam.options.pipeline_options import FlinkRunnerOptions

        master = pipeline.options.view_as(FlinkRunnerOptions).flink_master or "[auto]"
        return master in ("[local]", "[auto]")
    return family in _ONE_MACHINE


FLINK_STREAMING_BUNDLE_MS = 25
"""Bundle time limit of a streaming run on Flink unless ``--max_bundle_time_mills`` says.

A portable Flink stage hands on its outputs and fired timers only when its bundle
closes, by default every 1,000 ms, checked every 500 ms: each batch left
``GroupIntoBatches`` 1.5 s apart and a 0.5 s ``max_wait_s`` became p50 2.4 s / p99 3.1 s
of latency. Every stage of the path pays it, dedup's included: at 200 events/s with the
dedup window on, p99 1.10-1.19 s at 100 ms, 0.89-1.03 s at 50 ms, 0.82-0.84 s at 25 ms;
CPU per event within this machine's noise at 200/s, and at 1,000/s 0.76 ms at 25 ms vs
0.59-0.82 ms at 100 and 50 (bench/RESULTS.md, "Session 13: streaming latency";
docs/flink.md, "Latency")."""


def tune_flink_streaming(options: Any) -> bool:
    """Give a streaming run on Flink :data:`FLINK_STREAMING_BUNDLE_MS` bundles; True if set.

    The flag wins when given (any spelling :class:`~beam_pipeline.options.FlinkStreamingOptions`
    accepts).
    """
    from beam_pipeline.options import FlinkStreamingOptions

    flink = options.view_as(FlinkStreamingOptions)
    if runner_family(options) != "flink" or flink.max_bundle_time_mills is not None:
        return False
    flink.max_bundle_time_mills = FLINK_STREAMING_BUNDLE_MS
    return True


def pubsub_reading(options: Any, job: Any) -> PubSubReading:
    """How to read Pub/Sub, from ``--pubsub-reader``, ``--pubsub-ack`` and the runner.

    Raises:
        ReadingError: for the portable reader on Flink without checkpointing, unless
            ``--pubsub-ack immediate`` is asked for explicitly (Flink finalizes bundles
            only on checkpoints: ``finalize`` would never ack, and choosing ``immediate``
            silently would risk losing messages in flight).
    """
    from beam_pipeline.options import FlinkStreamingOptions
    from transforms.pubsub_read import MAX_LEASE_S, PubSubReading

    family = runner_family(options)
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
