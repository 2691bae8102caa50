from __future__ import annotations

from typing import Any

import pytest


def make_event(
    event_id: str = "s1-1",
    etype: str = "heartbeat",
    session_id: str | None = "s1",
    ts: Any = 1764136800123,
    **groups: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": event_id, "event": {"type": etype, "timestamp": ts}}
    if session_id is not None:
        event["session_id"] = session_id
    event["metadata"] = groups.get(
        "metadata",
        {
            "device": {"os": "iOS", "type": "mobile"},
            "player": {"name": "hls.js"},
            "content": {"id": "c1", "title": "Título ⚽\u2028two"},
            "geo": {"country_code": "US"},
            "network": {"isp": "ACME", "ip": "203.0.113.7"},
            "user": {"id": "u1"},
        },
    )
    event["fluxdata"] = groups.get(
        "fluxdata",
        {"playhead_position_sec": 12.5, "rendition_video_bitrate_kbps": 4500, "num_errors": 0},
    )
    return event


@pytest.fixture
def event() -> dict[str, Any]:
    return make_event()
