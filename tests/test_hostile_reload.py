"""Issue 19 item 3: one immutable rules snapshot per slice across Route, Filter and Package.

A config reload that lands while a slice is between stages must not give it half the old
rules and half the new: the slice is routed, filtered and packaged under the snapshot
Route took, and only later slices see the new rules.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import orjson

from transforms import live
from transforms.config import load_config
from transforms.filter import _FilterChunk
from transforms.live import LiveRules
from transforms.package import _PackageChunk
from transforms.route import _RouteChunk
from transforms.rules.records import Chunk, record_of

OLD = """
connectors:
  - id: ops
    type: file
    package: {rename: {metadata.secret: metadata.kept}}
    deliver: {path: ./out/ops}
dead_letter: {path: ./out/dl}
"""

NEW = """
connectors:
  - id: ops
    type: file
    filter: {metadata: {deny: [secret, kept]}}
    package: {rename: {metadata.other: metadata.moved}}
    deliver: {path: ./out/ops}
dead_letter: {path: ./out/dl}
"""


def _event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "event": {"type": "heartbeat", "timestamp": 1764136800123},
        "metadata": {"secret": "S3CRET", "other": 1},
    }


def _records(packaged: list[Any]) -> list[dict[str, Any]]:
    out = []
    for element in packaged:
        if isinstance(element, tuple):
            out.extend(record_of(p) for p in element[1])
    return out


def test_a_reload_between_stages_applies_to_later_slices_only(tmp_path: Path) -> None:
    source = tmp_path / "delivery.yaml"
    source.write_text(OLD)
    rules = LiveRules(load_config(str(source)), str(source), refresh_s=3600)
    route, filt, package = _RouteChunk(rules), _FilterChunk(rules), _PackageChunk(rules)
    for fn in (route, filt, package):
        fn.setup()

    def force_reload() -> None:
        live._CACHE[(str(source), 3600)].loaded_at = -1e12

    events = Chunk([_event(n) for n in range(3)])
    routed = list(route.process(events))
    source.write_text(NEW)
    force_reload()  # the new rules arrive while the slice is between Route and Filter
    filtered = [out for element in routed for out in filt.process(element)]
    force_reload()
    packaged = [out for element in filtered for out in package.process(element)]
    # The whole slice went through the old rules (rename secret -> kept, no deny) ...
    assert _records(packaged) == [
        {**_event(n), "metadata": {"kept": "S3CRET", "other": 1}} for n in range(3)
    ]
    # ... and the next slice goes through the new ones as a whole.
    nxt = [
        out
        for element in route.process(Chunk([_event(9)]))
        for f in filt.process(element)
        for out in package.process(f)
    ]
    assert _records(nxt) == [{**_event(9), "metadata": {"moved": 1}}]
    assert b"S3CRET" not in orjson.dumps(_records(nxt))


def test_a_slice_carrying_its_rules_survives_pickling(tmp_path: Path) -> None:
    source = tmp_path / "delivery.yaml"
    source.write_text(NEW)
    rules = LiveRules(load_config(str(source)), str(source), refresh_s=3600)
    route, filt = _RouteChunk(rules), _FilterChunk(rules)
    route.setup()
    (cid, chunk) = next(iter(route.process(Chunk([_event(1)]))))
    copy = pickle.loads(pickle.dumps(chunk))  # a runner that does not fuse the stages
    (_, out) = next(iter(filt.process((cid, copy))))
    assert out[0][1]["metadata"] == {"other": 1}
