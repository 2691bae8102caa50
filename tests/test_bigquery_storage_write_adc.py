"""``method: storage_write`` on its production path: TLS, Application Default Credentials.

The strict ``BigQueryWrite`` stand-in (tests/receivers/bigquery.py) serves TLS with a
throwaway CA the client trusts through ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, and refuses any
call without ``authorization: Bearer <token>``; the sink builds its client exactly as in
production (``google.auth.default()``, ``api_endpoint``, a TLS channel). Then the stand-in
refuses appends in every way it can while quoting the call's metadata back (the
authorization header first): ``UNAUTHENTICATED``, ``PERMISSION_DENIED`` with the quote only
in the error details, ``row_errors``, ``UNAVAILABLE`` then success, a dead port, and the
token endpoint failing with a 500 that quotes what it was sent. The credential never shows
in an error, a dead letter, a retry record's ``last_error``, the summary, stdout/stderr or a
log record, and the counts add up.

Two ADC files, both real production forms:

- ``external_account`` (workload identity federation): a token endpoint (here a local
  receiver) exchanges a subject token for a known OAuth access token. An
  ``authorized_user`` file cannot be used: google-auth 2.63's
  ``Credentials.from_authorized_user_info`` always replaces its ``token_uri`` with
  ``https://oauth2.googleapis.com/token``.
- ``service_account`` (a key file): on gRPC, Google's client signs its own JWT with the key
  and sends that as the bearer token (``always_use_jwt_access``); no token endpoint is
  called. The stand-in records what was sent, so the check knows the secret.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.jobs import run_job
from tests.receivers.base import Api, Receiver, Reply
from tests.receivers.bigquery import BigQueryWriteStandIn, tls_credentials
from tests.test_bigquery import COLUMNS, TABLE, rows
from tests.test_connector_contract import open_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError
from transforms.rules.letters import dead_letter_json, encode_retry_record
from transforms.rules.retry import RetryPolicy, deliver_with_retries, settle_failures

pytest_plugins = ["tests.receivers.fixtures"]

ACCESS_TOKEN = "ya29.a0-storage-write-secret-token-0123456789"
"""What the token endpoint hands out for the subject token."""
SUBJECT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.subject-token-secret-9876543210"
"""The workload's own credential, exchanged for :data:`ACCESS_TOKEN`."""
PARENT = "projects/my-project/datasets/telemetry/tables/player_events"
ONE_RETRY = RetryPolicy(immediate=1, sleep=lambda _: None)
SCHEDULE_S = (300.0, 600.0)

StartReceiver = Callable[[Any], Receiver]


class TokenExchange(Api):
    """Google's STS ``/v1/token`` for an ``external_account`` ADC file.

    Checks the grant and the subject token, answers :data:`ACCESS_TOKEN` valid for
    ``expires_in`` seconds (under google-auth's 3 min 45 s margin: every call refreshes).
    ``failing``: a 500 that quotes the token it issued last and the request it got.
    """

    name = "sts"

    def __init__(self, expires_in: int = 3600):
        self.expires_in = expires_in
        self.failing = False
        self.grants = 0

    def secrets(self) -> list[str]:
        return [ACCESS_TOKEN, SUBJECT_TOKEN]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        form = dict(urllib.parse.parse_qsl(body.decode()))
        if self.failing:
            quoted = f"last issued {ACCESS_TOKEN}; subject_token {SUBJECT_TOKEN}; got {form}"
            answer: dict[str, Any] = {"error": "server_error", "error_description": quoted}
            return Reply(500, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        if (
            method != "POST"
            or path != "/v1/token"
            or form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
            or form.get("subject_token") != SUBJECT_TOKEN
        ):
            answer = {"error": "invalid_grant", "error_description": "bad token exchange"}
            return Reply(400, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        self.grants += 1
        answer = {
            "access_token": ACCESS_TOKEN,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        return Reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})


@pytest.fixture(scope="session")
def _ca_and_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[bytes, bytes]]:
    """One CA for the whole process: gRPC reads the roots file once, at its first TLS use."""
    ca, pair = tls_credentials()
    path = tmp_path_factory.mktemp("stand-in-ca") / "ca.pem"
    path.write_bytes(ca)
    return path, pair


@pytest.fixture
def tls(
    _ca_and_pair: tuple[Path, tuple[bytes, bytes]], monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, bytes]:
    """The stand-in's key and certificate; the client trusts their CA, nothing else.

    gRPC reads ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` once per process, at its first TLS
    channel: in a process that made one before, the client would not trust this CA and
    every call here would fail its handshake (loudly: the bearer checks cannot pass).
    """
    path, pair = _ca_and_pair
    monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(path))
    monkeypatch.delenv("BIGQUERY_STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    return pair


def external_account_adc(token_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ADC at an ``external_account`` file (workload identity federation) whose STS
    token endpoint is ``token_url`` and whose subject token is :data:`SUBJECT_TOKEN`."""
    (folder / "subject.jwt").write_text(SUBJECT_TOKEN)
    adc = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123456/locations/global/"
        "workloadIdentityPools/pool/providers/provider",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": token_url,
        "credential_source": {"file": str(folder / "subject.jwt")},
    }
    (folder / "adc.json").write_text(json.dumps(adc))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(folder / "adc.json"))


@pytest.fixture
def sts(
    start_receiver: StartReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> TokenExchange:
    """An ``external_account`` ADC file whose token endpoint is a local receiver."""
    api = TokenExchange()
    receiver = start_receiver(api)
    external_account_adc(receiver.url + "/v1/token", tmp_path, monkeypatch)
    return api


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record at DEBUG, Google's libraries' too.

    google-auth stops the ``google`` logger propagating to the root unless it has a
    handler of its own; a deployment that configures it sees them, so the test does.
    """
    google = logging.getLogger("google")
    google.addHandler(caplog.handler)
    yield caplog
    google.removeHandler(caplog.handler)


@pytest.fixture
def stand_in(tls: tuple[bytes, bytes]) -> Iterator[BigQueryWriteStandIn]:
    server = BigQueryWriteStandIn({TABLE: COLUMNS}, tls=tls, access_token=ACCESS_TOKEN)
    yield server
    server.stop()


def tls_sink(url: str) -> Any:
    deliver = {
        "table": TABLE,
        "method": "storage_write",
        "endpoint": url,
        "timeouts": {"connect_s": 2, "read_s": 5},
    }
    return open_sink("bigquery", deliver)


def leaks(text: str, secrets: list[str]) -> list[str]:
    """The secrets found in ``text``, whole or as a 16-character piece of their end."""
    return [s for s in secrets if s in text or s[-16:] in text]


def settled_texts(batch: DeliveryBatch, outcome: Any) -> list[str]:
    """What leaves the job for a settled batch: errors, retry record and dead letters.

    Encoded by the job's own writers with no secret of their own: they cannot know the
    token, so the sink's errors must already be clean.
    """
    record, letters = settle_failures(batch, outcome, SCHEDULE_S, delayed_enabled=True)
    texts = [str(error) for _, error, _ in outcome.failed]
    texts += [dead_letter_json(letter).decode() for letter in letters]
    if record is not None:
        texts.append(encode_retry_record(record).decode())
    return texts


# -- the production path --------------------------------------------------------------------------


def test_the_token_from_adc_is_sent_over_tls_on_every_call(
    sts: TokenExchange, stand_in: BigQueryWriteStandIn
) -> None:
    assert stand_in.url.startswith("https://")
    sink = tls_sink(stand_in.url)
    try:
        assert sink.write(DeliveryBatch("c1", "", rows([1, 2]))).events == 2
    finally:
        sink.close()
    assert sts.grants >= 1
    calls = [rpc for rpc, _ in stand_in.authorizations]
    assert calls[:2] == ["CreateWriteStream", "AppendRows"]
    assert {said for _, said in stand_in.authorizations} == {f"Bearer {ACCESS_TOKEN}"}
    assert [r["event_id"] for r in stand_in.rows[TABLE]] == ["e0", "e1"]


def test_without_the_token_the_stand_in_refuses(
    tls: tuple[bytes, bytes], sts: TokenExchange
) -> None:
    """The stand-in's check is real: another token is refused, and not retried."""
    server = BigQueryWriteStandIn({TABLE: COLUMNS}, tls=tls, access_token="ya29.another-one")
    sink = tls_sink(server.url)
    try:
        with pytest.raises(DeliveryError) as raised:
            sink.write(DeliveryBatch("c1", "", rows([1])))
    finally:
        sink.close()
        server.stop()
    assert "UNAUTHENTICATED" in str(raised.value) and not raised.value.retryable
    assert server.authorizations == [("CreateWriteStream", f"Bearer {ACCESS_TOKEN}")]
    assert server.rows[TABLE] == []


# -- refusals that quote the token ----------------------------------------------------------------

REFUSALS = ("unauthenticated", "permission_denied", "row_errors", "unavailable_then_ok")


def refuse(server: BigQueryWriteStandIn, kind: str) -> None:
    """Make the next append refused in one way, the call's metadata quoted back."""
    if kind == "unauthenticated":
        server.fail(1, grpc.StatusCode.UNAUTHENTICATED, echo=True)
    elif kind == "permission_denied":  # quoted only in the error details
        server.fail(1, grpc.StatusCode.PERMISSION_DENIED, echo=True, message="")
    elif kind == "row_errors":
        server.refuse_rows(1, echo=True)
    else:
        server.fail(1, grpc.StatusCode.UNAVAILABLE, echo=True)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=st.lists(st.sampled_from(REFUSALS), min_size=1, max_size=4))
def test_no_refusal_puts_the_token_in_an_error_letter_or_retry_record(
    kinds: list[str],
    sts: TokenExchange,
    stand_in: BigQueryWriteStandIn,
    logs: pytest.LogCaptureFixture,
) -> None:
    logs.clear()
    before = len(stand_in.rows[TABLE])
    sink = tls_sink(stand_in.url)
    texts: list[str] = []
    delivered = 0
    try:
        for n, kind in enumerate(kinds):
            refuse(stand_in, kind)
            batch = DeliveryBatch("c1", "", rows([1, 2, 3], prefix=f"b{n}-"))
            outcome = deliver_with_retries(sink, batch, ONE_RETRY)
            assert outcome.delivered + len(outcome.failed) == 3  # nothing lost
            assert outcome.delivered == (3 if kind == "unavailable_then_ok" else 0)
            delivered += outcome.delivered
            texts += settled_texts(batch, outcome)
    finally:
        sink.close()
    if set(kinds) != {"unavailable_then_ok"}:  # a refusal's quote arrived, redacted
        assert any("authorization=Bearer ***" in t for t in texts)
    assert leaks("\n".join([*texts, logs.text, repr(sink)]), [ACCESS_TOKEN]) == []
    assert len(stand_in.rows[TABLE]) - before == delivered  # each landed once
    assert {said for _, said in stand_in.authorizations} == {f"Bearer {ACCESS_TOKEN}"}


# -- the token endpoint failing -------------------------------------------------------------------


@pytest.mark.timeout(60)  # a hang guard, not a speed check: the client's own retry can wait a day
def test_a_failing_token_endpoint_is_a_clear_retryable_error_without_the_token(
    tls: tuple[bytes, bytes],
    start_receiver: StartReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A first token, then a 500 quoting that token and the subject token it was sent."""
    sts = TokenExchange(expires_in=60)  # under google-auth's margin: each call refreshes
    receiver = start_receiver(sts)
    external_account_adc(receiver.url + "/v1/token", tmp_path, monkeypatch)
    server = BigQueryWriteStandIn({TABLE: COLUMNS}, tls=tls, access_token=ACCESS_TOKEN)
    sink = tls_sink(server.url)
    try:
        assert sink.write(DeliveryBatch("c1", "", rows([1]))).events == 1
        sts.failing = True
        batch = DeliveryBatch("c1", "", rows([2, 3], prefix="f"))
        outcome = deliver_with_retries(sink, batch, ONE_RETRY)
    finally:
        sink.close()
        server.stop()
    assert outcome.delivered == 0 and len(outcome.failed) == 2
    error = outcome.failed[0][1]
    assert error.retryable, error  # the token endpoint may come back
    assert "bigquery AppendRows" in str(error) and PARENT in str(error)  # names the target
    out, err = capfd.readouterr()
    texts = [*settled_texts(batch, outcome), logs.text, out, err]
    assert leaks("\n".join(texts), [ACCESS_TOKEN, SUBJECT_TOKEN]) == []
    assert len(server.rows[TABLE]) == 1


# -- service account key: a self-signed JWT is the bearer -----------------------------------------


def test_a_service_account_key_signs_its_own_bearer_and_it_never_shows(
    tls: tuple[bytes, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.LogCaptureFixture,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    adc = {
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "writer@my-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",  # never called on gRPC: the JWT is self-signed
    }
    (tmp_path / "sa.json").write_text(json.dumps(adc))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    server = BigQueryWriteStandIn({TABLE: COLUMNS}, tls=tls)
    sink = tls_sink(server.url)
    try:
        assert sink.write(DeliveryBatch("c1", "", rows([1]))).events == 1
        refuse(server, "unauthenticated")
        batch = DeliveryBatch("c1", "", rows([2], prefix="f"))
        outcome = deliver_with_retries(sink, batch, ONE_RETRY)
    finally:
        sink.close()
        server.stop()
    said = {value or "" for _, value in server.authorizations}
    assert len(said) == 1 and next(iter(said)).startswith("Bearer ey")  # a JWT was sent
    bearer = next(iter(said)).removeprefix("Bearer ")
    signature = bearer.rsplit(".", 1)[-1]  # the part only the key can make
    assert outcome.delivered == 0 and not outcome.failed[0][1].retryable
    texts = [*settled_texts(batch, outcome), logs.text]
    assert leaks("\n".join(texts), [bearer, signature]) == []


# -- whole runs -----------------------------------------------------------------------------------


def write_job(tmp_path: Path, endpoint: str) -> tuple[Path, Path]:
    """60 events (every 7th with a bitrate no INT64 takes) to one storage_write connector,
    with a retry location and dead letters below ``tmp_path``; the config and the input."""
    events = [
        {
            "event_id": f"ev-{i}",
            "event": {"type": "heartbeat", "timestamp": 1764136800123 + i},
            "fluxdata": {"bitrate": "fast" if i % 7 == 0 else 1000 + i},
        }
        for i in range(60)
    ]
    source = tmp_path / "events.jsonl.gz"
    source.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in events).encode()))
    config = tmp_path / "delivery.yaml"
    config.write_text(
        f"""
connectors:
  - id: warehouse
    type: bigquery
    package:
      template:
        fields:
          event_id: event_id
          event_type: event.type
          bitrate_kbps: fluxdata.bitrate
    deliver:
      table: {TABLE}
      method: storage_write
      endpoint: {endpoint}
      timeouts: {{connect_s: 2, read_s: 5}}
      batch: {{max_events: 10, max_wait_s: 1}}
      concurrency: 1
    retry: {{immediate: 1, delayed_schedule_s: [300, 600]}}
dead_letter: {{path: {tmp_path / "dead"}}}
retry_location: {tmp_path / "retry"}
"""
    )
    return config, source


def job_outputs(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The dead letters, the retry records and every file the run wrote, as text."""
    letters = [
        json.loads(line)
        for f in (tmp_path / "dead").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]
    records = [json.loads(f.read_text()) for f in (tmp_path / "retry").rglob("*.json")]
    written = "\n".join(
        f.read_text(errors="replace")
        for f in tmp_path.rglob("*")
        if f.is_file() and f.suffix in (".ndjson", ".json")
    )
    return letters, records, written


def test_a_run_against_a_refusing_server_leaks_no_token_and_balances(
    sts: TokenExchange,
    stand_in: BigQueryWriteStandIn,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    stand_in.fail(1, grpc.StatusCode.PERMISSION_DENIED, echo=True, rpc="CreateWriteStream")
    for kind in ("unauthenticated", "row_errors", "permission_denied", "unavailable_then_ok"):
        refuse(stand_in, kind)
    config, source = write_job(tmp_path, stand_in.url)
    code, summary = run_job(config, source, tmp_path / "summary.json")
    out, err = capfd.readouterr()
    assert code == 0, summary
    (row,) = summary["connectors"]
    letters, records, written = job_outputs(tmp_path)
    stored = [r["event_id"] for r in stand_in.rows[TABLE]]
    assert len(stored) == len(set(stored)) == row["delivered"]  # once each
    assert row["routed"] == 60 and summary["balanced"]
    assert row["delivered"] + row["dead_lettered"] + row["retrying"] == 60
    assert row["dead_lettered"] == len(letters) and row["dead_lettered"] > 9  # refusals too
    assert any("authorization=Bearer ***" in d["error"] for d in letters)  # quoted, redacted
    everything = [written, json.dumps(summary), out, err, logs.text]
    assert leaks("\n".join(everything), [ACCESS_TOKEN, SUBJECT_TOKEN]) == []
    assert {said for _, said in stand_in.authorizations} == {f"Bearer {ACCESS_TOKEN}"}
    assert not records or all(PARENT in r["last_error"] for r in records)


def test_a_run_against_a_dead_port_retries_later_without_the_token(
    sts: TokenExchange,
    tls: tuple[bytes, bytes],
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config, source = write_job(tmp_path, f"https://127.0.0.1:{port}")
    code, summary = run_job(config, source, tmp_path / "summary.json")
    out, err = capfd.readouterr()
    assert code == 0, summary
    (row,) = summary["connectors"]
    _, records, written = job_outputs(tmp_path)
    assert row["delivered"] == 0 and summary["balanced"]
    # schema: auto: rows are encoded against the table's columns, which the stream gives
    assert row["retrying"] == 60 and row["dead_lettered"] == 0
    assert sum(len(r["items"]) for r in records) == row["retrying"]
    assert all("UNAVAILABLE" in r["last_error"] and PARENT in r["last_error"] for r in records)
    everything = [written, json.dumps(summary), out, err, logs.text]
    assert leaks("\n".join(everything), [ACCESS_TOKEN, SUBJECT_TOKEN]) == []
