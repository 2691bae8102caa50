"""``type: s3``: each batch becomes one object in an Amazon S3 (or S3-compatible) bucket.

    - id: archive_s3
      type: s3
      deliver:
        bucket: telemetry                        # must exist
        prefix: "raw/{year}/{month}/{day}/{hour}/"
        format: ndjson.gz   # ndjson, json_array, csv (+ compression: gzip|zstd), avro, parquet
        batch: {max_events: 1000, max_wait_s: 30}
        # endpoint_url: http://127.0.0.1:9000    # S3-compatible stores (MinIO, moto, ...)
        # region: eu-west-1

Objects are named ``<bucket>/<prefix><connector>-<digest><ext>``, the digest hashing the
batch's event ids, and written create-only (``PutObject`` with ``If-None-Match: *``). A
write answered ``412 Precondition Failed`` found the same batch already written (by a lost
earlier attempt or an earlier run) and counts as delivered, so a retry or a rerun never
duplicates an object.

Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared config
files, web identity, ECS and EC2 instance roles); they need ``s3:PutObject`` on the
prefix. ``endpoint_url`` and ``region`` may also come from Beam's ``--s3_endpoint_url``
and ``--s3_region_name`` options; the config wins when both are given.

Errors: throttling (``SlowDown``, 429), 5xx, ``RequestTimeout``, conflicting concurrent
conditional writes (409) and connection failures or timeouts are retryable; anything else
(``AccessDenied``, ``NoSuchBucket``, ``InvalidAccessKeyId``, no credentials) is not.
"""

from __future__ import annotations

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

RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        # 409: another conditional write to the same key is in flight; retrying settles it.
        "ConditionalRequestConflict",
        "OperationAborted",
    }
)
"""S3 error codes worth retrying whatever their HTTP status."""


class S3Deliver(ObjectLayout):
    """``type: s3``: batches written as create-only objects in an S3 bucket."""

    bucket: str = Field(description="Bucket name (it must exist), e.g. 'telemetry'.")
    endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint, e.g. 'http://127.0.0.1:9000'; default: AWS "
        "(or Beam's --s3_endpoint_url).",
    )
    region: str | None = Field(
        default=None,
        description="AWS region, e.g. 'eu-west-1'; default: the AWS chain "
        "(or Beam's --s3_region_name).",
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: str) -> str:
        return check_bucket_name("bucket", bucket)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {url!r} must start with http:// or https://")
        return url


def _beam_s3_options() -> tuple[str | None, str | None]:
    """``--s3_endpoint_url`` and ``--s3_region_name`` of the running pipeline, if any.

    Beam hands its pipeline options to the filesystems of the process that runs the
    pipeline or its worker (``FileSystems.set_options``); this reads them the same way
    Beam's own S3 filesystem does.
    """
    try:
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import S3Options
    except ImportError:  # pragma: no cover - Beam is a dependency
        return None, None
    options = getattr(FileSystems, "_pipeline_options", None)
    if options is None:
        return None, None
    s3 = options.view_as(S3Options)
    return s3.s3_endpoint_url, s3.s3_region_name


class S3Sink(ObjectStoreSink):
    """Writes each batch as one create-only S3 object."""

    def __init__(self, connector_id: str, deliver: Any):
        super().__init__(connector_id, deliver)
        self.bucket: str = deliver.bucket
        self.client: Any = None

    def location(self, name: str) -> str:
        """``s3://bucket/name``."""
        return f"s3://{self.bucket}/{name}"

    def connect(self) -> None:
        """Create a boto3 client from the standard credential chain (one attempt per call)."""
        import boto3
        from botocore.config import Config

        beam_endpoint, beam_region = _beam_s3_options()
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"total_max_attempts": 1},
            # One pooled connection per concurrent write (the shared pool's threads).
            max_pool_connections=max(10, getattr(self.deliver, "concurrency", 10)),
            user_agent_extra="telemetry-delivery",
        )
        try:
            self.client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.deliver.endpoint_url or beam_endpoint,
                region_name=self.deliver.region or beam_region,
                config=config,
            )
        except Exception as exc:  # botocore raises several unrelated types for a bad setup
            raise self.error("", f"cannot create the S3 client: {exc}", retryable=False) from None

    def put(self, obj: StoredObject) -> bool:
        """``PutObject`` with ``If-None-Match: *``; a 412 means the object is already there."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=obj.name,
                Body=obj.data,
                ContentType=obj.content_type,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                return False
            raise
        return True

    def classify(self, exc: Exception, obj: StoredObject) -> DeliveryError | None:
        """Retryable: throttling, 5xx, timeouts, connection errors. Not: the rest."""
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            code, status = _code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message", "")
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return self.error(
                obj,
                f"{code} (HTTP {status}): {message}",
                retryable=code in RETRYABLE_CODES or is_retryable_status(status),
                status=status,
                retry_after=retry_after_s(headers.get("retry-after")),
            )
        if isinstance(exc, (bx.HTTPClientError, bx.ConnectionError)):
            return self.error(obj, f"connection failed: {exc}", retryable=True)
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return self.error(
                obj,
                f"{exc}. Fix: provide AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,"
                " AWS_PROFILE or an instance role)",
                retryable=False,
            )
        if isinstance(exc, bx.CredentialRetrievalError):
            return self.error(obj, f"cannot fetch credentials: {exc}", retryable=True)
        if isinstance(exc, bx.BotoCoreError):
            return self.error(obj, f"{type(exc).__name__}: {exc}", retryable=False)
        return None


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


CONNECTOR_TYPES = {"s3": ConnectorSpec(S3Deliver, S3Sink)}
