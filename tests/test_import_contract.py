"""The layer contract (``[tool.importlinter]`` in pyproject.toml, run by ``make lint``).

Two things import-linter cannot say by itself: that every module of ``transforms/`` is
placed in a layer (an unlisted module is unconstrained), and that the contract as
written fails on an upward import (a contract that cannot fail checks nothing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@dataclass(frozen=True)
class Contract:
    """The ``[tool.importlinter]`` contracts of pyproject.toml, as data."""

    layers: list[list[str]]
    """Module prefixes per layer, highest first."""
    independent: list[bool]
    """Per layer: siblings joined by ``|`` (may not import each other) rather than ``:``."""
    forbidden: list[tuple[str, tuple[str, ...]]]
    """(source package, modules it may not import)."""


def contract(pyproject: Path = ROOT / "pyproject.toml") -> Contract:
    """Read the layer and forbidden contracts (the one place they are written)."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layered,) = [c for c in contracts if c["type"] == "layers"]
    forbidden = [
        (source, tuple(c["forbidden_modules"]))
        for c in contracts
        if c["type"] == "forbidden"
        for source in c["source_modules"]
    ]
    assert {c["type"] for c in contracts} <= {"layers", "forbidden"}, "read the new type here"
    return Contract(
        layers=[
            [m.strip() for m in layer.replace("|", ":").split(":")] for layer in layered["layers"]
        ],
        independent=["|" in layer for layer in layered["layers"]],
        forbidden=forbidden,
    )


def _layers() -> list[list[str]]:
    return contract().layers


def test_every_module_of_transforms_is_in_a_layer() -> None:
    placed = {m for layer in _layers() for m in layer}
    modules = {
        f"transforms.{path.stem}"
        for path in (ROOT / "transforms").glob("*.py")
        if path.stem != "__init__"
    } | {f"transforms.{path.name}" for path in (ROOT / "transforms").iterdir() if path.is_dir()}
    modules.discard("transforms.__pycache__")
    missing = sorted(m for m in modules if not any(m == p or m.startswith(p + ".") for p in placed))
    assert missing == [], f"add these to a layer in pyproject.toml [tool.importlinter]: {missing}"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


@pytest.mark.integration  # starts a process
def test_the_contract_holds_and_fails_on_an_upward_import(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree)
    for package in ("transforms", "beam_pipeline"):
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    kept = _lint(tree)
    assert kept.returncode == 0, kept.stdout[-3000:]
    # A plain rule that reaches up to a Beam stage: the kind of import the contract forbids.
    naming = tree / "transforms" / "rules" / "naming.py"
    naming.write_text(naming.read_text(encoding="utf-8") + "\nimport transforms.deliver\n")
    broken = _lint(tree)
    assert broken.returncode != 0
    assert "transforms.rules.naming -> transforms.deliver" in broken.stdout
