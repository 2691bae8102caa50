"""The small interface every connector implements, and the errors it raises.

A connector author writes four things (compare Beam's ``requestresponse.Caller``)::

    class MySink(Sink):
        def open(self): self.client = make_client()          # once per DoFn instance (setup)
        def write(self, batch): ...                          # send one batch; return a WriteResult
        def close(self): self.client.close()                 # teardown

and raises :class:`DeliveryError` with ``retryable`` set by the destination's rules when a
batch cannot be delivered. Everything else (batching, retries, metrics, dead letters) is
shared code in :mod:`transforms.batch` and :mod:`transforms.deliver`.

:class:`DeliveryBatch`, :class:`WriteResult`, :class:`DeliveryError`,
:class:`PartialDeliveryError` and :class:`ItemFailure` are plain values defined in
:mod:`transforms.rules.delivery` (the shared retry rules use them without importing any
connector code); import them from here, next to :class:`Sink`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from transforms.connectors._policy import redact
from transforms.connectors.secrets import plain
from transforms.rules.compress import COMPRESSIONS, Compression, format_name, split_format
from transforms.rules.delivery import (
    DeliveryBatch,
    DeliveryError,
    ItemFailure,
    PartialDeliveryError,
    WriteResult,
)
from transforms.rules.encode import (
    FORMATS,
    GZIP_LEVEL,
    PARQUET_COMPRESSION,
    PARQUET_COMPRESSIONS,
    PARQUET_ROW_GROUP_MB_MAX,
    SCHEMA_FORMATS,
    TEXT_FORMATS,
    ZSTD_LEVEL,
    Encoded,
    Encoding,
    ParquetCompression,
    avro_schema,
)
from transforms.rules.naming import PrefixTemplate, check_max_bytes
from transforms.rules.schema import Column, compile_schema, derive_file_schema, schema_spec

__all__ = [
    "Batch",
    "ConnectorSpec",
    "DeliverConfig",
    "DeliveryBatch",
    "DeliveryError",
    "ItemFailure",
    "ObjectLayout",
    "PartialDeliveryError",
    "Sink",
    "StrictModel",
    "WriteResult",
    "refused_error",
]


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are immutable, numbers finite.

    A field that is not a secret may be given by reference too (``endpoint:
    ${env:URL}``): it is resolved when the section is validated. Secret fields
    (``SecretStr``) keep the :class:`~transforms.connectors.secrets.SecretRef`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    keeps_references: ClassVar[frozenset[str]] = frozenset()
    """Fields validated later by another model, kept with their references as given."""

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        field = cls.model_fields.get(name)
        if name in cls.keeps_references or (
            field is not None and "SecretStr" in str(field.annotation)
        ):
            return value
        value = plain(value)
        if field is not None:
            _refuse_boolean_numbers(value, field.annotation)
        return value


def _refuse_boolean_numbers(value: Any, annotation: Any) -> None:
    """Raise where ``value`` (or an item of a list) is a bool and a number is expected.

    pydantic reads ``true`` as 1, so ``max_events: true`` would be one event per batch.
    """
    leaves = _leaf_types(annotation)
    if leaves & {bool, Any}:
        return
    if isinstance(value, bool) and leaves & {int, float}:
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    if isinstance(value, list):
        items = set().union(*(_leaf_types(get_args(t)[0]) for t in leaves if get_origin(t) is list))
        if (
            items & {int, float}
            and not items & {bool, Any}
            and any(isinstance(v, bool) for v in value)
        ):
            raise ValueError("expected numbers, got a boolean in the list")


def _leaf_types(annotation: Any) -> set[Any]:
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(args[0])
    if args and origin in (Union, UnionType):
        return set().union(*(_leaf_types(a) for a in args))
    return {annotation}


OBJECT_MAX_BYTES = 100 * 2**20
"""``batch.max_bytes`` of file and object-store connectors when none is given: 100 MiB of
records (Fluent Bit's ``total_file_size`` default; Firehose buffers at most 128 MiB). An
object is encoded in memory before it is written, so the cap bounds that memory; far
below every store's single-write limit (S3 5 GiB, Azure 5,000 MiB, GCS 5 TiB), and far
above typical batches (1,000 events of ~1 KB), which it leaves as they are."""


class Batch(StrictModel):
    """How many events go in one file, object or request, and how long one may wait."""

    max_events: int = Field(
        default=1000, ge=1, le=1_000_000, description="Events per batch at most."
    )
    max_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest an event waits to be sent (s)."
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Keys per (connector, prefix), to batch a hot one in parallel: streaming, "
        "and backfills on a cluster (Dataflow, a Flink cluster).",
    )
    max_bytes: int | None = Field(
        default=None,
        description="Bytes per batch at most, 1 KiB to 5 GiB (each record counted as its "
        "uncompressed NDJSON line; a larger record goes alone); a batch ends at max_events "
        "or max_bytes, whichever comes first. Default: 100 MiB for file and object-store "
        "connectors, none for the APIs.",
    )

    @field_validator("max_bytes")
    @classmethod
    def _max_bytes_in_range(cls, value: int | None) -> int | None:
        return check_max_bytes(value)


class DeliverConfig(StrictModel):
    """Fields every connector's ``deliver`` section has."""

    batch: Batch = Field(default_factory=Batch, description="Batch size and wait.")
    concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Batches in flight at once per worker (local files: written one at a "
        "time on the stage's thread, where writes are CPU work).",
    )
    max_pending_events: int = Field(
        default=16_000,
        ge=1,
        le=10_000_000,
        description="Events a connector may hold per worker between Batch and the end of "
        "their writes (in flight or waiting for a thread); beyond it (and beyond "
        "concurrency * 16 batches) it is not keeping up: new batches are parked in the "
        "retry location, or the stage waits without one. Bounds memory; `concurrency` "
        "batches are always allowed.",
    )


Format = Literal[
    "ndjson",
    "ndjson.gz",
    "ndjson.zst",
    "json_array",
    "json_array.gz",
    "json_array.zst",
    "csv",
    "csv.gz",
    "csv.zst",
    "avro",
    "parquet",
]
"""The values of ``deliver.format`` (see :mod:`transforms.rules.encode`): a text format's
name with ``.gz``/``.zst`` is the format with that ``compression``."""


# pydantic warns that a field named ``schema`` shadows BaseModel's deprecated ``schema()``;
# ``schema`` is the key users write (as in BigQuery), and nothing here calls ``schema()``.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class ObjectLayout(DeliverConfig):
        """Fields of connectors that write each batch as one file or object (file, s3, ...)."""

        prefix: str = Field(
            default="",
            description="Name prefix template, e.g. 'raw/{year}/{month}/{day}/' (from the event "
            "time).",
        )
        format: Format = Field(
            default="ndjson.gz",
            description="Encoding: " + ", ".join(f for f in FORMATS if "." not in f) + " "
            "(ndjson.gz, csv.zst... are the format with its compression).",
        )
        compression: Compression | None = Field(
            default=None,
            description="gzip, zstd or none: how ndjson, json_array and csv files are "
            "compressed (parquet: parquet_compression; avro: deflate inside). Omitted: as "
            "the format's name says (ndjson.gz: gzip).",
        )
        gzip_level: int = Field(
            default=GZIP_LEVEL,
            ge=1,
            le=9,
            description="gzip level (compression: gzip), 1 (fastest) to 9 (smallest). "
            "Level 1 takes ~40% of the default 6's CPU for ~1.8x larger files.",
        )
        zstd_level: int = Field(
            default=ZSTD_LEVEL,
            ge=1,
            le=19,
            description="zstd level (compression: zstd), 1 (fastest) to 19 (smallest).",
        )
        parquet_compression: ParquetCompression = Field(
            default=PARQUET_COMPRESSION,
            description="Page codec of parquet files (snappy for readers without zstd).",
        )
        parquet_row_group_mb: float | None = Field(
            default=None,
            gt=0,
            le=PARQUET_ROW_GROUP_MB_MAX,
            description="parquet: cut each batch into row groups of about this many MB "
            "(2^20 bytes) of encoded pages before the page codec (the row group's "
            "total_byte_size), in order: each the fewest rows reaching it, the last what is "
            "left. Files are smaller by the codec's ratio. Omitted: one row group per batch.",
        )
        schema: tuple[dict[str, Any], ...] | Literal["auto"] | None = Field(  # type: ignore[assignment]  # see above
            default=None,
            description="csv, parquet and avro: the columns, as a BigQuery schema "
            "[{name, type, mode, fields}], or auto: derived from the packaging template "
            "(cast: int is INT64...); a record that does not fit is a dead letter. "
            "Omitted: every key of each batch, types inferred per batch (avro: an envelope).",
        )

        @model_validator(mode="before")
        @classmethod
        def _format_and_compression(cls, data: Any) -> Any:
            """``format`` as the full name (``json_array.gz``), ``compression`` as its codec.

            ``{format: ndjson, compression: gzip}`` and ``{format: ndjson.gz}`` both become
            ``{format: ndjson.gz, compression: gzip}``; avro and parquet keep ``compression``
            None. Values of the wrong type are left to the fields' own checks.
            """
            if not isinstance(data, dict):
                return data
            given = "format" in data
            fmt = plain(data["format"]) if given else cls.model_fields["format"].default
            codec = plain(data.get("compression"))
            if not isinstance(fmt, str) or not isinstance(codec, (str, type(None))):
                return data
            base, named = split_format(fmt)
            if base not in TEXT_FORMATS:
                if codec is not None and fmt in ("avro", "parquet"):
                    raise ValueError(_misplaced_compression(fmt, codec))
                return data  # an unknown format: the field's check names the known ones
            if codec is None:
                codec = named
            elif codec not in COMPRESSIONS:
                return data  # the field's check names the allowed values
            elif given and named != "none" and codec != named:
                raise ValueError(
                    f"format {fmt!r} already means compression {named}, and compression "
                    f"says {codec}: write format: {base}, compression: {codec}"
                )
            return {**data, "format": format_name(base, codec), "compression": codec}

        @field_validator("prefix")
        @classmethod
        def _prefix(cls, prefix: str) -> str:
            PrefixTemplate.compile(prefix)
            return prefix

        @field_validator("schema")
        @classmethod
        def _schema(cls, schema: Sequence[dict[str, Any]] | str | None) -> Any:
            if schema is not None and not isinstance(schema, str):
                compile_schema(list(schema))
            return schema

        @model_validator(mode="before")
        @classmethod
        def _objects_have_a_size_cap(cls, data: Any) -> Any:
            # Objects are built in memory before they are written: a cap keeps a batch of
            # huge records from needing gigabytes (see OBJECT_MAX_BYTES).
            if not isinstance(data, dict):
                return data
            batch = data.get("batch")
            if batch is None:
                return {**data, "batch": {"max_bytes": OBJECT_MAX_BYTES}}
            if isinstance(batch, dict) and batch.get("max_bytes") is None:
                return {**data, "batch": {**batch, "max_bytes": OBJECT_MAX_BYTES}}
            if isinstance(batch, Batch) and batch.max_bytes is None:
                return {**data, "batch": batch.model_copy(update={"max_bytes": OBJECT_MAX_BYTES})}
            return data

        @model_validator(mode="after")
        def _schema_needs_columns(self) -> ObjectLayout:
            if self.schema is not None and self.format not in SCHEMA_FORMATS:
                raise ValueError(
                    f"schema applies to the formats {', '.join(SCHEMA_FORMATS)}, not "
                    f"{self.format!r}: remove it or change the format"
                )
            if self.format == "avro" and not isinstance(self.schema, (str, type(None))):
                avro_schema(compile_schema(list(self.schema)))  # names Avro cannot hold
            return self

        @model_validator(mode="after")
        def _row_groups_are_parquet(self) -> ObjectLayout:
            if self.parquet_row_group_mb is not None and self.format != "parquet":
                raise ValueError(
                    f"parquet_row_group_mb applies to format parquet, not {self.format!r}: "
                    "remove it or change the format"
                )
            return self

        @classmethod
        def derive_schema(
            cls, deliver: dict[str, Any], template: Any, function: str | None
        ) -> dict[str, Any]:
            """``deliver`` with ``schema: auto`` replaced by the columns ``template`` gives.

            Called by the connector's validation (:class:`transforms.config.Connector`),
            which knows the packaging template; ``deliver`` is returned as it is unless
            its schema is ``auto``::

                >>> ObjectLayout.derive_schema(
                ...     {"format": "csv", "schema": "auto"},
                ...     {"fields": {"n": {"path": "x", "cast": "int"}}}, None)["schema"]
                [{'name': 'n', 'type': 'INT64', 'mode': 'NULLABLE'}]

            Raises:
                SchemaError: the columns are not known before the records are made (no
                    template, a ``package.function``, a ``"*"`` spread), naming the fix.
            """
            if deliver.get("schema") != "auto":
                return deliver
            columns = derive_file_schema(template, function)
            return {**deliver, "schema": schema_spec(columns)}

        def columns(self) -> tuple[Column, ...] | None:
            """The declared columns, compiled; None without a schema."""
            if self.schema is None:
                return None
            if isinstance(self.schema, str):
                # Only a deliver section validated on its own keeps "auto": a connector's
                # validation replaces it with the template's columns (derive_schema).
                raise ValueError(
                    "schema: auto needs the connector's packaging template: validate the "
                    "whole connector (transforms.config), not its deliver section alone"
                )
            return compile_schema(list(self.schema))

        def encoding(self) -> Encoding:
            """The :class:`~transforms.rules.encode.Encoding` these fields describe."""
            return Encoding(
                self.format,
                gzip_level=self.gzip_level,
                zstd_level=self.zstd_level,
                parquet_compression=self.parquet_compression,
                schema=self.columns(),
                parquet_row_group_mb=self.parquet_row_group_mb,
            )


def _misplaced_compression(fmt: str, codec: str) -> str:
    """Why ``compression`` does not apply to ``fmt`` (avro or parquet), and the fix."""
    if fmt == "parquet":
        fix = f"parquet_compression: {codec}"
        if codec not in PARQUET_COMPRESSIONS:
            fix = "parquet_compression (" + ", ".join(PARQUET_COMPRESSIONS) + ")"
        return (
            "compression applies to ndjson, json_array and csv; parquet compresses its pages "
            f"itself: remove compression and set {fix}"
        )
    return (
        f"compression applies to ndjson, json_array and csv; {fmt} files are compressed "
        "inside (Avro's deflate codec): remove compression"
    )


def refused_error(
    batch: DeliveryBatch, encoded: Encoded, written: WriteResult
) -> PartialDeliveryError:
    """The error of a write that left out records the format's schema refused.

    Each refused record becomes a per-event, not retryable failure (another attempt would
    refuse it again), so it is dead-lettered (reason ``format_refused``) while the others
    count as delivered in ``written``.
    """
    failures = [
        ItemFailure(
            n,
            batch.items[n].event_id,
            False,
            f"not writable in this format: {why}",
            dead_letter_reason="format_refused",
        )
        for n, why in encoded.refused
    ]
    return PartialDeliveryError(
        f"{len(failures)} of {len(batch.items)} records do not fit the schema",
        written,
        failures=failures,
    )


class Sink:
    """A destination: open a client, write a batch, close."""

    connector_id: str

    writes_inline: bool = False
    """True when a write is only this process's CPU work under the GIL (encoding plus a
    local file write): Deliver then writes on its own thread instead of a thread pool.
    Threads overlap waits (networks, remote stores); for CPU work they add GIL handoffs
    and cross-core traffic and overlap nothing (bench/RESULTS.md, "Local writes inline")."""

    def open(self) -> None:
        """Create clients (called once per DoFn instance, in ``setup``)."""

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Deliver one batch or raise :class:`DeliveryError`.

        The result counts every event of ``batch`` delivered (``events``); a
        :class:`PartialDeliveryError` counts the delivered ones and names the others. The
        shared retry code dead-letters what a sink leaves unaccounted for
        (``sink_unaccounted``) and never counts more than the batch.
        """
        raise NotImplementedError

    def secret_values(self) -> tuple[str, ...]:
        """Values that no error text may show (credentials, secret endpoint parts)."""
        return ()

    def redact(self, text: str) -> str:
        """``text`` without this sink's secrets (see :func:`._policy.redact`)."""
        return redact(text, self.secret_values())

    def close(self) -> None:
        """Release clients (called in ``teardown``)."""


@dataclass(frozen=True)
class ConnectorSpec:
    """How a connector type plugs in: its ``deliver`` schema and how to build its sink.

    A connector module declares ``CONNECTOR_TYPES = {"type_name": ConnectorSpec(...)}``;
    :mod:`transforms.connectors` discovers it, so adding a connector edits no shared file.
    """

    deliver_model: type[DeliverConfig]
    make_sink: Callable[[str, Any], Sink]
    sends_record_json: bool = True
    """True when the sink sends each record as its compact JSON
    (:func:`~transforms.rules.encode.record_json`): Package then serializes each record
    while it is still in the CPU's caches. False for sinks that build another shape per
    record (Splunk's event envelope, New Relic's flat events)."""
    default_template: str | None = None
    """The packaging template (``templates/<name>.yaml``) a connector of this type uses
    when its ``package`` names none, e.g. ``new_relic``, whose records need an
    ``eventType``. ``package: {template: null}`` opts out: the filtered event is sent."""
