"""Object-store stand-ins: moto (S3), gcp-storage-emulator (GCS) and Azurite (Azure Blob).

Each is a real server started as a subprocess on a free loopback port, polled until it
answers HTTP, shared by the whole session and stopped at its end. One that cannot start
fails the tests that need it, with its log; it is never skipped.

Use from a test module::

    pytest_plugins = ["tests.standins.object_stores"]

    def test_x(object_store):        # parametrized over the three stores
        bucket = object_store.new_bucket()
        object_store.deliver(bucket)  # the connector's deliver section (without prefix/format)

:class:`Store` is what the tests use to look inside a store, always through the official
client (boto3, google-cloud-storage, azure-storage-blob), never through the connector.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's well-known development account (public, documented by Microsoft)."""

AWS_TEST_SECRET = "moto-secret-key-never-printed-4f1c"
"""The secret access key the tests give the AWS chain: it must never appear in output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    return free_port()


@dataclass
class Server:
    """A stand-in subprocess and where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _answers_http(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


class StandinError(RuntimeError):
    """A stand-in that cannot start; the message says why (and holds its log)."""


def start_server(
    name: str, argv_for_port: Any, log_dir: Path, env: dict[str, str] | None = None
) -> Server:
    """Start ``argv_for_port(port)`` and wait until it answers HTTP.

    A port taken between choosing and binding makes the server exit early: then a new port
    is tried (three times at most).

    Raises:
        StandinError: with the server's log, when it exits or does not answer in time.
    """
    problems = []
    for attempt in range(3):
        port = free_port()
        log = log_dir / f"{name}-{port}.log"
        argv = argv_for_port(port)
        with open(log, "wb") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=ROOT,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,
                )
            except OSError as exc:
                raise StandinError(f"{name} cannot start ({' '.join(argv)}): {exc}") from exc
        server = Server(name, proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _answers_http(port):
                return server
            try:
                # Waits on the process: returns at once if it died, else after 0.1 s.
                code = proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            problems.append(f"attempt {attempt + 1}: exited with {code}:\n{server.log_tail()}")
            break
        else:
            server.stop()
            raise StandinError(
                f"{name} did not answer on port {port} within {START_TIMEOUT_S:.0f} s "
                f"({' '.join(argv)}):\n{server.log_tail()}"
            )
    raise StandinError(f"{name} cannot start:\n" + "\n".join(problems))


def moto_argv(port: int) -> list[str]:
    return [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]


def gcs_emulator_argv(port: int) -> list[str]:
    exe = str(VENV_BIN / "gcp-storage-emulator")
    return [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]


AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite-blob"


def azurite_argv(port: int) -> list[str]:
    return [
        str(AZURITE_BIN),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
    ]


def _start_or_fail(name: str, argv_for_port: Any, log_dir: Path) -> Server:
    try:
        return start_server(name, argv_for_port, log_dir)
    except StandinError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def standin_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("standin-logs")


@pytest.fixture(scope="session")
def moto_server(standin_logs: Path) -> Iterator[Server]:
    if not (VENV_BIN / "moto_server").exists():
        pytest.fail(f"moto_server not found in {VENV_BIN}: run `make install`", pytrace=False)
    server = _start_or_fail("moto_server", moto_argv, standin_logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_emulator(standin_logs: Path) -> Iterator[Server]:
    if not (VENV_BIN / "gcp-storage-emulator").exists():
        pytest.fail(
            f"gcp-storage-emulator not found in {VENV_BIN}: run `make install`", pytrace=False
        )
    server = _start_or_fail("gcp-storage-emulator", gcs_emulator_argv, standin_logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(standin_logs: Path) -> Iterator[Server]:
    if not AZURITE_BIN.exists():
        pytest.fail(
            f"Azurite not found at {AZURITE_BIN}: run `make node` (npm ci installs the version "
            "pinned in package.json; needs Node.js and npm)",
            pytrace=False,
        )
    server = _start_or_fail("azurite-blob", azurite_argv, standin_logs)
    yield server
    server.stop()


def azurite_connection_string(blob_url: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={blob_url}/{AZURITE_ACCOUNT};"
    )


@dataclass
class Store:
    """One stand-in seen through its official client, plus what a connector needs to use it.

    ``kind`` is the connector type; ``env`` the variables the connector's credential chain
    reads; ``secrets`` values that must never appear in any output; ``create_only`` whether
    the stand-in enforces create-only writes (gcp-storage-emulator does not).
    """

    kind: str
    server: Server
    env: dict[str, str]
    secrets: tuple[str, ...]
    create_only: bool
    client: Any = field(repr=False)

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.create_bucket(name)
        return name

    def create_bucket(self, name: str) -> None:
        if self.kind == "s3":
            self.client.create_bucket(Bucket=name)
            # Versioning makes every write visible as a new version id (see version()).
            self.client.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": "Enabled"}
            )
        elif self.kind == "gcs":
            self.client.create_bucket(name)
        else:
            self.client.create_container(name)

    def deliver(self, bucket: str, endpoint: str | None = None) -> dict[str, Any]:
        """The connector's deliver section for ``bucket`` (``endpoint`` overrides the URL)."""
        url = endpoint or self.server.url
        if self.kind == "s3":
            return {"bucket": bucket, "endpoint_url": url, "region": "us-east-1"}
        if self.kind == "gcs":
            return {"bucket": bucket}
        return {"container": bucket, "connection_string": "${env:TEST_AZURE_CONNECTION_STRING}"}

    def env_for(self, endpoint: str) -> dict[str, str]:
        """``env`` pointing the connector at another endpoint (e.g. a closed port)."""
        if self.kind == "gcs":
            return {**self.env, "STORAGE_EMULATOR_HOST": endpoint}
        if self.kind == "azure_blob":
            return {**self.env, "TEST_AZURE_CONNECTION_STRING": azurite_connection_string(endpoint)}
        return dict(self.env)

    def names(self, bucket: str) -> list[str]:
        if self.kind == "s3":
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        if self.kind == "gcs":
            return sorted(b.name for b in self.client.list_blobs(bucket))
        return sorted(self.client.get_container_client(bucket).list_blob_names())

    def read(self, bucket: str, name: str) -> bytes:
        if self.kind == "s3":
            return bytes(self.client.get_object(Bucket=bucket, Key=name)["Body"].read())
        if self.kind == "gcs":
            return bytes(self.client.bucket(bucket).blob(name).download_as_bytes(raw_download=True))
        return bytes(self.client.get_blob_client(bucket, name).download_blob().readall())

    def content_type(self, bucket: str, name: str) -> str:
        if self.kind == "s3":
            return str(self.client.head_object(Bucket=bucket, Key=name)["ContentType"])
        if self.kind == "gcs":
            return str(self.client.bucket(bucket).get_blob(name).content_type)
        props = self.client.get_blob_client(bucket, name).get_blob_properties()
        return str(props.content_settings.content_type)

    def version(self, bucket: str, name: str) -> str:
        """An identifier that changes on every write of the object, even with equal bytes."""
        if self.kind == "s3":
            return str(self.client.head_object(Bucket=bucket, Key=name)["VersionId"])
        if self.kind == "gcs":
            return str(self.client.bucket(bucket).get_blob(name).generation)
        return str(self.client.get_blob_client(bucket, name).get_blob_properties().etag)

    def overwrite(self, bucket: str, name: str, data: bytes) -> None:
        """Replace an object's bytes (a plain, unconditional write)."""
        if self.kind == "s3":
            self.client.put_object(Bucket=bucket, Key=name, Body=data)
        elif self.kind == "gcs":
            self.client.bucket(bucket).blob(name).upload_from_string(data)
        else:
            self.client.get_blob_client(bucket, name).upload_blob(data, overwrite=True)


def _s3_store(server: Server) -> Store:
    import boto3

    env = {
        "AWS_ACCESS_KEY_ID": "moto-test-key-id",
        "AWS_SECRET_ACCESS_KEY": AWS_TEST_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_SECRET,
    )
    return Store("s3", server, env, (AWS_TEST_SECRET,), True, client)


def _gcs_store(server: Server) -> Store:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

    env = {"STORAGE_EMULATOR_HOST": server.url, "GOOGLE_CLOUD_PROJECT": "test-project"}
    client = storage.Client(
        project="test-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.url},
    )
    return Store("gcs", server, env, (), False, client)


def _azure_store(server: Server) -> Store:
    from azure.storage.blob import BlobServiceClient

    connection_string = azurite_connection_string(server.url)
    env = {"TEST_AZURE_CONNECTION_STRING": connection_string}
    client = BlobServiceClient.from_connection_string(connection_string)
    return Store("azure_blob", server, env, (AZURITE_KEY,), True, client)


STORE_KINDS = ("s3", "gcs", "azure_blob")
CREATE_ONLY_KINDS = ("s3", "azure_blob")
"""Stores whose stand-in enforces create-only writes (gcp-storage-emulator does not)."""

_SERVERS = {"s3": "moto_server", "gcs": "gcs_emulator", "azure_blob": "azurite"}
_BUILDERS = {"s3": _s3_store, "gcs": _gcs_store, "azure_blob": _azure_store}


@pytest.fixture(scope="session")
def _stores() -> dict[str, Store]:
    return {}


@pytest.fixture
def object_store(
    request: pytest.FixtureRequest, _stores: dict[str, Store], monkeypatch: pytest.MonkeyPatch
) -> Store:
    """The store named by the test's parameter, with its credentials in the environment.

    Also isolates the AWS chain from the machine's own config files, so only the test's
    credentials are used.
    """
    kind = request.param
    if kind not in _stores:
        _stores[kind] = _BUILDERS[kind](request.getfixturevalue(_SERVERS[kind]))
    store = _stores[kind]
    missing = str(request.getfixturevalue("tmp_path") / "no-such-aws-file")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    return store


def make_store(kind: str, server: Server) -> Store:
    """A :class:`Store` of ``kind`` (a connector type) served by ``server``."""
    return _BUILDERS[kind](server)
