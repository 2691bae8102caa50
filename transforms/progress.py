"""Backfill progress for a terminal: bytes read out of the total, rate, elapsed, ETA.

The Read stage reports how far it got in each input file to :data:`PROGRESS`, a
process-wide tracker; the ``run`` command draws it on stderr while the job runs::

    [progress] 41.2/120.0 MB (34%)  files 1/3  182,344 lines/s  elapsed 0:12  ETA 0:23

It works when the Read stage runs in the command's own process (Beam's in-process
FnApiRunner, the default). With ``--direct_running_mode multi_processing`` or a remote
runner the reading happens elsewhere, so the command does not draw progress; the runner's
own UI shows the ``telemetry/lines_read`` counter.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """Bytes read per input file, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset(0, 0)

    def reset(self, total_bytes: int, total_files: int) -> None:
        """Start tracking a run over ``total_files`` files of ``total_bytes`` bytes."""
        with self._lock:
            self.total_bytes = total_bytes
            self.total_files = total_files
            self.positions: dict[str, int] = {}
            self.finished: set[str] = set()
            self.lines = 0
            self.started = time.monotonic()

    def advance(self, path: str, position: int, lines: int, done: bool = False) -> None:
        """Record that ``path`` has been read up to byte ``position`` (and ``lines`` more)."""
        with self._lock:
            self.positions[path] = max(position, self.positions.get(path, 0))
            self.lines += lines
            if done:
                self.finished.add(path)

    def line(self) -> str:
        """One status line."""
        with self._lock:
            done = sum(self.positions.values())
            elapsed = time.monotonic() - self.started
            total, lines, files = self.total_bytes, self.lines, len(self.finished)
        rate = lines / elapsed if elapsed > 0 else 0.0
        share = done / total if total else 0.0
        eta = elapsed * (1 - share) / share if share > 0 else None
        return (
            f"[progress] {done / 1e6:.1f}/{total / 1e6:.1f} MB ({share:.0%})  "
            f"files {files}/{self.total_files}  {rate:,.0f} lines/s  "
            f"elapsed {_clock(elapsed)}  ETA {_clock(eta) if eta is not None else '?'}"
        )


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


PROGRESS = Progress()
"""The tracker of this process."""


class ProgressPrinter:
    """Redraws :data:`PROGRESS` on a terminal every ``period`` seconds until stopped."""

    def __init__(self, stream: TextIO = sys.stderr, period: float = 0.5):
        self.stream = stream
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="progress")

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.stream.write("\r" + PROGRESS.line() + "\033[K")
            self.stream.flush()

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.stream.write("\r" + PROGRESS.line() + "\033[K\n")
        self.stream.flush()
