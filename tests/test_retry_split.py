"""The dead-letter and retry-record logic sits in the rules layer (issue 22, layers).

What a dead letter or retry record holds, how it is redacted, written and read back is
plain Python in ``transforms/rules/`` (no Beam, no connector, no I/O), so it is tested,
reused and read without a pipeline; the Beam writers are thin layers above it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from transforms.connectors import _policy

ROOT = Path(__file__).resolve().parent.parent

PLAIN = ("transforms/rules/letters.py", "transforms/rules/redact.py")
"""The modules the record logic moved to."""

PLAIN_LIBRARIES = {"orjson", "pydantic"}
"""Third-party libraries the rules layer may use: plain data, no I/O, no Beam."""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "transforms":
        return name == "transforms.rules" or name.startswith("transforms.rules.")
    return top in sys.stdlib_module_names or top in PLAIN_LIBRARIES


@pytest.mark.parametrize("module", PLAIN)
def test_the_record_logic_imports_only_rules_and_plain_libraries(module: str) -> None:
    path = ROOT / module
    assert path.is_file(), f"{module} is where the plain record logic lives"
    assert sorted(n for n in _imports(path) if not _allowed(n)) == []


@pytest.mark.parametrize("module", ["transforms/retry.py", "transforms/dead_letters.py"])
def test_the_beam_modules_keep_no_record_logic_of_their_own(module: str) -> None:
    """The Beam modules define no encoder, redaction or validation: they call the rules."""
    path = ROOT / module
    assert path.is_file()
    defined = {
        node.name
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    record_logic = {
        "render_text",
        "redact_letter",
        "dead_letter_json",
        "encode_dead_letters",
        "dead_letter_name",
        "encode_retry_record",
        "read_retry_record",
        "read_retry_message",
        "invalid_record_letter",
        "removed_connector_letters",
        "config_secrets",
        "ConfigSecrets",
    }
    assert sorted(defined & record_logic) == []


def test_the_connectors_use_the_one_redaction() -> None:
    from transforms.rules import redact

    assert _policy.redact is redact.redact
    assert _policy.secret_values is redact.secret_values
