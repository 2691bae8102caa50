"""Every test lands in exactly one tier, and stand-ins never run in the unit tier.

The tiers (``unit``, ``integration``, ``flink``, ``perf``) are assigned by
``tests/conftest.py``: a test is ``integration`` if its fixtures start a stand-in
(``STANDIN_FIXTURES``) or its file starts servers or jobs without one (``FILE_TIERS``),
otherwise ``unit``. These checks keep that honest when fixtures or files are added or renamed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import FILE_TIERS, STANDIN_FIXTURES, TIERS, tier_of

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

FIXTURE_MODULES = (
    TESTS / "standins" / "object_stores.py",
    TESTS / "standins" / "pubsub.py",
    TESTS / "receivers" / "fixtures.py",
)
HARMLESS_FIXTURES = {"standin_logs", "_stores", "secret_env"}
"""Fixtures of the stand-in modules that start nothing (a log folder, a cache, env vars)."""


def _fixtures_in(path: Path) -> set[str]:
    """Names of the functions decorated with ``pytest.fixture`` (called or not) in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if ast.unparse(target) == "pytest.fixture":
                    names.add(node.name)
    return names


def _item(
    name: str = "test_x.py", fixtures: tuple[str, ...] = (), marks: tuple[str, ...] = ()
) -> Any:
    """A stand-in for a collected ``pytest.Item``: only what ``tier_of`` reads."""
    return SimpleNamespace(
        nodeid=f"tests/{name}::test_x",
        path=TESTS / name,
        fixturenames=list(fixtures),
        get_closest_marker=lambda mark: SimpleNamespace(name=mark) if mark in marks else None,
    )


@pytest.mark.integration  # starts a process
def test_every_collected_test_has_exactly_one_tier() -> None:
    exactly_one = " or ".join(
        "(" + " and ".join(t if t == tier else f"not {t}" for t in TIERS) + ")" for tier in TIERS
    )
    collect = ["--collect-only", "-q", "-p", "no:cacheprovider", "-m", f"not ({exactly_one})"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *collect, str(TESTS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Exit code 5: nothing collected, i.e. no test outside exactly one tier.
    assert done.returncode == 5, done.stdout[-4000:] + done.stderr[-4000:]


def test_every_fixture_that_starts_a_standin_is_known() -> None:
    """A new stand-in fixture must be listed in STANDIN_FIXTURES (or declared harmless)."""
    defined = set().union(*(_fixtures_in(path) for path in FIXTURE_MODULES))
    assert defined - HARMLESS_FIXTURES <= STANDIN_FIXTURES, sorted(defined - HARMLESS_FIXTURES)


def test_every_listed_standin_fixture_and_file_exists() -> None:
    """A renamed fixture or file would otherwise drop its tests silently into ``unit``."""
    defined = set().union(*(_fixtures_in(path) for path in TESTS.rglob("*.py")))
    assert sorted(STANDIN_FIXTURES - defined) == []
    files = {path.name for path in TESTS.rglob("test_*.py")}
    assert sorted(set(FILE_TIERS) - files) == []
    assert {tier for tier, _ in FILE_TIERS.values()} <= set(TIERS)


@pytest.mark.parametrize("fixture", sorted(STANDIN_FIXTURES))
def test_a_standin_fixture_makes_a_test_integration(fixture: str) -> None:
    assert tier_of(_item(fixtures=("tmp_path", fixture))) == "integration"


def test_plain_tests_are_unit_and_listed_files_take_their_tier() -> None:
    assert tier_of(_item(fixtures=("tmp_path", "monkeypatch", "event"))) == "unit"
    assert tier_of(_item("test_flink.py")) == "flink"
    assert tier_of(_item("test_bench_regression.py")) == "perf"
    assert tier_of(_item("test_streaming_default_engine.py")) == "integration"


def test_an_explicit_tier_marker_wins_but_unit_cannot_use_a_standin() -> None:
    assert tier_of(_item(marks=("integration",))) == "integration"
    with pytest.raises(pytest.UsageError, match="marked unit but uses"):
        tier_of(_item(fixtures=("start_receiver",), marks=("unit",)))
    with pytest.raises(pytest.UsageError, match="more than one tier marker"):
        tier_of(_item(marks=("unit", "flink")))


def test_the_tiers_are_the_registered_markers(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":", 1)[0] for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered


@pytest.mark.integration  # its inner test starts a process
def test_a_unit_test_that_starts_a_process_fails_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {tier}: tier\n" for tier in TIERS))
    pytester.makepyfile(
        test_inner="""
        import subprocess, sys

        def test_quiet():
            assert 1 + 1 == 2

        def test_starts_python():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        """
    )
    result = pytester.runpytest("-m", "unit")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_starts_python is in the unit tier but started 1 process*"])
