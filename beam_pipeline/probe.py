"""``validate``'s probe: find configs that pass the schema and then fail every event.

The schema cannot see that a New Relic connector's records have no ``eventType``, that an
endpoint already ends in the path its connector appends, or that a producer's epoch
seconds file everything under 1970. The probe runs an event through each connector's
own compiled rules (route, filter, package: :func:`~transforms.config.compile_connectors`,
exactly what the job runs), then through what the destination checks of a record, with
no network::

    report = probe_config(load_config("delivery.yaml"))               # the bundled event
    report = probe_config(config, load_probe_events("my_event.json"))  # the user's events
    report.problems   # ['connectors[2](id=nr): New Relic would refuse event ... Fix: ...']
    report.notes      # ['event 'x' routes to no connector (counted as unmatched): ...']

A problem names the connector, what would happen and the fix; ``validate`` fails on any.
A note (an event that reaches no connector, a connector no probe event reaches) is
information only.

The bundled :data:`PROBE_EVENT` is a realistic heartbeat. For each connector it does not
reach, the probe tries a copy made to fit that connector's route (one of its event types,
values that satisfy its ``eq``/``in``/``exists``/numeric conditions, a session inside its
sample), so a connector that only takes errors from Canada is checked too. Events given
by the user are used as they are: they say what the producers really send (their
timestamps, their ids), which only they can show.

What is checked, per connector type (:data:`CONFIG_CHECKS` for the config alone,
:data:`RECORD_CHECKS` for a packaged record; both to move into the connector modules):

- ``new_relic``: a valid ``eventType`` and at most 255 attributes per event; an endpoint
  that already holds ``/v1/accounts``.
- ``datadog_logs``: a log of at most 1 MB; an endpoint that already holds ``/api/v2/logs``.
- ``splunk_hec``: a non-empty ``event``, an HEC event within ``max_request_bytes``; an
  endpoint that already holds ``/services/collector``.
- ``elasticsearch``: no metadata field (``_id``, ``_index``, ...) in the document, an
  ``_id`` of at most 512 bytes, ``@timestamp`` in a data stream's documents, within
  ``max_request_bytes``; an endpoint that already holds ``/_bulk``; a data stream
  (``logs-*-*``, ``metrics-*-*``, ...) written with ``op_type: index``.
- ``pubsub``: attribute values (``event_type``, ``connector``, ``event_id``) of at most
  1,024 bytes and messages of at most 10 MB.
- ``http``: a record within ``max_request_bytes``.
- every type: an event time that a time prefix cannot render (dead letters,
  ``prefix_unrenderable``) or that reads as 1970 (epoch seconds read as milliseconds),
  where a prefix, Splunk's ``time`` or a template's time format uses it; with a Pub/Sub
  ``retry_location``, retry records (a batch's records and original events) over Pub/Sub's
  10 MB message limit.

- ``bigquery``: with a declared ``schema``, every template field has a column of a type
  it takes and every ``REQUIRED`` column a field
  (:func:`transforms.connectors.bigquery.check_template`), and each probed record is a
  row the schema takes (:func:`~transforms.connectors.bigquery.check_record`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from transforms.config import (
    CompiledConnector,
    Condition,
    Connector,
    DeliveryConfig,
    compile_connectors,
    read_text,
)
from transforms.connectors import (
    CONNECTORS,
    bigquery,
    datadog_logs,
    new_relic,
    pubsub,
    splunk_hec,
)
from transforms.rules.encode import dumps, record_json
from transforms.rules.events import MISSING, event_time_ms, get_path, parse_line, split_path
from transforms.rules.naming import TIME_FIELDS, PrefixError, PrefixTemplate
from transforms.rules.package import PackageError, format_time, pop_path, set_path
from transforms.rules.records import DeadLetter, Packaged, RetryRecord, iso_from_ms, record_of
from transforms.rules.route import explain_routes, route_events

PROBE_EVENT: dict[str, Any] = {
    "event_id": "probe-0000-4a1e-9c1d-5f2b7e0c0001-17",
    "session_id": "probe-0000-4a1e-9c1d-5f2b7e0c0001",
    "event": {"type": "heartbeat", "timestamp": 1764136800123},
    "metadata": {
        "device": {"os": "iOS", "type": "mobile", "model": "iPhone14,5"},
        "player": {"name": "AVPlayer", "version": "17.4"},
        "content": {
            "id": "c6",
            "title": "Probe: a typical title",
            "duration_sec": 2940,
            "live": False,
        },
        "geo": {"country_code": "US", "region": "CA", "city": "San Francisco"},
        "network": {"isp": "ACME", "ip": "203.0.113.7", "asn": 64500},
        "user": {"id": "u12345", "subscription": "basic"},
    },
    "fluxdata": {
        "playhead_position_sec": 612.5,
        "rendition_video_bitrate_kbps": 4500,
        "buffer_length_ms": 8000,
        "bandwidth_kbps": 12000,
        "num_errors": 0,
    },
}
"""The bundled probe: a heartbeat shaped and sized like the sample's events (~700 bytes).

Kept here as data rather than in ``examples/``: only ``beam_pipeline``, ``transforms``
and ``templates`` are installed, so an installed ``validate`` would not find a file
there. Its timestamp is epoch milliseconds, as producers should send it."""

PROBE_TYPES = (
    "heartbeat",
    "playback_start",
    "playback_stop",
    "playback_complete",
    "error",
    "buffer_start",
    "buffer_end",
    "bitrate_change",
    "player_ready",
    "pause",
    "resume",
    "seek",
)
"""Event types the bundled probe takes on to reach a connector whose route needs one."""

DEFAULT_TEMPLATES: dict[str, str] = {
    "datadog_logs": "datadog_logs",
    "splunk_hec": "splunk_hec",
    "new_relic": "new_relic",
    "elasticsearch": "elasticsearch",
}
"""Each connector type's own packaging template (``templates/<name>.yaml``), used when a
connector gives none. To move to ``ConnectorSpec.default_template``."""

PLAUSIBLE_SINCE_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: an event time before it is a mistake, not an old event."""

PLAUSIBLE_UNTIL_MS = 4_102_444_800_000
"""2100-01-01T00:00:00Z: an event time from then on is a mistake (epoch microseconds)."""

_SECONDS = (946_684_800, 4_102_444_800)
"""A number in this range (2000 to 2100 as epoch seconds) read as milliseconds is 1970."""

PUBSUB_ATTRIBUTE_BYTES = 1024
"""Bytes of a Pub/Sub attribute value at most (its keys here are short and fixed)."""

RETRY_RECORD_SLACK = 4096
"""Room kept in a retry record for what grows with failures (``last_error``, names)."""

_SESSION_TRIES = 4096
"""Session ids tried to land inside a route's ``sample_sessions`` (any fraction from
0.25% is found with probability over 99.99%)."""

_DATA_STREAM = re.compile(r"^(logs|metrics|traces|synthetics)-.+-.+$")
"""Index names that Elasticsearch's built-in index templates make data streams."""

_ES_METADATA_FIELDS = frozenset(
    {
        "_id",
        "_index",
        "_source",
        "_routing",
        "_version",
        "_seq_no",
        "_primary_term",
        "_field_names",
        "_ignored",
        "_tier",
        "_doc_count",
        "_data_stream_timestamp",
        "_size",
    }
)
"""Fields Elasticsearch refuses inside a document (``mapper_parsing_exception``, 400)."""

ES_MAX_ID_BYTES = 512
"""Bytes of an Elasticsearch ``_id`` at most (the connector's ``_id`` is the event id)."""


class ProbeEventError(ValueError):
    """A ``--event`` file that holds no usable event; the message says why."""


@dataclass
class ProbeReport:
    """What the probe found: ``problems`` fail ``validate``, ``notes`` only inform."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no destination would reject what the probe sent."""
        return not self.problems

    def add_problem(self, text: str) -> None:
        """Add a problem, once (several probe events may find the same)."""
        if text not in self.problems:
            self.problems.append(text)


def effective_template(connector: Connector) -> str | dict[str, Any] | None:
    """The packaging template a connector should use: its own, else its type's default.

    ``package.template`` given (a name or an inline mapping) wins; ``template: null``
    given explicitly means no template (the filtered event is sent as it is); nothing
    given means the type's own template (:data:`DEFAULT_TEMPLATES`), e.g. ``new_relic``
    for ``type: new_relic``, and no template for types without one (files, object
    stores, ``http``, ``pubsub``).
    """
    if "template" in connector.package.model_fields_set:
        return connector.package.template
    spec = CONNECTORS.get(connector.type)
    if spec is not None and hasattr(spec, "default_template"):
        # Declared by the connector module, once ConnectorSpec has the field.
        declared: str | None = getattr(spec, "default_template")  # noqa: B009
        return declared
    return DEFAULT_TEMPLATES.get(connector.type)


def load_probe_events(path: str) -> list[dict[str, Any]]:
    """Read ``--event FILE``: one JSON event (indented or not), or JSON lines of events.

    Each event must be one the job accepts (parsed by the job's own
    :func:`~transforms.rules.events.parse_line`).

    Raises:
        ProbeEventError: for an unreadable file, or a line the job would dead-letter
            (the message gives its line number and the reason).
    """
    try:
        text = read_text(path)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, too large
        raise ProbeEventError(f"--event {path}: cannot read the file: {exc}") from None
    whole = parse_line(text.strip().encode("utf-8"))
    if isinstance(whole, dict):
        return [whole]
    events: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parsed = parse_line(line.encode("utf-8"))
        if isinstance(parsed, DeadLetter):
            raise ProbeEventError(
                f"--event {path}: line {number} is not an event the job accepts: "
                f"{parsed.reason}: {parsed.error}"
            )
        events.append(parsed)
    if not events:
        if text.strip():
            assert isinstance(whole, DeadLetter)
            raise ProbeEventError(f"--event {path}: {whole.reason}: {whole.error}")
        raise ProbeEventError(f"--event {path}: the file holds no event")
    return events


def probe_config(
    config: DeliveryConfig, event: dict[str, Any] | Sequence[dict[str, Any]] | None = None
) -> ProbeReport:
    """Probe every connector of a validated config; see the module docstring.

    Args:
        config: a config that passed validation.
        event: the events to probe with (one, or several); None: :data:`PROBE_EVENT`,
            fitted to each connector's route.
    """
    report = ProbeReport()
    compiled = compile_connectors(config)
    pairs = list(zip(config.connectors, compiled, strict=True))
    wheres = [f"connectors[{i}](id={c.id})" for i, c in enumerate(config.connectors)]
    if event is None:
        events = [PROBE_EVENT]
        reached = [_fit_or_note(c, r, w, report) for (c, r), w in zip(pairs, wheres, strict=True)]
    else:
        events = [event] if isinstance(event, dict) else list(event)
        # As Route does: catch-alls (route.unmatched) get only what no other connector took.
        kinds = [e["event"]["type"] for e in events]
        hits, _ = route_events([r.route for _, r in pairs], events, kinds)
        reached = [[events[i] for i in mine] for mine in hits]
        _unmatched_notes(events, pairs, reached, wheres, report)
    for (connector, rules), where, probes in zip(pairs, wheres, reached, strict=True):
        check = CONFIG_CHECKS.get(connector.type)
        found = check(rules.deliver) if check is not None else None
        if found is not None:
            report.problems.append(f"{where}: {found}")
        if connector.type == "bigquery":
            schema = rules.deliver.schema
            for found in bigquery.check_template(effective_template(connector), schema):
                report.add_problem(f"{where}: {found}")
        items: list[Packaged] = []
        for probe in probes:
            made, failed = package(rules, probe)
            if failed:
                report.add_problem(f"{where}: {failed}")
                continue
            items.extend(made)  # a package.function may make several records, or none
            for item in made:
                for found in (_record_problem(rules, item), _time_problem(rules, item, probe)):
                    if found is not None:
                        report.add_problem(f"{where}: {found}")
        if config.retry_on_pubsub:
            # Sized with a typical event: the median of those that reach it, else the
            # first probe event (routing does not change how big a record is).
            sized = items or package(rules, events[0])[0]
            if sized:
                typical = sorted(sized, key=_retry_item_bytes)[(len(sized) - 1) // 2]
                found = _retry_size_problem(rules, typical, config)
                if found is not None:
                    report.add_problem(f"{where}: {found}")
    return report


def _fit_or_note(
    connector: Connector, rules: CompiledConnector, where: str, report: ProbeReport
) -> list[dict[str, Any]]:
    """The bundled probe fitted to a connector's route, or a note saying it cannot be."""
    fitted = fit_to_route(PROBE_EVENT, connector, rules)
    if fitted is not None:
        return [fitted]
    why = rules.route.explain(_fitted_type(PROBE_EVENT, rules))
    report.notes.append(
        f"{where}: the bundled probe event cannot be made to route here ({why}), so its "
        "records were not checked. Give --event FILE with an event it receives."
    )
    return []


def _unmatched_notes(
    events: list[dict[str, Any]],
    pairs: list[tuple[Connector, CompiledConnector]],
    reached: list[list[dict[str, Any]]],
    wheres: list[str],
    report: ProbeReport,
) -> None:
    """Notes for user events that route nowhere, and connectors that none of them reach."""
    routed = {id(e) for probes in reached for e in probes}
    for probe in events:
        if id(probe) not in routed:
            why = explain_routes([(c.id, r.route) for c, r in pairs], probe)
            reasons = "; ".join(f"{c.id}: {r}" for (c, _), r in zip(pairs, why, strict=True))
            report.notes.append(
                f"event {_show(probe['event_id'])} routes to no connector (counted as "
                f"unmatched): {reasons}"
            )
    if routed:
        for where, probes in zip(wheres, reached, strict=True):
            if not probes:
                report.notes.append(
                    f"{where}: no probe event routes here, so its records were not checked"
                )


def _show(event_id: str) -> str:
    """An event id for a message: quoted, cut past 40 characters (ids may be long)."""
    if len(event_id) <= 40:
        return repr(event_id)
    return f"{event_id[:40]!r}... ({len(event_id):,} characters)"


# -- fitting the bundled probe to a route -------------------------------------------------------


def _fitted_type(event: dict[str, Any], rules: CompiledConnector) -> dict[str, Any]:
    """``event`` with an event type the route takes (unchanged when it takes this one)."""
    kind = event["event"]["type"]
    types = rules.route.types
    if types is not None:
        if kind in types or not types:
            return event
        kind = sorted(types)[0]
    elif kind in rules.route.exclude_events:
        free = [t for t in PROBE_TYPES if t not in rules.route.exclude_events]
        kind = free[0] if free else "probe_event"
    else:
        return event
    return set_path(event, ("event", "type"), kind)


def _satisfy(event: dict[str, Any], path: tuple[str, ...], op: str, value: Any) -> dict[str, Any]:
    """``event`` changed so that one route condition may hold (regex: unchanged)."""
    if op in ("eq", "gte", "lte"):
        return set_path(event, path, value)
    if op == "in" and value:
        return set_path(event, path, value[0])
    if op in ("gt", "lt"):
        return set_path(event, path, value + 1 if op == "gt" else value - 1)
    if op == "exists" and value:
        return event if get_path(event, path) is not MISSING else set_path(event, path, "probe")
    if op in ("ne", "not_in") or op == "exists":
        return pop_path(event, path)[0]  # a missing field passes ne, not_in, exists: false
    return event


def fit_to_route(
    event: dict[str, Any], connector: Connector, rules: CompiledConnector
) -> dict[str, Any] | None:
    """A copy of ``event`` that routes to this connector, or None when none can be made.

    The event itself when it routes there already; else one of the route's event types,
    values meeting its conditions (``eq``, ``in``, ``exists``, ``ne``, ``not_in`` and the
    numeric ops; a ``regex`` is left as it is) and a session inside its sample.
    """
    if rules.route.matches(event):
        return event
    fitted = _fitted_type(copy.deepcopy(event), rules)
    for condition in connector.route.when:
        if not isinstance(condition, Condition):
            continue  # an any/all/not group is left as it is, like a regex
        if not rules.route.matches(fitted):
            path = split_path(condition.field)
            fitted = _satisfy(fitted, path, condition.op, condition.value)
    if rules.route.matches(fitted):
        return fitted
    if 0.0 < rules.route.sample_sessions < 1.0:
        for n in range(_SESSION_TRIES):
            fitted = dict(fitted, session_id=f"probe-session-{n}")
            if rules.route.matches(fitted):
                return fitted
    return None


# -- packaging as the Package stage does ---------------------------------------------------------


def package(rules: CompiledConnector, event: dict[str, Any]) -> tuple[list[Packaged], str]:
    """The :class:`Packaged` items the Package stage makes of ``event``, or why it fails.

    One item, or with a ``package.function`` what it made (none: dropped, not a problem).
    """
    try:
        records = rules.packager.outputs(rules.filter.apply(event))
        data = [dumps(r) if rules.record_json else None for r in records]
    except Exception as exc:  # the Package stage dead-letters any exception the same way
        reason = exc.reason if isinstance(exc, PackageError) else "package_failed"
        return [], (
            f"packaging event {_show(event['event_id'])} fails ({type(exc).__name__}: {exc}), so "
            f"every such event would be dead-lettered (stage package, reason {reason}). "
            "Fix: correct package.values, package.rename, the template or package.function."
        )
    body = event["event"]
    when = event_time_ms(event)
    return [
        Packaged(event["event_id"], when, body["type"], record, event, line)
        for record, line in zip(records, data, strict=True)
    ], ""


# -- what each destination checks of a record (to move into each connector's Sink) ---------------

RecordCheck = Callable[[Packaged, Any, str], "str | None"]
"""``(item, deliver config, connector id) -> why the destination refuses it and the fix``."""


def _new_relic_record(item: Packaged, deliver: Any, connector_id: str) -> str | None:
    flat, why = new_relic.to_event(record_of(item))
    if flat is None:
        if "eventType" in (why or ""):
            fix = (
                "package with New Relic's template, package: {template: new_relic} "
                "(templates/new_relic.yaml sets eventType: VideoPlayerEvent), or set "
                "eventType in your template, e.g. eventType: {const: VideoPlayerEvent}"
            )
        else:
            fix = (
                "send fewer fields: deny groups in filter (metadata/fluxdata allow or deny "
                "lists) or pick fields in the template"
            )
        return f"New Relic: {why}. Fix: {fix}."
    size = len(dumps(flat))
    if size > new_relic.MAX_UNCOMPRESSED_BYTES:
        return (
            f"New Relic: an event of {size:,} bytes cannot fit its 1 MB request limit. "
            "Fix: send fewer or smaller fields (filter, template)."
        )
    return None


def _datadog_record(item: Packaged, deliver: Any, connector_id: str) -> str | None:
    size = len(record_json(item))
    if size > datadog_logs.MAX_ENTRY_BYTES:
        return (
            f"Datadog: a log of {size:,} bytes, over Datadog's 1 MB per log. "
            "Fix: send fewer or smaller fields (filter, template)."
        )
    return None


def _splunk_record(item: Packaged, deliver: Any, connector_id: str) -> str | None:
    record = record_of(item)
    if record in ({}, None, ""):
        return (
            "Splunk HEC: the HEC event's `event` would be empty, which HEC refuses (400 "
            "'Event field cannot be blank'). Fix: make the template give each record at "
            "least one field (package: {template: splunk_hec})."
        )
    envelope: dict[str, Any] = {} if item.time_ms is None else {"time": item.time_ms / 1000}
    for name in ("host", "source", "sourcetype", "index"):
        value = getattr(deliver, name)
        if value is not None:
            envelope[name] = value
    envelope["event"] = record
    size = len(dumps(envelope))
    if size > deliver.max_request_bytes:
        return (
            f"Splunk HEC: an HEC event of {size:,} bytes, over max_request_bytes "
            f"({deliver.max_request_bytes:,}), is never sent. Fix: raise max_request_bytes "
            "(up to the server's max_content_length) or send fewer fields."
        )
    return None


def is_data_stream(index: str) -> bool:
    """True for names Elasticsearch's built-in templates make data streams (``logs-*-*``...)."""
    return _DATA_STREAM.match(index) is not None


def _elasticsearch_record(item: Packaged, deliver: Any, connector_id: str) -> str | None:
    record = record_of(item)
    reserved = sorted(k for k in record if k in _ES_METADATA_FIELDS)
    if reserved:
        return (
            f"Elasticsearch: the document holds {', '.join(reserved)}, a metadata field "
            "that Elasticsearch refuses inside a document (400 mapper_parsing_exception). "
            "Fix: rename it in the template (the connector already sends _id = event_id)."
        )
    id_bytes = len(item.event_id.encode("utf-8", "surrogatepass"))
    if id_bytes > ES_MAX_ID_BYTES:
        return (
            f"Elasticsearch: the _id (the event_id) has {id_bytes:,} bytes, over "
            f"Elasticsearch's {ES_MAX_ID_BYTES} (400). Fix: send shorter event ids."
        )
    if is_data_stream(deliver.index) and "@timestamp" not in record:
        return (
            f"Elasticsearch: data stream {deliver.index!r} refuses a document without "
            "@timestamp (400). Fix: package with templates/elasticsearch.yaml "
            "(package: {template: elasticsearch}), or add "
            "'@timestamp': {path: event.timestamp, format: iso8601} to your template."
        )
    size = len(record_json(item)) + len(item.event_id) + len(deliver.index) + 40
    if size > deliver.max_request_bytes:
        return (
            f"Elasticsearch: a document of about {size:,} bytes with its action line, over "
            f"max_request_bytes ({deliver.max_request_bytes:,}), is never sent. "
            "Fix: raise max_request_bytes or send fewer fields."
        )
    return None


def _pubsub_record(item: Packaged, deliver: Any, connector_id: str) -> str | None:
    attributes = {
        "event_type": item.event_type,
        "connector": connector_id,
        "event_id": item.event_id,
    }
    for name, value in attributes.items():
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > PUBSUB_ATTRIBUTE_BYTES:
            source = "the connector id" if name == "connector" else name
            return (
                f"Pub/Sub: the message attribute {name} has {size:,} bytes, over "
                f"Pub/Sub's {PUBSUB_ATTRIBUTE_BYTES:,} bytes per attribute value "
                f"(INVALID_ARGUMENT, not retried). Fix: keep {source} under "
                f"{PUBSUB_ATTRIBUTE_BYTES:,} bytes."
            )
    size = len(record_json(item))
    if size > pubsub.MAX_MESSAGE_BYTES:
        return (
            f"Pub/Sub: a message of {size:,} bytes, over Pub/Sub's 10 MB. "
            "Fix: send fewer or smaller fields."
        )
    return None


def _http_record(item: Packaged, deliver: Any, connector_id: str) -> str | None:
    size = len(record_json(item)) + 2
    if size > deliver.max_request_bytes:
        return (
            f"the webhook: a record of {size:,} bytes, over max_request_bytes "
            f"({deliver.max_request_bytes:,}), is never sent. Fix: raise max_request_bytes "
            "or send fewer fields."
        )
    return None


RECORD_CHECKS: dict[str, RecordCheck] = {
    "new_relic": _new_relic_record,
    "datadog_logs": _datadog_record,
    "splunk_hec": _splunk_record,
    "elasticsearch": _elasticsearch_record,
    "pubsub": _pubsub_record,
    "http": _http_record,
    "bigquery": bigquery.check_record,
}
"""What each destination refuses of one packaged record, by connector type."""


def _record_problem(rules: CompiledConnector, item: Packaged) -> str | None:
    check = RECORD_CHECKS.get(rules.type)
    why = check(item, rules.deliver, rules.id) if check is not None else None
    if why is None:
        return None
    return f"every event like {_show(item.event_id)} would be dead-lettered (not retryable): {why}"


# -- what each connector's config gets wrong whatever the events (to move into its schema) ------


def _doubled(endpoint: str, path: str, min_segments: int = 2) -> str | None:
    """The base URL ``endpoint`` should be when it already holds (a start of) ``path``.

    ``path`` is what the connector appends. The endpoint's own path is refused when it
    ends with the first ``min_segments`` or more segments of ``path``, or holds all of
    it followed by more (``/services/collector/event/1.0``).
    """
    parts = urlsplit(endpoint)
    own = parts.path.rstrip("/")
    segments = [s for s in path.split("/") if s]
    starts = [
        "/" + "/".join(segments[:n])
        for n in range(min(min_segments, len(segments)), len(segments) + 1)
    ]
    at = next((len(own) - len(s) for s in reversed(starts) if own.endswith(s)), -1)
    if at < 0:
        at = own.find(starts[-1] + "/")
    if at < 0:
        return None
    return urlunsplit((parts.scheme, parts.netloc, own[:at], "", ""))


def _endpoint_problem(endpoint: str, path: str, destination: str) -> str | None:
    base = _doubled(endpoint, path)
    if base is None:
        return None
    return (
        f"the connector appends {path} to the endpoint, so it would post to "
        f"{endpoint}{path}, a path {destination} does not serve: every batch would be "
        f"refused (a 4xx is not retried) and dead-lettered. Fix: endpoint: {base} "
        f"(without {path}; the connector adds it)."
    )


def _datadog_config(deliver: Any) -> str | None:
    return _endpoint_problem(deliver.endpoint, datadog_logs.PATH, "Datadog")


def _splunk_config(deliver: Any) -> str | None:
    return _endpoint_problem(deliver.endpoint, splunk_hec.PATH, "Splunk HEC")


def _new_relic_config(deliver: Any) -> str | None:
    path = f"/v1/accounts/{deliver.account_id}/events"
    return _endpoint_problem(deliver.endpoint, path, "New Relic")


def _elasticsearch_config(deliver: Any) -> str | None:
    found = _endpoint_problem(deliver.endpoint, "/_bulk", "Elasticsearch")
    if found is not None:
        return found
    if is_data_stream(deliver.index) and deliver.op_type != "create":
        return (
            f"index {deliver.index!r} is a data stream (Elasticsearch's built-in index "
            "templates make every logs-*-*, metrics-*-*, traces-*-* and synthetics-*-* "
            f"name one), which takes only op_type create: with op_type {deliver.op_type} "
            "every document would be refused (400) and dead-lettered. Fix: op_type: create "
            "(an event already indexed then answers 409 and counts as delivered)."
        )
    return None


CONFIG_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "datadog_logs": _datadog_config,
    "splunk_hec": _splunk_config,
    "new_relic": _new_relic_config,
    "elasticsearch": _elasticsearch_config,
}
"""What makes a connector's ``deliver`` section fail every batch, by connector type."""


# -- event time ----------------------------------------------------------------------------------


def _timestamp_text(event: dict[str, Any]) -> str:
    body = event.get("event")
    if not isinstance(body, dict) or "timestamp" not in body:
        return "no event.timestamp"
    return f"event.timestamp {body['timestamp']!r}"


def _number(raw: Any) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


def _as_ms(value: float) -> tuple[str, int] | None:
    """(the unit ``value`` looks like, it in epoch ms) for a plausible time, else None."""
    for unit, scale in (("milliseconds", 1000), ("seconds", 1), ("microseconds", 1_000_000)):
        if _SECONDS[0] * scale <= value < _SECONDS[1] * scale:
            return unit, int(value * 1000 // scale)
    return None


def _time_fix(event: dict[str, Any]) -> str:
    """Why the event's time is wrong, when it can be told, and the fix."""
    raw = event["event"].get("timestamp")
    digits = isinstance(raw, str) and raw.strip().lstrip("-").isdigit()
    guess = _as_ms(int(raw) if digits else raw) if digits or _number(raw) else None
    if guess is not None:
        unit, ms = guess
        iso = iso_from_ms(ms)
        fix = f"Fix: send epoch milliseconds as a JSON number ({ms}) or ISO-8601 ({iso!r})"
        if digits:
            return (
                "A string of digits is not a timestamp the job reads (a number is epoch "
                f"milliseconds, a string ISO-8601); {raw!r} looks like epoch {unit}. "
                f"{fix} from the producer."
            )
        return (
            f"{raw!r} looks like epoch {unit}, and the job reads numbers as epoch "
            f"milliseconds. {fix} from the producer."
        )
    return (
        "Fix: send event.timestamp as epoch milliseconds (a JSON number, e.g. "
        "1764136800123) or ISO-8601 ('2025-11-26T06:00:00.123Z') from the producer."
    )


def _shown_time(time_ms: int, fmt: str = "iso8601") -> str:
    """A time as a message shows it; an out-of-range one as its number."""
    try:
        return repr(format_time(time_ms, fmt))
    except (OverflowError, OSError, ValueError):
        return f"{time_ms} ms"


def _time_problem(rules: CompiledConnector, item: Packaged, event: dict[str, Any]) -> str | None:
    """Where the connector uses an event time that is missing, unreadable or implausible.

    Implausible: before 2000 (epoch seconds read as milliseconds land in 1970) or from
    2100 on (microseconds). A prefix that cannot render dead-letters the event; the
    other uses (a time prefix, Splunk's ``time``, a template's time format) file it
    silently at the wrong time.
    """
    prefix_text = getattr(rules.deliver, "prefix", "") or ""
    prefix = PrefixTemplate.compile(prefix_text)
    time_ms = item.time_ms
    uses: list[str] = []
    if prefix.fields & set(TIME_FIELDS):
        try:
            rendered = prefix.render(rules.id, item.event_type, time_ms)
        except PrefixError:
            return (
                f"event {_show(item.event_id)} has {_timestamp_text(event)}, which prefix "
                f"{prefix_text!r} cannot render, so every such event would be dead-lettered "
                f"(reason prefix_unrenderable). {_time_fix(event)}"
            )
        uses.append(f"files it under prefix {rendered!r}")
    if time_ms is None or PLAUSIBLE_SINCE_MS <= time_ms < PLAUSIBLE_UNTIL_MS:
        return None
    if rules.type == "splunk_hec":
        uses.append(f"sends HEC time {time_ms / 1000}")
    template = rules.packager.template
    formats = sorted({f.fmt for f in template.fields if f.fmt}) if template is not None else []
    uses.extend(
        f"writes the template's {fmt} time as {_shown_time(time_ms, fmt)}" for fmt in formats
    )
    if not uses:
        return None
    when = _shown_time(time_ms)
    return (
        f"event {_show(item.event_id)} has {_timestamp_text(event)}, read as {when}: the "
        f"connector {' and '.join(uses)}, so such events would be silently filed at that "
        f"time. {_time_fix(event)}"
    )


# -- retry records on a Pub/Sub retry topic ------------------------------------------------------


def _retry_record(rules: CompiledConnector, items: list[Packaged]) -> RetryRecord:
    return RetryRecord(
        connector=rules.id,
        prefix=getattr(rules.deliver, "prefix", "") or "",
        items=items,
        name=f"{rules.id}/{'0' * 20}-{'0' * 20}.json",
        attempts=10,
        delayed_attempts=6,
        first_failed_at="2025-11-26T06:00:00.123Z",
        last_error="",
        last_status=503,
        not_before_ms=1764136800123,
    )


def _retry_item_bytes(item: Packaged) -> int:
    """Bytes one event adds to a retry record: its stored item and a separating comma."""
    record = RetryRecord("c", "", [item], "n", 0, 0, "", "", None, 0)
    return len(orjson.dumps(record.to_json_dict()["items"][0])) + 1


def _retry_size_problem(
    rules: CompiledConnector, item: Packaged, config: DeliveryConfig
) -> str | None:
    """A connector whose full batch makes a retry record over Pub/Sub's 10 MB."""
    header = len(orjson.dumps(_retry_record(rules, []).to_json_dict())) + RETRY_RECORD_SLACK
    per_event = _retry_item_bytes(item)
    batch = rules.deliver.batch.max_events
    size = header + batch * per_event
    if size <= pubsub.MAX_MESSAGE_BYTES:
        return None
    fits = max((pubsub.MAX_MESSAGE_BYTES - header) // per_event, 1)
    return (
        f"a batch of {batch:,} events makes a retry record of about {size / 1e6:.1f} MB "
        f"(~{per_event:,} bytes per event: its packaged record and the original event), "
        f"over Pub/Sub's 10 MB message limit: when the destination fails, the record cannot "
        f"be published to retry_location {config.retry_location}, so the batch can neither wait "
        f"for its retry nor reach the dead letter. Fix: batch.max_events: {fits} or less "
        "for this connector, or a retry_location on storage (gs://bucket/retry/)."
    )
