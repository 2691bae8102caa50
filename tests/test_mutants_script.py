"""scripts/mutants.py: its mutants still apply, and its parts judge what they should.

The mutation run itself is ``make mutants`` (minutes); these checks take a second or two
and catch a mutant that no longer applies (its text moved in a refactor) in ``make test``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_script", ROOT / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


mutants = _load()


def test_every_mutant_applies_to_the_working_tree() -> None:
    assert mutants.check_mutants(mutants.MUTANTS, ROOT) == []


def test_every_mutant_names_existing_tests_and_changes_its_file() -> None:
    for m in mutants.MUTANTS:
        assert m.tests, m.name
        for test in m.tests:
            assert (ROOT / test.split("::")[0]).is_file(), (m.name, test)
        text = (ROOT / m.file).read_text(encoding="utf-8")
        assert mutants.mutate(text, m) != text


def test_check_mutants_reports_what_no_longer_applies(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\nx = 1\ny = 2\n")
    base = mutants.Mutant("m", "a.py", "y = 2", "y = 3", ("tests/t.py",), "breaks y")
    assert mutants.check_mutants([base], tmp_path) == []
    twice = dataclasses.replace(base, name="twice", old="x = 1")
    gone = dataclasses.replace(base, name="gone", old="z = 0")
    no_file = dataclasses.replace(base, name="no_file", file="b.py")
    same = dataclasses.replace(base, name="same", new="y = 2")
    problems = mutants.check_mutants([base, base, twice, gone, no_file, same], tmp_path)
    assert problems == [
        "m: the name is used twice",
        "twice: its text occurs 2 times in a.py (must be exactly once); "
        "update the mutant in scripts/mutants.py",
        "gone: its text occurs 0 times in a.py (must be exactly once); "
        "update the mutant in scripts/mutants.py",
        "no_file: b.py does not exist",
        "same: old and new text are the same",
    ]


def test_mutate_replaces_exactly_one_occurrence() -> None:
    m = mutants.Mutant("m", "f", "b", "B", ("t",), "")
    assert mutants.mutate("abc", m) == "aBc"
    for text in ("ac", "abcb"):
        with pytest.raises(ValueError, match="not found exactly once"):
            mutants.mutate(text, m)


def test_failed_ids_come_from_pytests_short_summary() -> None:
    output = (
        "..F\n=== short test summary info ===\n"
        "FAILED tests/test_x.py::test_a[s3] - AssertionError: no\n"
        "ERROR tests/test_y.py - ImportError: gone\n"
        "1 failed, 2 passed\n"
    )
    run = mutants.Run(False, output, 1.0)
    assert run.failed_ids == ["tests/test_x.py::test_a[s3]", "tests/test_y.py"]


def test_only_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert mutants.main(["--only", "no_such_mutant"]) == 2
    assert "unknown mutant(s): no_such_mutant" in capsys.readouterr().err
    assert mutants.main(["--list", "--only", "hash_ignores_key"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("hash_ignores_key\n")
    assert "deny_ignores_last_pattern" not in listed
    assert mutants.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{m.name}\n" in listed for m in mutants.MUTANTS)
    expected = [m for m in mutants.MUTANTS if m.expected_killer]
    assert listed.count("expected to be killed by") == len(expected)


def test_the_copy_holds_the_project_files_and_not_the_venv(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    count = mutants.copy_project(ROOT, copy)
    assert count == len([n for n in mutants.project_files(ROOT) if (ROOT / n).is_file()])
    for m in mutants.MUTANTS:
        assert (copy / m.file).read_bytes() == (ROOT / m.file).read_bytes()
    assert (copy / "scripts" / "mutants.py").is_file()
    assert not (copy / ".venv").exists()


@pytest.mark.parametrize("copy_is_root", [True, False])
def test_the_origin_check_fails_unless_the_code_comes_from_the_copy(
    tmp_path: Path, copy_is_root: bool
) -> None:
    """The check every mutant run starts with can fail: here the code comes from ROOT."""
    check = tmp_path / "test_origin.py"
    check.write_text(mutants.ORIGIN_CHECK_TEXT)
    claimed = ROOT if copy_is_root else tmp_path
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(check)],
        cwd=ROOT,
        env={**os.environ, "MUTANTS_COPY_ROOT": str(claimed), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode == 0) is copy_is_root, done.stdout + done.stderr
    if not copy_is_root:  # failed on the check itself, naming where the code came from
        assert f"AssertionError: {ROOT}/transforms/__init__.py" in done.stdout, done.stdout
