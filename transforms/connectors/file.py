"""``type: file``: each batch becomes one file below ``deliver.path``.

    - id: archive
      type: file
      deliver:
        path: ./out/archive            # or gs://bucket/dir, s3://bucket/dir
        prefix: "{year}/{month}/{day}/"
        format: ndjson                 # ndjson, json_array, csv, avro, parquet
        compression: gzip              # ndjson, json_array, csv: gzip | zstd | none
        gzip_level: 6                  # compression: gzip only: 1 (fastest) to 9 (smallest)
        batch: {max_events: 1000, max_wait_s: 30}

A lake of Parquet files with a fixed, typed schema (a record that does not fit it is a
dead letter; see :func:`transforms.rules.encode.compile_schema`)::

      deliver:
        path: s3://lake/player_events
        prefix: "event_day={year}-{month}-{day}/"
        format: parquet
        parquet_compression: zstd      # zstd | snappy | gzip | none
        schema:
          - {name: event_id, type: STRING, mode: REQUIRED}
          - {name: bitrate_kbps, type: INT64}
          - {name: geo, type: RECORD, fields: [{name: country_code, type: STRING}]}

File names derive from the batch content (see :mod:`transforms.rules.naming`), so a rerun
of the same input rewrites the same files instead of adding duplicates. Local files are
written to a temporary name and renamed into place, so a reader never sees half a file;
remote files go through Beam's filesystems (``gs://`` and ``s3://`` objects appear whole
when the upload completes).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from pydantic import Field

from transforms.connectors.base import (
    ConnectorSpec,
    DeliveryBatch,
    DeliveryError,
    Format,
    ObjectLayout,
    Sink,
    WriteResult,
    refused_error,
)
from transforms.rules.encode import FORMATS
from transforms.rules.naming import object_name


def join_path(base: str, name: str) -> str:
    """Join a directory (local or URL) and a relative name with exactly one slash."""
    return base.rstrip("/") + "/" + name.lstrip("/")


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file: atomically by rename locally, through Beam's filesystems remotely.

    Raises:
        OSError: and the remote filesystems' own errors, for the caller to classify.
    """
    if "://" not in path:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(data)


class FileDeliver(ObjectLayout):
    """``type: file``: batches written as files below a directory (local, gs://, s3://)."""

    path: str = Field(
        description="Output directory (local path, gs://bucket/dir, s3://bucket/dir)."
    )
    format: Format = Field(default="ndjson", description="File format: " + ", ".join(FORMATS) + ".")


class FileSink(Sink):
    """Writes each batch as one file in the configured format."""

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.base = deliver.path
        self.format = deliver.format
        self.extension = FORMATS[deliver.format]
        self.gzip_level = deliver.gzip_level
        self.encoding = deliver.encoding()
        # A local write is a page-cache copy: no wait worth a thread (see Sink).
        self.writes_inline = "://" not in self.base

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Encode and write one batch; classify failures (permissions are not retryable).

        Records the format's declared schema refuses are left out of the file and
        reported in a :class:`~transforms.connectors.base.PartialDeliveryError` (with no
        file at all when every record is refused).
        """
        name = object_name(
            batch.prefix, self.connector_id, (i.event_id for i in batch.items), self.extension
        )
        encoded = self.encoding.encode(batch.items)
        data = encoded.data
        path = join_path(self.base, name)
        written = len(batch.items) - len(encoded.refused)
        if written:
            try:
                write_bytes(path, data)
            except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
                raise DeliveryError(f"cannot write {path}: {exc}", retryable=False) from exc
            except OSError as exc:
                raise DeliveryError(f"cannot write {path}: {exc}", retryable=True) from exc
        result = WriteResult(name=path, events=written, bytes=len(data) if written else 0)
        if encoded.refused:
            raise refused_error(batch, encoded, result)
        return result


CONNECTOR_TYPES = {"file": ConnectorSpec(FileDeliver, FileSink)}
