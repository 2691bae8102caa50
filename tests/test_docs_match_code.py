"""The README describes the code that exists: its connector table comes from the registry,
and its tree section names every module of the product (and no module that is gone).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

TREE_DIRS = ("beam_pipeline", "transforms", "transforms/rules", "transforms/connectors", "bench")
"""Folders whose every module the tree section names (connectors: "one module per type",
named by the connector table instead)."""


def _tree_section() -> dict[str, str]:
    """The README's tree block, as text per top-level folder it describes."""
    block = re.search(r"```\n(beam_pipeline/ .*?)```", README, re.S)
    assert block, "README.md has no tree section starting with 'beam_pipeline/'"
    sections: dict[str, str] = {}
    current = ""
    for line in block.group(1).splitlines():
        head = re.match(r"^([a-z_/]+/)\s", line)
        if head:
            current = head.group(1).rstrip("/")
            line = line[len(head.group(1)) :]
        sections[current] = sections.get(current, "") + " " + line
    return sections


@pytest.mark.integration  # starts a process
def test_the_connector_table_is_written_from_the_registry() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_tree_section_names_every_module_and_only_existing_ones() -> None:
    from transforms.connectors import CONNECTORS, connector_module

    sections = _tree_section()
    connector_modules = {
        connector_module(spec).__name__.rsplit(".", 1)[-1] for spec in CONNECTORS.values()
    }
    problems = []
    for folder in TREE_DIRS:
        text = sections.get(folder, "")
        named = set(re.findall(r"([A-Za-z_][\w]*)\.py\b", text))
        present = {
            p.stem for p in (ROOT / folder).glob("*.py") if p.stem not in ("__init__", "__main__")
        }
        if folder == "transforms/connectors":
            present -= connector_modules
        problems += [
            f"{folder}/{m}.py is not in the README's tree" for m in sorted(present - named)
        ]
        problems += [
            f"the README's tree names {folder}/{m}.py, which is gone"
            for m in sorted(named - present - connector_modules)
        ]
    bench_dirs = {p.name for p in (ROOT / "bench").iterdir() if p.is_dir()}
    problems += [
        f"the README's tree names bench/{d}/, which is gone"
        for d in sorted(set(re.findall(r"\b([a-z_]+)/", sections.get("bench", ""))) - bench_dirs)
    ]
    assert problems == []
