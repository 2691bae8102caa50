"""Table schemas: the columns of a BigQuery table and of a Parquet, CSV or typed Avro file.

One shape serves both, BigQuery's table schema (as in its JSON schema files): a list of
``{name, type, mode, fields}``, compiled once into :class:`Column` values::

    >>> compile_schema([{"name": "bitrate", "type": "INTEGER", "mode": "REQUIRED"}])
    (Column(name='bitrate', type='INT64', mode='REQUIRED', fields=()),)

A schema is declared in the config (``deliver.schema``) or derived from the connector's
packaging template (``schema: auto``, :func:`derive_schema`): ``cast: int`` gives an
``INT64`` column, ``format: iso8601`` a ``TIMESTAMP`` and so on. :func:`check_template`
says where a declared schema and a template disagree, and :func:`row_problems` why
BigQuery would refuse one record as a row.

Plain Python, no Beam import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import yaml

TYPES = (
    "STRING",
    "BYTES",
    "INT64",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "DATETIME",
    "GEOGRAPHY",
    "JSON",
    "RECORD",
)
"""BigQuery's column types (standard SQL names): what a ``bigquery`` connector's schema takes."""

SCHEMA_TYPES = {
    "STRING": "STRING",
    "INT64": "INT64",
    "INTEGER": "INT64",
    "FLOAT64": "FLOAT64",
    "FLOAT": "FLOAT64",
    "BOOL": "BOOL",
    "BOOLEAN": "BOOL",
    "TIMESTAMP": "TIMESTAMP",
    "DATE": "DATE",
    "JSON": "JSON",
    "RECORD": "RECORD",
    "STRUCT": "RECORD",
}
"""A file format's column ``type`` (BigQuery's names, legacy aliases included) -> its type.

The types Parquet, CSV and typed Avro write; a subset of :data:`TYPES`."""

BIGQUERY_TYPES = {**SCHEMA_TYPES, **{kind: kind for kind in TYPES}}
"""Every ``type`` name a BigQuery table schema takes (legacy aliases included) -> its type."""

SCHEMA_MODES = ("NULLABLE", "REQUIRED", "REPEATED")
"""A column's ``mode`` (default ``NULLABLE``)."""


class SchemaError(ValueError):
    """A schema that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Column:
    """One column of a schema (declared, derived from a template, or inferred from a batch).

    ``type`` is a :data:`TYPES` value, or ``UINT64`` (inferred from a batch only: integers
    past int64 that are never negative). ``fields`` are a ``RECORD``'s own columns.

        >>> Column("geo", "RECORD", fields=(Column("country_code", "STRING"),)).fields[0].name
        'country_code'
    """

    name: str
    type: str
    mode: str = "NULLABLE"
    fields: tuple[Column, ...] = ()


def compile_schema(
    spec: Any, where: str = "schema", types: Mapping[str, str] = SCHEMA_TYPES
) -> tuple[Column, ...]:
    """Check a declared schema and compile it: a list of ``{name, type, mode, fields}``.

    The shape is BigQuery's table schema (as in its JSON schema files), so one schema
    serves a BigQuery table and the lake's Parquet files::

        >>> compile_schema([{"name": "bitrate", "type": "INT64"},
        ...                 {"name": "geo", "type": "RECORD",
        ...                  "fields": [{"name": "country_code", "type": "STRING"}]}])[1].type
        'RECORD'

    ``types`` maps the type names taken to types: the file formats' (:data:`SCHEMA_TYPES`,
    the default) or BigQuery's (:data:`BIGQUERY_TYPES`). What each file type accepts:
    ``STRING`` text; ``INT64`` an integer in int64 (never a bool); ``FLOAT64`` a number;
    ``BOOL`` true/false; ``TIMESTAMP`` epoch milliseconds or ISO-8601 text (read as UTC
    without a zone); ``DATE`` ``YYYY-MM-DD`` text; ``JSON`` any value, written as its JSON
    text; ``RECORD`` an object with the listed ``fields``. ``REQUIRED``: never null or
    missing; ``REPEATED``: a list of such values (null is an empty list). A key that is
    not in the schema is refused too, as BigQuery refuses it, rather than dropped unseen:
    add it to the schema or remove it with the connector's filter or template. Use the
    template's ``cast`` to make values fit.

    Raises:
        SchemaError: naming the field's position (``schema[2].fields[0]``) and the fix.
    """
    if not isinstance(spec, (list, tuple)) or not spec:
        raise SchemaError(f"{where} must be a non-empty list of {{name, type, mode}} fields")
    columns: list[Column] = []
    seen: set[str] = set()
    for n, field in enumerate(spec):
        at = f"{where}[{n}]"
        if not isinstance(field, Mapping):
            raise SchemaError(f"{at} must be a mapping {{name, type, mode}}, not {field!r}")
        unknown = sorted(set(field) - {"name", "type", "mode", "fields", "description"})
        if unknown:
            raise SchemaError(f"{at}: unknown key {', '.join(map(repr, unknown))}")
        name, kind = field.get("name"), field.get("type")
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{at}: 'name' must be a non-empty string")
        if name in seen:
            raise SchemaError(f"{at}: names {name!r} twice; each name once")
        seen.add(name)
        if not isinstance(kind, str) or kind.upper() not in types:
            raise SchemaError(f"{at} ({name!r}): type {kind!r} is not one of {', '.join(types)}")
        mode = field.get("mode", "NULLABLE")
        if not isinstance(mode, str) or mode.upper() not in SCHEMA_MODES:
            raise SchemaError(
                f"{at} ({name!r}): mode {mode!r} is not one of {', '.join(SCHEMA_MODES)}"
            )
        resolved = types[kind.upper()]
        sub: tuple[Column, ...] = ()
        if resolved == "RECORD":
            sub = compile_schema(field.get("fields"), f"{at}.fields", types)
        elif field.get("fields") is not None:
            raise SchemaError(f"{at} ({name!r}): only a RECORD has 'fields'")
        columns.append(Column(name, resolved, mode.upper(), sub))
    return tuple(columns)


def schema_spec(columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Columns as the ``[{name, type, mode, fields}]`` a config declares (compiles back).

    >>> schema_spec([Column("n", "INT64")])
    [{'name': 'n', 'type': 'INT64', 'mode': 'NULLABLE'}]
    """
    out: list[dict[str, Any]] = []
    for c in columns:
        spec: dict[str, Any] = {"name": c.name, "type": c.type, "mode": c.mode}
        if c.type == "RECORD":
            spec["fields"] = schema_spec(c.fields)
        out.append(spec)
    return out


# -- schemas from packaging templates ------------------------------------------------------------

_CASTS = {"int": "INT64", "float": "FLOAT64", "bool": "BOOL", "string": "STRING"}
_FORMATS = {
    "iso8601": "TIMESTAMP",
    "epoch_ms": "INT64",
    "epoch_s": "INT64",
    "%Y-%m-%d": "DATE",
    "%Y-%m-%dT%H:%M:%S": "DATETIME",
    "%Y-%m-%d %H:%M:%S": "DATETIME",
}
_ENVELOPE = {"event_id": "STRING", "session_id": "STRING", "event.type": "STRING"}
"""Paths of the event envelope whose type is fixed (README "Event envelope")."""
_WIDER = {"INT64": {"FLOAT64", "NUMERIC", "BIGNUMERIC"}, "FLOAT64": {"NUMERIC", "BIGNUMERIC"}}
"""Derived types a column of a wider type takes as they are (an INT64 into FLOAT64)."""
_FILE_TYPES = {"DATETIME": "STRING"}
"""Derived types a file has no column type for -> the file's column type for them."""
_RECORD = "\0record"
"""Marks a nested output object in :func:`_template_columns` (no template key holds NUL)."""


def template_spec(template: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A packaging template's mapping: ``templates/<name>.yaml`` read, or inline as given.

    None (no template: the filtered event is the row) has no fields to check.

        >>> template_spec({"fields": {"n": "x"}})
        {'fields': {'n': 'x'}}
    """
    if template is None:
        return {}
    if not isinstance(template, str):
        return template
    spec = yaml.safe_load(resources.files("templates").joinpath(f"{template}.yaml").read_text())
    return spec if isinstance(spec, dict) else {}


def _spec_type(spec: Any) -> str | None:
    """The type a template field gives, or None when only the data would say."""
    if isinstance(spec, str):
        return _ENVELOPE.get(spec)
    if not isinstance(spec, Mapping):
        return None
    if spec.get("cast") in _CASTS:
        return _CASTS[spec["cast"]]
    if "map" in spec:
        values = [
            *dict(spec["map"]).values(),
            *([spec["map_default"]] if "map_default" in spec else []),
        ]
        kinds = {_value_type(v) for v in values}
        return kinds.pop() if len(kinds) == 1 and "map_default" in spec else None
    if isinstance(spec.get("format"), str):
        return _FORMATS.get(spec["format"], "STRING")
    if "const" in spec:
        return _value_type(spec["const"])
    if "concat" in spec:
        return "STRING"
    return _ENVELOPE.get(spec.get("path", "")) if isinstance(spec.get("path"), str) else None


def _value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    return "STRING" if isinstance(value, str) else None


def _template_columns(template: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level column name -> the field spec (a dict of specs for a nested RECORD)."""
    sep = template.get("flatten")
    out: dict[str, Any] = {}
    for key, spec in dict(template.get("fields") or {}).items():
        key = str(key)
        if key == "*":
            continue  # a spread's keys are the data's
        if "." in key and isinstance(sep, str):
            out[key.replace(".", sep)] = spec
        elif "." in key:
            head, rest = key.split(".", 1)
            nested = out.setdefault(head, {_RECORD: {}})
            if isinstance(nested, dict) and _RECORD in nested:
                nested[_RECORD][rest] = spec
        else:
            out[key] = spec
    return out


def derive_schema(template: str | Mapping[str, Any]) -> tuple[Column, ...]:
    """``schema: auto``: the columns a template's fields give, in the template's order.

    ``cast: int`` is ``INT64``, ``float`` ``FLOAT64``, ``bool`` ``BOOL``, ``string``
    ``STRING``; ``format: iso8601`` is ``TIMESTAMP``, ``epoch_ms``/``epoch_s`` ``INT64``,
    ``"%Y-%m-%d"`` ``DATE``, ``"%Y-%m-%dT%H:%M:%S"`` ``DATETIME``, any other pattern
    ``STRING``; a constant has its value's type; a dotted key (without ``flatten``) is a
    ``RECORD``; anything else is ``STRING`` (cast numbers you want as numbers).

        >>> [(c.name, c.type) for c in derive_schema({"fields": {
        ...     "n": {"path": "x", "cast": "int"}, "geo.cc": "metadata.geo.country_code"}})]
        [('n', 'INT64'), ('geo', 'RECORD')]
    """
    out = []
    for name, spec in _template_columns(template_spec(template)).items():
        if isinstance(spec, dict) and _RECORD in spec:
            out.append(Column(name, "RECORD", fields=derive_schema({"fields": spec[_RECORD]})))
        else:
            out.append(Column(name, _spec_type(spec) or "STRING"))
    return tuple(out)


def derive_file_schema(
    template: str | Mapping[str, Any] | None, function: str | None = None
) -> tuple[Column, ...]:
    """``schema: auto`` of a Parquet, CSV or Avro file: :func:`derive_schema` for files.

    A ``DATETIME`` (a ``"%Y-%m-%dT%H:%M:%S"`` pattern: text without a zone) is a
    ``STRING`` column, the text as the template writes it; files have no zoneless time.

        >>> derive_file_schema({"fields": {"t": {"path": "x", "format": "%Y-%m-%d %H:%M:%S"}}})
        (Column(name='t', type='STRING', mode='NULLABLE', fields=()),)

    Raises:
        SchemaError: when the records' columns are not known before they are made: no
            template, a ``package.function`` (it may reshape each record), or a ``"*"``
            spread (its keys are the event's); the message names the fix.
    """
    declare = "declare the columns in deliver.schema instead"
    if function is not None:
        raise SchemaError(
            f"schema: auto cannot know the columns of package.function {function!r} (it may "
            f"reshape each record): {declare}"
        )
    fields = template_spec(template).get("fields")
    if not isinstance(fields, Mapping) or not fields:
        raise SchemaError(
            "schema: auto derives the columns from the packaging template, and this connector "
            f"has none: name one in package.template (e.g. bigquery_row), or {declare}"
        )
    if "*" in fields:
        raise SchemaError(
            "schema: auto cannot know the columns of the template's '*' spread (its keys are "
            f"the event's): list the fields in the template, or {declare}"
        )

    def for_files(columns: tuple[Column, ...]) -> tuple[Column, ...]:
        return tuple(
            Column(c.name, _FILE_TYPES.get(c.type, c.type), c.mode, for_files(c.fields))
            for c in columns
        )

    return for_files(derive_schema(template if template is not None else {}))


def check_template(template: str | Mapping[str, Any] | None, schema: Sequence[Column]) -> list[str]:
    """What a declared schema says against a template's fields (empty: they agree).

    A field with no column, a field whose type (from its ``cast``/``format``/constant)
    the column does not take, and a ``REQUIRED`` column no field fills.

        >>> template = {"fields": {"n": {"path": "x", "cast": "int"}}}
        >>> check_template(template, [Column("n", "FLOAT64")])  # FLOAT64 takes an INT64
        []
        >>> len(check_template(template, [Column("n", "BOOL"), Column("id", "STRING", "REQUIRED")]))
        2
    """
    if template is None:
        return []  # no template: only records say
    columns = {c.name: c for c in schema}
    problems = []
    fields = _template_columns(template_spec(template))
    for name, spec in fields.items():
        column = columns.get(name)
        if column is None:
            problems.append(
                f"template field {name!r} has no column in the schema "
                "(BigQuery: no such field); add the column or drop the field"
            )
            continue
        kind = "RECORD" if isinstance(spec, dict) and _RECORD in spec else _spec_type(spec)
        if kind is not None and kind != column.type and column.type not in _WIDER.get(kind, ()):
            problems.append(
                f"template field {name!r} gives {kind} but column {name!r} is "
                f"{column.type}; change the field's cast/format or the column"
            )
    for name, column in columns.items():
        if column.mode == "REQUIRED" and name not in fields:
            problems.append(
                f"REQUIRED column {name!r} has no template field: every row would "
                "be refused (Missing required field)"
            )
    return problems


# -- what BigQuery's JSON API takes --------------------------------------------------------------

_INT_TEXT = re.compile(r"^[+-]?\d+$")
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def row_problems(record: Mapping[str, Any], schema: Sequence[Column]) -> list[str]:
    """Why BigQuery's JSON API would refuse ``record`` as a row of ``schema`` (empty: none).

    As BigQuery converts JSON values (``"42"`` into ``INT64``, a number into ``STRING``),
    which is more than a file's column takes (see :func:`compile_schema`).

        >>> row_problems({"n": "42", "x": 1}, [Column("n", "INT64")])
        ["no such field 'x'"]
    """
    columns = {c.name: c for c in schema}
    problems = [f"no such field {k!r}" for k in record if k not in columns]
    for name, column in columns.items():
        value = record.get(name)
        if value is None:
            if column.mode == "REQUIRED":
                problems.append(f"missing REQUIRED {name!r}")
            continue
        values = value if column.mode == "REPEATED" and isinstance(value, list) else [value]
        if column.mode == "REPEATED" and not isinstance(value, list):
            problems.append(f"{name!r} is REPEATED but not a list")
        elif not all(takes(column, v) for v in values):
            problems.append(f"{name!r} ({column.type}) cannot take {_shown(value)!r}")
    return problems


def _shown(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text[:60]


def takes(column: Column, value: Any) -> bool:
    """Whether BigQuery's JSON API takes one non-null ``value`` into ``column`` (one item).

    >>> takes(Column("n", "INT64"), "42"), takes(Column("n", "INT64"), 4.5)
    (True, False)
    """
    kind = column.type
    if kind == "INT64":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and _INT_TEXT.match(value) is not None
        )
    if kind in ("FLOAT64", "NUMERIC", "BIGNUMERIC"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BOOL":
        return isinstance(value, bool)
    if kind == "DATE":
        return isinstance(value, str) and _DATE_TEXT.match(value) is not None
    if kind == "RECORD":
        return isinstance(value, dict) and not row_problems(value, column.fields)
    if kind == "STRING":
        return not isinstance(value, (dict, list))
    if kind in ("BYTES", "TIMESTAMP", "DATETIME", "TIME", "GEOGRAPHY"):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return True  # JSON takes anything
