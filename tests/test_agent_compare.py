"""The agent comparison's record check (``bench/agent_compare.py``), on real outputs.

``agent_compare.py`` accepts a row only if it wrote the same records per connector as the
hand-written loop, compared as parsed JSON objects (Benthos writes keys sorted and splits
files its own way). These tests run the hand loop on a small corpus and check that the
comparison accepts a reordered, re-split copy, rejects a changed, missing or repeated
record, and accepts the project's job itself on the same corpus (so the job and the loop
do the same job). Benthos is not run here: it needs a Go build (see
``bench/agents/benthos/README.md``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import agent_compare, hand_loop
from bench.corpus import ensure_corpus

EVENTS = 3000
Records = list[dict[str, Any]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = ensure_corpus(EVENTS, folder=tmp_path_factory.mktemp("corpus"))
    return path


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hand-loop")
    assert hand_loop.hand_loop(corpus, out) == EVENTS
    return out


def _resplit(
    source: Path, target: Path, edit: Callable[[str, Records], Records] | None = None
) -> None:
    """Copy ``source``'s records as an agent would write them: sorted keys, 7 per file."""
    for cid in agent_compare.CONNECTORS:
        lines = list(agent_compare._lines(source / cid))
        records = [orjson.loads(line) for line in reversed(lines)]
        if edit is not None:
            records = edit(cid, records)
        (target / cid).mkdir(parents=True)
        for n in range(0, len(records), 7):
            data = b"".join(
                orjson.dumps(r, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
                for r in records[n : n + 7]
            )
            (target / cid / f"{n:06d}.ndjson").write_bytes(data)


def test_reordered_and_resplit_records_are_the_same(reference: Path, tmp_path: Path) -> None:
    expected = agent_compare.digests(reference)
    assert all(expected[cid] for cid in agent_compare.CONNECTORS)  # every route got events
    _resplit(reference, tmp_path)
    assert agent_compare.same_records(expected, tmp_path, reference, "agent")


def test_a_changed_value_is_a_difference(reference: Path, tmp_path: Path) -> None:
    def change(cid: str, records: Records) -> Records:
        if cid == "errors":
            records[0] = {**records[0], "fluxdata": {"bandwidth_kbps": -1}}
        return records

    _resplit(reference, tmp_path, change)
    expected = agent_compare.digests(reference)
    assert not agent_compare.same_records(expected, tmp_path, reference, "agent")


def test_a_missing_record_is_a_difference(reference: Path, tmp_path: Path) -> None:
    _resplit(reference, tmp_path, lambda cid, rs: rs[1:] if cid == "marketing" else rs)
    expected = agent_compare.digests(reference)
    assert not agent_compare.same_records(expected, tmp_path, reference, "agent")


def test_a_record_written_twice_is_refused(reference: Path, tmp_path: Path) -> None:
    _resplit(reference, tmp_path, lambda cid, rs: [*rs, rs[0]] if cid == "ops" else rs)
    with pytest.raises(ValueError, match="written twice"):
        agent_compare.digests(tmp_path)


def test_the_job_writes_the_hand_loops_records(
    corpus: Path, reference: Path, tmp_path: Path
) -> None:
    """The job row of the comparison, as agent_compare.py runs it."""
    env = {**os.environ, **agent_compare.job_env()}
    done = subprocess.run(
        agent_compare.job_command(corpus), cwd=tmp_path, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert agent_compare.job_command(corpus)[0] == sys.executable
    expected = agent_compare.digests(reference)
    out = tmp_path / "out" / "agent_like"
    assert agent_compare.same_records(expected, out, reference, "job")


def _rules(config: dict[str, Any]) -> list[str]:
    """Each route's rule text, whether stated as a mutation or a mapping."""
    texts = []
    for case in config["output"]["switch"]["cases"]:
        for processor in case["output"]["processors"]:
            text = processor.get("mutation") or processor["mapping"].removeprefix("root = this\n")
            texts.append(text)
    return texts


def test_every_benthos_variant_keeps_the_routes_rules() -> None:
    base = agent_compare.Variant("base", "base").config()
    assert len(_rules(base)) == 3
    for variant in agent_compare.VARIANTS:
        config = variant.config()
        assert _rules(config) == _rules(base), variant.name
        checks = [case["check"] for case in config["output"]["switch"]["cases"]]
        reads = "@kind" if "kind" in variant.name else "this.event.type"
        assert all(reads in check for check in checks), variant.name
