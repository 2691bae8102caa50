"""pytest fixtures: one stand-in receiver per API, started on a free port, stopped after.

    pytest_plugins = ["tests.receivers.fixtures"]

    def test_x(receivers, secret_env):
        dd = receivers["datadog_logs"]           # a Receiver serving DatadogLogsApi
        dd.fail(times=2)                         # inject faults
        ...
        assert dd.wait_for(lambda r: len(r.items) == 10)

The credentials each receiver accepts are in :mod:`tests.receivers.credentials`; the
``secret_env`` fixture exports them as the variables the connector configs reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.receivers.base import Api, Receiver
from tests.receivers.credentials import API_KINDS, SECRET_ENV, make_api


@pytest.fixture
def start_receiver() -> Iterator[Callable[[Api], Receiver]]:
    """A factory: ``start_receiver(api)`` serves ``api``; all are stopped at teardown."""
    started: list[Receiver] = []

    def start(api: Api) -> Receiver:
        receiver = Receiver(api)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def receivers(start_receiver: Callable[[Api], Receiver]) -> dict[str, Receiver]:
    """One receiver per API kind (see :data:`API_KINDS`), keyed by connector type."""
    return {kind: start_receiver(make_api(kind)) for kind in API_KINDS}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Export the receivers' credentials as the variables the configs reference."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(SECRET_ENV)
