"""Hostile input: line breaks inside events, deep nesting, huge lines, BOMs, big numbers.

Each test feeds input a producer could really send (or a file could really hold) through
the job's own code, and checks the rule that must hold: one record is one output line,
nothing crashes, memory stays bounded, and every line ends as an event or a dead letter
with a reason (``lines_read = events + invalid + blank_lines``).
"""

from __future__ import annotations

import gzip
import json
import pickle
import tracemalloc
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.pipeline import build_delivery, build_pipeline
from beam_pipeline.summary import collect_summary
from tests.receivers.apis import ElasticsearchBulkApi, WebhookApi
from tests.receivers.credentials import ES_API_KEY, WEBHOOK_AUTH
from transforms.config import parse_config
from transforms.connectors import CONNECTORS, make_sink
from transforms.connectors.base import DeliveryBatch
from transforms.filter import _FilterChunk
from transforms.live import as_rules
from transforms.package import _PackageChunk
from transforms.parse import DEAD_LETTER, _ParseChunk, _ReadChunks, open_lines
from transforms.route import _RouteChunk
from transforms.rules.encode import encode_batch, line_json
from transforms.rules.events import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_ORIGINAL_CHARS,
    parse_line,
)
from transforms.rules.records import Chunk, DeadLetter, Packaged

pytest_plugins = ["tests.receivers.fixtures"]

MIB = 1 << 20


def run(lines_or_chunk: Any, config_yaml: str) -> dict[str, Any]:
    """The whole batch graph (FnApiRunner) on one chunk; the run's summary."""
    config = parse_config(config_yaml)
    p = beam.Pipeline(runner=FnApiRunner())
    build_delivery(p | beam.Create([lines_or_chunk]), config)
    result = p.run()
    result.wait_until_finish()
    return collect_summary(result, config)


def archive_config(tmp_path: Path, fmt: str = "ndjson") -> str:
    return f"""
connectors:
  - {{id: archive, type: file, deliver: {{path: "{tmp_path}/archive", format: {fmt}}}}}
dead_letter: {{path: "{tmp_path}/dl"}}
"""


def written_lines(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for f in sorted(root.rglob("*.ndjson*")):
        data = f.read_bytes()
        if f.name.endswith(".gz"):
            data = gzip.decompress(data)
        assert data.endswith(b"\n")
        out += data[:-1].split(b"\n")
    return out


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted((tmp_path / "dl").rglob("*.ndjson"))
        for line in f.read_bytes().splitlines()
    ]


# -- 6. one record is one line ---------------------------------------------------------------


def test_a_pubsub_message_with_a_line_feed_is_one_archive_line(tmp_path: Path) -> None:
    # The case: JSON whitespace may be a line feed; the archive must not copy it.
    messages = [
        b'{"event_id":"a",\n"event":{"type":"x"}}',
        b'{"event_id":"b","event":{"type":"x"}}',
        b'{"event_id":"c",\r\n"event":\n{"type":"x"}\n}\n',
    ]
    summary = run(("pubsub", 0, messages, [None, None, None]), archive_config(tmp_path))
    assert summary["input"]["events"] == 3 and summary["balanced"]
    lines = written_lines(tmp_path / "archive")
    assert len(lines) == 3
    assert sorted(orjson.loads(line)["event_id"] for line in lines) == ["a", "b", "c"]


WHITESPACE = st.text(alphabet=" \t\n\r", max_size=3)
# Every C0 control, DEL, C1 controls (NEL) and the Unicode line/paragraph separators.
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029"]
TEXT = st.text(alphabet=st.sampled_from([*CONTROLS, "a", "é", '"', "\\"]), max_size=6)


def spaced(event: dict[str, Any], ws: list[str]) -> bytes:
    """``event`` as JSON with the given whitespace around every token (as producers may)."""
    compact = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    out, n, in_string, escaped = [], 0, False, False
    for ch in compact:
        out.append(ch)
        if in_string:
            escaped = ch == "\\" and not escaped
            if ch == '"' and not escaped:
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{}[],:":
            out.append(ws[n % len(ws)])
            n += 1
    return "".join(out).encode("utf-8")


EVENTS = st.builds(
    lambda n, text, ws: (
        {"event_id": f"e{n}", "event": {"type": "x"}, "metadata": {"t": text, text: [text, 1]}},
        ws,
    ),
    st.integers(0, 10**6),
    TEXT,
    st.lists(WHITESPACE, min_size=1, max_size=4),
)

BODY_CONFIG = """
connectors:
  - {{id: archive, type: file, deliver: {{path: "{out}/a", format: ndjson}}}}
  - {{id: es, type: elasticsearch, package: {{template: null}},
     deliver: {{endpoint: "http://127.0.0.1:1", index: v, api_key: "${{env:K}}"}}}}
  - {{id: hook, type: http, deliver: {{endpoint: "http://127.0.0.1:1", body: ndjson}}}}
dead_letter: {{path: "{out}/dl"}}
"""


def packaged(tmp_path: Path, chunk: tuple[Any, ...]) -> dict[str, list[Packaged]]:
    """Parse -> Route -> Filter -> Package by hand (the fused stage's DoFns, in order)."""
    rules = as_rules(parse_config(BODY_CONFIG.format(out=tmp_path)))
    fns: list[Any] = [_ParseChunk(3), _RouteChunk(rules), _FilterChunk(rules), _PackageChunk(rules)]
    for fn in fns:
        if hasattr(fn, "setup"):
            fn.setup()
    out: dict[str, list[Packaged]] = {}
    for events in fns[0].process(chunk):
        assert isinstance(events, Chunk), "every line here is an event"
        for routed in fns[1].process(events):
            for filtered in fns[2].process(routed):
                for cid, items in fns[3].process(filtered):
                    out.setdefault(cid, []).extend(items)
    return out


def one_line_per_record(body: bytes, records: int, per_record: int = 1) -> list[Any]:
    """Check NDJSON ``body`` has ``records * per_record`` lines under any line splitter."""
    assert body.endswith(b"\n")
    lines = body[:-1].split(b"\n")
    assert len(lines) == records * per_record
    assert len(body.splitlines()) == len(lines), "a CR would break the line for other readers"
    text = body.decode("utf-8")
    assert "\u2028" not in text and "\u2029" not in text
    return [orjson.loads(line) for line in lines]


@pytest.fixture
def bulk_sinks(start_receiver: Any) -> Any:
    """An Elasticsearch ``_bulk`` and an NDJSON webhook stand-in, each with its sink."""
    es = start_receiver(ElasticsearchBulkApi(api_key=ES_API_KEY))
    hook = start_receiver(WebhookApi("/in", {"Authorization": WEBHOOK_AUTH}, "ndjson"))
    deliver = {
        "es": {"endpoint": es.url, "index": "v", "api_key": ES_API_KEY, "compression": "none"},
        "hook": {
            "endpoint": hook.url + "/in",
            "body": "ndjson",
            "headers": {"Authorization": WEBHOOK_AUTH},
        },
    }
    kinds = {"es": "elasticsearch", "hook": "http"}
    sinks = {
        cid: make_sink(cid, kinds[cid], CONNECTORS[kinds[cid]].deliver_model.model_validate(d))
        for cid, d in deliver.items()
    }
    for sink in sinks.values():
        sink.open()
    yield {"es": (es, sinks["es"]), "hook": (hook, sinks["hook"])}
    for sink in sinks.values():
        sink.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(EVENTS, min_size=1, max_size=6, unique_by=lambda e: e[0]["event_id"]))
def test_every_encoder_and_bulk_body_holds_one_line_per_record(
    tmp_path: Path,
    bulk_sinks: Any,
    monkeypatch: pytest.MonkeyPatch,
    cases: list[tuple[dict[str, Any], list[str]]],
) -> None:
    monkeypatch.setenv("K", ES_API_KEY)
    events = [e for e, _ in cases]
    lines = [spaced(e, ws) for e, ws in cases]
    assert [orjson.loads(line) for line in lines] == events  # valid JSON, whitespace and all
    got = packaged(tmp_path, ("pubsub", 0, lines, [None] * len(lines)))
    for fmt in ("ndjson", "ndjson.gz"):
        body = encode_batch(got["archive"], fmt)
        body = gzip.decompress(body) if fmt.endswith(".gz") else body
        assert one_line_per_record(body, len(events)) == events
    assert orjson.loads(encode_batch(got["archive"], "json_array")) == events
    for cid, per_record in (("es", 2), ("hook", 1)):  # _bulk: an action line, then the doc
        receiver, sink = bulk_sinks[cid]
        assert sink.write(DeliveryBatch(cid, "", got[cid])).events == len(events)
        request = receiver.snapshot()[0][-1]  # one request per batch; the examples share these
        assert request.status == 200
        records = one_line_per_record(request.body, len(events), per_record)
        assert records[per_record - 1 :: per_record] == events


def test_line_json_refuses_any_line_break() -> None:
    for line in (b'{"a":\n1}', b'{"a":\r1}', b'{"a":1,\r\n"b":2}'):
        assert orjson.loads(line) and line_json(line) is None
    assert line_json(b' {"a": 1}\r\n') == b'{"a": 1}'  # the line's own end is not inside it


# -- 10. deep nesting --------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """An event nesting ``depth`` levels: the event object is level 1, its last list ``depth``."""
    inner = b"[" * (depth - 1) + b"1" + b"]" * (depth - 1)
    return b'{"event_id":"d","event":{"type":"x"},"deep":' + inner + b"}"


def test_nesting_up_to_the_limit_is_an_event_past_it_a_too_deep_dead_letter() -> None:
    assert 8 <= MAX_DEPTH < 254  # orjson writes at most 254 levels
    ok = parse_line(nested(MAX_DEPTH))
    assert isinstance(ok, dict)
    orjson.dumps({"wrapped": {"in": [{"a": ok}]}})  # a retry record's nesting still writes
    for depth in (MAX_DEPTH + 1, 254, 255, 500, 1023, 1024, 1025, 5000):
        out = parse_line(nested(depth))
        assert isinstance(out, DeadLetter), depth
        assert out.reason == "too_deep" and str(MAX_DEPTH) in out.error, (depth, out.error)
        orjson.dumps(out.to_json_dict())  # the dead letter itself writes


def test_arrays_of_objects_are_not_deep() -> None:
    # More than MAX_DEPTH brackets, but shallow: counted brackets alone must not refuse it.
    line = orjson.dumps(
        {"event_id": "a", "event": {"type": "x"}, "renditions": [{"k": [n]} for n in range(200)]}
    )
    assert isinstance(parse_line(line), dict)


DEPTHS = st.sampled_from([2, 3, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 254, 500, 1100])


@settings(max_examples=60, deadline=None)
@given(st.lists(DEPTHS, max_size=8), st.integers(1, 4))
def test_parse_stage_refuses_exactly_what_parse_line_refuses(depths: list[int], size: int) -> None:
    lines = [nested(d) for d in depths]
    fn = _ParseChunk(size)
    fn.setup()
    events: list[Any] = []
    refused: list[str] = []
    for out in fn.process(("f", 0, lines)):
        if isinstance(out, beam.pvalue.TaggedOutput):
            refused += [d.reason for d in out.value]
        else:
            events += out
            pickle.dumps(out)  # what crosses a process boundary must pickle
    want = [parse_line(line) for line in lines]
    assert events == [w for w in want if isinstance(w, dict)]
    assert refused == [w.reason for w in want if isinstance(w, DeadLetter)]
    assert refused == ["too_deep" for d in depths if d > MAX_DEPTH]


def test_a_deep_line_in_the_whole_graph_is_counted_not_a_crash(tmp_path: Path) -> None:
    lines = [nested(3), nested(500), nested(254), nested(MAX_DEPTH)]
    summary = run(("f", 0, lines), archive_config(tmp_path))
    assert summary["input"]["invalid_reasons"] == {"too_deep": 2}
    assert summary["input"]["events"] == 2 and summary["balanced"]
    assert len(written_lines(tmp_path / "archive")) == 2


# -- 14. bounded memory on input ------------------------------------------------------------


def write_long_line(path: Path, size: int, before: bytes = b"", after: bytes = b"") -> None:
    """A file: ``before``, one line of ``size`` bytes with no line feed, then ``after``."""
    block = b'{"event_id":"big","event":{"type":"x"},"pad":"' + b"x" * (MIB - 48)
    with path.open("wb") as f:
        f.write(before)
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            left -= len(piece)
        f.write(after)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_50_mib_line_without_line_feed_is_streamed_into_one_too_large_dead_letter(
    tmp_path: Path, compressed: bool
) -> None:
    size = 50 * MIB
    path = tmp_path / "one-line.jsonl"
    write_long_line(path, size)
    if compressed:
        packed = tmp_path / "one-line.jsonl.gz"
        with path.open("rb") as src, gzip.open(packed, "wb") as dst:
            while block := src.read(MIB):
                dst.write(block)
        path.unlink()
        path = packed
    reader = _ReadChunks(5000)
    reader.setup()
    tracemalloc.start()
    try:
        out = list(reader.process((str(path), 0, 1)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.0f} MiB line"
    (tagged,) = out  # no chunk: the only line is not an event
    assert isinstance(tagged, beam.pvalue.TaggedOutput) and tagged.tag == DEAD_LETTER
    (letter,) = tagged.value
    record = letter.to_json_dict()
    assert (letter.stage, letter.reason) == ("parse", "too_large")
    assert record["original_bytes"] == size and record["original_truncated"] is True
    assert (
        record["original"].encode()
        == (b'{"event_id":"big","event":{"type":"x"},"pad":"' + b"x" * MIB)[:MAX_ORIGINAL_CHARS]
    )
    assert str(size) in letter.error


def test_open_lines_gives_the_lines_around_a_long_one_and_its_exact_length(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    size = MAX_EVENT_BYTES * 3 + 5
    write_long_line(path, size, before=b"first\r\n", after=b"\r\r\nlast")
    got = list(open_lines(str(path)))
    assert got[0] == b"first" and got[2] == b"last" and len(got) == 3
    assert getattr(got[1], "size", None) == size and len(got[1]) == MAX_ORIGINAL_CHARS


@pytest.mark.parametrize("long_size", [MAX_EVENT_BYTES + 3, 3 * MIB])
def test_lines_read_adds_up_around_long_lines(tmp_path: Path, long_size: int) -> None:
    good = b'{"event_id":"%d","event":{"type":"x"}}\n'
    path = tmp_path / "in.jsonl"
    write_long_line(
        path, long_size, before=good % 1 + b"\n" + good % 2, after=b"\n" + good % 3 + b"{bad\n"
    )
    config = parse_config(archive_config(tmp_path))
    p = beam.Pipeline(runner=FnApiRunner())
    build_pipeline(p, config, [str(path)], chunk_lines=2)
    result = p.run()
    result.wait_until_finish()
    summary = collect_summary(result, config)
    assert summary["input"] == {
        "lines_read": 6,
        "events": 3,
        "invalid": 2,
        "blank_lines": 1,
        "unmatched": 0,
        "duplicates": 0,
        "invalid_reasons": {"bad_json": 1, "too_large": 1},
        "balanced": True,
    }
    (big,) = [d for d in dead_letters(tmp_path) if d["reason"] == "too_large"]
    assert big["original_bytes"] == long_size


def chunk_sizes(path: Path, chunk_lines: int, chunk_bytes: int, shards: int = 1) -> list[Any]:
    out = []
    for mine in range(shards):
        reader = _ReadChunks(chunk_lines, chunk_bytes)
        reader.setup()
        out += [(c[1], len(c[2])) for c in reader.process((str(path), mine, shards))]
    return sorted(out)


def test_chunks_are_cut_by_bytes_too_and_the_same_way_by_every_shard(tmp_path: Path) -> None:
    path = tmp_path / "fat.jsonl"
    line = b'{"event_id":"a","event":{"type":"x"},"pad":"' + b"p" * 1000 + b'"}'
    path.write_bytes((line + b"\n") * 100)
    whole = chunk_sizes(path, 5000, 10 * len(line))
    assert whole == [(i, 10) for i in range(10)]  # 10 lines of ~1 KB reach 10 KB
    assert chunk_sizes(path, 4, 10 * len(line)) == [(i, 4 if i < 25 else 0) for i in range(25)]
    assert chunk_sizes(path, 5000, 10 * len(line), shards=3) == whole


def test_a_pubsub_message_over_the_limit_keeps_its_whole_payload() -> None:
    payload = b'{"event_id":"big","event":{"type":"x"},"pad":"' + "é".encode() * MIB + b'"}'
    bad = b'{"event_id":"b",' + b"z" * (MAX_ORIGINAL_CHARS * 2)
    fn = _ParseChunk()
    fn.setup()
    out = list(fn.process(("pubsub", 0, [payload, bad], [None, {"k": "v"}])))
    letters = [d for o in out if isinstance(o, beam.pvalue.TaggedOutput) for d in o.value]
    assert [d.reason for d in letters] == ["too_large", "bad_json"]
    for letter, raw in zip(letters, (payload, bad), strict=True):
        record = letter.to_json_dict()
        assert record["original"].encode() == raw and record["original_bytes"] == len(raw)
        assert record["original_truncated"] is False
    # A file's line is still cut (the file keeps it); a cut never splits a character.
    record = parse_line(payload).to_json_dict()  # type: ignore[union-attr]
    assert record["original_truncated"] is True and record["original_encoding"] == "utf-8"
    assert payload.startswith(record["original"].encode())


# -- minor: BOM, big integers, duplicate keys -----------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_a_bom_at_the_start_of_a_file_is_skipped_elsewhere_it_is_bad_json(
    tmp_path: Path, compressed: bool
) -> None:
    bom = b"\xef\xbb\xbf"
    text = bom + b'{"event_id":"a","event":{"type":"x"}}\n' + bom + b'{"event_id":"b"}\n'
    path = tmp_path / "bom.jsonl"
    path.write_bytes(gzip.compress(text) if compressed else text)
    first, second = list(open_lines(str(path)))
    assert first == b'{"event_id":"a","event":{"type":"x"}}'
    assert isinstance(parse_line(first), dict)
    out = parse_line(second)
    assert isinstance(out, DeadLetter) and out.reason == "bad_json" and "BOM" in out.error


def test_a_file_of_only_a_bom_has_one_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "bom-only.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n")
    assert list(open_lines(str(path))) == [b""]


def test_integers_past_64_bits_are_read_as_floats_and_archived_as_written() -> None:
    # The documented rule (orjson's): integers in [-2**63, 2**64 - 1] stay exact integers;
    # beyond, the nearest float. An archive passes the line on, digits and all.
    line = (
        b'{"event_id":"a","event":{"type":"x"},"u64":18446744073709551615,'
        b'"i64":-9223372036854775808,"big":18446744073709551616,"neg":-9223372036854775809}'
    )
    event = parse_line(line)
    assert isinstance(event, dict)
    assert event["u64"] == 2**64 - 1 and type(event["u64"]) is int
    assert event["i64"] == -(2**63) and type(event["i64"]) is int
    assert type(event["big"]) is float and event["big"] == float(2**64)
    assert type(event["neg"]) is float
    assert line_json(line) == line


def test_a_duplicate_key_keeps_its_last_value() -> None:
    line = b'{"event_id":"a","event":{"type":"x"},"event":{"type":"y"},"k":1,"k":2}'
    event = parse_line(line)
    assert isinstance(event, dict) and event["event"] == {"type": "y"} and event["k"] == 2
    fn = _ParseChunk()
    fn.setup()
    (chunk,) = list(fn.process(("f", 0, [line])))
    assert list(chunk) == [event]
