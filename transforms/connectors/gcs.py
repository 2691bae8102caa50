"""``type: gcs``: each batch becomes one object in a Google Cloud Storage bucket.

    - id: archive_gcs
      type: gcs
      deliver:
        bucket: telemetry                        # must exist
        prefix: "raw/{year}/{month}/{day}/{hour}/"
        format: ndjson.gz   # ndjson, json_array, csv (+ compression: gzip|zstd), avro, parquet
        batch: {max_events: 1000, max_wait_s: 30}

Objects are named ``<bucket>/<prefix><connector>-<digest><ext>``, the digest hashing the
batch's event ids, and written create-only (``ifGenerationMatch=0``). A write answered
``412 Precondition Failed`` found the same batch already written (by a lost earlier
attempt or an earlier run) and counts as delivered, so a retry or a rerun never duplicates
an object.

Credentials are Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, or the attached service account on GCE, GKE
and Dataflow); they need ``storage.objects.create`` on the bucket (e.g. the role
``roles/storage.objectCreator``). No ``storage.objects.delete`` is needed: objects are
never overwritten.

``STORAGE_EMULATOR_HOST`` (e.g. ``http://127.0.0.1:9023``) sends every request to a local
emulator with anonymous credentials and the project ``GOOGLE_CLOUD_PROJECT`` (default
``emulator``), skipping the credential lookup that otherwise retries for ~19 s on a
machine without Google credentials. Note: gcp-storage-emulator, the stand-in the tests
use, does not enforce ``ifGenerationMatch`` (a second write of a name overwrites it), so
tests/test_gcs_precondition.py puts a front before it that enforces the precondition as
real GCS does.

Errors: 408, 429, 5xx, connection failures and timeouts are retryable; anything else
(403 access denied, 404 no such bucket, no credentials) is not.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, field_validator

from transforms.connectors._object_store import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    ObjectStoreSink,
    StoredObject,
    check_bucket_name,
)
from transforms.connectors._policy import is_retryable_status
from transforms.connectors._policy import parse_retry_after as retry_after_s
from transforms.connectors.base import ConnectorSpec, DeliveryError, ObjectLayout

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
"""Environment variable naming a GCS emulator; when set, no credentials are looked up."""


class GCSDeliver(ObjectLayout):
    """``type: gcs``: batches written as create-only objects in a GCS bucket."""

    bucket: str = Field(description="Bucket name (it must exist), e.g. 'telemetry'.")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: str) -> str:
        return check_bucket_name("bucket", bucket)


class GCSSink(ObjectStoreSink):
    """Writes each batch as one create-only GCS object."""

    def __init__(self, connector_id: str, deliver: Any):
        super().__init__(connector_id, deliver)
        self.bucket_name: str = deliver.bucket
        self.client: Any = None
        self.bucket: Any = None

    def location(self, name: str) -> str:
        """``gs://bucket/name``."""
        return f"gs://{self.bucket_name}/{name}"

    def connect(self) -> None:
        """Create a storage client from ADC, or an anonymous one for the emulator."""
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage

        try:
            if os.environ.get(EMULATOR_ENV):
                from google.auth.credentials import AnonymousCredentials

                project = os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator")
                self.client = storage.Client(project=project, credentials=AnonymousCredentials())
            else:
                # project=None: writing objects needs no project, so none is looked up.
                self.client = storage.Client(project=None)
        except auth_exceptions.DefaultCredentialsError as exc:
            raise self.error(
                "",
                f"no Google credentials: {exc}. Fix: set GOOGLE_APPLICATION_CREDENTIALS or run "
                "'gcloud auth application-default login'",
                retryable=False,
            ) from None
        except auth_exceptions.TransportError as exc:
            raise self.error("", f"credential lookup failed: {exc}", retryable=True) from None
        self.bucket = self.client.bucket(self.bucket_name)

    def put(self, obj: StoredObject) -> bool:
        """Upload with ``ifGenerationMatch=0``; a 412 means the object is already there."""
        from google.api_core import exceptions as api

        blob = self.bucket.blob(obj.name)
        try:
            blob.upload_from_string(
                obj.data,
                content_type=obj.content_type,
                if_generation_match=0,
                retry=None,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except api.PreconditionFailed:
            return False
        return True

    def classify(self, exc: Exception, obj: StoredObject) -> DeliveryError | None:
        """Retryable: 408, 429, 5xx, connection errors, timeouts. Not: the rest."""
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth_exceptions
        from google.cloud.storage import exceptions as storage_exceptions

        if isinstance(exc, api.GoogleAPICallError):
            status = int(exc.code) if exc.code is not None else None
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            return self.error(
                obj,
                f"HTTP {status}: {exc.message}",
                retryable=is_retryable_status(status),
                status=status,
                retry_after=retry_after_s(headers.get("Retry-After")),
            )
        if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError)):
            return self.error(obj, f"connection failed: {exc}", retryable=True)
        if isinstance(exc, storage_exceptions.DataCorruption):
            return self.error(obj, f"upload corrupted in transit: {exc}", retryable=True)
        if isinstance(exc, auth_exceptions.RefreshError):
            retryable = bool(getattr(exc, "retryable", False))
            return self.error(obj, f"cannot refresh credentials: {exc}", retryable=retryable)
        if isinstance(exc, auth_exceptions.TransportError):
            return self.error(obj, f"credential lookup failed: {exc}", retryable=True)
        if isinstance(exc, auth_exceptions.GoogleAuthError):
            return self.error(obj, f"{type(exc).__name__}: {exc}", retryable=False)
        return None


CONNECTOR_TYPES = {"gcs": ConnectorSpec(GCSDeliver, GCSSink)}
