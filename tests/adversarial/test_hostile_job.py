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

import contextlib
import gzip
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.pipeline import Streaming, build_delivery
from tests.jobs import run_job
from tests.receivers.base import Receiver
from tests.receivers.credentials import WEBHOOK_AUTH, WEBHOOK_PATH, make_api
from transforms.config import parse_config

pytest_plugins = ["tests.receivers.fixtures"]

EXAMPLES = int(os.environ.get("ADVERSARIAL_EXAMPLES", "10"))
EXAMPLE_TIMEOUT_S = 120
"""The job must end: each example (one whole run) gets this long, as a failure of its own."""
TEST_TIMEOUT_S = 120 + EXAMPLES * 2 * EXAMPLE_TIMEOUT_S
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


# -- hostile-but-valid configs ---------------------------------------------------------------

config_variants = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["ndjson", "ndjson.gz", "json_array"]),
        "max_events": st.integers(1, 40),
        "prefix": st.sampled_from(
            ["{event_type}/{connector}/", "{event_type}/{year}/{month}/", "raw/{hour}/", ""]
        ),
        "extra_deny": st.lists(st.sampled_from(["*.ip", "geo", "a.*", "x[].y", "b.c"]), max_size=3),
        "template": st.sampled_from(["flat_event", "null"]),
        "hook_batch": st.integers(1, 20),
    }
)

CONFIG = """
connectors:
  - id: archive
    type: file
    deliver: {{path: "{out}/archive", format: ndjson}}
  - id: filtered
    type: file
    filter:
      metadata: {{deny: [secret, "team.secret", "users[].email", {extra_deny}]}}
      attributes: {{deny: [token]}}
      hash: {{paths: [metadata.user.id], key: "${{env:ADV_HASH_KEY}}"}}
    package: {{template: {template}}}
    deliver: {{path: "{out}/filtered", format: {format}, prefix: "{prefix}",
               batch: {{max_events: {max_events}}}}}
  - id: hook
    type: http
    filter:
      metadata: {{allow: [device, geo, "users[].id"]}}
      attributes: {{deny: [token]}}
    deliver:
      endpoint: "{hook}{path}"
      headers: {{Authorization: "${{env:ADV_HOOK_AUTH}}", X-Source: telemetry}}
      body: ndjson
      batch: {{max_events: {hook_batch}}}
dead_letter: {{path: "{out}/dead_letter"}}
"""


def _config_text(out: Path, hook: Receiver, variant: dict[str, Any]) -> str:
    extra = ", ".join(f'"{p}"' for p in variant["extra_deny"])
    return CONFIG.format(
        out=out, hook=hook.url, path=WEBHOOK_PATH, **{**variant, "extra_deny": extra}
    ).replace(", ]", "]")


# -- reading what the job wrote --------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _ndjson(data: bytes) -> list[dict[str, Any]]:
    """Records of an NDJSON body; every line must be one whole record."""
    return [orjson.loads(line) for line in data.split(b"\n") if line]


def _records(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if path.name.endswith(".json"):
        return list(orjson.loads(data))
    return _ndjson(data)


@pytest.fixture(scope="module")
def hook() -> Any:
    receiver = Receiver(make_api("http"))
    yield receiver
    receiver.stop()


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("ADVERSARIAL_SEED") is None,
)


@contextlib.contextmanager
def _workspace(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch folder, the secrets' variables, and a bound on this example's time.

    The bound is per example (SIGALRM in the main thread, where Beam waits): pytest's
    timeout applies to the whole hypothesis test, all its examples together.
    """
    monkeypatch.setenv("ADV_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("ADV_HOOK_AUTH", WEBHOOK_AUTH)
    root = Path(tempfile.mkdtemp(prefix="adv-"))

    def too_long(signum: int, frame: Any) -> None:
        raise TimeoutError(f"one example ran longer than {EXAMPLE_TIMEOUT_S} s: the job hung")

    # pytest-timeout's own timer (the same ITIMER_REAL) is put back, less the time spent.
    outer, started = signal.getitimer(signal.ITIMER_REAL)[0], time.monotonic()
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_TIMEOUT_S)
    try:
        yield root
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
        shutil.rmtree(root, ignore_errors=True)


# -- batch: the run command ------------------------------------------------------------------


@SETTINGS
@given(lines=hostile_file(), variant=config_variants)
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_hostile_input_keeps_every_promise(
    lines: list[bytes],
    variant: dict[str, Any],
    hook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
    capsys: Any,
) -> None:
    with _workspace(monkeypatch) as root:
        work, out = root / "work", root / "work" / "out"
        work.mkdir()
        (work / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (work / "delivery.yaml").write_text(_config_text(out, hook, variant))
        before = set(_files(root))
        requests_before = len(hook.snapshot()[0])
        with caplog.at_level(logging.DEBUG):
            code, summary = run_job(
                work / "delivery.yaml", work / "events.jsonl", out / "summary.json"
            )
        printed = capsys.readouterr()
        assert code == 0 and summary["balanced"], summary
        counts = summary["input"]
        assert counts["lines_read"] == len(lines)
        blank = sum(1 for n, line in enumerate(lines) if not _strip_bom(line, n == 0).strip())
        assert counts["blank_lines"] == blank
        _check_promises(
            root,
            out,
            before,
            hook.snapshot()[0][requests_before:],
            invalid_lines=counts["invalid"],
            valid=counts["events"],
            logs=caplog.text + printed.out + printed.err,
        )


def _strip_bom(line: bytes, first: bool) -> bytes:
    return line[3:] if first and line.startswith(b"\xef\xbb\xbf") else line


# -- streaming: the same graph on TestStream -------------------------------------------------


def _fake_clock() -> float:
    return 0.0


@SETTINGS
@given(lines=hostile_file(), variant=config_variants, attributes=st.booleans(), lf=st.booleans())
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_hostile_messages_keep_every_promise_when_streaming(
    lines: list[bytes],
    variant: dict[str, Any],
    attributes: bool,
    lf: bool,
    hook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    with _workspace(monkeypatch) as root:
        out = root / "work" / "out"
        out.mkdir(parents=True)
        config = parse_config(_config_text(out, hook, variant))
        before = set(_files(root))
        requests_before = len(hook.snapshot()[0])
        attrs = [
            {"token": f"{DENIED}{n}", "path": "../../x", "k": "\n"} if attributes else None
            for n in range(len(lines))
        ]
        if lf:  # a message may hold line feeds (JSON whitespace); a file line cannot
            lines = [line.replace(b", ", b",\n ", 1) for line in lines]
        half = len(lines) // 2
        stream = (
            TestStream()
            .add_elements([("pubsub", 0, lines[:half], attrs[:half])])
            .advance_processing_time(40)
            .add_elements([("pubsub", 0, lines[half:], attrs[half:])])
            .advance_processing_time(40)
            .advance_watermark_to_infinity()
        )
        options = PipelineOptions()
        options.view_as(StandardOptions).streaming = True
        runner = BundleBasedDirectRunner()
        with caplog.at_level(logging.DEBUG), beam.Pipeline(runner=runner, options=options) as p:
            build_delivery(p | stream, config, Streaming(clock=_fake_clock))
        letters = _letters(out)
        invalid = len([d for d in letters if d["stage"] == "parse"])
        blank = sum(1 for line in lines if not line.strip())
        valid = len(lines) - invalid - blank
        _check_promises(
            root,
            out,
            before,
            hook.snapshot()[0][requests_before:],
            invalid_lines=invalid,
            valid=valid,
            logs=caplog.text,
        )


# -- the promises ----------------------------------------------------------------------------


def _letters(out: Path) -> list[dict[str, Any]]:
    return [d for f in (out / "dead_letter").rglob("*.ndjson") for d in _ndjson(f.read_bytes())]


def _check_promises(
    root: Path,
    out: Path,
    before: set[Path],
    requests: list[Any],
    invalid_lines: int,
    valid: int,
    logs: str,
) -> None:
    # No escape: everything the run wrote is below out/.
    created = set(_files(root)) - before
    assert all(out in p.parents for p in created), sorted(map(str, created))

    # Conservation per connector, by id: each valid event delivered or dead-lettered once.
    letters = _letters(out)
    assert len([d for d in letters if d["stage"] in ("parse", "read")]) == invalid_lines
    delivered: dict[str, Counter[str]] = {c: Counter() for c in ("archive", "filtered", "hook")}
    for cid in ("archive", "filtered"):
        for f in _files(out / cid):
            delivered[cid].update(r["event_id"] for r in _records(f))
    bodies = [r.body for r in requests]
    for body in bodies:
        delivered["hook"].update(
            r["event_id"] for r in _ndjson(body) if str(r.get("event_id", "")).startswith("adv-")
        )
    failed = {c: Counter(d["event_id"] for d in letters if d["connector"] == c) for c in delivered}
    everyone = set(delivered["archive"] + failed["archive"])
    for cid in delivered:
        got = delivered[cid] + failed[cid]
        assert sum(got.values()) == valid, (cid, got, valid)
        assert all(n == 1 for n in got.values()), (cid, got)
        assert set(got) == everyone, cid

    # No leak: nothing denied reached a filtered destination.
    for f in _files(out / "filtered"):
        data = f.read_bytes()
        if f.name.endswith(".gz"):
            data = gzip.decompress(data)
        assert DENIED.encode() not in data, f
    for body in bodies:
        assert DENIED.encode() not in body

    # No secret in any output, dead letter or log.
    everything = b"".join(f.read_bytes() for f in _files(out)) + b"".join(bodies)
    for secret in (HASH_KEY, WEBHOOK_AUTH.split()[-1]):
        assert secret.encode() not in everything
        assert secret not in logs
