"""The adversarial suite: hostile events through the real job, checked by invariants.

Hypothesis generates input files of hostile lines (deep, wide, huge, dotted and
path-like keys, lists of objects, control characters, invalid UTF-8, a BOM, NaN and
Infinity, integers past 64 bits, duplicate keys, path-like event types, garbage) and
runs ``python -m beam_pipeline run`` on them (in process), with a raw archive, a
filtered connector whose deny list covers every spelling of a marked field, a
connector with an event-derived prefix and a webhook stand-in. Each example asserts:

* conservation: every input line is an event, an invalid (dead-lettered) line or a
  blank one; for every connector, the ids it delivered plus the ids it dead-lettered are
  exactly the valid events' ids (each once), and the summary says ``balanced``;
* one record per line: every line of every NDJSON output and request body parses;
* no leak: no denied value (``DENIED-`` marker) in any byte a filtered destination got;
* no escape: every file the run created is under its ``out/`` folder;
* no secret (the webhook's header, the hash key) in any output, dead letter or log;
* the job ends: pytest-timeout bounds every example.

``make test`` runs a short profile (``ADVERSARIAL_EXAMPLES``, default 10); ``make fuzz``
runs a long one (see README, Limits).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main
from tests.receivers.base import Receiver
from tests.receivers.credentials import WEBHOOK_AUTH, WEBHOOK_PATH, make_api

pytest_plugins = ["tests.receivers.fixtures"]

EXAMPLES = int(os.environ.get("ADVERSARIAL_EXAMPLES", "10"))
HASH_KEY = "adv-hash-key-4b1e9d0c"
DENIED = "DENIED-"

# -- hostile values -------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "../../../escaped",
            "..",
            "/etc/passwd",
            "play\nstart",
            "a\\b",
            "\x00\x01\x7f",
            "\u2028\u2029",
            "%2e%2e",
            "\ud800",  # a lone surrogate (JSON can spell it)
            "x" * 3000,
        ]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
)
keys = st.one_of(
    st.sampled_from(["a", "b.c", "geo.ip", "..", "/x", "", "user.id", "x" * 200]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _json_text(value: Any) -> str:
    """JSON as Python writes it (lone surrogates escaped, big ints exact)."""
    return json.dumps(value, ensure_ascii=True)


def _denied_spellings(n: int) -> list[tuple[str, str]]:
    """(JSON fragment inside "metadata", description): the marked field spelled many ways."""
    mark = json.dumps(f"{DENIED}{n}")
    return [
        (f'"secret": {mark}', "nested"),
        (f'"team.secret": {mark}', "dotted"),
        (f'"team": {{"secret": {mark}}}', "nested 2"),
        (f'"users": [{{"email": {mark}}}, {{"id": 1}}]', "list"),
        (f'"users.email": {mark}', "dotted list path"),
    ]


@st.composite
def hostile_line(draw: Any, n: int) -> bytes:
    kind = draw(st.integers(0, 11))
    eid = f"adv-{n}"
    etype = draw(st.one_of(st.sampled_from(["heartbeat", "error"]), nasty_text.filter(bool)))
    stamp = draw(
        st.one_of(
            st.integers(0, 2**41),
            st.sampled_from(["2026-11-26T06:00:00Z", "1764136800", "not a time", None]),
        )
    )
    extra = draw(st.dictionaries(keys, values, max_size=3))
    spelling, _ = draw(st.sampled_from(_denied_spellings(n)))
    meta = ", ".join([spelling, *(f"{_json_text(k)}: {_json_text(v)}" for k, v in extra.items())])
    body = (
        f'{{"event_id": "{eid}", "session_id": "s{n % 3}", '
        f'"event": {{"type": {_json_text(etype)}, "timestamp": {_json_text(stamp)}}}, '
        f'"metadata": {{{meta}}}, "attributes": {{"token": "{DENIED}{n}", "t": 1}}, '
        f'"fluxdata": {{"n": {draw(st.integers(-(2**80), 2**80))}}}}}'
    )
    line = body.encode()
    if kind == 0:  # deep nesting
        depth = draw(st.integers(100, 1100))
        line = line[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == 1:  # a huge value
        line = line[:-1] + b', "big": "' + b"y" * draw(st.integers(60_000, 1_200_000)) + b'"}'
    elif kind == 2:  # invalid UTF-8 inside a string
        line = line.replace(b'"t": 1', b'"t": "\xff\xfe"')
    elif kind == 3:  # NaN / Infinity literals
        line = line.replace(b'"t": 1', b'"t": NaN')
    elif kind == 4:  # a duplicate key
        line = line[:-1] + b', "metadata": {"dup": 1}}'
    elif kind == 5:  # pretty-printed across lines? no: a CR and whitespace inside
        line = line.replace(b", ", b",\r ")
    elif kind == 6:  # garbage
        line = draw(st.binary(max_size=200)).replace(b"\n", b"")
        if line.startswith(b"\x1f\x8b"):  # gzip's magic would make the whole file gzip
            line = line[2:]
    elif kind == 7:
        line = b"   "
    return line


@st.composite
def hostile_file(draw: Any) -> list[bytes]:
    count = draw(st.integers(1, 25))
    lines = [draw(hostile_line(n)) for n in range(count)]
    if draw(st.booleans()):
        lines[0] = b"\xef\xbb\xbf" + lines[0]  # a UTF-8 BOM
    return lines


# -- the job --------------------------------------------------------------------------------

CONFIG = """
connectors:
  - id: archive
    type: file
    deliver: {{path: "{out}/archive", format: ndjson}}
  - id: filtered
    type: file
    filter:
      metadata: {{deny: [secret, "team.secret", "users[].email"]}}
      attributes: {{deny: [token]}}
      hash: {{paths: [metadata.user.id], key: "${{env:ADV_HASH_KEY}}"}}
    package: {{template: flat_event}}
    deliver: {{path: "{out}/filtered", format: ndjson, prefix: "{{event_type}}/{{connector}}/"}}
  - id: hook
    type: http
    filter:
      metadata: {{allow: [device, geo, "users[].id"]}}
      attributes: {{deny: [token]}}
    deliver:
      endpoint: "{hook}{path}"
      headers: {{Authorization: "${{env:ADV_HOOK_AUTH}}", X-Source: telemetry}}
      body: ndjson
      batch: {{max_events: 7}}
dead_letter: {{path: "{out}/dead_letter"}}
"""


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _ndjson(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


@pytest.fixture(scope="module")
def hook() -> Any:
    receiver = Receiver(make_api("http"))
    yield receiver
    receiver.stop()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("ADVERSARIAL_SEED") is None,
)
@given(lines=hostile_file())
@pytest.mark.timeout(900)
def test_hostile_input_keeps_every_promise(
    lines: list[bytes], hook: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: Any, capsys: Any
) -> None:
    monkeypatch.setenv("ADV_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("ADV_HOOK_AUTH", WEBHOOK_AUTH)
    root = Path(tempfile.mkdtemp(prefix="adv-"))
    try:
        _run_and_check(root, lines, hook, caplog, capsys)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_and_check(
    root: Path, lines: list[bytes], hook: Receiver, caplog: Any, capsys: Any
) -> None:
    work, out = root / "work", root / "work" / "out"
    work.mkdir()
    (work / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (work / "delivery.yaml").write_text(CONFIG.format(out=out, hook=hook.url, path=WEBHOOK_PATH))
    before = set(_files(root))
    requests_before = len(hook.snapshot()[0])
    with caplog.at_level(logging.DEBUG):
        code = main(
            [
                "run",
                "--config",
                str(work / "delivery.yaml"),
                "--input",
                str(work / "events.jsonl"),
                "--summary-json",
                str(out / "summary.json"),
                "--no-progress",
            ]
        )
    printed = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and summary["balanced"], summary

    # No escape: everything the run wrote is below out/.
    created = set(_files(root)) - before
    assert all(out in p.parents for p in created), sorted(map(str, created))

    # Conservation: lines, then per connector by id.
    letters = [d for f in (out / "dead_letter").rglob("*.ndjson") for d in _ndjson(f.read_bytes())]
    invalid = [d for d in letters if d["stage"] in ("parse", "read")]
    counts = summary.get("input", summary)
    assert counts["lines_read"] == len(lines)
    assert counts["lines_read"] == counts["events"] + counts["invalid"] + counts["blank_lines"]
    assert counts["invalid"] == len(invalid)
    valid = counts["events"]
    delivered: dict[str, Counter[str]] = {c: Counter() for c in ("archive", "filtered", "hook")}
    for f in (out / "archive").rglob("*.ndjson"):
        delivered["archive"].update(r["event_id"] for r in _ndjson(f.read_bytes()))
    for f in (out / "filtered").rglob("*.ndjson"):
        delivered["filtered"].update(r["event_id"] for r in _ndjson(f.read_bytes()))
    requests = hook.snapshot()[0][requests_before:]
    bodies = [r.body for r in requests]
    for body in bodies:
        delivered["hook"].update(
            r["event_id"] for r in _ndjson(body) if str(r.get("event_id", "")).startswith("adv-")
        )
    failed = {c: Counter(d["event_id"] for d in letters if d["connector"] == c) for c in delivered}
    for cid in delivered:
        got = delivered[cid] + failed[cid]
        assert sum(got.values()) == valid, (cid, got, valid)
        assert all(n == 1 for n in got.values()), (cid, got)
        ids = set(got)
        assert ids == set(delivered["archive"] + failed["archive"]), cid

    # No leak: nothing denied reached a filtered destination.
    for f in (out / "filtered").rglob("*"):
        if f.is_file():
            assert DENIED.encode() not in f.read_bytes(), f
    for body in bodies:
        assert DENIED.encode() not in body

    # No secret in any output, dead letter or log.
    everything = b"".join(f.read_bytes() for f in _files(out)) + b"".join(bodies)
    logs = (caplog.text + printed.out + printed.err).encode()
    for secret in (HASH_KEY, WEBHOOK_AUTH.split()[-1]):
        assert secret.encode() not in everything
        assert secret.encode() not in logs
