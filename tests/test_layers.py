"""Imports point one way, lowest layer first (STYLE.md habit 10), read from the source.

The contract is written once, in pyproject.toml's ``[tool.importlinter]`` (``make lint``
runs import-linter on it; tests/test_import_contract.py proves that run can fail). This
file applies the same contract without a subprocess, so the unit tier says it too::

    beam_pipeline -> Beam stages (transforms/*.py) -> config, live -> connectors -> rules

A module imports only from its own layer (siblings joined by ``:``) or lower ones, and
``transforms.rules`` imports none of the forbidden externals (Beam, cloud clients). Read
with ``ast``: every import counts, inside functions and ``if TYPE_CHECKING:`` blocks too,
and a relative import is resolved to the module it names. ``from transforms import
connectors`` is read as an import of ``transforms.connectors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_import_contract import contract

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, absolute, plus ``module.name`` of each ``from`` import.

    ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c`` may be a submodule);
    ``from ..connectors import base`` inside ``transforms/rules/retry.py`` gives
    ``transforms.connectors`` and ``transforms.connectors.base``.
    """
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``name`` is one of ``prefixes`` or inside one (``"a."``: strictly inside)."""
    return any(
        name.startswith(p) if p.endswith(".") else name == p or name.startswith(p + ".")
        for p in prefixes
    )


CONTRACT = contract()


def _layer_of(name: str) -> tuple[int, str] | None:
    """(index, entry) of the layer holding module ``name`` (0 is the highest), if any."""
    best: tuple[int, str] | None = None
    for index, layer in enumerate(CONTRACT.layers):
        for entry in layer:
            if _within(name, (entry,)) and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    return best


def _refused(names: set[str], module: str) -> list[str]:
    """The names ``module`` may not import under the contract."""
    own = _layer_of(module)
    refused = set()
    for name in names:
        other = _layer_of(name)
        if own is not None and other is not None:
            higher = other[0] < own[0]
            sibling = other[0] == own[0] and other[1] != own[1]
            if higher or (sibling and CONTRACT.independent[own[0]]):
                refused.add(name)
        for source, forbidden in CONTRACT.forbidden:
            if _within(module, (source,)) and _within(name, forbidden):
                refused.add(name)
    return sorted(refused)


def _modules() -> list[tuple[Path, str]]:
    return [
        (path, _module_name(path, ROOT))
        for package in ("beam_pipeline", "transforms")
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_no_module_imports_a_higher_layer() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, module in _modules()
        for name in _refused(_imports(path), module)
    ]
    assert found == []


def test_the_contract_reads_as_intended() -> None:
    """The pyproject contract, as this file reads it: a typo there would weaken both."""
    assert _layer_of("beam_pipeline.cli") == (0, "beam_pipeline")
    assert _layer_of("transforms.rules.naming") == (len(CONTRACT.layers) - 1, "transforms.rules")
    connectors = _layer_of("transforms.connectors.s3")
    deliver = _layer_of("transforms.deliver")
    config = _layer_of("transforms.config")
    assert connectors and deliver and config
    assert deliver[0] < config[0] < connectors[0]
    assert ("transforms.rules", ("apache_beam", "google", "boto3", "botocore", "azure",
            "requests", "urllib3")) in CONTRACT.forbidden  # fmt: skip


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from beam_pipeline.cli import main\n")
    assert "beam_pipeline.cli" in _imports(module, tmp_path)


@pytest.mark.parametrize(
    ("source", "seen"),
    [
        ("from transforms.connectors.base import Sink\n", "transforms.connectors.base"),
        ("from transforms import connectors\n", "transforms.connectors"),
        ("import transforms.deliver as d\n", "transforms.deliver"),
        ("from ..connectors import base\n", "transforms.connectors.base"),
        ("from .. import retry\n", "transforms.retry"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import apache_beam\n",
            "apache_beam",
        ),
        ("def f():\n    from apache_beam import Map\n", "apache_beam"),
    ],
)
def test_a_rules_module_importing_upward_is_refused(tmp_path: Path, source: str, seen: str) -> None:
    rules = tmp_path / "transforms" / "rules"
    rules.mkdir(parents=True)
    (rules / "hostile.py").write_text(source)
    assert seen in _refused(_imports(rules / "hostile.py", tmp_path), "transforms.rules.hostile")


def test_imports_within_a_layer_are_allowed(tmp_path: Path) -> None:
    rules = tmp_path / "transforms" / "rules"
    rules.mkdir(parents=True)
    (rules / "fine.py").write_text(
        "import dataclasses\nfrom transforms.rules.delivery import DeliveryBatch\n"
        "from . import records\nfrom .naming import batch_digest\nfrom transforms import rules\n"
    )
    found = _imports(rules / "fine.py", tmp_path)
    assert {"transforms.rules.records", "transforms.rules.naming"} <= found
    assert _refused(found, "transforms.rules.fine") == []


def test_connectors_may_not_import_a_stage(tmp_path: Path) -> None:
    connectors = tmp_path / "transforms" / "connectors"
    connectors.mkdir(parents=True)
    own = _layer_of("transforms.connectors.hostile")
    assert own is not None
    higher = [m for layer in CONTRACT.layers[: own[0]] for m in layer]
    assert "transforms.deliver" in higher and "transforms.config" in higher
    for stage in (*higher, "beam_pipeline.graph"):
        (connectors / "hostile.py").write_text(f"def f():\n    import {stage}\n")
        found = _imports(connectors / "hostile.py", tmp_path)
        assert _refused(found, "transforms.connectors.hostile") == [stage]
    (connectors / "fine.py").write_text(
        "from apache_beam.io.filesystems import FileSystems\n"
        "from transforms.connectors.base import Sink\nfrom transforms.rules import redact\n"
    )
    found = _imports(connectors / "fine.py", tmp_path)
    assert _refused(found, "transforms.connectors.fine") == []
