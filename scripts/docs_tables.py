"""The README's connector table, written from the connector registry.

    python scripts/docs_tables.py           # rewrite the table in README.md
    python scripts/docs_tables.py --check   # exit 1 if README.md differs (tests run this)

One row per registered type (:data:`transforms.connectors.CONNECTORS`): what it does (the
first line of its module's docstring), its ``deliver`` keys (required ones first, in
bold) and the template it packages with by default. A connector added as one module gets
its row from here, so the README cannot list a type the job lacks, or miss one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transforms.connectors import CONNECTORS, connector_module  # noqa: E402

START = "<!-- connector-table: written by scripts/docs_tables.py from the registry -->"
END = "<!-- /connector-table -->"


def _summary(kind: str) -> str:
    doc = (connector_module(CONNECTORS[kind]).__doc__ or "").strip().splitlines()
    first = doc[0] if doc else ""
    return re.sub(rf"^``type: {re.escape(kind)}``:\s*", "", first).rstrip(".").replace("``", "`")


def _keys(kind: str) -> str:
    fields = CONNECTORS[kind].deliver_model.model_fields
    required = [f"**`{n}`**" for n, f in fields.items() if f.is_required()]
    optional = [f"`{n}`" for n, f in fields.items() if not f.is_required()]
    return ", ".join(required + optional)


def connector_table() -> str:
    """The markdown table, between its markers."""
    rows = [
        "| `type` | what it does | `deliver` keys (**required**) | default template |",
        "|---|---|---|---|",
    ]
    for kind in CONNECTORS:  # the registry's order
        template = CONNECTORS[kind].default_template
        rows.append(
            f"| `{kind}` | {_summary(kind).replace('|', '/')} | {_keys(kind)} "
            f"| {f'`{template}`' if template else '-'} |"
        )
    return "\n".join([START, *rows, END])


def rewritten(readme: str) -> str:
    """``readme`` with its table replaced by the registry's."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {START!r} ... {END!r} block")
    return pattern.sub(lambda _: connector_table(), readme)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the table, or with ``--check`` only compare (exit 1 when stale)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    new = rewritten(text)
    if args.check:
        if new != text:
            print("README.md's connector table is stale: run python scripts/docs_tables.py")
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
