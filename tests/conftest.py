from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


def make_event(
    event_id: str = "s1-1",
    etype: str = "heartbeat",
    session_id: str | None = "s1",
    ts: Any = 1764136800123,
    **groups: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": event_id, "event": {"type": etype, "timestamp": ts}}
    if session_id is not None:
        event["session_id"] = session_id
    event["metadata"] = groups.get(
        "metadata",
        {
            "device": {"os": "iOS", "type": "mobile"},
            "player": {"name": "hls.js"},
            "content": {"id": "c1", "title": "Título ⚽\u2028two"},
            "geo": {"country_code": "US"},
            "network": {"isp": "ACME", "ip": "203.0.113.7"},
            "user": {"id": "u1"},
        },
    )
    event["fluxdata"] = groups.get(
        "fluxdata",
        {"playhead_position_sec": 12.5, "rendition_video_bitrate_kbps": 4500, "num_errors": 0},
    )
    return event


@pytest.fixture
def event() -> dict[str, Any]:
    return make_event()


# --- Test tiers -------------------------------------------------------------------------
#
# Every collected test gets exactly one tier marker, assigned here from what it uses, so a
# new test cannot silently land in the fast tier while starting a server:
#
#   unit         no stand-in server, no JVM, no npm, no emulator, no subprocess job
#                (``make test-unit`` = ``pytest -m unit``)
#   integration  starts a stand-in (HTTP receivers, moto, gcp-storage-emulator, Azurite,
#                the Pub/Sub emulator, Prism) or runs the job in other processes
#   flink        the job on Flink's embedded cluster (a JVM and the job server jar)
#   perf         the benchmark's own apparatus (bench/): its bound writes what the job
#                writes, its comparison runs. None is timed: speed is measured by bench/
#                (``make bench``, ``make bench-check``), never asserted by a test.
#
# A test may also carry one tier marker itself; a ``unit`` marker on a test that uses a
# stand-in fixture is refused at collection.

TIERS = ("unit", "integration", "flink", "perf")

STANDIN_FIXTURES = frozenset(
    {
        "pubsub_emulator",  # Google's Pub/Sub emulator (a JVM)
        "pubsub_env",
        "moto_server",
        "gcs_emulator",
        "azurite",  # npm (node_modules/.bin/azurite-blob)
        "object_store",  # starts its store's server through request.getfixturevalue
        "start_receiver",  # threaded HTTP receivers (tests/receivers)
        "receivers",
        "flink_job_server_jar",
    }
)
"""Fixtures that start a stand-in; any test whose fixture closure holds one is integration."""

FILE_TIERS = {
    "test_flink.py": ("flink", "the job on Flink's embedded cluster (JVM, job server jar)"),
    "test_bench_regression.py": ("perf", "the bound writes what the job writes"),
    "test_streaming_default_engine.py": ("integration", "the streaming job on Prism"),
    "test_startup.py": ("integration", "runs the command line in fresh interpreters"),
    "test_local_runner.py": ("integration", "starts real multi-process Beam workers"),
    "test_agent_compare.py": ("perf", "the agent comparison runs the job in a subprocess"),
    "test_mutants_script.py": ("integration", "runs pytest in a subprocess"),
    "test_hostile_job.py": ("integration", "starts an HTTP receiver without a fixture"),
    "test_prism_stateful_split.py": ("integration", "runs a pipeline on Prism"),
}
"""Files whose tests start servers or subprocess jobs without a fixture, by file name."""


def tier_of(item: pytest.Item) -> str:
    """The tier of one collected test, e.g. ``"unit"`` for a test of a pure rule."""
    own = [name for name in TIERS if item.get_closest_marker(name) is not None]
    uses_standin = sorted(STANDIN_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if len(own) > 1:
        raise pytest.UsageError(f"{item.nodeid}: more than one tier marker: {own}")
    if own:
        if own[0] == "unit" and uses_standin:
            raise pytest.UsageError(
                f"{item.nodeid}: marked unit but uses stand-in fixture(s) {uses_standin}"
            )
        return own[0]
    by_file = FILE_TIERS.get(item.path.name)
    if by_file is not None:
        return by_file[0]
    return "integration" if uses_standin else "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def _library_caches_built() -> None:
    """Libraries' one-off caches are built before any test, outside the process guard.

    Matplotlib (the run report's plots) builds its font cache on its first import on a
    machine, running ``fc-list``: on a fresh machine that made whichever unit test
    first rendered a report fail :func:`_unit_tests_start_no_process`, though the test
    itself starts nothing.
    """
    import matplotlib.font_manager  # noqa: F401 (builds ~/.cache/matplotlib once)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the unit tier, a test that starts any process fails, naming the command.

    The tier is assigned from fixtures and file names (``tier_of``); a test that starts
    Prism, a JVM, worker processes or a job through a library call (``make_pipeline`` on
    the default runner, ``subprocess.run``) would otherwise land in ``make test-unit``
    unnoticed. Such a test belongs in ``FILE_TIERS`` or carries
    ``@pytest.mark.integration``. The process is let start (refusing it inside a library
    can hang the test) and the test fails when it ends.
    """
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    started: list[str] = []
    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def record(self: Any, args: Any, *rest: Any, **kw: Any) -> Any:
        started.append(" ".join(map(str, args)) if isinstance(args, list) else str(args))
        return real(self, args, *rest, **kw)

    subprocess.Popen._execute_child = record  # type: ignore[attr-defined]
    try:
        yield
    finally:
        subprocess.Popen._execute_child = real  # type: ignore[attr-defined]
    if started:
        pytest.fail(
            f"{request.node.nodeid} is in the unit tier but started {len(started)} "
            f"process(es), first: {started[0][:300]}; mark it integration "
            "(tests/conftest.py FILE_TIERS or @pytest.mark.integration)",
            pytrace=False,
        )
