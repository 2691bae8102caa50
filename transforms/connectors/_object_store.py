"""The layer shared by the object-store connectors (``s3``, ``gcs``, ``azure_blob``).

Each store module only says how to connect, how to put one object create-only, and how to
classify its SDK's errors; naming, encoding, content types, the "already there counts as
delivered" rule and secret redaction live here, written once::

    class MyStoreSink(ObjectStoreSink):
        def connect(self): self.client = make_client()       # raise DeliveryError if it cannot
        def put(self, obj): ...                              # True: created; False: already there
        def classify(self, exc, obj): ...                    # SDK error -> DeliveryError or None
        def location(self, name): return f"mystore://{bucket}/{name}"

Every batch becomes one object named ``<prefix><connector>-<digest><ext>``
(:func:`~transforms.rules.naming.object_name`): the digest hashes the batch's event ids,
so a retried or rerun batch takes the same name. Objects are written create-only; a write
that finds its name taken is the same batch written before (by an earlier attempt whose
answer was lost, or by an earlier run) and counts as delivered, never as a duplicate (it
is logged at DEBUG level).

Sinks are called from the shared delivery thread pool: the clients used here (boto3,
google-cloud-storage, azure-storage-blob) are documented as safe to share across threads,
so each sink holds one client with a connection pool.

Content types: :data:`~transforms.rules.encode.CONTENT_TYPES`, e.g. ``application/gzip``
for ``ndjson.gz`` and ``json_array.gz`` (``format: json_array, compression: gzip``). No
``Content-Encoding`` is set on the ``.gz`` and ``.zst`` formats: the object *is* a gzip (or
zstd) file, and with ``Content-Encoding: gzip`` GCS would transcode it on download, so a
reader of ``x.ndjson.gz`` would get plain text.

A record the format's declared schema refuses (csv, parquet) is left out of the object and
dead-lettered on its own (:func:`~transforms.connectors.base.refused_error`); the object
keeps the batch's name, so a rerun writes the same object.

SDK retries are switched off in every client: the shared
:class:`~transforms.rules.retry.RetryPolicy` is the one place that retries, so the
``retried_immediate`` count is exact and a dead destination fails fast.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from transforms.connectors._policy import redact
from transforms.connectors.base import (
    DeliveryBatch,
    DeliveryError,
    Sink,
    WriteResult,
    refused_error,
)
from transforms.rules.encode import CONTENT_TYPES, FORMATS, Encoded
from transforms.rules.naming import object_name

_log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""Longest wait to open a connection to the store."""

READ_TIMEOUT_S = 60.0
"""Longest wait for the store to answer one request (objects are at most a few MB)."""

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
"""What an S3 or GCS bucket name may look like (the stores apply stricter rules)."""


def check_bucket_name(kind: str, name: str) -> str:
    """Validate a bucket name for a config error that says what is wrong.

    Raises:
        ValueError: naming the bad value and the fix.
    """
    if "://" in name or "/" in name:
        raise ValueError(
            f"{kind} {name!r} must be a bare name (no scheme, no slash); put folders in 'prefix'"
        )
    if not BUCKET_NAME.match(name):
        raise ValueError(
            f"{kind} {name!r} is not a valid name: 3-222 characters of lowercase letters, "
            "digits, '.', '-' or '_', starting and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class StoredObject:
    """One encoded batch, ready to put."""

    name: str
    data: bytes
    content_type: str
    encoded: Encoded | None = None
    """The encoding's result, with the records the schema refused (left out of ``data``)."""

    @property
    def refused(self) -> int:
        """How many records of the batch the format's schema refused."""
        return len(self.encoded.refused) if self.encoded is not None else 0


class ObjectStoreSink(Sink):
    """A sink that writes each batch as one create-only object (see the module docstring).

    Subclasses implement :meth:`connect`, :meth:`put`, :meth:`classify` and
    :meth:`location`, and may list the config's secret values in :attr:`secrets` so that
    no error message ever contains them.
    """

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.deliver = deliver
        self.format: str = deliver.format
        self.extension = FORMATS[deliver.format]
        self.content_type = CONTENT_TYPES[deliver.format]
        self.gzip_level: int = deliver.gzip_level
        self.encoding = deliver.encoding()
        self.secrets: tuple[str, ...] = ()
        self._connected = False
        self._connect_error: DeliveryError | None = None
        self._connect_lock = threading.Lock()

    # -- what a store implements ----------------------------------------------------------

    def connect(self) -> None:
        """Create the store's client; raise :class:`DeliveryError` if it cannot be created."""
        raise NotImplementedError

    def put(self, obj: StoredObject) -> bool:
        """Write ``obj`` create-only: True if created, False if its name was already taken."""
        raise NotImplementedError

    def classify(self, exc: Exception, obj: StoredObject) -> DeliveryError | None:
        """Turn an SDK error into a :class:`DeliveryError`; None for errors that are bugs."""
        raise NotImplementedError

    def location(self, name: str) -> str:
        """The object's address for humans and the run's output, e.g. ``s3://bucket/name``."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Release the client: by default close ``self.client`` (S3, GCS) if there is one."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None

    # -- shared behaviour ------------------------------------------------------------------

    def error(
        self,
        obj_or_name: StoredObject | str,
        what: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> DeliveryError:
        """A :class:`DeliveryError` about one object, its message free of secrets."""
        name = obj_or_name.name if isinstance(obj_or_name, StoredObject) else obj_or_name
        message = redact(f"{self.location(name)}: {what}", self.secrets)
        return DeliveryError(message, retryable=retryable, status=status, retry_after_s=retry_after)

    def open(self) -> None:
        """Create the client. A destination problem does not crash the job's other connectors.

        If the client cannot be created (no credentials, malformed connection string), the
        error is kept and every batch of this connector fails with it (and is dead-lettered
        or retried as classified) while the other connectors keep delivering.
        """
        self._try_connect()

    def _try_connect(self) -> DeliveryError | None:
        with self._connect_lock:
            if not self._connected:
                try:
                    self.connect()
                except DeliveryError as exc:
                    self._connect_error = exc
                else:
                    self._connect_error = None
                    self._connected = True
            return self._connect_error

    def encode(self, batch: DeliveryBatch) -> StoredObject:
        """Name and encode one batch."""
        name = object_name(
            batch.prefix, self.connector_id, (i.event_id for i in batch.items), self.extension
        )
        encoded = self.encoding.encode(batch.items)
        return StoredObject(name, encoded.data, self.content_type, encoded)

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Put the batch's object create-only; an object already there counts as delivered."""
        if not self._connected:
            error = self._connect_error
            if error is None or error.retryable:
                error = self._try_connect()
            if error is not None:
                # A fresh exception per batch: several threads may be failing at once.
                raise DeliveryError(str(error), error.retryable, error.status, error.retry_after_s)
        obj = self.encode(batch)
        written = len(batch.items) - obj.refused
        created = False
        if written:
            try:
                created = self.put(obj)
            except DeliveryError:
                raise
            except Exception as exc:
                error = self.classify(exc, obj)
                if error is None:
                    raise
                # ``from None``: the SDK's own message may carry signed URLs; ours is redacted.
                raise error from None
            if not created:
                _log.debug("%s already exists: counted as delivered", self.location(obj.name))
        result = WriteResult(
            name=self.location(obj.name),
            events=written,
            bytes=len(obj.data) if written else 0,
            existed=bool(written) and not created,
        )
        if obj.encoded is not None and obj.encoded.refused:
            raise refused_error(batch, obj.encoded, result)
        return result

    def close(self) -> None:
        """Release the client."""
        if self._connected:
            self.disconnect()
        self._connected = False
