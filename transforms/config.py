"""The delivery config: one YAML file, validated completely before anything runs.

    config = load_config("examples/delivery.yaml")   # raises ConfigError listing every problem
    for connector in config.connectors: ...

Each field is documented where it is declared (the ``description`` of its ``Field``).
Unknown keys are errors (with a "did you mean" hint), as are wrong types, bad regexes,
unknown templates and unrenderable prefixes. Secrets are given only by reference
(``${env:NAME}``, ``${gcp-secret:projects/P/secrets/S/versions/V}``,
``${aws-secret:NAME}``) and the parsed config keeps the references, never the values
(:class:`~transforms.connectors.secrets.SecretRef`): the job graph can be pickled,
staged and shown without a secret in it, and each worker reads the values in its
``setup``. A reference to an unset variable is an error.

The file may be local or on any filesystem Beam knows (``gs://``, ``s3://``).
"""

from __future__ import annotations

import difflib
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from transforms.connectors import CONNECTORS
from transforms.connectors._api import SECRET_PART
from transforms.connectors.base import Batch, ObjectLayout, StrictModel
from transforms.connectors.secrets import REFERENCE, SecretRef, check_reference
from transforms.rules.filter import GROUPS, FieldFilter, normalize_pattern
from transforms.rules.package import (
    FunctionReferenceError,
    Packager,
    TemplateError,
    load_function,
)
from transforms.rules.route import GROUPS as GROUP_KEYS
from transforms.rules.route import MAX_DEPTH, OPS, Op, RouteRule, compile_condition

TYPE_NAMES: tuple[str, ...] = tuple(CONNECTORS)
"""Every connector type name the config accepts: the registry's (:mod:`transforms.connectors`
discovers each connector module), e.g. ``('file', 's3', 'gcs', ...)``."""

_DELIVER_REPORTED = "deliver section invalid (details reported separately)"
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``${env:NAME}`` reference (group 1: the name) anywhere in a text."""


class ConfigError(Exception):
    """A config that cannot be used. ``problems`` lists every problem, one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(
            f"{source}: {len(problems)} problem(s) in the delivery config:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


_Strict = StrictModel


class Condition(_Strict):
    """One routing condition; see :mod:`transforms.rules.route` for the semantics.

    ``{field: metadata.device.os, op: contains, value: OS}`` holds for ``"iOS"``.
    """

    field: str = Field(
        description="Dotted path from the event root, e.g. metadata.geo.country_code."
    )
    op: Op = Field(description="Comparison: " + ", ".join(OPS) + ".")
    value: Any = Field(default=None, description="What to compare with (a list for in/not_in).")

    @model_validator(mode="after")
    def _compiles(self) -> Condition:
        compile_condition(self.field, self.op, self.value)
        return self


class _Group(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > 1:
            raise ValueError(
                f"a group has exactly one key (any, all or not), got {', '.join(map(str, data))}."
                " Fix: nest them, e.g. {all: [{any: [...]}, {not: ...}]}"
            )
        return data


def _not_empty(kind: str, items: list[Any]) -> list[Any]:
    if not items:
        raise ValueError(
            f"an empty {kind} group decides nothing. Fix: list at least one condition "
            "or group, or remove the group."
        )
    return items


class AnyGroup(_Group):
    """Holds when at least one item holds: ``{any: [{field: a, op: eq, value: 1}, ...]}``."""

    any: list[WhenItem] = Field(description="Conditions or groups; one must hold.")

    @field_validator("any")
    @classmethod
    def _items(cls, items: list[Any]) -> list[Any]:
        return _not_empty("any", items)


class AllGroup(_Group):
    """Holds when every item holds: ``{all: [{field: a, op: eq, value: 1}, ...]}``."""

    all: list[WhenItem] = Field(description="Conditions or groups; every one must hold.")

    @field_validator("all")
    @classmethod
    def _items(cls, items: list[Any]) -> list[Any]:
        return _not_empty("all", items)


class NotGroup(_Group):
    """Holds when its item does not: ``{not: {field: a, op: eq, value: free}}``.

    A missing field follows the op's own rule first (``eq`` on it is false), then is
    negated (so the ``not`` holds).
    """

    not_: WhenItem = Field(alias="not", description="A condition or group that must not hold.")

    model_config = ConfigDict(populate_by_name=False, serialize_by_alias=True)


_WHEN_TAGS: dict[str, type[BaseModel]] = {}
"""Union tags that pydantic puts in error locations -> the model (skipped in YAML paths)."""


def _when_kind(data: Any) -> str:
    """Which model validates a ``when`` item: a group if it has a group key."""
    keys = (
        data.keys()
        if isinstance(data, dict)
        else data.model_fields_set
        if isinstance(data, BaseModel)
        else ()
    )
    if isinstance(data, NotGroup) or "not" in keys or "not_" in keys:
        return "when:not"
    if "any" in keys:
        return "when:any"
    if "all" in keys:
        return "when:all"
    return "when:condition"


WhenItem = Annotated[
    Annotated[Condition, Tag("when:condition")]
    | Annotated[AnyGroup, Tag("when:any")]
    | Annotated[AllGroup, Tag("when:all")]
    | Annotated[NotGroup, Tag("when:not")],
    Discriminator(_when_kind),
]
"""A ``when`` item: a :class:`Condition` or an any/all/not group of items, to any depth."""

for _model in (AnyGroup, AllGroup, NotGroup):
    _model.model_rebuild()
_WHEN_TAGS.update(
    {
        "when:condition": Condition,
        "when:any": AnyGroup,
        "when:all": AllGroup,
        "when:not": NotGroup,
    }
)


def _depth(item: Any) -> int:
    """How deeply groups nest in a raw ``when`` item, without recursion (hostile input)."""
    deepest, stack = 0, [(item, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(node, dict):
            for key in GROUP_KEYS:
                if key in node:
                    body = node[key]
                    for child in body if isinstance(body, list) else [body]:
                        stack.append((child, depth + 1))
    return deepest


class Route(_Strict):
    """Which events a connector receives."""

    events: list[str] = Field(
        default_factory=list, description="Event types sent; empty means all."
    )
    exclude_events: list[str] = Field(default_factory=list, description="Event types never sent.")
    when: list[WhenItem] = Field(
        default_factory=list,
        description="Conditions or any/all/not groups that must all hold.",
    )
    sample_sessions: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Fraction of sessions kept, stable by session_id."
    )
    unmatched: bool = Field(
        default=False,
        description="Catch-all: receive only the events no connector without unmatched "
        "routed (events, exclude_events, when and sample_sessions still narrow them).",
    )

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, data: Any) -> Any:
        when = data.get("when") if isinstance(data, dict) else None
        for i, item in enumerate(when if isinstance(when, list) else []):
            if _depth(item) > MAX_DEPTH:
                raise ValueError(
                    f"when[{i}]: groups nest deeper than {MAX_DEPTH} levels. Fix: flatten "
                    "it (an all inside an all is one all; not of not is the item)."
                )
        return data

    def compile(self) -> RouteRule:
        """The compiled rule used per event."""
        return RouteRule.compile(
            self.events,
            self.exclude_events,
            [c.model_dump(by_alias=True) for c in self.when],
            self.sample_sessions,
            self.unmatched,
        )


class GroupRules(_Strict):
    """Allow and/or deny lists of dotted paths inside one top-level group of the event."""

    allow: list[str] | None = Field(
        default=None, description="Keep only these paths ([] removes all)."
    )
    deny: list[str] | None = Field(default=None, description="Remove these paths (after allow).")

    @field_validator("allow", "deny")
    @classmethod
    def _paths(cls, paths: list[str] | None) -> list[str] | None:
        for path in paths or []:
            normalize_pattern(path)
        return paths


class HashRules(_Strict):
    """Identifiers replaced by a keyed hash (HMAC-SHA256, hex)."""

    paths: list[str] = Field(min_length=1, description="Dotted paths from the event root.")
    key: SecretStr = Field(description="The HMAC key, only by reference (${env:NAME} ...).")
    length: int = Field(default=64, ge=16, le=64, description="Hex characters kept (16-64).")


_KNOWN_GROUPS = (*GROUPS, "attributes", "hash")
"""Names a misspelled filter group is compared with."""


class Filter(_Strict):
    """Which data points a connector may see.

    ``metadata`` and ``fluxdata`` are the envelope's groups; any other top-level object of
    the event (``attributes``, a producer's own group) is filtered by naming it the same
    way: ``filter: {attributes: {deny: [token]}}``. A name one typo away from a known group
    (``metdata``) is refused, so a misspelled deny list cannot silently protect nothing.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, GroupRules]

    metadata: GroupRules | None = Field(default=None, description="Rules for metadata.")
    fluxdata: GroupRules | None = Field(default=None, description="Rules for fluxdata.")
    hash: HashRules | None = Field(default=None, description="Identifiers to hash.")

    @model_validator(mode="after")
    def _group_names(self) -> Filter:
        for name in self.__pydantic_extra__ or {}:
            close = difflib.get_close_matches(name, _KNOWN_GROUPS, n=1, cutoff=0.75)
            if close and close[0] != name:
                raise ValueError(
                    f"filter group {name!r} is not in the events; did you mean {close[0]!r}? "
                    "(any top-level object of the event may be filtered by its exact name)"
                )
        return self

    def compile(self) -> FieldFilter:
        """The compiled filter used per event."""
        spec: dict[str, Any] = self.model_dump(exclude_none=True, exclude={"hash"})
        if self.hash is not None:
            spec["hash"] = {
                "paths": self.hash.paths,
                "key": self.hash.key.get_secret_value(),
                "length": self.hash.length,
            }
        return FieldFilter.compile(spec)


class Package(_Strict):
    """How a filtered event becomes the destination's record."""

    template: str | dict[str, Any] | None = Field(
        default=None,
        description="A template name from templates/, or an inline template mapping; "
        "omitted: the connector type's own template (datadog_logs, splunk_hec, new_relic, "
        "elasticsearch), if it has one; null: none (the filtered event is sent).",
    )
    rename: dict[str, str] = Field(
        default_factory=dict, description="{src_path: dst_path}, applied second."
    )
    values: dict[str, dict[Any, Any]] = Field(
        default_factory=dict, description="{path: {old: new}} value maps, applied first."
    )
    function: str | None = Field(
        default=None,
        description="The escape hatch: 'module:callable' (e.g. my_team.packaging:to_amplitude), "
        "applied last, after values/rename/template, to a copy of each record; returns a dict, "
        "a list of dicts (fan-out) or None (drop, counted 'dropped'). Imported here to check "
        "it; the job keeps the reference and each worker imports it on first use.",
    )

    @field_validator("function")
    @classmethod
    def _function_imports(cls, reference: str | None) -> str | None:
        if reference is not None:
            try:
                load_function(reference)
            except FunctionReferenceError as exc:
                raise ValueError(str(exc)) from None
        return reference

    @model_validator(mode="after")
    def _compiles(self) -> Package:
        self.compile()
        return self

    def compile(self, default_template: str | None = None) -> Packager:
        """The compiled packager used per event.

        ``default_template`` (the connector type's own, ``ConnectorSpec.default_template``)
        is used when the section names no template: ``package: {rename: ...}`` on a
        ``new_relic`` connector packages with ``templates/new_relic.yaml``, while an
        explicit ``template: null`` means none.
        """
        given = "template" in self.model_fields_set
        template = self.template if given else default_template
        return Packager.compile(self.values, self.rename, template, self.function)


class Retry(_Strict):
    """Retry policy of a connector."""

    immediate: int = Field(default=3, ge=0, le=10, description="Retries inside the connector.")
    delayed_schedule_s: list[float] = Field(
        default_factory=lambda: [300.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0],
        max_length=100,
        description="Delays of the later retries through the retry topic (s), each 0-7 days.",
    )

    @field_validator("delayed_schedule_s")
    @classmethod
    def _delays(cls, delays: list[float]) -> list[float]:
        for delay in delays:
            if not 0 <= delay <= 7 * 86400:
                raise ValueError(f"a delay of {delay} s is outside 0 to 604800 s (7 days)")
        return delays


def deliver_model(connector_type: Any) -> type[BaseModel] | None:
    """The ``deliver`` schema of a registered connector type, or None for an unknown one."""
    spec = CONNECTORS.get(connector_type) if isinstance(connector_type, str) else None
    return spec.deliver_model if spec is not None else None


class Connector(_Strict):
    """One destination with its own rules."""

    id: str = Field(pattern=r"^[a-z0-9_]+$", description="Unique id; [a-z0-9_]+.")
    type: Literal[TYPE_NAMES] = Field(description="Connector type.")  # type: ignore[valid-type]
    route: Route = Field(default_factory=Route, description="Which events go here.")
    filter: Filter = Field(
        default_factory=lambda: Filter.model_validate({}), description="Which fields they keep."
    )
    package: Package = Field(default_factory=Package, description="How they are reshaped.")
    # The raw section, with references (never secret values), validated by the type's model.
    keeps_references = frozenset({"deliver"})
    deliver: dict[str, Any] = Field(
        description="Where and how they are sent (per type).", repr=False, exclude=True
    )
    retry: Retry = Field(default_factory=Retry, description="Retry policy.")

    @model_validator(mode="after")
    def _deliver_schema(self) -> Connector:
        model = deliver_model(self.type)
        if model is None:
            raise ValueError(
                f"connector type {self.type!r} is not implemented in this version yet; "
                f"available: {', '.join(CONNECTORS)}"
            )
        try:
            model.model_validate(self.deliver)
        except ValidationError:
            # Reported field by field (with full paths) by _deliver_errors.
            raise ValueError(_DELIVER_REPORTED) from None
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _auto_schema(cls, data: Any, handler: ModelWrapValidatorHandler[Connector]) -> Connector:
        # A file or object store's ``schema: auto`` is the packaging template's columns,
        # which its deliver model cannot see: derived here, once, into the deliver section.
        connector = handler(data)
        model = deliver_model(connector.type)
        if not isinstance(data, dict) or model is None or not issubclass(model, ObjectLayout):
            return connector
        package = connector.package
        given = "template" in package.model_fields_set
        template = package.template if given else CONNECTORS[connector.type].default_template
        try:
            deliver = model.derive_schema(connector.deliver, template, package.function)
        except ValueError as exc:
            raise ValueError(f"deliver.{exc}") from None  # "deliver.schema: auto ..."
        return connector if deliver is connector.deliver else handler({**data, "deliver": deliver})

    @cached_property
    def deliver_config(self) -> Any:
        """The ``deliver`` section validated by the type's own schema."""
        return CONNECTORS[self.type].deliver_model.model_validate(self.deliver)


class DeadLetterSection(_Strict):
    """Where undeliverable and invalid events go."""

    path: str | None = Field(
        default=None, description="Directory (local, gs://, s3://) for dead-letter NDJSON files."
    )
    topic: str | None = Field(
        default=None,
        pattern=r"^projects/[^/]+/topics/[^/]{3,}$",
        description="Streaming: a Pub/Sub topic instead, one message per dead letter.",
    )
    batch: Batch = Field(
        default_factory=Batch,
        description="Streaming: dead letters per file at most, and longest wait before writing.",
    )

    @model_validator(mode="after")
    def _one_place(self) -> DeadLetterSection:
        if (self.path is None) == (self.topic is None):
            raise ValueError("give exactly one of path (a directory) or topic (Pub/Sub)")
        if self.batch.max_bytes is not None:
            # The dead-letter writer bulks by count and time only; refused, not ignored.
            raise ValueError(
                "batch.max_bytes applies to connectors only; dead letters are bulked by "
                "batch.max_events and batch.max_wait_s: remove max_bytes here"
            )
        return self

    @property
    def location(self) -> str:
        """The directory dead-letter files go to (not set when they go to a topic)."""
        if self.path is None:
            raise ValueError(
                "dead_letter is a Pub/Sub topic, which only a streaming run writes; "
                "this command needs dead_letter.path"
            )
        return self.path


class DeliveryConfig(_Strict):
    """The whole delivery config file."""

    connectors: list[Connector] = Field(min_length=1, description="The destinations.")
    dead_letter: DeadLetterSection = Field(description="Dead-letter location.")
    retry_location: str | None = Field(
        default=None,
        description="Where delayed retries wait: a directory, gs://, s3:// (batch or "
        "streaming), or a Pub/Sub topic projects/P/topics/T (streaming).",
    )
    retry_subscription: str | None = Field(
        default=None,
        description="Streaming with a Pub/Sub retry_location: the subscription the job reads "
        "retry records back from (projects/P/subscriptions/S).",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_retry_name(cls, data: Any) -> Any:
        """Read ``retry_topic`` (this key's old name) as ``retry_location``."""
        if isinstance(data, dict) and "retry_topic" in data:
            if "retry_location" in data:
                raise ValueError("give retry_location or its old name retry_topic, not both")
            data = {("retry_location" if k == "retry_topic" else k): v for k, v in data.items()}
        return data

    @property
    def retry_on_pubsub(self) -> bool:
        """True when delayed retries travel through a Pub/Sub topic (streaming)."""
        return bool(self.retry_location and self.retry_location.startswith("projects/"))

    @model_validator(mode="after")
    def _retry_pubsub(self) -> DeliveryConfig:
        if self.retry_on_pubsub and not self.retry_subscription:
            raise ValueError(
                "retry_location is a Pub/Sub topic: also give retry_subscription "
                "(projects/P/subscriptions/S, subscribed to it) so the job reads retries back"
            )
        if self.retry_subscription and not self.retry_on_pubsub:
            raise ValueError("retry_subscription needs retry_location to be a Pub/Sub topic")
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> DeliveryConfig:
        seen: set[str] = set()
        for c in self.connectors:
            if c.id in seen:
                raise ValueError(f"connector id {c.id!r} is used twice; ids must be unique")
            seen.add(c.id)
        return self

    @model_validator(mode="after")
    def _someone_routes(self) -> DeliveryConfig:
        if all(c.route.unmatched for c in self.connectors):
            paths = ", ".join(
                f"connectors[{i}](id={c.id}).route.unmatched" for i, c in enumerate(self.connectors)
            )
            raise ValueError(
                f"{paths}: every connector is a catch-all (unmatched: true), so none routes "
                "events by its own rules and nothing is left over to catch. Fix: remove "
                "unmatched from the connectors that should receive events by their route."
            )
        return self

    def connector(self, connector_id: str) -> Connector:
        """The connector with this id."""
        for c in self.connectors:
            if c.id == connector_id:
                return c
        raise KeyError(connector_id)


_ENDPOINT_PATH = re.compile(r"^connectors\[\d+\]\.deliver\.endpoint$")
"""The one place a reference may be part of a string (see HttpApiDeliver)."""


def _references(tree: Any, path: str, problems: list[str]) -> Any:
    """Replace every reference string (``${env:NAME}`` ...) by a :class:`SecretRef`.

    The parsed config keeps references, never values: secret fields hold the
    :class:`SecretRef` (resolved on the workers), other fields are resolved when validated
    (see :func:`transforms.connectors.secrets.plain`). An ``${env:NAME}`` must be set here
    too, so a local run fails before it starts rather than on its first batch.
    """
    if isinstance(tree, dict):
        return {
            k: _references(v, f"{path}.{k}" if path else str(k), problems) for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [_references(v, f"{path}[{i}]", problems) for i, v in enumerate(tree)]
    if isinstance(tree, str) and "${" in tree:
        if _ENDPOINT_PATH.match(path) and not REFERENCE.match(tree):
            # An endpoint with secret parts (a webhook token in its path): kept as written,
            # its parts checked by the connector and filled in on the workers.
            for part in SECRET_PART.findall(tree):
                ref = check_reference(part) is None and SecretRef(part)
                if ref and ref.source == "env" and ref.peek() is None:
                    problems.append(
                        f"{path}: environment variable {part[6:-1]} is not set. "
                        f"Fix: export {part[6:-1]}=... before starting the job."
                    )
            return tree
        problem = check_reference(tree)
        if problem is not None:
            problems.append(f"{path}: {problem}")
            return tree
        ref = SecretRef(tree)
        if ref.source == "env" and ref.peek() is None:
            name = tree[6:-1]
            problems.append(
                f"{path}: environment variable {name} is not set. "
                f"Fix: export {name}=... before starting the job."
            )
            return tree
        return ref
    return tree


SECRET_FIELDS = (("filter", "hash", "key"),)
"""Fields that must be given as ``${env:NAME}`` references, never inline."""


def _secrets_by_reference(raw: dict[str, Any]) -> list[str]:
    problems = []
    connectors = raw.get("connectors")
    for i, c in enumerate(connectors if isinstance(connectors, list) else []):
        for path in SECRET_FIELDS:
            node: Any = c
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None and not (isinstance(node, str) and REFERENCE.match(node)):
                cid = c.get("id") if isinstance(c, dict) else None
                problems.append(
                    f"connectors[{i}](id={cid}).{'.'.join(path)}: a secret must be given by "
                    "reference. Fix: write '${env:NAME}' and export NAME=<the key>."
                )
    return problems


def _yaml_path(loc: tuple[Any, ...], raw: Any) -> str:
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            if isinstance(node, list) and part < len(node):
                node = node[part]
                if (
                    isinstance(node, dict)
                    and "id" in node
                    and out.startswith("connectors")
                    and out.count("[") == 1
                ):
                    out += f"(id={node['id']})"
            else:
                node = None
        else:
            if part in ("function-after", "function-before") or str(part).startswith("function-"):
                continue
            if part in _WHEN_TAGS:
                continue
            if part == "not_":
                part = "not"
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = DeliveryConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        if part in _WHEN_TAGS:
            model = _WHEN_TAGS[part]
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return []
        ann = field.annotation
        model = _model_in(ann)
    if model is Condition:  # the item may have been meant as a group
        return [*model.model_fields, *GROUP_KEYS]
    if model is not None:
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(
    err: dict[str, Any], raw: Any, deliver_model: Callable[[tuple[Any, ...]], Any]
) -> str:
    loc = tuple(err["loc"])
    where = _yaml_path(loc, raw)
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = deliver_model(loc) or _allowed_keys(loc)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"allowed keys here: {', '.join(allowed)}"
        return f"{where}: unknown key. Fix: remove it, or {fix}"
    if not loc and msg.startswith("connectors["):  # the message names its own paths
        return msg
    if kind == "missing":
        return f"{where}: required, but missing. Fix: add it."
    if loc and loc[-1] == "when:condition" and kind in ("model_type", "model_attributes_type"):
        return (
            f"{where}: expected a condition {{field, op, value}} or a group {{any: [...]}}, "
            f"{{all: [...]}} or {{not: ...}}, got {err.get('input')!r}"
        )
    return f"{where}: {msg}"


def _deliver_keys(raw: Any) -> Callable[[tuple[Any, ...]], list[str]]:
    def keys(loc: tuple[Any, ...]) -> list[str]:
        if len(loc) >= 4 and loc[0] == "connectors" and loc[2] == "deliver":
            try:
                ctype = raw["connectors"][loc[1]]["type"]
            except (KeyError, IndexError, TypeError):
                return []
            model = deliver_model(ctype)
            return list(model.model_fields) if model else []
        return []

    return keys


def _deliver_errors(raw: dict[str, Any]) -> list[str]:
    """Validate each connector's deliver section with its type's schema (full paths)."""
    problems: list[str] = []
    connectors = raw.get("connectors")
    if not isinstance(connectors, list):
        return problems
    for i, c in enumerate(connectors):
        model = deliver_model(c.get("type")) if isinstance(c, dict) else None
        if model is None:
            continue
        try:
            model.model_validate(c.get("deliver", {}))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ("connectors", i, "deliver", *err["loc"])
                problems.append(_describe({**err, "loc": loc}, raw, _deliver_keys(raw)))
    return problems


class _KeyTwice(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    PyYAML keeps the last of equal keys: a second ``filter:`` or ``deliver:`` in a
    connector would silently replace the first. Keys a ``<<:`` merge brings in may be
    overridden, as YAML defines.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                continue  # the constructor itself refuses keys it cannot hash
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _KeyTwice(
                    f"line {line}: key {key!r} given twice in one mapping (first on line "
                    f"{lines[key]}); YAML would keep only the last. Fix: remove one, or "
                    "merge them into one."
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


MAX_VALUES = 100_000
"""Values a config may hold once its YAML aliases are expanded (examples/delivery.yaml
holds 76, bench/corpus.py's 5 connectors 161: this is ~600 connectors of that size)."""


def _expanded_values(tree: Any, memo: dict[int, int] | None = None) -> int:
    """How many values ``tree`` holds with every alias expanded, up to just past the limit.

    Counted up to just past :data:`MAX_VALUES`; each shared list or mapping is counted
    once, then looked up.
    """
    if not isinstance(tree, (dict, list)):
        return 1
    memo = {} if memo is None else memo
    known = memo.get(id(tree))
    if known is not None:
        return known
    total = 1
    for child in tree.values() if isinstance(tree, dict) else tree:
        total += _expanded_values(child, memo)
        if total > MAX_VALUES:
            break
    memo[id(tree)] = total
    return total


def parse_config(text: str, source: str = "<config>") -> DeliveryConfig:
    """Validate config text; raise :class:`ConfigError` listing every problem."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no object tags
        values = _expanded_values(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    except RecursionError:
        # A hostile file (say 3000 nested `not:` groups) must be a config error, not a crash.
        raise ConfigError(
            source,
            [
                "the YAML nests too deeply to read (route groups may nest at most "
                f"{MAX_DEPTH} levels). Fix: flatten the nesting."
            ],
        ) from None
    if values > MAX_VALUES:
        # "Billion laughs": nine aliases of nine aliases... load as shared objects, but
        # every walk of the config (references, validation) would visit each expansion.
        raise ConfigError(
            source,
            [
                f"the YAML expands to more than {MAX_VALUES:,} values through its aliases "
                "(*name repeats what &name marks). Fix: write the values out, or alias less."
            ],
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            source, ["the file must be a YAML mapping with 'connectors' and 'dead_letter'"]
        )
    problems: list[str] = []
    problems.extend(_secrets_by_reference(raw))
    resolved = _references(raw, "", problems)
    deliver_problems = _deliver_errors(resolved)
    try:
        config = DeliveryConfig.model_validate(resolved)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            # Deliver sections are reported field by field by _deliver_errors.
            if (
                len(loc) >= 3
                and loc[0] == "connectors"
                and loc[2] == "deliver"
                and deliver_problems
            ):
                continue
            if _DELIVER_REPORTED in str(err.get("msg", "")):
                continue
            problems.append(_describe(dict(err), raw, _deliver_keys(raw)))
        problems.extend(deliver_problems)
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return config


MAX_FILE_BYTES = 16 * 2**20
"""Largest config (or ``probe --event``) file read: a delivery config is a few KB."""


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """Read a small text file from a local path or any Beam filesystem (gs://, s3://).

    Raises:
        OSError: when it cannot be read.
        ValueError: when it is not UTF-8 (``UnicodeDecodeError``) or holds more than
            ``limit`` bytes (read no further: ``/dev/zero`` given by mistake ends here).
    """
    if "://" not in path:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    else:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as fh:
            data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit / 2**20:g} MiB: is it the right file?")
    return data.decode("utf-8")


def load_config(path: str) -> DeliveryConfig:
    """Read and validate a config file; raise :class:`ConfigError` listing every problem."""
    try:
        text = read_text(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(path, [f"cannot read the file: {exc}"]) from None
    return parse_config(text, path)


@dataclass(frozen=True)
class CompiledConnector:
    """A connector's rules compiled once, ready for per-event use (no pydantic on the hot path)."""

    id: str
    type: str
    route: RouteRule
    filter: FieldFilter
    packager: Packager
    deliver: Any
    record_json: bool = False
    """Whether Package serializes the records (``ConnectorSpec.sends_record_json``)."""
    source: Any = field(default=None, compare=False, repr=False)
    """The validated :class:`Connector` it was compiled from (how it pickles)."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled filters are generated code, which pickle cannot carry: a copy (a chunk
        # crossing processes with its rules, see Chunk.rules) compiles its source again.
        if self.source is None:
            raise pickle.PicklingError(f"compiled connector {self.id!r} has no source")
        return (CompiledConnector.of, (self.source,))

    @property
    def sends_lines(self) -> bool:
        """Whether its records are the events unchanged, serialized as their input lines.

        True for a connector that sends records as JSON with no filter and no package
        step (see :func:`transforms.rules.encode.line_json`).
        """
        return self.record_json and self.filter.is_identity and self.packager.is_identity

    @classmethod
    def of(cls, connector: Connector) -> CompiledConnector:
        """Compile a validated connector."""
        spec = CONNECTORS.get(connector.type)
        return cls(
            connector.id,
            connector.type,
            connector.route.compile(),
            connector.filter.compile(),
            connector.package.compile(spec.default_template if spec is not None else None),
            connector.deliver_config,
            spec is not None and spec.sends_record_json,
            connector,
        )


def compile_connectors(config: DeliveryConfig) -> list[CompiledConnector]:
    """Compile every connector of a validated config, in config order."""
    try:
        return [CompiledConnector.of(c) for c in config.connectors]
    except TemplateError as exc:  # pragma: no cover - validation compiled them already
        raise ConfigError("<config>", [str(exc)]) from exc
