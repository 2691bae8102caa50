"""Local file writes run on Deliver's own thread; remote ones on its thread pool.

A local write is CPU work under the GIL (encoding) plus a page-cache copy: a thread pool
overlaps nothing there and costs CPU (bench/RESULTS.md, "Local writes inline"). Writes
that wait on a network keep their pool. Either way every batch ends delivered, waiting
for a delayed retry, or dead-lettered, and is reported by the call that wrote it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.config import compile_connectors, parse_config
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError
from transforms.deliver import DEAD_LETTER, RETRY, InlineExecutor, _DeliverBatch
from transforms.rules.records import Packaged


def items(n: int, tag: str = "e") -> list[Packaged]:
    return [
        Packaged(f"{tag}{i}", 1764136800123, "heartbeat", {"n": i}, {"event": {"n": i}})
        for i in range(n)
    ]


def deliver_fn(tmp_path: Path, path: str, retry_location: bool = False) -> _DeliverBatch:
    retry = f'retry_location: "{tmp_path}/retry"\n' if retry_location else ""
    config = parse_config(
        f"""
connectors:
  - id: files
    type: file
    deliver: {{path: "{path}", format: ndjson}}
    retry: {{immediate: 0}}
dead_letter: {{path: "{tmp_path}/dl"}}
{retry}"""
    )
    fn = _DeliverBatch(config)
    fn.setup()
    fn.start_bundle()
    return fn


def process(fn: _DeliverBatch, batch: DeliveryBatch) -> list[Any]:
    return list(fn.process(batch, window=GlobalWindow(), timestamp=Timestamp(0)))


@pytest.mark.parametrize(
    ("path", "inline"),
    [("/tmp/out", True), ("out/relative", True), ("gs://b/out", False), ("s3://b/out", False)],
)
def test_only_local_file_sinks_write_inline(path: str, inline: bool) -> None:
    config = parse_config(
        f'connectors: [{{id: f, type: file, deliver: {{path: "{path}"}}}}]\n'
        "dead_letter: {path: /tmp/dl}"
    )
    (connector,) = compile_connectors(config)
    assert make_sink("f", "file", connector.deliver).writes_inline is inline


def test_a_local_write_runs_on_the_calling_thread_and_reports_in_the_same_call(
    tmp_path: Path,
) -> None:
    fn = deliver_fn(tmp_path, str(tmp_path / "out"))
    try:
        assert isinstance(fn.lanes["files"].pool, InlineExecutor)
        sink = fn.lanes["files"].sink
        threads = []
        write = sink.write

        def recording(batch: DeliveryBatch) -> Any:
            threads.append(threading.get_ident())
            return write(batch)

        sink.write = recording  # type: ignore[method-assign]
        for n in range(3):
            out = process(fn, DeliveryBatch("files", "", items(10, f"b{n}-")))
            # Reported by this very call, not held until the next batch or finish_bundle.
            assert [o.value.events for o in out] == [10]
            assert fn.lanes["files"].in_flight == 0
        assert threads == [threading.get_ident()] * 3
        assert list(fn.finish_bundle()) == []
        written = sorted((tmp_path / "out").rglob("*.ndjson"))
        assert sum(len(f.read_bytes().splitlines()) for f in written) == 30
    finally:
        fn.teardown()


def test_a_failing_local_write_is_a_dead_letter_from_the_same_call(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the output directory should be")
    fn = deliver_fn(tmp_path, str(blocker / "out"))
    try:
        out = process(fn, DeliveryBatch("files", "", items(7)))
        letters = [
            o.value.value for o in out if isinstance(o, TaggedOutput) and o.tag == DEAD_LETTER
        ]
        assert len(letters) == 1
        assert len(letters[0]) == 7
        assert all(d.stage == "deliver" and d.connector == "files" for d in letters[0])
        assert "cannot write" in letters[0][0].error
        assert letters[0][0].attempts == 1  # not a directory: not retryable
        assert fn.lanes["files"].in_flight == 0
    finally:
        fn.teardown()


def test_a_retryable_local_failure_waits_for_a_delayed_retry(tmp_path: Path) -> None:
    fn = deliver_fn(tmp_path, str(tmp_path / "out"), retry_location=True)
    try:
        # A transient failure (a full disk, say), injected at the sink: the inline path
        # must hand it to the delayed retries like the pool's path does.
        def full_disk(batch: DeliveryBatch) -> Any:
            raise DeliveryError("cannot write: No space left on device", retryable=True)

        fn.lanes["files"].sink.write = full_disk  # type: ignore[method-assign]
        out = process(fn, DeliveryBatch("files", "", items(5)))
        tagged = [o for o in out if isinstance(o, TaggedOutput)]
        assert [(o.tag, len(o.value.value.items)) for o in tagged] == [(RETRY, 5)]
        assert fn.lanes["files"].in_flight == 0
    finally:
        fn.teardown()
