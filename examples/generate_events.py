r"""Generate synthetic streaming-video player telemetry as JSON Lines.

Each output line is one JSON object (an event envelope)::

    {"event_id": "<session_id>-<seq>", "session_id": "<uuid4>",
     "event": {"type": "heartbeat", "timestamp": 1764136800123},
     "metadata": {"device": {...}, "player": {...}, "content": {...},
                  "geo": {...}, "network": {...}, "user": {...}},
     "fluxdata": {"playhead_position_sec": 12.5, "rendition_video_bitrate_kbps": 4500,
                  "buffer_length_ms": 8000, "bandwidth_kbps": 12000, "num_errors": 0}}

Usage::

    python examples/generate_events.py --events 5000 --seed 42 --invalid 6 \
        --iso-every 97 --out examples/events.jsonl.gz

Options:
    --events N      Number of valid events to write (required).
    --seed S        Seed for ``random.Random`` (default 42). Same arguments give
                    byte-identical output; neither global ``random`` nor the clock is used.
    --out PATH      Output file; a name ending in ``.gz`` is gzipped (mtime 0, no file
                    name in the header), ``-`` writes to stdout.
    --invalid K     Extra invalid lines to sprinkle in (default 0), see below.
    --start-ms MS   Timestamp of the first event, epoch ms (default 1764136800000,
                    i.e. 2025-11-26T06:00:00Z).
    --iso-every M   Every M-th valid event (the M-th, 2M-th, ... counting valid events
                    from 1) carries an ISO-8601 string timestamp such as
                    ``"2025-11-26T06:00:10.123Z"`` instead of epoch ms (default 0: never).

Sessions:
    Sessions have 20-60 events (a run with fewer than 20 events is one short session).
    ``seq`` counts from 0 within a session. A session is ``player_ready``,
    ``playback_start``, then mostly ``heartbeat`` every 10 s of event time with
    occasional ``bitrate_change``, ``seek``, ``buffer_start``/``buffer_end`` and
    ``pause``/``resume`` pairs and a rare ``error`` (``fluxdata.num_errors`` goes up by
    one and ``metadata.error`` holds ``{"code", "message"}``), and it ends with
    ``playback_complete`` or ``playback_stop``. About 32 sessions run at once and the
    valid events are written in timestamp order. Each event is written as soon as it
    is made, so memory stays flat for any N.

Invalid lines:
    ``--invalid K`` adds K lines on top of the N valid events (K + N lines in all).
    Invalid line j (0-based) comes right before valid event ``(j + 1) * N // (K + 1)``
    (0-based; at the very end when N is 0; lines sharing a position keep j order),
    and its kind is ``kinds[j % len(kinds)]``, where ``kinds`` is, in order:

    0. ``not_json``      ``{"event_id": "x", broken``
    1. ``json_array``    a JSON array (holding an event-like object) instead of an object
    2. ``missing_type``  a JSON object whose ``event`` has no ``type``
    3. ``numeric_type``  a JSON object whose ``event.type`` is the number 42
    4. ``invalid_utf8``  the bytes ``b'\xff\xfe{"event_id":1}'``
    5. ``oversized``     a valid event object over 1 MiB (a huge ``padding`` string)
    6. ``blank``         an empty line (readers skip it, so count it apart)

    Rule: when K < 7 the ``oversized`` kind is left out of the cycle, so ``kinds`` is
    the other six in the same order (this keeps small samples small). With
    ``c = len(kinds)`` the kind at index i occurs ``K // c + (1 if i < K % c else 0)``
    times. ``blank`` lines are among the K.

Python API::

    from examples.generate_events import generate

    for line in generate(1000, seed=7, invalid=3):  # bytes, no trailing newline
        ...
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import random
import sys
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence


def _json_dumps(obj: object) -> bytes:
    """Serialize with the standard library, matching orjson's compact output."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_dumps: Callable[[object], bytes]
try:
    import orjson

    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    _dumps = _json_dumps

DEFAULT_SEED = 42
DEFAULT_START_MS = 1764136800000  # 2025-11-26T06:00:00Z

INVALID_KINDS: tuple[str, ...] = (
    "not_json",
    "json_array",
    "missing_type",
    "numeric_type",
    "invalid_utf8",
    "oversized",
    "blank",
)
"""Every invalid kind, in cycle order."""

OVERSIZED_BYTES = 1 << 20
"""An ``oversized`` line is longer than this many bytes (1 MiB)."""

_CONCURRENT_SESSIONS = 32
_HEARTBEAT_MS = 10_000
_MIN_SESSION, _MAX_SESSION = 20, 60
_MIN_FULL_SESSION = 3  # player_ready, playback_start, ..., playback_complete/stop
_LADDER = (400, 800, 1500, 2500, 4500, 6000, 8000)
_EPOCH = datetime(1970, 1, 1)  # naive on purpose: plain UTC arithmetic, no local time

# Device rows: OS, device type, models, players, weight.
_DEVICES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], int], ...] = (
    ("iOS", "mobile", ("iPhone15,2", "iPhone14,5", "iPhone16,1"), ("AVPlayer",), 22),
    ("iOS", "tablet", ("iPad13,1", "iPad14,3"), ("AVPlayer",), 5),
    ("Android", "mobile", ("Pixel 8", "SM-S918B", "moto g54"), ("ExoPlayer",), 20),
    ("Android", "tablet", ("SM-X710",), ("ExoPlayer",), 3),
    ("tvOS", "tv", ("AppleTV14,1", "AppleTV11,1"), ("AVPlayer",), 8),
    ("Roku", "tv", ("3941X", "4802X", "3830X"), ("Roku",), 12),
    ("webOS", "tv", ("OLED65C3", "43UQ7500"), ("Shaka", "hls.js"), 6),
    ("Windows", "desktop", ("PC",), ("hls.js", "Shaka"), 14),
    ("macOS", "desktop", ("MacBookPro18,3", "Macmini9,1"), ("hls.js", "Shaka", "AVPlayer"), 10),
)
_DEVICE_WEIGHTS = [d[4] for d in _DEVICES]

_PLAYER_VERSIONS: dict[str, tuple[str, ...]] = {
    "hls.js": ("1.5.7", "1.5.13", "1.4.12"),
    "AVPlayer": ("17.4", "18.1"),
    "ExoPlayer": ("2.19.1", "1.3.1"),
    "Shaka": ("4.7.11", "4.9.2"),
    "Roku": ("12.5.0", "13.0.0"),
}

# country -> (weight, ((region, city), ...), ((isp, asn), ...))
_COUNTRIES: dict[str, tuple[int, tuple[tuple[str, str], ...], tuple[tuple[str, int], ...]]] = {
    "US": (
        40,
        (
            ("CA", "Los Angeles"),
            ("CA", "San Francisco"),
            ("NY", "New York"),
            ("TX", "Austin"),
            ("WA", "Seattle"),
            ("IL", "Chicago"),
        ),
        (("Comcast", 7922), ("AT&T", 7018), ("Verizon", 701), ("Charter", 20115)),
    ),
    "CA": (
        7,
        (("ON", "Toronto"), ("QC", "Montréal"), ("BC", "Vancouver")),
        (("Rogers", 812), ("Bell Canada", 577)),
    ),
    "GB": (
        9,
        (("ENG", "London"), ("ENG", "Manchester"), ("SCT", "Edinburgh")),
        (("BT", 2856), ("Virgin Media", 5089)),
    ),
    "DE": (
        8,
        (("BY", "München"), ("BE", "Berlin"), ("NW", "Köln")),
        (("Deutsche Telekom", 3320), ("Vodafone", 3209)),
    ),
    "FR": (
        6,
        (("IDF", "Paris"), ("ARA", "Lyon"), ("PAC", "Nice")),
        (("Orange", 3215), ("Free", 12322)),
    ),
    "BR": (
        8,
        (("SP", "São Paulo"), ("RJ", "Rio de Janeiro"), ("DF", "Brasília")),
        (("Claro", 28573), ("Telefônica Brasil", 26599)),
    ),
    "IN": (
        9,
        (("MH", "Mumbai"), ("DL", "New Delhi"), ("KA", "Bengaluru")),
        (("Reliance Jio", 55836), ("Bharti Airtel", 24560)),
    ),
    "JP": (
        5,
        (("13", "東京"), ("27", "大阪"), ("01", "札幌")),
        (("NTT", 4713), ("KDDI", 2516)),
    ),
    "AU": (
        4,
        (("NSW", "Sydney"), ("VIC", "Melbourne"), ("QLD", "Brisbane")),
        (("Telstra", 1221), ("Optus", 4804)),
    ),
    "MX": (
        4,
        (("CMX", "Ciudad de México"), ("JAL", "Guadalajara"), ("NLE", "Monterrey")),
        (("Telmex", 8151), ("Totalplay", 22884)),
    ),
}
_COUNTRY_CODES = list(_COUNTRIES)
_COUNTRY_WEIGHTS = [c[0] for c in _COUNTRIES.values()]

# (id, title, duration_sec, live); live content has duration 0.
_CONTENT: tuple[tuple[str, str, int, bool], ...] = (
    ("c1", "The Long Night", 3600, False),
    ("c2", "Amélie's Garden", 5940, False),
    ("c3", "Über den Wolken", 2700, False),
    ("c4", "São Paulo Nights", 3120, False),
    ("c5", "東京の夜", 2580, False),
    ("c6", "서울 이야기", 2940, False),
    ("c7", "新闻直播 24/7", 0, True),
    ("c8", "Cooking with Fire 🔥", 1800, False),
    ("c9", "Line\u2028Separator: The Special", 2400, False),
    ("c10", 'The "Quoted" \\ Backslash Show', 1500, False),
    ("c11", "Naïve Résumé — Season 2", 2640, False),
    ("c12", "World Cup Live ⚽", 0, True),
    ("c13", "Deep Ocean", 3000, False),
    ("c14", "Космос", 3300, False),
    ("c15", "Evening News", 0, True),
)

_SUBSCRIPTIONS = ("free", "basic", "premium")
_SUBSCRIPTION_WEIGHTS = (40, 30, 30)
_IPV4_PREFIXES = ("192.0.2.", "198.51.100.", "203.0.113.")
_IPV6_SHARE = 0.15

# Cumulative probabilities for a free middle slot of a session; the rest is ``error``.
_P_HEARTBEAT = 0.825
_P_BITRATE = _P_HEARTBEAT + 0.06
_P_BUFFER = _P_BITRATE + 0.045
_P_SEEK = _P_BUFFER + 0.03
_P_PAUSE = _P_SEEK + 0.03
_P_COMPLETE = 0.4  # share of on-demand sessions that end with playback_complete
_MIN_HEARTBEAT_GAP_MS = 300  # closer than this to the next heartbeat, emit the heartbeat

_ERRORS: tuple[tuple[str, str], ...] = (
    ("NETWORK_ERROR", "Segment download failed: HTTP 503"),
    ("MEDIA_DECODE_ERROR", "Video decoder reported a corrupt frame"),
    ("DRM_LICENSE_FAILED", "License request returned HTTP 403"),
    ("MANIFEST_PARSE_ERROR", "Unexpected tag in media playlist"),
    ("TIMEOUT", "Fragment load timed out after 20000 ms"),
)


def iso_timestamp(ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with millisecond precision.

    Args:
        ms: Milliseconds since the Unix epoch.

    Returns:
        A string such as ``"2025-11-26T06:00:10.123Z"``.
    """
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def invalid_kinds(invalid: int) -> tuple[str, ...]:
    """Return the cycle of invalid kinds used for ``invalid`` invalid lines.

    Args:
        invalid: Number of invalid lines requested.

    Returns:
        ``INVALID_KINDS``, without ``oversized`` when ``invalid`` is below 7.
    """
    if invalid >= len(INVALID_KINDS):
        return INVALID_KINDS
    return tuple(k for k in INVALID_KINDS if k != "oversized")


def _invalid_line(kind: str, j: int, start_ms: int) -> bytes:
    """Build invalid line number ``j`` of the given kind."""
    ident = f'"event_id":"invalid-{j}","session_id":"invalid"'
    empty = '"metadata":{},"fluxdata":{}'
    templates = {
        "not_json": '{"event_id": "x", broken',
        "json_array": f'[{{{ident},"event":{{"type":"heartbeat","timestamp":{start_ms}}}}}]',
        "missing_type": f'{{{ident},"event":{{"timestamp":{start_ms}}},{empty}}}',
        "numeric_type": f'{{{ident},"event":{{"type":42,"timestamp":{start_ms}}},{empty}}}',
        "oversized": f'{{{ident},"event":{{"type":"heartbeat","timestamp":{start_ms}}},{empty},',
        "blank": "",
    }
    if kind == "invalid_utf8":
        return b'\xff\xfe{"event_id":1}'
    if kind == "oversized":
        return templates[kind].encode() + b'"padding":"' + b"x" * OVERSIZED_BYTES + b'"}'
    if kind not in templates:
        msg = f"unknown invalid kind {kind!r}"
        raise ValueError(msg)
    return templates[kind].encode()


def _session_metadata(rng: random.Random) -> dict[str, Any]:
    """Draw the per-session metadata block."""
    os_name, dev_type, models, players, _ = rng.choices(_DEVICES, _DEVICE_WEIGHTS)[0]
    player = rng.choice(players)
    content_id, title, duration, live = rng.choice(_CONTENT)
    country = rng.choices(_COUNTRY_CODES, _COUNTRY_WEIGHTS)[0]
    _, places, isps = _COUNTRIES[country]
    region, city = rng.choice(places)
    isp, asn = rng.choice(isps)
    if rng.random() < _IPV6_SHARE:
        ip = f"2001:db8:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.randint(1, 0xFFFF):x}"
    else:
        ip = f"{rng.choice(_IPV4_PREFIXES)}{rng.randint(1, 254)}"
    return {
        "device": {"os": os_name, "type": dev_type, "model": rng.choice(models)},
        "player": {"name": player, "version": rng.choice(_PLAYER_VERSIONS[player])},
        "content": {"id": content_id, "title": title, "duration_sec": duration, "live": live},
        "geo": {"country_code": country, "region": region, "city": city},
        "network": {"isp": isp, "ip": ip, "asn": asn},
        "user": {
            "id": f"u{rng.randint(1, 100_000)}",
            "subscription": rng.choices(_SUBSCRIPTIONS, _SUBSCRIPTION_WEIGHTS)[0],
        },
    }


def _metadata_part(metadata: dict[str, Any]) -> bytes:
    """Serialize metadata together with the JSON punctuation around it in a line."""
    return b'},"metadata":' + _dumps(metadata) + b',"fluxdata":'


class _Session:
    """One playback session; ``events()`` yields its events in time order.

    Each event is ``(timestamp_ms, head, tail)``: the line is ``head``, the timestamp
    value, then ``tail``. The metadata is serialized once per session.
    """

    def __init__(self, rng: random.Random, session_id: str, t0: int, length: int) -> None:
        self.rng = rng
        self.session_id = session_id
        self.length = length
        self.metadata = _session_metadata(rng)
        self.meta = _metadata_part(self.metadata)
        content = self.metadata["content"]
        self.duration: int = content["duration_sec"]
        self.live: bool = content["live"]
        dev_type = self.metadata["device"]["type"]
        if dev_type == "tv":
            self.bandwidth, self.level = rng.randint(15_000, 40_000), rng.randint(4, 6)
        elif dev_type == "desktop":
            self.bandwidth, self.level = rng.randint(8_000, 50_000), rng.randint(3, 6)
        else:
            self.bandwidth, self.level = rng.randint(2_000, 20_000), rng.randint(2, 4)
        self.playhead = float(rng.randint(600, 7_200)) if self.live else 0.0
        self.buffer_ms = 0
        self.errors = 0
        self.t = t0
        self.last_heartbeat = t0
        self.playing = False
        self.pending = ""  # closing event owed by an open buffer_start/pause

    def _event(self, seq: int, etype: str, meta: bytes | None = None) -> tuple[int, bytes, bytes]:
        sid = self.session_id
        head = (
            f'{{"event_id":"{sid}-{seq}","session_id":"{sid}",'
            f'"event":{{"type":"{etype}","timestamp":'
        )
        flux = (
            f'{{"playhead_position_sec":{round(self.playhead, 3)},'
            f'"rendition_video_bitrate_kbps":{_LADDER[self.level]},'
            f'"buffer_length_ms":{self.buffer_ms},"bandwidth_kbps":{self.bandwidth},'
            f'"num_errors":{self.errors}}}}}'
        )
        return self.t, head.encode(), (meta or self.meta) + flux.encode()

    def _advance(self, t: int) -> None:
        """Move the clock to ``t``, advancing the playhead while playing."""
        if self.playing:
            self.playhead += (t - self.t) / 1000
            if not self.live:
                self.playhead = min(self.playhead, float(self.duration))
        self.t = t

    def events(self) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield every event of the session."""
        rng = self.rng
        yield self._event(0, "player_ready")
        if self.length < _MIN_FULL_SESSION:  # only when fewer than 3 events were asked for
            if self.length > 1:
                self._advance(self.t + rng.randint(1_000, 20_000))
                yield self._event(1, "playback_stop")
            return
        self._advance(self.t + rng.randint(300, 3_000))
        self.buffer_ms = rng.randint(2_000, 6_000)
        self.playing = True
        self.last_heartbeat = self.t
        yield self._event(1, "playback_start")
        middle = self.length - 3
        for k in range(middle):
            yield self._middle_event(2 + k, can_pair=k < middle - 1)
        self._advance(self.t + rng.randint(500, 9_000))
        if not self.live and rng.random() < _P_COMPLETE:
            self.playhead = float(self.duration)
            yield self._event(self.length - 1, "playback_complete")
        else:
            yield self._event(self.length - 1, "playback_stop")

    def _middle_event(self, seq: int, *, can_pair: bool) -> tuple[int, bytes, bytes]:
        """Make one event between ``playback_start`` and the end of the session."""
        rng = self.rng
        if self.pending:
            return self._close_pair(seq)
        r = rng.random()
        gap = self.last_heartbeat + _HEARTBEAT_MS - self.t  # always >= 100
        if r < _P_HEARTBEAT or gap < _MIN_HEARTBEAT_GAP_MS:
            return self._heartbeat(seq)
        self._advance(self.t + rng.randint(100, gap - 100))
        meta = None
        if r < _P_BITRATE:
            etype = "bitrate_change"
            top = len(_LADDER) - 1
            up = self.level < top and self.bandwidth > _LADDER[self.level + 1] * 1.5
            self.level = self.level + 1 if up or self.level == 0 else self.level - 1
        elif r < _P_BUFFER and can_pair:
            etype, self.pending = "buffer_start", "buffer_end"
            self.playing = False
            self.buffer_ms = rng.randint(0, 300)
        elif r < _P_SEEK:
            etype = "seek"
            if self.live:
                self.playhead = max(0.0, self.playhead - rng.uniform(10, 120))
            else:
                self.playhead = rng.uniform(0, max(0, self.duration - 900))
            self.buffer_ms = rng.randint(0, 1_000)
        elif r < _P_PAUSE and can_pair:
            etype, self.pending = "pause", "resume"
            self.playing = False
        else:
            etype = "error"
            self.errors += 1
            code, message = rng.choice(_ERRORS)
            error = {"code": code, "message": message}
            meta = _metadata_part({**self.metadata, "error": error})
        return self._event(seq, etype, meta)

    def _heartbeat(self, seq: int) -> tuple[int, bytes, bytes]:
        """Emit the next heartbeat, 10 s after the previous one."""
        rng = self.rng
        self._advance(self.last_heartbeat + _HEARTBEAT_MS)
        self.last_heartbeat = self.t
        self.bandwidth = max(300, min(100_000, int(self.bandwidth * rng.uniform(0.8, 1.2))))
        if self.playing:
            self.buffer_ms = max(0, min(30_000, self.buffer_ms + rng.randint(-2_000, 4_000)))
        return self._event(seq, "heartbeat")

    def _close_pair(self, seq: int) -> tuple[int, bytes, bytes]:
        """Emit the ``buffer_end`` or ``resume`` owed by the previous event."""
        etype, self.pending = self.pending, ""
        if etype == "resume":
            self._advance(self.t + self.rng.randint(2_000, 60_000))
            self.last_heartbeat = self.t  # the heartbeat cadence restarts on resume
        else:
            self._advance(self.t + self.rng.randint(200, 4_000))
            self.buffer_ms = self.rng.randint(1_500, 6_000)
            if self.t > self.last_heartbeat + _HEARTBEAT_MS - 100:
                self.last_heartbeat = self.t
        self.playing = True
        return self._event(seq, etype)


def generate(
    n_events: int,
    seed: int = DEFAULT_SEED,
    start_ms: int = DEFAULT_START_MS,
    invalid: int = 0,
    iso_every: int = 0,
) -> Iterator[bytes]:
    """Yield ``n_events`` valid event lines plus ``invalid`` invalid lines.

    Lines are produced lazily, so any number of events can be streamed.

    Args:
        n_events: Number of valid events.
        seed: Seed for the private ``random.Random``; same arguments give the same bytes.
        start_ms: Epoch-millisecond timestamp of the first event.
        invalid: Number of invalid lines to insert (see the module docstring for kinds,
            order and positions).
        iso_every: If positive, every ``iso_every``-th valid event (1-based) gets an
            ISO-8601 string timestamp instead of epoch milliseconds.

    Yields:
        One line per item, UTF-8 encoded (except ``invalid_utf8`` lines), without the
        trailing newline.

    Raises:
        ValueError: If a count is negative.
    """
    if min(n_events, invalid, iso_every) < 0:
        msg = "n_events, invalid and iso_every must be >= 0"
        raise ValueError(msg)
    kinds = invalid_kinds(invalid)
    positions = [(j + 1) * n_events // (invalid + 1) for j in range(invalid)]
    next_j = 0
    next_pos = positions[0] if positions else -1
    events = _valid_events(n_events, random.Random(seed), start_ms)
    for index, (ts, head, tail) in enumerate(events, start=1):
        while index - 1 == next_pos:
            yield _invalid_line(kinds[next_j % len(kinds)], next_j, start_ms)
            next_j += 1
            next_pos = positions[next_j] if next_j < invalid else -1
        if iso_every and index % iso_every == 0:
            yield head + b'"' + iso_timestamp(ts).encode() + b'"' + tail
        else:
            yield head + str(ts).encode() + tail
    while next_j < invalid:
        yield _invalid_line(kinds[next_j % len(kinds)], next_j, start_ms)
        next_j += 1


def _valid_events(
    n_events: int, rng: random.Random, start_ms: int
) -> Iterator[tuple[int, bytes, bytes]]:
    """Interleave sessions and yield exactly ``n_events`` events in timestamp order."""
    heap: list[tuple[int, int, bytes, bytes, Iterator[tuple[int, bytes, bytes]]]] = []
    planned = 0
    order = 0  # tie-breaker, keeps the heap order deterministic

    def start_session(t0: int) -> None:
        nonlocal planned, order
        remaining = n_events - planned
        length = rng.randint(_MIN_SESSION, _MAX_SESSION)
        if remaining - length < _MIN_SESSION:
            length = remaining if remaining <= _MAX_SESSION else remaining - _MIN_SESSION
        planned += length
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        gen = _Session(random.Random(rng.getrandbits(64)), session_id, t0, length).events()
        ts, head, tail = next(gen)
        heapq.heappush(heap, (ts, order, head, tail, gen))
        order += 1

    for i in range(_CONCURRENT_SESSIONS):
        if planned >= n_events:
            break
        start_session(start_ms if i == 0 else start_ms + rng.randint(0, 30_000))

    while heap:
        ts, _, head, tail, gen = heap[0]
        yield ts, head, tail
        nxt = next(gen, None)
        if nxt is None:
            heapq.heappop(heap)
            if planned < n_events:
                start_session(ts + rng.randint(0, 15_000))
        else:
            heapq.heapreplace(heap, (nxt[0], order, nxt[1], nxt[2], gen))
            order += 1


def write_lines(lines: Iterator[bytes], write: Callable[[bytes], object], batch: int = 4096) -> int:
    """Write lines, each followed by a newline, in batches.

    Args:
        lines: Lines without trailing newlines.
        write: The ``write`` method of a binary stream.
        batch: Number of lines joined per ``write`` call.

    Returns:
        Number of lines written.
    """
    count = 0
    buf: list[bytes] = []
    for line in lines:
        buf.append(line)
        if len(buf) >= batch:
            buf.append(b"")
            write(b"\n".join(buf))
            count += len(buf) - 1
            buf = []
    if buf:
        buf.append(b"")
        write(b"\n".join(buf))
        count += len(buf) - 1
    return count


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate synthetic streaming-video player telemetry as JSON Lines.",
    )
    parser.add_argument(
        "--events", type=int, required=True, metavar="N", help="number of valid events"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, metavar="S", help="random seed (42)"
    )
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="output path; .gz is gzipped; - is stdout"
    )
    parser.add_argument(
        "--invalid", type=int, default=0, metavar="K", help="invalid lines to add (0)"
    )
    parser.add_argument(
        "--start-ms",
        type=int,
        default=DEFAULT_START_MS,
        metavar="MS",
        help="first timestamp, epoch ms",
    )
    parser.add_argument(
        "--iso-every",
        type=int,
        default=0,
        metavar="M",
        help="every M-th event gets an ISO timestamp (0)",
    )
    args = parser.parse_args(argv)
    for name in ("events", "invalid", "iso_every"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command-line interface.

    Args:
        argv: Arguments without the program name; ``None`` means ``sys.argv[1:]``.

    Returns:
        The process exit code.
    """
    args = _parse_args(argv)
    lines = generate(args.events, args.seed, args.start_ms, args.invalid, args.iso_every)
    with ExitStack() as stack:
        write: Callable[[bytes], object]
        if args.out == "-":
            write = sys.stdout.buffer.write
        else:
            raw = stack.enter_context(Path(args.out).open("wb"))
            if args.out.endswith(".gz"):
                gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
                write = stack.enter_context(gz).write
            else:
                write = raw.write
        written = write_lines(lines, write)
    sys.stderr.write(
        f"wrote {written} lines ({args.events} events, {args.invalid} invalid) to {args.out}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
