"""``type: azure_blob``: each batch becomes one block blob in an Azure Storage container.

    - id: archive_azure
      type: azure_blob
      deliver:
        container: telemetry                     # must exist
        connection_string: ${env:AZURE_STORAGE_CONNECTION_STRING}
        prefix: "raw/{year}/{month}/{day}/{hour}/"
        format: ndjson.gz   # ndjson, json_array, csv (+ compression: gzip|zstd), avro, parquet
        batch: {max_events: 1000, max_wait_s: 30}

or, instead of ``connection_string``, an account URL and a credential::

        account_url: https://myaccount.blob.core.windows.net
        credential: ${env:AZURE_STORAGE_KEY}     # an account key, or a SAS token (sv=...&sig=...)

Exactly one of ``connection_string`` and ``account_url`` is given. Secrets are given by
reference (``${env:NAME}``); once resolved they are kept as :class:`pydantic.SecretStr`,
so they never print, and they are removed from every error message. A SAS token needs the
``c`` (create) or ``w`` (write) permission on the container; an account key can do
anything, so prefer a SAS token or a key of a dedicated account.

Blobs are named ``<container>/<prefix><connector>-<digest><ext>``, the digest hashing the
batch's event ids, and written create-only (``upload_blob(overwrite=False)``, i.e.
``If-None-Match: *``). A write answered ``409 BlobAlreadyExists`` found the same batch
already written (by a lost earlier attempt or an earlier run) and counts as delivered, so
a retry or a rerun never duplicates a blob.

Errors: 408, 429 (``Retry-After`` honoured), 5xx, connection failures and timeouts are
retryable; anything else (403 authentication failed, 404 container not found, a malformed
connection string) is not.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator

from transforms.connectors._object_store import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    ObjectStoreSink,
    StoredObject,
)
from transforms.connectors._policy import is_retryable_status
from transforms.connectors._policy import parse_retry_after as retry_after_s
from transforms.connectors.base import ConnectorSpec, DeliveryError, ObjectLayout

CONTAINER_NAME = re.compile(r"^(\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")
"""Azure's container naming rule: 3-63 of a-z, 0-9 and single hyphens inside."""

ALREADY_EXISTS_CODES = frozenset({"BlobAlreadyExists", "ConditionNotMet"})
"""Error codes meaning "a blob of that name is already there" for a create-only upload."""


class AzureBlobDeliver(ObjectLayout):
    """``type: azure_blob``: batches written as create-only blobs in a container."""

    container: str = Field(description="Container name (it must exist), e.g. 'telemetry'.")
    connection_string: SecretStr | None = Field(
        default=None,
        description="Storage connection string, by reference: ${env:NAME}. "
        "Or give account_url and credential instead.",
    )
    account_url: str | None = Field(
        default=None,
        description="Blob service URL, e.g. 'https://myaccount.blob.core.windows.net' "
        "(used with credential, instead of connection_string).",
    )
    credential: SecretStr | None = Field(
        default=None,
        description="With account_url: an account key or a SAS token, by reference: ${env:NAME}.",
    )

    @field_validator("container")
    @classmethod
    def _container(cls, container: str) -> str:
        if not CONTAINER_NAME.match(container):
            raise ValueError(
                f"container {container!r} is not a valid name: 3-63 lowercase letters, digits "
                "and single hyphens, starting and ending with a letter or digit (no slash; "
                "put folders in 'prefix')"
            )
        return container

    @field_validator("account_url")
    @classmethod
    def _account_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"account_url {url!r} must be a URL such as https://myaccount.blob.core.windows.net"
            )
        if parsed.query:
            raise ValueError(
                "account_url must not carry a query string (a SAS token is a secret). "
                "Fix: give the token as credential: ${env:NAME}"
            )
        return url

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> AzureBlobDeliver:
        if (self.connection_string is None) == (self.account_url is None):
            raise ValueError(
                "give exactly one of connection_string or account_url (with credential); "
                + ("both are set" if self.connection_string is not None else "neither is set")
            )
        if self.account_url is not None and self.credential is None:
            raise ValueError(
                "account_url needs credential (an account key or a SAS token, by reference: "
                "${env:NAME})"
            )
        if self.connection_string is not None and self.credential is not None:
            raise ValueError(
                "credential goes with account_url; a connection string carries its own "
                "credential. Fix: remove credential"
            )
        return self


class AzureBlobSink(ObjectStoreSink):
    """Writes each batch as one create-only block blob."""

    def __init__(self, connector_id: str, deliver: Any):
        super().__init__(connector_id, deliver)
        self.container: str = deliver.container
        secrets = [
            s.get_secret_value() for s in (deliver.connection_string, deliver.credential) if s
        ]
        self.secrets = tuple(secrets) + tuple(_secret_parts(secrets))
        self.service: Any = None
        self.container_client: Any = None
        if deliver.account_url:
            self.account = _account_from_url(deliver.account_url)
        else:  # the name is no secret; the key beside it is (see secrets above)
            self.account = _account_from_connection_string(secrets[0] if secrets else "")

    def location(self, name: str) -> str:
        """``azfs://account/container/name`` (Beam's spelling of Azure Blob paths)."""
        return f"azfs://{self.account or '-'}/{self.container}/{name}"

    def connect(self) -> None:
        """Create the blob service client (SDK retries off; the shared policy retries)."""
        from azure.core.credentials import AzureSasCredential
        from azure.storage.blob import BlobServiceClient

        options: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "user_agent": "telemetry-delivery",
        }
        try:
            if self.deliver.connection_string is not None:
                self.service = BlobServiceClient.from_connection_string(
                    self.deliver.connection_string.get_secret_value(), **options
                )
            else:
                secret = self.deliver.credential.get_secret_value()
                credential: Any = (
                    AzureSasCredential(secret.lstrip("?")) if "sig=" in secret else secret
                )
                self.service = BlobServiceClient(
                    self.deliver.account_url, credential=credential, **options
                )
        except ValueError as exc:
            raise self.error(
                "", f"cannot create the Azure client: {exc}", retryable=False
            ) from None
        self.account = self.service.account_name or self.account
        self.container_client = self.service.get_container_client(self.container)

    def put(self, obj: StoredObject) -> bool:
        """``upload_blob(overwrite=False)``; ``BlobAlreadyExists`` means it is already there."""
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import ContentSettings

        try:
            self.container_client.upload_blob(
                obj.name,
                obj.data,
                overwrite=False,
                content_settings=ContentSettings(content_type=obj.content_type),
            )
        except HttpResponseError as exc:
            if exc.status_code in (409, 412) and _error_code(exc) in ALREADY_EXISTS_CODES:
                return False
            raise
        return True

    def classify(self, exc: Exception, obj: StoredObject) -> DeliveryError | None:
        """Retryable: 408, 429, 5xx, connection errors, timeouts. Not: the rest."""
        from azure.core import exceptions as az

        if isinstance(exc, az.HttpResponseError):
            status = exc.status_code
            code = _error_code(exc) or exc.reason or "error"
            first_line = (exc.message or "").splitlines()[0] if exc.message else ""
            headers = getattr(exc.response, "headers", None) or {}
            return self.error(
                obj,
                f"{code} (HTTP {status}): {first_line}",
                retryable=is_retryable_status(status),
                status=status,
                retry_after=retry_after_s(headers.get("Retry-After")),
            )
        if isinstance(exc, (az.ServiceRequestError, az.ServiceResponseError)):
            return self.error(obj, f"connection failed: {exc}", retryable=True)
        if isinstance(exc, az.AzureError):
            return self.error(obj, f"{type(exc).__name__}: {exc}", retryable=False)
        return None

    def disconnect(self) -> None:
        """Close the client's HTTP pipeline."""
        if self.service is not None:
            self.service.close()
            self.service = None
            self.container_client = None


def _error_code(exc: Any) -> str:
    code = getattr(exc, "error_code", None)
    if code:
        return str(code)
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    return str(headers.get("x-ms-error-code", ""))


def _account_from_connection_string(text: str) -> str:
    """``AccountName=devstoreaccount1;...`` -> ``devstoreaccount1``; "" if absent."""
    match = re.search(r"(?i)(?:^|;)\s*AccountName=([^;]*)", text)
    return match.group(1).strip() if match else ""


def _account_from_url(url: str) -> str:
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    return parsed.path.strip("/").split("/", 1)[0]


def _secret_parts(secrets: list[str]) -> list[str]:
    """The secret values inside connection strings and SAS tokens (keys, signatures)."""
    parts: list[str] = []
    for secret in secrets:
        for match in re.finditer(r"(?i)(?:AccountKey|SharedAccessSignature|sig)=([^;&]+)", secret):
            parts.append(match.group(1))
    return parts


CONNECTOR_TYPES = {"azure_blob": ConnectorSpec(AzureBlobDeliver, AzureBlobSink)}
