"""Packaging: reshape a filtered event into the record a destination expects.

Three steps, always in this order (the config contract)::

    values:   {event.type: {buffer_start: rebuffer_start}}   # map scalar values at a path
    rename:   {session_id: sid, metadata.geo: geo}           # move a value, creating parents
    template: datadog_logs                                   # a template from templates/

A template is data, never code. It is a YAML mapping (a file in ``templates/`` or inline
in the connector's ``package.template``)::

    description: Datadog Logs intake v2 log object.
    fields:                          # output key (dotted = nested) -> where the value comes from
      ddsource: {const: video-telemetry}
      message: event.type            # shorthand for {path: event.type}
      timestamp: {path: event.timestamp, format: iso8601}
      host: {path: metadata.device.model, default: unknown}
      attributes: {path: $}          # $ is the whole record
      "*": {path: fluxdata}          # "*" spreads an object's keys into the output
    flatten: "."                     # optional: flatten nested objects with this separator

A field whose source path is missing and has no ``default`` is left out. ``format``
converts timestamps (epoch ms or ISO-8601 in) to ``iso8601``, ``epoch_ms`` or ``epoch_s``.
Plain Python, no Beam import.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import yaml

from transforms.rules.events import MISSING, get_path, path_getter, split_path, to_epoch_ms

TIME_FORMATS = ("iso8601", "epoch_ms", "epoch_s")
"""Values accepted by a template field's ``format``."""

_FIELD_KEYS = {"path", "const", "default", "format"}
_TEMPLATE_KEYS = {"description", "fields", "flatten"}


class TemplateError(ValueError):
    """A template that cannot be used; the message names the field and the fix."""


def set_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``value`` at ``path``; only the path is copied.

    Parents are created as needed; a non-object in the way is replaced by an object.
    """
    out = dict(obj)
    if len(path) == 1:
        out[path[0]] = value
        return out
    child = out.get(path[0])
    out[path[0]] = set_path(child if isinstance(child, dict) else {}, path[1:], value)
    return out


def pop_path(obj: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """Return (a copy of ``obj`` without ``path``, the removed value or ``MISSING``)."""
    if len(path) == 1:
        if path[0] not in obj:
            return obj, MISSING
        out = dict(obj)
        return out, out.pop(path[0])
    child = obj.get(path[0])
    if not isinstance(child, dict):
        return obj, MISSING
    new_child, value = pop_path(child, path[1:])
    if value is MISSING:
        return obj, MISSING
    out = dict(obj)
    out[path[0]] = new_child
    return out, value


def format_time(value: Any, fmt: str) -> Any:
    """Convert a timestamp to ``fmt``; a value that is not a timestamp passes unchanged."""
    ms = to_epoch_ms(value)
    if ms is None:
        return value
    if fmt == "epoch_ms":
        return ms
    if fmt == "epoch_s":
        return ms / 1000
    return _iso_second(ms // 1000) + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a second (UTC); events of a batch share few seconds."""
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")


def flatten(obj: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Flatten nested objects: ``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1}``.

    Lists are kept as values; an empty object has no leaves, so it disappears.
    """
    out: dict[str, Any] = {}
    _flatten_into(out, obj, sep, prefix)
    return out


def _flatten_into(out: dict[str, Any], obj: dict[str, Any], sep: str, prefix: str) -> None:
    # One output dict for every level (no dict per nested object, then a merge): the same
    # keys, values and order, since keys land in the order a depth-first walk meets them.
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict):
            _flatten_into(out, value, sep, name)
        else:
            out[name] = value


Getter = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class _Field:
    target: tuple[str, ...] | None  # None: spread ("*")
    source: tuple[str, ...] | None  # None: constant; () : the whole record
    const: Any
    default: Any
    fmt: str | None

    def value(self, record: dict[str, Any]) -> Any:
        if self.source is None:
            return self.const
        got = get_path(record, self.source) if self.source else record
        if got is MISSING:
            return self.default
        return format_time(got, self.fmt) if self.fmt else got

    def getter(self) -> Getter:
        """:meth:`value` compiled into one function of the record (the path read once)."""
        if self.source is None:
            const = self.const
            return lambda record: const
        default, fmt = self.default, self.fmt
        if not self.source:
            return lambda record: format_time(record, fmt) if fmt else record
        get = path_getter(self.source)
        if fmt:

            def formatted(record: dict[str, Any]) -> Any:
                got = get(record)
                return default if got is MISSING else format_time(got, fmt)

            return formatted
        if default is MISSING:
            return get

        def with_default(record: dict[str, Any]) -> Any:
            got = get(record)
            return default if got is MISSING else got

        return with_default


@dataclass(frozen=True)
class Template:
    """A compiled packaging template (see the module docstring)."""

    name: str
    fields: tuple[_Field, ...]
    flatten_sep: str | None
    plan: tuple[tuple[tuple[str, ...] | None, Getter], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    """Each field's target and compiled getter."""
    flat_plan: tuple[tuple[str, Getter], ...] | None = dataclasses.field(
        init=False, repr=False, compare=False
    )
    """For a flattening template whose targets are distinct top-level keys (no spread):
    flatten each value straight into the output, which gives the same record as building
    it and flattening it after."""

    def __post_init__(self) -> None:
        plan = tuple((f.target, f.getter()) for f in self.fields)
        object.__setattr__(self, "plan", plan)
        targets = [f.target for f in self.fields]
        flat = (
            self.flatten_sep is not None
            and all(t is not None and len(t) == 1 for t in targets)
            and len(set(targets)) == len(targets)
        )
        object.__setattr__(
            self, "flat_plan", tuple((t[0], get) for t, get in plan if t) if flat else None
        )

    @classmethod
    def compile(cls, spec: Any, name: str = "inline") -> Template:
        """Compile a template mapping; raise :class:`TemplateError` naming what is wrong."""
        if not isinstance(spec, Mapping):
            raise TemplateError(f"template {name!r} must be a mapping with 'fields'")
        unknown = set(spec) - _TEMPLATE_KEYS
        if unknown:
            raise TemplateError(
                f"template {name!r} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(_TEMPLATE_KEYS)}"
            )
        raw_fields = spec.get("fields")
        if not isinstance(raw_fields, Mapping) or not raw_fields:
            raise TemplateError(f"template {name!r} needs a non-empty 'fields' mapping")
        sep = spec.get("flatten")
        if sep is not None and (not isinstance(sep, str) or not sep):
            raise TemplateError(f"template {name!r}: 'flatten' must be a separator such as '.'")
        return cls(name, tuple(_compile_field(name, k, v) for k, v in raw_fields.items()), sep)

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """Build the destination record from a (filtered, mapped, renamed) event."""
        out: dict[str, Any] = {}
        if self.flat_plan is not None:
            sep = self.flatten_sep
            assert sep is not None
            for name, get in self.flat_plan:
                value = get(record)
                if value is MISSING:
                    continue
                if isinstance(value, dict):
                    _flatten_into(out, value, sep, name)
                else:
                    out[name] = value
            return out
        for target, get in self.plan:
            value = get(record)
            if value is MISSING:
                continue
            if target is None:
                if isinstance(value, dict):
                    out.update(value)
            elif len(target) == 1:
                out[target[0]] = value
            else:
                out = set_path(out, target, value)
        return flatten(out, self.flatten_sep) if self.flatten_sep else out


def _compile_field(template: str, key: str, spec: Any) -> _Field:
    where = f"template {template!r}, field {key!r}"
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping):
        raise TemplateError(f"{where}: expected a path string or a mapping, got {spec!r}")
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise TemplateError(
            f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_FIELD_KEYS)}"
        )
    if ("path" in spec) == ("const" in spec):
        raise TemplateError(f"{where}: give exactly one of 'path' or 'const'")
    fmt = spec.get("format")
    if fmt is not None and fmt not in TIME_FORMATS:
        raise TemplateError(f"{where}: format {fmt!r} is not one of {', '.join(TIME_FORMATS)}")
    source: tuple[str, ...] | None = None
    if "path" in spec:
        path = spec["path"]
        if not isinstance(path, str) or not path:
            raise TemplateError(f"{where}: 'path' must be a dotted path or '$'")
        source = () if path == "$" else split_path(path)
    target = None if key == "*" else split_path(key)
    return _Field(target, source, spec.get("const"), spec.get("default", MISSING), fmt)


def load_named_template(name: str) -> Template:
    """Load ``templates/<name>.yaml`` shipped with the package.

    Raises:
        TemplateError: if no such template exists (the message lists those that do).
    """
    folder = resources.files("templates")
    source = folder.joinpath(f"{name}.yaml")
    if not source.is_file():
        names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
        raise TemplateError(f"no template named {name!r}; available: {', '.join(names)}")
    return Template.compile(yaml.safe_load(source.read_text(encoding="utf-8")), name)


@dataclass(frozen=True)
class Packager:
    """A connector's compiled package step: values, then rename, then template."""

    values: tuple[tuple[tuple[str, ...], dict[Any, Any]], ...]
    renames: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    template: Template | None
    value_plan: tuple[tuple[tuple[str, ...], Getter, dict[Any, Any]], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    """``values`` with each path compiled into a getter."""

    def __post_init__(self) -> None:
        plan = tuple((path, path_getter(path), mapping) for path, mapping in self.values)
        object.__setattr__(self, "value_plan", plan)

    @classmethod
    def compile(
        cls,
        values: Mapping[str, Mapping[Any, Any]] | None = None,
        rename: Mapping[str, str] | None = None,
        template: str | Mapping[str, Any] | None = None,
    ) -> Packager:
        """Compile a connector's ``package`` section."""
        compiled: Template | None
        if template is None:
            compiled = None
        elif isinstance(template, str):
            compiled = load_named_template(template)
        else:
            compiled = Template.compile(template)
        return cls(
            tuple((split_path(p), dict(m)) for p, m in (values or {}).items()),
            tuple((split_path(s), split_path(d)) for s, d in (rename or {}).items()),
            compiled,
        )

    @property
    def is_identity(self) -> bool:
        """True when packaging changes nothing (no values, renames or template)."""
        return not self.values and not self.renames and self.template is None

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Package one filtered event; the input is never modified."""
        record = event
        for path, get, mapping in self.value_plan:
            got = get(record)
            if got is MISSING or isinstance(got, (dict, list)):
                continue
            try:
                new = mapping[got]
            except (KeyError, TypeError):
                continue
            if isinstance(got, bool) != isinstance(new, bool) or new != got:
                record = set_path(record, path, new)
        for src, dst in self.renames:
            if len(src) == 1 and len(dst) == 1:
                # Top-level to top-level: one copy instead of pop_path's and set_path's.
                if src[0] in record:
                    record = dict(record)
                    record[dst[0]] = record.pop(src[0])
                continue
            record, value = pop_path(record, src)
            if value is not MISSING:
                record = set_path(record, dst, value)
        return self.template.apply(record) if self.template else record
