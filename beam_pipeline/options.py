r"""Pipeline options of the delivery job (a :class:`PipelineOptions` subclass).

They parse alongside every Beam option, so one command line carries both::

    python -m beam_pipeline run --config delivery.yaml --input 'data/*.jsonl.gz' \\
        --runner FlinkRunner --flink_master '[local]'
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.parse import DEFAULT_CHUNK_LINES


class DeliveryOptions(PipelineOptions):
    """Options of the telemetry delivery job."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            # Not required=True: Beam parses every registered PipelineOptions subclass for
            # every pipeline in the process, so a required option would break other
            # pipelines (e.g. tests) that do not pass it. The CLI checks it instead.
            "--config",
            default=None,
            help="Delivery config YAML (local, gs://, s3://).",
        )
        parser.add_argument(
            "--input",
            action="append",
            default=None,
            help="Input JSON-lines files: path or glob (local, gs://, s3://), plain or .gz.",
        )
        parser.add_argument(
            "--chunk_lines",
            "--chunk-lines",
            type=int,
            default=DEFAULT_CHUNK_LINES,
            help="Lines per chunk moved through the pipeline as one element (batch mode).",
        )
        parser.add_argument(
            "--subscription",
            default=None,
            help="Streaming: read this Pub/Sub subscription (projects/P/subscriptions/S).",
        )
        parser.add_argument(
            "--topic",
            default=None,
            help="Streaming: read events from this Pub/Sub topic (a temporary subscription).",
        )
        parser.add_argument(
            "--timestamp_attribute",
            "--timestamp-attribute",
            default=None,
            help="Streaming: Pub/Sub attribute holding the event time (default: publish time).",
        )
        parser.add_argument(
            "--config_refresh_s",
            "--config-refresh-s",
            type=float,
            default=None,
            help="Streaming: re-read --config this often (s) and apply new rules live.",
        )
        parser.add_argument(
            "--dedup_window_s",
            "--dedup-window-s",
            type=float,
            default=600.0,
            help="Streaming: drop an event whose event_id went on within this many seconds "
            "(Pub/Sub redeliveries), before Route; ids are remembered this long at least, "
            "twice this at most; 0 turns it off.",
        )
        parser.add_argument(
            "--run_for_s",
            "--run-for-s",
            type=float,
            default=None,
            help="Streaming: stop after this many seconds, then summarize (DirectRunner: "
            "cancel; portable reader: stop reading, drain, finish; counted from submission, "
            "so include the runner's start-up).",
        )
        parser.add_argument(
            "--pubsub_reader",
            "--pubsub-reader",
            choices=("auto", "beam", "portable"),
            default="auto",
            help="Streaming: Beam's ReadFromPubSub (DirectRunner, Dataflow) or the portable "
            "splittable-DoFn reader (Flink, Prism); auto picks portable for FlinkRunner, "
            "PortableRunner and PrismRunner.",
        )
        parser.add_argument(
            "--pubsub_ack",
            "--pubsub-ack",
            choices=("auto", "finalize", "immediate"),
            default="auto",
            help="Portable reader: ack after the runner commits (finalize, the default; on "
            "Flink it needs --checkpointing_interval) or right after reading (immediate: a "
            "failure can lose messages in flight; must be asked for on Flink without "
            "checkpointing).",
        )
        parser.add_argument(
            "--dead_letters",
            "--dead-letters",
            default=None,
            help="replay: dead-letter directory, file or glob to send back.",
        )
        parser.add_argument(
            "--connector", default=None, help="replay: only dead letters of this connector."
        )
        parser.add_argument(
            "--since",
            default=None,
            help="replay: only dead letters that failed at or after this ISO-8601 time.",
        )
        parser.add_argument(
            "--read_shards",
            "--read-shards",
            type=int,
            default=None,
            help="run: how many workers read each input file, each parsing every n-th chunk "
            "(gzip cannot be split: each decompresses the whole file). Default: with local "
            "worker processes and fewer files than workers, enough to give each a share; "
            "otherwise 1. On Dataflow or Flink, more than 1 spreads a few big files over "
            "more workers, at the price of reading each of them that many times.",
        )
        parser.add_argument(
            "--no_progress",
            "--no-progress",
            action="store_true",
            default=False,
            help="Do not draw backfill progress on the terminal.",
        )
        parser.add_argument(
            "--summary_json",
            "--summary-json",
            default=None,
            help="Also write the end-of-run summary as JSON to this path.",
        )


class FlinkStreamingOptions(PipelineOptions):
    """Flink options that Beam Python does not declare: typed, listed in ``--help``.

    Names must be Java's ``FlinkPipelineOptions`` in snake_case, spelling included: the job
    server maps ``max_bundle_time_mills`` to ``maxBundleTimeMills`` (Beam's own spelling)
    and silently ignores a name no option has, such as ``max_bundle_time_millis``
    (docs/flink.md, "Latency"). That name is accepted here as an alias of the right one.
    """

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--checkpointing_interval",
            type=int,
            default=None,
            help="Flink: checkpoint every N ms (Java FlinkPipelineOptions.checkpointingInterval)."
            " Needed for --pubsub-ack finalize and for state that survives failures.",
        )
        parser.add_argument(
            "--max_bundle_time_mills",
            "--max_bundle_time_millis",
            dest="max_bundle_time_mills",
            type=int,
            default=None,
            help="Flink: close a bundle after this many ms (Java maxBundleTimeMills; Beam's "
            "default 1000, this job's for streaming: 100). Outputs and fired timers leave a "
            "portable stage only when its bundle closes.",
        )
        parser.add_argument(
            "--max_bundle_size",
            type=int,
            default=None,
            help="Flink: close a bundle after this many elements (Flink's default: 1000).",
        )
