"""The GCS connector writes create-only: every upload carries ``ifGenerationMatch=0``.

gcp-storage-emulator, the GCS stand-in, accepts ``ifGenerationMatch`` and ignores it (a
second write of a name overwrites it), so a connector that stopped sending it would pass
every test that only looks at the bucket. Here the connector talks to the emulator
through :class:`CreateOnlyFront`, a small HTTP forwarder that records every request and
enforces the precondition as real GCS does: an upload asking ``ifGenerationMatch=N`` for
a name whose current generation is not ``N`` (0: the name must be free) is answered
``412 Precondition Failed`` and never reaches the emulator. The tests then check what
was sent (the query of each upload) and what the connector made of a 412 (the batch was
already there: delivered, counted ``already_present``).

What counts as an upload: the JSON API's media uploads, ``POST /upload/storage/v1/b/
<bucket>/o?uploadType=multipart`` (objects up to 8 MiB) and the session start
``...?uploadType=resumable`` of larger objects, whose chunks follow as ``PUT`` requests
that carry ``upload_id`` and no object name.
"""

from __future__ import annotations

import email.parser
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.standins.object_stores import Server, Store, make_store
from transforms.config import parse_config
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, WriteResult
from transforms.rules.encode import FORMATS
from transforms.rules.records import Packaged

pytest_plugins = ["tests.standins.object_stores"]

CID = "archive_gcs"
UPLOAD_PATH = "/upload/storage/v1/b/"
HOP_HEADERS = {"connection", "content-length", "transfer-encoding", "keep-alive", "date", "server"}
PRECONDITION_FAILED = {
    "error": {
        "code": 412,
        "message": "At least one of the pre-conditions you specified did not hold.",
        "errors": [
            {
                "domain": "global",
                "reason": "conditionNotMet",
                "message": "At least one of the pre-conditions you specified did not hold.",
                "locationType": "header",
                "location": "If-Match",
            }
        ],
    }
}
"""GCS's JSON API body for a failed precondition (as documented for ``conditionNotMet``)."""


@dataclass(frozen=True)
class Upload:
    """One upload request seen by the front: where it went, what it asked, what it got.

    ``query`` is the parsed query string, e.g. ``{"uploadType": ["multipart"],
    "ifGenerationMatch": ["0"]}``; ``status`` the answer sent back to the connector.
    """

    bucket: str
    name: str
    query: dict[str, list[str]]
    status: int


def _object_name(content_type: str, body: bytes, query: dict[str, list[str]]) -> str | None:
    """The object an upload creates: ``?name=``, or the JSON metadata in its body."""
    if "name" in query:
        return query["name"][0]
    if content_type.startswith("multipart/"):
        message = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        parts = message.get_payload()
        if not isinstance(parts, list) or not parts or isinstance(parts[0], str):
            return None
        metadata = parts[0].get_payload(decode=True)
        if not isinstance(metadata, bytes):
            return None
    else:
        metadata = body
    try:
        name = json.loads(metadata).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


class CreateOnlyFront:
    """An HTTP forwarder to a GCS emulator that records uploads and enforces preconditions.

    Point ``STORAGE_EMULATOR_HOST`` at :attr:`url`. Every request is forwarded unchanged to
    ``emulator`` (the ``Host`` header kept, so a resumable session's ``Location`` points
    back here), except an upload whose ``ifGenerationMatch`` does not hold: that one is
    answered 412, as real GCS does. :attr:`uploads` lists every upload in arrival order.
    """

    def __init__(self, emulator: Server):
        self.emulator = emulator
        self.uploads: list[Upload] = []
        self.other_requests: list[str] = []
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read self.uploads; the access log would only be noise

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, data = front.handle(self.command, self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CreateOnlyFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.emulator.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=dict(headers.items()))
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
            return response.status, kept, data
        finally:
            conn.close()

    def generation(self, bucket: str, name: str) -> int:
        """The emulator's current generation of ``bucket/name``; 0 when there is none."""
        path = f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
        status, _, data = self._forward("GET", path, {}, b"")
        if status == 404:
            return 0
        assert status == 200, (status, data)
        return int(json.loads(data)["generation"])

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request: 412 for an upload whose precondition fails, else forward it."""
        url = urlsplit(path)
        query = parse_qs(url.query)
        if not (method == "POST" and url.path.startswith(UPLOAD_PATH)):
            # Resumable chunks (PUT ...&upload_id=) and everything else: passed through.
            with self._lock:
                self.other_requests.append(f"{method} {path}")
            return self._forward(method, path, headers, body)
        bucket = url.path[len(UPLOAD_PATH) :].split("/", 1)[0]
        name = _object_name(headers.get("Content-Type", ""), body, query)
        assert name is not None, f"an upload without an object name: {method} {path}"
        # The lock makes check-then-write atomic, as the store's own precondition is.
        with self._lock:
            wanted = query.get("ifGenerationMatch")
            if wanted is not None and int(wanted[0]) != self.generation(bucket, name):
                answer = (
                    412,
                    [("Content-Type", "application/json; charset=UTF-8")],
                    json.dumps(PRECONDITION_FAILED).encode(),
                )
            else:
                answer = self._forward(method, path, headers, body)
            self.uploads.append(Upload(bucket, name, query, answer[0]))
        return answer


@pytest.fixture
def gcs_store(gcs_emulator: Server) -> Store:
    """The emulator seen directly (not through the front), to create and inspect buckets."""
    return make_store("gcs", gcs_emulator)


@pytest.fixture
def front(gcs_emulator: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[CreateOnlyFront]:
    """The front, with the connector's environment pointing at it."""
    with CreateOnlyFront(gcs_emulator) as started:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", started.url)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
        yield started


def sink_for(tmp: Path, bucket: str, fmt: str = "ndjson.gz") -> Any:
    """The gcs connector's sink built from a validated config."""
    config = parse_config(
        json.dumps(
            {
                "connectors": [
                    {"id": CID, "type": "gcs", "deliver": {"bucket": bucket, "format": fmt}}
                ],
                "dead_letter": {"path": str(tmp / "dl")},
            }
        )
    )
    (connector,) = config.connectors
    sink = make_sink(connector.id, connector.type, connector.deliver_config)
    sink.open()
    return sink


def a_batch(n: int, seed: int, prefix: str = "direct/", pad: int = 0) -> DeliveryBatch:
    """``n`` generated events as one batch; ``pad`` adds that many bytes to each record."""
    events = [json.loads(line) for line in generate(n, seed=seed)]
    if pad:
        for e in events:
            e["padding"] = "p" * pad
    items = [
        Packaged(e["event_id"], e["event"]["timestamp"], e["event"]["type"], e, e) for e in events
    ]
    return DeliveryBatch(CID, prefix, items)


def assert_create_only(uploads: list[Upload]) -> None:
    """Every upload asked for ``ifGenerationMatch=0`` and nothing else as a precondition."""
    assert uploads, "no upload reached the front"
    for upload in uploads:
        assert upload.query.get("ifGenerationMatch") == ["0"], upload
        assert "ifGenerationNotMatch" not in upload.query, upload


# -- the front is a faithful oracle ------------------------------------------------------------


def test_the_front_enforces_if_generation_match_like_gcs(
    front: CreateOnlyFront, gcs_store: Store
) -> None:
    """Without the front the emulator overwrites (test_object_stores shows it); with it, not.

    This is what makes the tests below able to fail: a connector that dropped the
    precondition would overwrite, and one that sent it gets the 412 real GCS sends.
    """
    from google.api_core import exceptions as api
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

    bucket = gcs_store.new_bucket()
    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    blob = client.bucket(bucket).blob("a/b c")
    blob.upload_from_string(b"first", if_generation_match=0, retry=None)
    with pytest.raises(api.PreconditionFailed):
        blob.upload_from_string(b"second", if_generation_match=0, retry=None)
    assert gcs_store.read(bucket, "a/b c") == b"first"
    blob.upload_from_string(b"third", retry=None)  # no precondition: an overwrite
    assert gcs_store.read(bucket, "a/b c") == b"third"
    assert [(u.name, u.status) for u in front.uploads] == [
        ("a/b c", 200),
        ("a/b c", 412),
        ("a/b c", 200),
    ]
    assert "ifGenerationMatch" not in front.uploads[-1].query


# -- the connector ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_upload_sends_if_generation_match_0(
    front: CreateOnlyFront, gcs_store: Store, tmp_path: Path, fmt: str
) -> None:
    bucket = gcs_store.new_bucket()
    batches = [a_batch(n, seed) for seed, n in enumerate((1, 7, 40))]
    sink = sink_for(tmp_path, bucket, fmt)
    try:
        results = [sink.write(b) for b in batches]
    finally:
        sink.close()
    assert all(isinstance(r, WriteResult) and r.existed is False for r in results)
    assert len(front.uploads) == len(batches)
    assert_create_only(front.uploads)
    assert sorted(u.name for u in front.uploads) == gcs_store.names(bucket)
    assert all(u.bucket == bucket and u.status == 200 for u in front.uploads)


def test_a_large_object_starts_its_resumable_upload_create_only(
    front: CreateOnlyFront, gcs_store: Store, tmp_path: Path
) -> None:
    """Objects over 8 MiB go as resumable uploads: the session start carries the precondition."""
    bucket = gcs_store.new_bucket()
    batch = a_batch(9, seed=5, pad=1024 * 1024)
    sink = sink_for(tmp_path, bucket, "ndjson")
    try:
        first = sink.write(batch)
        again = sink.write(batch)
    finally:
        sink.close()
    assert first.bytes > 8 * 1024 * 1024
    assert [u.query.get("uploadType") for u in front.uploads] == [["resumable"]] * 2
    assert_create_only(front.uploads)
    assert any("upload_id=" in r for r in front.other_requests)  # the chunks went through
    assert [u.status for u in front.uploads] == [200, 412]
    assert (first.existed, again.existed) == (False, True)


def test_a_retried_batch_answered_412_counts_as_already_present(
    front: CreateOnlyFront, gcs_store: Store, tmp_path: Path
) -> None:
    bucket = gcs_store.new_bucket()
    batch = a_batch(25, seed=3)
    sink = sink_for(tmp_path, bucket)
    try:
        first = sink.write(batch)
        (name,) = gcs_store.names(bucket)
        generation = gcs_store.version(bucket, name)
        data = gcs_store.read(bucket, name)
        again = sink.write(batch)
    finally:
        sink.close()
    assert_create_only(front.uploads)
    assert [(u.name, u.status) for u in front.uploads] == [(name, 200), (name, 412)]
    assert first.existed is False
    assert again.existed is True  # the store said "already there": delivered, not an error
    assert (again.name, again.events, again.bytes) == (first.name, first.events, first.bytes)
    assert gcs_store.version(bucket, name) == generation
    assert gcs_store.read(bucket, name) == data


def test_a_rerun_of_the_job_uploads_create_only_and_finds_every_object_present(
    front: CreateOnlyFront, gcs_store: Store, tmp_path: Path
) -> None:
    """The whole job twice on the same input: the second run rewrites nothing."""
    bucket = gcs_store.new_bucket()
    source = tmp_path / "events.jsonl"
    lines = list(generate(300, seed=11))
    source.write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "delivery.yaml"
    config.write_text(
        json.dumps(
            {
                "connectors": [
                    {
                        "id": CID,
                        "type": "gcs",
                        "deliver": {"bucket": bucket, "batch": {"max_events": 100}},
                    }
                ],
                "dead_letter": {"path": str(tmp_path / "dead_letter")},
            }
        )
    )
    summary_path = tmp_path / "summary.json"
    argv = ["run", "--config", str(config), "--input", str(source)]
    rows = []
    for _ in range(2):
        assert main([*argv, "--summary-json", str(summary_path)]) == 0
        summary = json.loads(summary_path.read_text())
        assert summary["balanced"], summary
        (row,) = [r for r in summary["connectors"] if r["id"] == CID]
        rows.append(row)
        if len(rows) == 1:
            names = gcs_store.names(bucket)
            generations = {n: gcs_store.version(bucket, n) for n in names}
    first, second = rows
    assert_create_only(front.uploads)
    assert len(names) >= 3
    assert [u.status for u in front.uploads] == [200] * len(names) + [412] * len(names)
    assert first["delivered"] == second["delivered"] == len(lines)
    assert (first["already_present"], second["already_present"]) == (0, len(lines))
    assert second["dead_lettered"] == 0
    assert {n: gcs_store.version(bucket, n) for n in names} == generations
