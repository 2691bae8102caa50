"""Imports point one way, lowest layer first (STYLE.md habit 10)::

    transforms/rules/       plain Python semantics: no Beam, no connector, no stage
      -> transforms/connectors/   sinks; may use rules (and Beam's filesystems), no stage
        -> config -> Beam stages (transforms/*.py) -> beam_pipeline/ (graph, runners, CLI)

A lower layer never imports a higher one. Read from the source with ``ast``: every
import counts, inside functions and ``if TYPE_CHECKING:`` blocks too, and a relative
import is resolved to the module it names. ``from transforms import connectors`` is read
as an import of ``transforms.connectors``.

The checks are allow-lists where the layer is closed (rules may import only rules from
``transforms``; connectors only rules and connectors), so a stage module added later
(``transforms/batch.py``) is covered without editing this file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STAGES = (
    "transforms.batch",
    "transforms.config",
    "transforms.dead_letters",
    "transforms.deliver",
    "transforms.filter",
    "transforms.live",
    "transforms.package",
    "transforms.parse",
    "transforms.pubsub_read",
    "transforms.retry",
    "transforms.route",
)
"""Beam stage modules and the config model, named so the rules below read as intended;
the allow-lists also refuse any other ``transforms`` module."""


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


LAYERS = [
    # Nothing in transforms/ (rules, connectors, config, stages) builds graphs or runs CLIs.
    ("transforms", ("beam_pipeline",), ()),
    # Rules: plain Python. From this project only other rules.
    ("transforms/rules", ("beam_pipeline", "apache_beam", "transforms."), ("transforms.rules",)),
    # Connectors: rules and other connectors; no stage, config model or graph.
    (
        "transforms/connectors",
        ("beam_pipeline", "transforms.", *STAGES),
        ("transforms.rules", "transforms.connectors"),
    ),
]
"""(folder, forbidden, allowed): an import under ``folder`` is refused when it is within
``forbidden`` and not within ``allowed``. The bare ``transforms`` package (a docstring) is
no layer: ``from transforms import rules`` is an import of ``transforms.rules``."""


def _refused(names: set[str], folder: str) -> list[str]:
    """The names a module under ``folder`` may not import."""
    forbidden, allowed = next((bad, ok) for f, bad, ok in LAYERS if f == folder)
    return sorted(n for n in names if _within(n, forbidden) and not _within(n, allowed))


@pytest.mark.parametrize(("folder", "forbidden", "allowed"), LAYERS, ids=[f for f, _, _ in LAYERS])
def test_lower_layers_never_import_higher_ones(
    folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in _refused(_imports(path), folder)
    ]
    assert found == []


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
    assert seen in _refused(_imports(rules / "hostile.py", tmp_path), "transforms/rules")


def test_imports_within_a_layer_are_allowed(tmp_path: Path) -> None:
    rules = tmp_path / "transforms" / "rules"
    rules.mkdir(parents=True)
    (rules / "fine.py").write_text(
        "import dataclasses\nfrom transforms.rules.delivery import DeliveryBatch\n"
        "from . import records\nfrom .naming import batch_digest\nfrom transforms import rules\n"
    )
    found = _imports(rules / "fine.py", tmp_path)
    assert {"transforms.rules.records", "transforms.rules.naming"} <= found
    assert _refused(found, "transforms/rules") == []


def test_connectors_may_not_import_a_stage(tmp_path: Path) -> None:
    connectors = tmp_path / "transforms" / "connectors"
    connectors.mkdir(parents=True)
    for stage in (*STAGES, "transforms.some_new_stage", "beam_pipeline.graph"):
        (connectors / "hostile.py").write_text(f"def f():\n    import {stage}\n")
        found = _imports(connectors / "hostile.py", tmp_path)
        assert _refused(found, "transforms/connectors") == [stage]
    (connectors / "fine.py").write_text(
        "from apache_beam.io.filesystems import FileSystems\n"
        "from transforms.connectors.base import Sink\nfrom transforms.rules import redact\n"
    )
    assert _refused(_imports(connectors / "fine.py", tmp_path), "transforms/connectors") == []
