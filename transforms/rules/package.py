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

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import yaml

from transforms.rules.events import MISSING, get_path, split_path, to_epoch_ms

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
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def flatten(obj: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Flatten nested objects: ``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1}``.

    Lists are kept as values; an empty object has no leaves, so it disappears.
    """
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, sep, name))
        else:
            out[name] = value
    return out


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


@dataclass(frozen=True)
class Template:
    """A compiled packaging template (see the module docstring)."""

    name: str
    fields: tuple[_Field, ...]
    flatten_sep: str | None

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
        for f in self.fields:
            value = f.value(record)
            if value is MISSING:
                continue
            if f.target is None:
                if isinstance(value, dict):
                    out.update(value)
            elif len(f.target) == 1:
                out[f.target[0]] = value
            else:
                out = set_path(out, f.target, value)
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

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Package one filtered event; the input is never modified."""
        record = event
        for path, mapping in self.values:
            got = get_path(record, path)
            if got is MISSING or isinstance(got, (dict, list)):
                continue
            try:
                new = mapping[got]
            except (KeyError, TypeError):
                continue
            if isinstance(got, bool) != isinstance(new, bool) or new != got:
                record = set_path(record, path, new)
        for src, dst in self.renames:
            record, value = pop_path(record, src)
            if value is not MISSING:
                record = set_path(record, dst, value)
        return self.template.apply(record) if self.template else record
