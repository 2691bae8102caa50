"""The route language: ``when`` groups (any/all/not), string/list ops, and their errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.dryrun import explain
from tests.conftest import make_event
from transforms.config import ConfigError, compile_connectors, parse_config
from transforms.rules.events import get_path, split_path
from transforms.rules.route import (
    MAX_DEPTH,
    OPS,
    RouteRule,
    compile_condition,
    compile_when,
    explain_routes,
    route_events,
)

US = {"field": "metadata.geo.country_code", "op": "in", "value": ["US", "CA"]}


def _event(country: Any = None, errors: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": {"type": "heartbeat"}, "metadata": {}, "fluxdata": {}}
    if country is not None:
        event["metadata"]["geo"] = {"country_code": country}
    if errors is not None:
        event["fluxdata"]["num_errors"] = errors
    return event


def test_compile_when_takes_a_condition_or_nested_groups() -> None:
    errors = {"field": "fluxdata.num_errors", "op": "gt", "value": 0}
    spec = {"any": [US, {"all": [errors, {"not": US}]}]}
    when = compile_when(spec)
    assert when(_event("US")) is True
    assert when(_event("FR", 2)) is True
    assert when(_event("FR", 0)) is False
    assert compile_when({"not": {"not": US}})(_event("CA")) is True


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"any": []}, "any"),
        ({"all": []}, "all"),
        ({"any": [US], "all": [US]}, "any, all"),
        ({"or": [US]}, "or"),
        ({"any": [{"field": "f", "op": "nope", "value": 1}]}, "any[0]"),
        ({"not": [US]}, "not"),
        ({"all": [US, {"field": "f", "op": "eq", "value": 1, "x": 2}]}, "all[1]"),
        ("US", "when"),
    ],
)
def test_compile_when_names_the_bad_part(spec: Any, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        compile_when(spec)


# --- semantics, as properties over random conditions and events --------------------------

FIELDS = ("a", "x.b")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1, 2),
    st.sampled_from([1.0, 0.5]),
    st.sampled_from(["", "US", "iOS", "OS", "i", "1", "True"]),
)
FIELD_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.just({"k": 1}))


def _condition_value(op: str) -> st.SearchStrategy[Any]:
    if op in ("in", "not_in"):
        return st.lists(SCALARS, max_size=3)
    if op == "exists":
        return st.booleans()
    if op in ("gt", "gte", "lt", "lte"):
        return st.integers(-1, 2) | st.sampled_from([0.5, 1.0])
    if op in ("regex", "starts_with", "ends_with"):
        return st.sampled_from(["", "i", "OS", "U", "^i"])
    return SCALARS  # eq, ne, contains


CONDITIONS = st.sampled_from(OPS).flatmap(
    lambda op: st.builds(
        lambda f, v: {"field": f, "op": op, "value": v},
        st.sampled_from(FIELDS),
        _condition_value(op),
    )
)
ITEMS = st.recursive(
    CONDITIONS,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=8,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": "e", "event": {"type": "heartbeat"}}
    if draw(st.booleans()):
        event["a"] = draw(FIELD_VALUES)
    if draw(st.booleans()):
        event["x"] = {"b": draw(FIELD_VALUES)} if draw(st.booleans()) else draw(SCALARS)
    return event


PROPS = settings(max_examples=300, deadline=None)


@PROPS
@given(item=ITEMS, event=events())
def test_double_negation_and_singleton_groups_are_the_item(
    item: dict[str, Any], event: dict[str, Any]
) -> None:
    want = compile_when(item)(event)
    assert compile_when({"not": {"not": item}})(event) is want
    assert compile_when({"not": item})(event) is (not want)
    assert compile_when({"any": [item]})(event) is want
    assert compile_when({"all": [item]})(event) is want


@PROPS
@given(items=st.lists(ITEMS, min_size=1, max_size=4), event=events())
def test_any_and_all_are_or_and_and_and_de_morgan_holds(
    items: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    each = [compile_when(i)(event) for i in items]
    assert compile_when({"all": items})(event) is all(each)
    assert compile_when({"any": items})(event) is any(each)
    negated = [{"not": i} for i in items]
    assert compile_when({"not": {"any": items}})(event) is compile_when({"all": negated})(event)
    assert compile_when({"not": {"all": items}})(event) is compile_when({"any": negated})(event)


@PROPS
@given(item=CONDITIONS)
def test_a_missing_field_inside_not_follows_the_op_rule_then_is_negated(
    item: dict[str, Any],
) -> None:
    missing: dict[str, Any] = {"event_id": "e", "event": {"type": "heartbeat"}}
    alone = compile_condition(item["field"], item["op"], item["value"])(missing)
    # Today's rule: false on a missing field, except ne, not_in and exists: false.
    assert alone is (
        item["op"] in ("ne", "not_in") or item == {**item, "op": "exists", "value": False}
    )
    assert compile_when({"not": item})(missing) is (not alone)


def test_a_missing_field_inside_not_by_example() -> None:
    free = {"field": "metadata.user.subscription", "op": "eq", "value": "free"}
    assert compile_when({"not": free})({"metadata": {}}) is True
    assert compile_when({"not": {**free, "op": "ne"}})({"metadata": {}}) is False
    has = {"field": "metadata.user.subscription", "op": "exists", "value": True}
    assert compile_when({"not": has})({"metadata": {}}) is True


@PROPS
@given(when=st.lists(ITEMS, max_size=3), event=events())
def test_rule_matches_select_and_explain_agree_with_groups(
    when: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    rule = RouteRule.compile(when=when)
    want = all(compile_when(i)(event) for i in when)
    assert rule.matches(event) is want
    assert (rule.explain(event) is None) is want
    assert rule.select([event], ["heartbeat"]) == ([0] if want else [])


def test_a_flat_condition_costs_no_extra_call() -> None:
    """A rule without groups keeps compile_condition's predicate itself: no wrapper."""
    rule = RouteRule.compile(when=[US])
    assert rule.predicates[0].__qualname__.startswith("compile_condition.")


# --- the new ops ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "got", "expected"),
    [
        ("contains", "OS", "iOS", True),
        ("contains", "os", "iOS", False),  # case matters
        ("contains", "", "", True),
        ("contains", "US", ["CA", "US"], True),  # list member
        ("contains", "U", ["CA", "US"], False),  # members are compared whole
        ("contains", 1, [True], False),  # a boolean is not the number 1
        ("contains", True, [1, True], True),
        ("contains", 1, [1.0], True),
        ("contains", None, [None], True),
        ("contains", 1, "1", False),  # no substring of a non-string value
        ("contains", "1", 1, False),
        ("contains", "a", {"a": 1}, False),  # an object is neither
        ("starts_with", "hls", "hls.js", True),
        ("starts_with", "js", "hls.js", False),
        ("starts_with", "1", 12, False),  # strings only
        ("starts_with", "a", ["a"], False),
        ("ends_with", ".js", "hls.js", True),
        ("ends_with", "hls", "hls.js", False),
        ("ends_with", "", "x", True),
        ("ends_with", "e", None, False),
    ],
)
def test_new_ops(op: str, value: Any, got: Any, expected: bool) -> None:
    assert compile_condition("f", op, value)({"f": got}) is expected
    assert compile_condition("f", op, value)({}) is False  # a missing field is false


@PROPS
@given(value=SCALARS, got=st.lists(SCALARS, max_size=4))
def test_list_contains_is_membership_with_eqs_equality(value: Any, got: list[Any]) -> None:
    eq = compile_condition("f", "eq", value)
    assert compile_condition("f", "contains", value)({"f": got}) is any(
        eq({"f": member}) for member in got
    )


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("starts_with", 1),
        ("ends_with", None),
        ("starts_with", ["a"]),
        ("contains", ["a"]),
        ("contains", {"a": 1}),
    ],
)
def test_new_ops_refuse_the_wrong_kind_of_value(op: str, value: Any) -> None:
    with pytest.raises(ValueError, match=op):
        compile_condition("f", op, value)


# --- hostile shapes -------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    item: dict[str, Any] = US
    for _ in range(depth):
        item = {"not": item}
    return item


def test_depth_limit() -> None:
    assert compile_when(_nested(MAX_DEPTH))(_event("US")) is True  # 32 nots: even
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        compile_when(_nested(MAX_DEPTH + 1))
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        compile_when(_nested(5000))  # no RecursionError


# --- unmatched: a catch-all receives exactly what no other connector took ------------------

TYPES = ("heartbeat", "error", "seek")
RULES = st.builds(
    lambda events, when, sample, unmatched: RouteRule.compile(
        events=events, when=when, sample_sessions=sample, unmatched=unmatched
    ),
    st.lists(st.sampled_from(TYPES), max_size=2),
    st.lists(ITEMS, max_size=2),
    st.sampled_from([1.0, 0.5]),
    st.booleans(),
)


@st.composite
def typed_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n in range(draw(st.integers(0, 8))):
        event = draw(events())
        event["event"] = {"type": draw(st.sampled_from(TYPES))}
        event["event_id"] = f"e{n}"
        event["session_id"] = f"s{draw(st.integers(0, 5))}"
        out.append(event)
    return out


@PROPS
@given(rules=st.lists(RULES, min_size=1, max_size=4), batch=typed_events())
def test_a_catch_all_gets_exactly_the_events_no_other_connector_took(
    rules: list[RouteRule], batch: list[dict[str, Any]]
) -> None:
    kinds = [e["event"]["type"] for e in batch]
    hits, unmatched = route_events(rules, batch, kinds)
    for i, event in enumerate(batch):
        taken = any(r.matches(event) for r in rules if not r.unmatched)
        for rule, mine in zip(rules, hits, strict=True):
            if rule.unmatched:
                assert (i in mine) is (not taken and rule.matches(event))
            else:
                assert (i in mine) is rule.matches(event)
    # Conservation: every event is routed somewhere or counted unmatched, exactly once.
    routed = set().union(*map(set, hits))
    assert unmatched == len(batch) - len(routed)
    assert all(mine == sorted(mine) for mine in hits)
    # dry-run's per-event answer is the same.
    named = [(f"c{j}", r) for j, r in enumerate(rules)]
    for i, event in enumerate(batch):
        reasons = explain_routes(named, event)
        assert [j for j, why in enumerate(reasons) if why is None] == [
            j for j, mine in enumerate(hits) if i in mine
        ]


def test_catch_all_by_example() -> None:
    errors = RouteRule.compile(events=["error"])
    rest = RouteRule.compile(exclude_events=["seek"], unmatched=True)
    batch = [_event() for _ in range(3)]
    for event, kind in zip(batch, ("error", "heartbeat", "seek"), strict=True):
        event["event"]["type"] = kind
    hits, unmatched = route_events([errors, rest], batch, ["error", "heartbeat", "seek"])
    assert hits == [[0], [1]] and unmatched == 1
    assert explain_routes([("errors", errors), ("rest", rest)], batch[0]) == [
        None,
        "taken by errors (unmatched: true receives only events no other connector takes)",
    ]


# --- explain names the failing condition, inside groups -------------------------------------


def test_explain_names_the_condition_inside_groups() -> None:
    subscription = {"field": "metadata.user.subscription", "op": "eq", "value": "free"}
    errors = {"field": "fluxdata.num_errors", "op": "gt", "value": 0}
    rule = RouteRule.compile(
        when=[
            {"field": "metadata.device.os", "op": "contains", "value": "OS"},
            {"any": [US, {"all": [errors, {"not": subscription}]}]},
        ]
    )
    event = _event("FR", 3)
    event["metadata"]["device"] = {"os": "iOS"}
    event["metadata"]["user"] = {"subscription": "free"}

    def reveal(field: str, e: dict[str, Any]) -> str:
        return repr(get_path(e, split_path(field)))

    assert rule.explain(event, reveal) == (
        "condition failed: when[1].any[0]: metadata.geo.country_code in ['US', 'CA'] was "
        "false (got 'FR'); when[1].any[1].all[1].not: metadata.user.subscription eq 'free' "
        "was true (got 'free')"
    )
    # Without reveal no event value is shown.
    assert "got" not in (rule.explain(event) or "")


# --- config: the models, and every error names its YAML path ------------------------------


def _config(route: str, second: str = "{}") -> str:
    return f"""
connectors:
  - id: ops
    type: file
    route: {route}
    deliver: {{path: /tmp/x, format: ndjson}}
  - id: rest
    type: file
    route: {second}
    deliver: {{path: /tmp/y, format: ndjson}}
dead_letter: {{path: /tmp/dl}}
"""


def test_the_issue_example_validates_and_routes() -> None:
    config = parse_config(
        _config(
            """
      events: [heartbeat, error]
      when:
        - {field: metadata.device.os, op: contains, value: "OS"}
        - any:
            - {field: metadata.geo.country_code, op: in, value: [US, CA]}
            - all:
                - {field: fluxdata.num_errors, op: gt, value: 0}
                - not: {field: metadata.user.subscription, op: eq, value: free}
      sample_sessions: 1.0""",
            "{unmatched: true}",
        )
    )
    ops, rest = compile_connectors(config)
    assert rest.route.unmatched and not ops.route.unmatched
    event = _event("FR", 1)
    event["metadata"]["device"] = {"os": "iOS"}
    assert ops.route.matches(event)
    event["metadata"]["user"] = {"subscription": "free"}
    assert not ops.route.matches(event)


@pytest.mark.parametrize(
    ("route", "second", "problem"),
    [
        (
            "{when: [{any: []}]}",
            "{}",
            "connectors[0](id=ops).route.when[0].any: an empty any group decides nothing. Fix:",
        ),
        (
            "{when: [{field: a, op: eq}, {all: []}]}",
            "{}",
            "connectors[0](id=ops).route.when[1].all: an empty all group",
        ),
        (
            "{when: [{any: [{field: a, op: eq}], not: {field: a, op: eq}}]}",
            "{}",
            "connectors[0](id=ops).route.when[0]: a group has exactly one key (any, all or not), "
            "got any, not. Fix:",
        ),
        (
            "{when: [{not: {any: [{field: a, op: begins, value: x}]}}]}",
            "{}",
            "connectors[0](id=ops).route.when[0].not.any[0].op: Input should be",
        ),
        (
            "{when: [{all: [{field: a, op: eq, valeu: 1}]}]}",
            "{}",
            "connectors[0](id=ops).route.when[0].all[0].valeu: unknown key. Fix: remove it, or "
            "did you mean 'value'?",
        ),
        (
            "{when: [{anyy: [{field: a, op: eq}]}]}",
            "{}",
            "connectors[0](id=ops).route.when[0].anyy: unknown key. Fix: remove it, or did you "
            "mean 'any'?",
        ),
        (
            "{when: [{all: [{field: a, op: ends_with, value: 3}]}]}",
            "{}",
            "connectors[0](id=ops).route.when[0].all[0]: op 'ends_with' needs a string value",
        ),
        (
            "{when: [US]}",
            "{}",
            "connectors[0](id=ops).route.when[0]: expected a condition {field, op, value} or a "
            "group",
        ),
        (
            "{when: [" + "{not: " * 33 + "{field: a, op: eq}" + "}" * 33 + "]}",
            "{}",
            "connectors[0](id=ops).route: when[0]: groups nest deeper than 32 levels. Fix:",
        ),
        (
            "{when: [" + "{not: " * 3000 + "{field: a, op: eq}" + "}" * 3000 + "]}",
            "{}",
            "the YAML nests too deeply to read",
        ),
        (
            "{unmatched: true}",
            "{unmatched: true, events: [error]}",
            "connectors[0](id=ops).route.unmatched, connectors[1](id=rest).route.unmatched: "
            "every connector is a catch-all",
        ),
        ("{unmatched: yes please}", "{}", "connectors[0](id=ops).route.unmatched: Input should"),
    ],
)
def test_config_errors_name_the_yaml_path_and_a_fix(route: str, second: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(route, second))
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_groups_at_the_depth_limit_validate() -> None:
    deep = (
        "{when: ["
        + "{not: " * MAX_DEPTH
        + "{field: a, op: exists, value: true}"
        + "}" * MAX_DEPTH
        + "]}"
    )
    (ops, _) = compile_connectors(parse_config(_config(deep)))
    assert ops.route.matches({"event_id": "e", "event": {"type": "x"}, "a": 2})


# --- dry-run --------------------------------------------------------------------------------


def test_dry_run_names_the_failed_condition_and_never_shows_a_hidden_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROUTE_LANG_KEY", "not-a-real-key")
    config = parse_config(
        """
connectors:
  - id: geo
    type: file
    route:
      when:
        - any:
            - {field: metadata.geo.country_code, op: in, value: [US, CA]}
            - {field: metadata.user.id, op: starts_with, value: vip-}
            - {field: metadata.network.ip, op: eq, value: 10.0.0.1}
    filter:
      metadata: {deny: [user]}
      hash: {paths: [metadata.network.ip], key: "${env:ROUTE_LANG_KEY}"}
    deliver: {path: /tmp/x, format: ndjson}
  - id: rest
    type: file
    route: {unmatched: true, events: [seek]}
    deliver: {path: /tmp/y, format: ndjson}
dead_letter: {path: /tmp/dl}
"""
    )
    event = make_event(
        metadata={
            "geo": {"country_code": "FR"},
            "user": {"id": "secret-user"},
            "network": {"ip": "203.0.113.7"},
        }
    )
    geo, rest = explain(event, config)
    assert geo["reason"] == (
        "condition failed: when[0].any[0]: metadata.geo.country_code in ['US', 'CA'] was false "
        "(got 'FR'); when[0].any[1]: metadata.user.id starts_with 'vip-' was false (got a value "
        "this connector's filter does not pass); when[0].any[2]: metadata.network.ip eq "
        "'10.0.0.1' was false (got a value this connector's filter does not pass)"
    )
    shown = str(explain(event, config))
    assert "secret-user" not in shown and "203.0.113.7" not in shown
    assert "not-a-real-key" not in shown
    assert rest == {
        "connector": "rest",
        "type": "file",
        "routed": False,
        "reason": "event type 'heartbeat' is not in events",
    }
    event["event"]["type"] = "seek"
    assert explain(event, config)[1]["routed"] is True
