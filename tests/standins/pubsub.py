"""Google's Pub/Sub emulator as a session-wide stand-in (a real server, never a mock).

Started once per test session as a subprocess on a free loopback port::

    /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator \\
        --host=127.0.0.1 --port=N

polled until it answers (no fixed sleeps) and stopped at the end. If it cannot start the
tests that need it FAIL with the reason and the emulator's log; they are never skipped.
Override the executable with ``PUBSUB_EMULATOR_BIN``.

Use from a test module::

    pytest_plugins = ["tests.standins.pubsub"]

    def test_x(pubsub_env):                 # PUBSUB_EMULATOR_HOST set for this test
        topic = pubsub_env.create_topic("video-events")
        sub = pubsub_env.create_subscription(topic)
        ...                                 # publish through the connector
        messages = pubsub_env.pull(sub, expected=10)

Topic and subscription names need at least 3 characters; each call makes unique ones.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

EMULATOR_BIN = os.environ.get(
    "PUBSUB_EMULATOR_BIN",
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
START_TIMEOUT_S = 60.0
PROJECT = "telemetry-test"


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies without its teardown (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass
class PubSubEmulator:
    """A running emulator and admin clients bound to it (insecure channels, no credentials)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    project: str = PROJECT
    _clients: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The value for ``PUBSUB_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _client(self, kind: str) -> Any:
        if kind not in self._clients:
            import grpc
            from google.pubsub_v1.services.publisher import PublisherClient
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
            from google.pubsub_v1.services.subscriber import SubscriberClient
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            channel = grpc.insecure_channel(self.host)
            if kind == "publisher":
                self._clients[kind] = PublisherClient(
                    transport=PublisherGrpcTransport(channel=channel)
                )
            else:
                self._clients[kind] = SubscriberClient(
                    transport=SubscriberGrpcTransport(channel=channel)
                )
        return self._clients[kind]

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def create_topic(self, prefix: str = "topic") -> str:
        """Create a topic with a unique name; return its full path."""
        path = self.topic_path(f"{prefix}-{uuid.uuid4().hex[:8]}")
        self._client("publisher").create_topic(request={"name": path}, timeout=10)
        return path

    def create_subscription(self, topic: str, ack_deadline_s: int = 60) -> str:
        """Create a pull subscription on ``topic``; return its full path."""
        path = f"projects/{self.project}/subscriptions/sub-{uuid.uuid4().hex[:8]}"
        self._client("subscriber").create_subscription(
            request={"name": path, "topic": topic, "ack_deadline_seconds": ack_deadline_s},
            timeout=10,
        )
        return path

    def pull(self, subscription: str, expected: int, timeout: float = 30.0) -> list[Any]:
        """Pull and ack until ``expected`` messages arrived, then check that no more come.

        Returns every message pulled (more than ``expected`` if more were published).
        """
        subscriber = self._client("subscriber")
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(self._pull_once(subscriber, subscription, wait=True))
        got.extend(self._pull_once(subscriber, subscription, wait=False))
        return got

    def _pull_once(self, subscriber: Any, subscription: str, wait: bool) -> list[Any]:
        from google.api_core import exceptions

        try:
            with warnings.catch_warnings():
                # return_immediately is deprecated for the real service; the emulator honours it.
                warnings.simplefilter("ignore", DeprecationWarning)
                response = subscriber.pull(
                    request={
                        "subscription": subscription,
                        "max_messages": 1000,
                        "return_immediately": not wait,
                    },
                    timeout=5 if wait else 10,
                )
        except exceptions.DeadlineExceeded:
            return []
        messages = [m.message for m in response.received_messages]
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                },
                timeout=10,
            )
        return messages

    def stop(self) -> None:
        for client in self._clients.values():
            client.transport.close()
        self._clients.clear()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group (the JVM too)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


def start_emulator(log_dir: Path) -> PubSubEmulator:
    """Start the emulator on a free port and wait until it answers; fail with the reason."""
    if not os.access(EMULATOR_BIN, os.X_OK):
        pytest.fail(
            f"Pub/Sub emulator not found at {EMULATOR_BIN}: install "
            "google-cloud-cli-pubsub-emulator (Google's gcloud packages; needs Java 17) or set "
            "PUBSUB_EMULATOR_BIN",
            pytrace=False,
        )
    problems = []
    for attempt in range(3):  # a port taken between choosing and binding: try another
        port = _free_port()
        log = log_dir / f"pubsub-emulator-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [EMULATOR_BIN, "--host=127.0.0.1", f"--port={port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        emulator = PubSubEmulator(proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _answers(port):
                return emulator
            try:
                code = proc.wait(timeout=0.1)  # returns at once if it died
            except subprocess.TimeoutExpired:
                continue
            problems.append(f"attempt {attempt + 1}: exited with {code}:\n{emulator.log_tail()}")
            break
        else:
            emulator.stop()
            pytest.fail(
                f"Pub/Sub emulator did not answer on port {port} within {START_TIMEOUT_S:.0f} s:"
                f"\n{emulator.log_tail()}",
                pytrace=False,
            )
    pytest.fail("Pub/Sub emulator cannot start:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The session's Pub/Sub emulator (started on first use, stopped at session end)."""
    emulator = start_emulator(tmp_path_factory.mktemp("pubsub-emulator"))
    yield emulator
    emulator.stop()


@pytest.fixture
def pubsub_env(pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> PubSubEmulator:
    """The emulator, with ``PUBSUB_EMULATOR_HOST`` pointing at it for this test only."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return pubsub_emulator
