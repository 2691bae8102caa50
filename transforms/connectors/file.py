"""``type: file``: each batch becomes one file below ``deliver.path``.

    - id: archive
      type: file
      deliver:
        path: ./out/archive            # or gs://bucket/dir, s3://bucket/dir
        prefix: "{year}/{month}/{day}/"
        format: ndjson.gz              # ndjson | ndjson.gz | json_array | avro
        gzip_level: 6                  # ndjson.gz only: 1 (fastest) to 9 (smallest)
        batch: {max_events: 1000, max_wait_s: 30}

File names derive from the batch content (see :mod:`transforms.rules.naming`), so a rerun
of the same input rewrites the same files instead of adding duplicates. Local files are
written to a temporary name and renamed into place, so a reader never sees half a file;
remote files go through Beam's filesystems (``gs://`` and ``s3://`` objects appear whole
when the upload completes).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

from pydantic import Field

from transforms.connectors.base import (
    ConnectorSpec,
    DeliveryBatch,
    DeliveryError,
    ObjectLayout,
    Sink,
    WriteResult,
)
from transforms.rules.encode import FORMATS, encode_batch
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
    format: Literal["ndjson", "ndjson.gz", "json_array", "avro"] = Field(
        default="ndjson", description="File format: " + ", ".join(FORMATS) + "."
    )


class FileSink(Sink):
    """Writes each batch as one file in the configured format."""

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.base = deliver.path
        self.format = deliver.format
        self.extension = FORMATS[deliver.format]
        self.gzip_level = deliver.gzip_level
        # A local write is a page-cache copy: no wait worth a thread (see Sink).
        self.writes_inline = "://" not in self.base

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Encode and write one batch; classify failures (permissions are not retryable)."""
        name = object_name(
            batch.prefix, self.connector_id, (i.event_id for i in batch.items), self.extension
        )
        data = encode_batch(batch.items, self.format, gzip_level=self.gzip_level)
        path = join_path(self.base, name)
        try:
            write_bytes(path, data)
        except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise DeliveryError(f"cannot write {path}: {exc}", retryable=False) from exc
        except OSError as exc:
            raise DeliveryError(f"cannot write {path}: {exc}", retryable=True) from exc
        return WriteResult(name=path, events=len(batch.items), bytes=len(data))


CONNECTOR_TYPES = {"file": ConnectorSpec(FileDeliver, FileSink)}
