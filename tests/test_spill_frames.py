"""Spilled runs on disk: written a group of frames per system call, read back exactly.

:class:`~transforms.rules.naming.BatchFiller` writes each run as frames of records, several
frames per ``writev`` (a system call per frame cost as much as the bytes). Whatever the
grouping, every record comes back with every field as it went in, in batch order; and a
write the disk refuses is an error, never a run shorter than it claims.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.rules import naming
from transforms.rules.naming import BatchFiller, batch_order, merge_runs
from transforms.rules.records import Packaged


class _Id(str):
    """An event id of a str subclass: marshal refuses it, the frame is pickled instead."""


def _records(rows: list[tuple[int | None, int, int, int]]) -> list[Packaged]:
    out = []
    for n, (t, i, pad, kind) in enumerate(rows):
        line = json.dumps({"event_id": f"e{i}", "n": n, "pad": "p" * pad}).encode()
        if kind == 0:  # an archive's record: its data is the event's line itself
            out.append(Packaged(f"e{i}", t, "heartbeat", None, line, line))
        elif kind == 1:  # a packaged record, the event kept as its line
            out.append(Packaged(f"e{i}", t, "error", None, line, b'{"n":%d}' % n))
        elif kind == 2:  # a record kept as a dict, the event parsed
            out.append(Packaged(f"e{i}", t, "seek", {"n": n}, {"event_id": f"e{i}"}, None))
        else:
            out.append(Packaged(_Id(f"e{i}"), t, "error", None, line, b'{"n":%d}' % n))
    return out


def _fields(item: Packaged) -> tuple[Any, ...]:
    return tuple((type(v).__name__, v) for v in item)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-(2**70), 2**70)),  # past 64 bits both ways
            st.integers(0, 50),
            st.sampled_from([0, 10, 2000, 70_000]),  # a few frames pass the write group size
            st.sampled_from([0, 0, 1, 2, 3]),
        ),
        max_size=700,
    ),
    frame=st.sampled_from([1, 2, 7, 64]),
    budget=st.integers(50, 2000),
)
def test_every_field_of_every_record_comes_back(
    tmp_path_factory: Any, rows: list[tuple[int | None, int, int, int]], frame: int, budget: int
) -> None:
    items = _records(rows)
    folder = tmp_path_factory.mktemp("spill")
    filler = BatchFiller(str(folder), budget, frame)
    for n in range(0, len(items), 13):
        filler.add("c", "p/", items[n : n + 13])
    spilled = [runs for _, runs in filler.finish()]
    merged = list(merge_runs(spilled))
    assert [batch_order(i) for i in merged] == sorted(batch_order(i) for i in items)
    assert sorted(map(_fields, merged), key=repr) == sorted(map(_fields, items), key=repr)
    for part in spilled:  # the runs cover the file exactly, end to end
        assert sum(length for _, length in part.runs) == os.path.getsize(part.path)
        assert part.runs[0][0] == 0


def test_a_run_of_many_write_groups_reads_back_in_order(tmp_path: Path) -> None:
    """One run of 3,000 one-record frames: 6,000 buffers, more than one writev takes."""
    items = [Packaged(f"e{n:05d}", 7, "t", None, b"{}", b'{"n":%d}' % n) for n in range(3000)]
    filler = BatchFiller(str(tmp_path), budget=10_000, frame=1)
    filler.add("c", "p/", items[::-1])
    ((_, runs),) = filler.finish()
    assert len(runs.runs) == 1 and naming._WRITE_PARTS < 2 * 3000
    assert list(merge_runs([runs])) == items


@pytest.mark.integration  # a child process: the file size limit must not bind pytest
def test_a_spill_the_disk_refuses_is_an_error(tmp_path: Path) -> None:
    """A file size limit cuts the write short, then refuses the rest: OSError, not a run."""
    script = textwrap.dedent(
        f"""
        import errno, resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from transforms.rules.naming import BatchFiller
        from transforms.rules.records import Packaged
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        filler = BatchFiller({str(tmp_path)!r}, budget=10_000, frame=8)
        lines = [b'{{"n":%d,"pad":"' % n + b"x" * 1000 + b'"}}' for n in range(500)]
        items = [Packaged(f"e{{n}}", n, "t", None, x, x) for n, x in enumerate(lines)]
        filler.add("c", "p/", items)
        try:
            filler.finish()
        except OSError as exc:
            print("refused", errno.errorcode[exc.errno])
        else:
            print("written")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused EFBIG"
