"""Imports point one way: ``transforms/`` (rules, connectors, config, stages) never imports
``beam_pipeline/`` (graph assembly, runner policy, CLI); ``transforms/rules/`` imports no
Beam. Read from the source with ``ast``, function-level imports too. (Still to do, issue
22: ``rules/retry.py`` imports ``connectors.base``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("transforms", ("beam_pipeline",)),
        ("transforms/rules", ("beam_pipeline", "apache_beam")),
    ],
)
def test_lower_layers_never_import_higher_ones(folder: str, forbidden: tuple[str, ...]) -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert found == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from beam_pipeline.cli import main\n")
    assert "beam_pipeline.cli" in _imports(module)
