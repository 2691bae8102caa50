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
converts timestamps (epoch ms or ISO-8601 in) to ``iso8601``, ``epoch_ms``, ``epoch_s``
or any strftime pattern.

Field specs
-----------

A field has exactly one source, ``path``, ``const`` or ``concat``, and may add::

    tags: {concat: ["os:", {path: metadata.device.os}, ",cc:", {path: metadata.geo.country_code}]}
    bitrate: {path: fluxdata.rendition_video_bitrate_kbps, cast: int}
    os: {path: metadata.device.os, map: {ios: iOS}, map_default: other, case_insensitive: true}
    day: {path: event.timestamp, format: "%Y-%m-%d"}
    error_code: {path: fluxdata.error_code, when: {field: event.type, op: eq, value: error}}

They apply in this order: ``when`` (false: the field is left out, nothing else runs), the
source (missing: the ``default`` as written, or the field is left out), ``format``, ``map``,
``cast``. So ``{path: event.timestamp, format: "%Y%m%d", cast: int}`` is ``20251126``, and
``cast`` is last: the type it names is the type the destination gets.

* ``concat: [parts]``: each part is a literal string (never a path here) or a field spec
  (``{path: ..}`` with its own ``default``, ``format``, ``map``, ``cast``; no ``when``). A
  part that is missing (no value, no default) leaves the whole field missing. A string
  part is used as is; any other value as its compact JSON text, as the job writes it:
  ``4500``, ``12.5``, ``1e-7``, ``true``, ``null``, ``{"a":[1,2]}``.
* ``cast`` (:data:`CASTS`), never a guess; ``null`` stays ``null``. ``int``: an integer,
  a float with no fraction (``4500.0``), or integer text (``"4500"``, ``"-3"``, ``"+7"``;
  ASCII digits, no spaces, ``_``, fraction or exponent); within -2**63..2**64-1.
  ``float``: a number, or decimal text (``"12.5"``, ``"-1e3"``, ``".5"``); never NaN or
  infinity. ``string``: text as is, anything else rendered as in ``concat``. ``bool``:
  ``true``/``false``, the numbers 0 and 1, or the text ``true``, ``false``, ``1``, ``0``
  in any case. Anything else raises :class:`PackageCastError`: the event becomes a dead
  letter with reason ``package_cast_failed``, naming the field and (cut to 60
  characters) the value.
* ``map: {from: to}``: a value equal to a key becomes its value; an unmapped one
  (objects and lists included) becomes ``map_default`` when given, else passes
  unchanged. ``case_insensitive: true`` compares string keys casefolded (``IOS``,
  ``ios`` and ``iOS`` alike). A boolean never equals a number (``true`` is not ``1``).
* ``format``: ``iso8601``, ``epoch_ms``, ``epoch_s``, or a strftime pattern in UTC
  (``%Y-%m-%d``: ``2025-11-26``), with Python's portable directives
  (``%a %A %w %d %b %B %m %y %Y %H %I %p %M %S %f %z %Z %j %U %W %c %x %X %G %u %V``,
  ``%%``). A value that is not a timestamp passes unchanged, as with the named formats.
* ``when``: a route condition ``{field, op, value}`` or group (``any``/``all``/``not``),
  or a list of them (all must hold), on the record this template reads: the filtered
  event after ``values`` and ``rename``, so a field the filter removed is missing there.

Refused when the template is compiled (:class:`TemplateError` naming the field): an
unknown ``cast`` or key, a pattern with no directive or an unknown one, ``const`` with
anything but ``when`` (it is the value as written), ``map_default`` or
``case_insensitive`` without ``map``, a ``default``, map value or ``map_default`` that
the field's ``cast`` would refuse (a ``default`` must be ``null`` or of the cast's type),
and ``cast``/``map``/``concat`` on the spread ``"*"``. A field that uses none of these
additions compiles to the same getters as before them.

The escape hatch
----------------

When the language falls short, ``function: my_team.packaging:to_amplitude`` (``module:
callable``, an attribute path after the colon) names the user's own Python. It runs last,
after ``values``, ``rename`` and the template, once per event, on a private deep copy of
the record (it may change it in place: no other connector's record shares its objects),
and returns::

    {"event_type": "play"}              # one record
    [{"n": 0}, {"n": 1}]                # fan-out: each its own record (at most MAX_FAN_OUT)
    None                                # drop: no record, counted ``dropped``

:meth:`Packager.outputs` gives that list of records (``[]`` for a drop). Any other return
value (a string, a tuple, a list holding a non-dict), or an exception (``SystemExit``
included), raises :class:`PackageFunctionError` naming the function, the exception's type
and its message: the event becomes a dead letter with reason ``package_function_failed``.
The reference stays a string; the module is imported on first use in each process
(:func:`load_function`), never pickled with the job.

Plain Python, no Beam import.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import orjson
import yaml

from transforms.rules.events import MISSING, get_path, path_getter, split_path, to_epoch_ms
from transforms.rules.redact import redact
from transforms.rules.route import compile_when

TIME_FORMATS = ("iso8601", "epoch_ms", "epoch_s")
"""The named values of a template field's ``format`` (any other is a strftime pattern)."""

CASTS = ("int", "float", "string", "bool")
"""Values accepted by a template field's ``cast``."""

STRFTIME_DIRECTIVES = "aAwdbBmyYHIpMSfzZjUWcxXGuV"
"""The strftime directives a ``format`` pattern may use (``%`` + one of these, or ``%%``):
Python's documented, platform-independent ones."""

_SOURCE_KEYS = ("path", "const", "concat")
_ADDED_KEYS = {"concat", "cast", "map", "map_default", "case_insensitive", "when"}
_FIELD_KEYS = {"path", "const", "default", "format"} | _ADDED_KEYS
_TEMPLATE_KEYS = {"description", "fields", "flatten"}

INT_RANGE = (-(2**63), 2**64 - 1)
"""``cast: int`` results: the integers the job reads and writes exactly."""

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_NUMBER_TEXT = 400  # longer text is not a number a destination column takes
_EXCERPT = 60  # characters of a value a cast error shows


class TemplateError(ValueError):
    """A template that cannot be used; the message names the field and the fix."""


class PackageError(ValueError):
    """An event a template cannot package; ``reason`` is its dead letter's reason."""

    reason = "package_failed"


class PackageCastError(PackageError):
    """A value a field's ``cast`` refuses, e.g. ``"fast"`` for ``cast: int``.

    The event becomes a dead letter with reason ``package_cast_failed``; the message
    names the field, the cast and (cut to 60 characters) the value.
    """

    reason = "package_cast_failed"


class PackageFunctionError(PackageError):
    """A ``package.function`` that raised, or returned something that is not records.

    The event becomes a dead letter with reason ``package_function_failed``, e.g.
    ``package.function my_team.packaging:to_amplitude raised KeyError: 'user'``.
    """

    reason = "package_function_failed"


class FunctionReferenceError(ValueError):
    """A ``package.function`` reference that cannot be used; the message says how to fix it."""


MAX_FAN_OUT = 1000
"""The most records a ``package.function`` may return for one event (a batch's default
size); a longer list is a ``package_function_failed`` dead letter, so a runaway function
cannot fill a worker's memory with one event's records."""

MAX_ERROR_CHARS = 500
"""The longest exception message a ``package_function_failed`` dead letter keeps."""

_READ_CHARS = 10_000  # of a huge message, the part redacted before the cut above

FUNCTION_REFERENCE = re.compile(
    r"(?P<module>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r":(?P<attr>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
)
"""``module:callable``, e.g. ``my_team.packaging:to_amplitude`` (``Class.method`` works)."""

_INSTALL = (
    "install the package that provides it where the job is launched and on the workers "
    "(Dataflow: --setup_file of your package, --extra_package or --requirements_file; "
    "Flink LOOPBACK: installed in the launching environment)"
)

_FUNCTIONS: dict[str, Callable[[Any], Any]] = {}
_FUNCTIONS_LOCK = threading.Lock()


def load_function(reference: str) -> Callable[[Any], Any]:
    """Import ``module:callable`` and check it can take one record; cached per process.

    >>> load_function("json:dumps")({"a": 1})
    '{"a": 1}'

    Raises:
        FunctionReferenceError: the reference is malformed, the module does not import,
            the attribute is missing, or it is not a function of one record; the
            message says which and how to fix it.
    """
    found = _FUNCTIONS.get(reference)
    if found is not None:
        return found
    with _FUNCTIONS_LOCK:
        found = _FUNCTIONS.get(reference)
        if found is None:
            # A failure is not kept: validation must see a package installed since.
            found = _FUNCTIONS[reference] = _import_function(reference)
    return found


def _import_function(reference: str) -> Callable[[Any], Any]:
    match = FUNCTION_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        raise FunctionReferenceError(
            f"{reference!r} is not a module:callable reference. Fix: write it like "
            "'my_team.packaging:to_amplitude' (the module's import path, a colon, the name)"
        )
    module_name, attr = match["module"], match["attr"]
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise FunctionReferenceError(
            f"cannot import module {module_name!r} ({exc}). Fix: {_INSTALL}"
        ) from None
    except Exception as exc:  # the user's module may raise anything while importing
        raise FunctionReferenceError(
            f"importing module {module_name!r} raised {type(exc).__name__}: "
            f"{_exception_text(exc)}. Fix: make the module import cleanly"
        ) from None
    for n, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = module_name if n == 0 else ".".join([module_name, *attr.split(".")[:n]])
            raise FunctionReferenceError(
                f"module {owner!r} has no attribute {part!r}. Fix: name a function the "
                f"module defines (module:function), or {_INSTALL.split(' (')[0]} in the "
                "version that has it"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise FunctionReferenceError(
            f"{reference} is {_a(type(obj).__name__)}, not a function. Fix: name a function "
            "that takes the record (a dict) and returns a dict, a list of dicts or None"
        )
    try:
        inspect.signature(obj).bind(object())
    except TypeError as exc:
        raise FunctionReferenceError(
            f"{reference} cannot be called with one record ({exc}). Fix: give it one "
            "parameter, the record"
        ) from None
    except ValueError:  # no signature to read (some builtins): it is tried on the events
        pass
    return obj


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _exception_text(exc: BaseException) -> str:
    """An exception's message, never raising and at most :data:`_READ_CHARS` characters."""
    try:
        text = str(exc)
    except Exception:
        return "<the exception's text cannot be shown>"
    return text[:_READ_CHARS]


def function_error_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A function's error as a dead letter keeps it: redacted, then cut.

    ``secrets`` (the connector's, :func:`transforms.rules.redact.redact`) are replaced
    however spelled, as are URL queries and key-like parameters; the result is at most
    :data:`MAX_ERROR_CHARS` characters plus a note of what was cut.
    """
    cleaned = redact(text[:_READ_CHARS], secrets)
    if len(cleaned) <= MAX_ERROR_CHARS:
        return cleaned
    return cleaned[:MAX_ERROR_CHARS] + f"... ({len(text) - MAX_ERROR_CHARS} more characters)"


def _private_copy(value: Any) -> Any:
    """A deep copy of a JSON-shaped record (dicts and lists copied; other values shared)."""
    kind = type(value)
    if kind is dict:
        return {k: _private_copy(v) for k, v in value.items()}
    if kind is list:
        return [_private_copy(v) for v in value]
    return value


def call_function(reference: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``package.function`` on a private copy of ``record``: the records it makes.

    ``[]`` when it returns None (a drop), ``[record]`` for a dict, the list for a list.

    Raises:
        PackageFunctionError: it raised, or returned anything else (see the module doc).
    """
    try:
        function = load_function(reference)
    except FunctionReferenceError as exc:  # validated where launched, missing on this worker
        raise PackageFunctionError(
            f"package.function {reference} cannot be loaded on this worker: {exc}"
        ) from None
    try:
        got = function(_private_copy(record))
    except (Exception, SystemExit) as exc:
        raise PackageFunctionError(
            f"package.function {reference} raised {type(exc).__name__}: {_exception_text(exc)}"
        ) from None
    if got is None:
        return []
    if isinstance(got, dict):
        return [got]
    if not isinstance(got, list):
        raise PackageFunctionError(
            f"package.function {reference} returned {_a(type(got).__name__)}; it must return "
            "a dict, a list of dicts or None"
        )
    if len(got) > MAX_FAN_OUT:
        raise PackageFunctionError(
            f"package.function {reference} returned {len(got)} records; at most "
            f"{MAX_FAN_OUT} per event"
        )
    for n, item in enumerate(got):
        if not isinstance(item, dict):
            raise PackageFunctionError(
                f"package.function {reference} returned a list whose item {n} is "
                f"{_a(type(item).__name__)}; every item must be a dict"
            )
    return got


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
    """Convert a timestamp to ``fmt``; a value that is not a timestamp passes unchanged.

    ``fmt`` is ``iso8601``, ``epoch_ms``, ``epoch_s`` or a strftime pattern (UTC):
    ``format_time(1764136800123, "%Y-%m-%d")`` is ``"2025-11-26"``.
    """
    ms = to_epoch_ms(value)
    if ms is None:
        return value
    if fmt == "epoch_ms":
        return ms
    if fmt == "epoch_s":
        return ms / 1000
    if fmt != "iso8601":
        return _strftime(ms, fmt)
    return _iso_second(ms // 1000) + f"{ms % 1000:03d}Z"


def _strftime(ms: int, pattern: str) -> str:
    if "%f" in pattern:
        stamp = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
        return stamp.replace(microsecond=ms % 1000 * 1000).strftime(pattern)
    return _strftime_second(ms // 1000, pattern)


@functools.lru_cache(maxsize=4096)
def _strftime_second(second: int, pattern: str) -> str:
    """A pattern without ``%f`` depends on the second only; a batch has few of those."""
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime(pattern)


def strftime_problem(pattern: str) -> str | None:
    """What makes ``pattern`` unusable as a ``format``, or None.

    >>> strftime_problem("%Y-%m-%d") is None, strftime_problem("day")
    (True, 'has no strftime directive, so every event would get the same text')
    """
    directives = 0
    i = 0
    while i < len(pattern):
        if pattern[i] != "%":
            i += 1
            continue
        code = pattern[i + 1 : i + 2]
        if not code:
            return "ends with a lone '%' (write '%%' for a percent sign)"
        if code in STRFTIME_DIRECTIVES:
            directives += 1
        elif code != "%":
            return (
                f"uses '%{code}', which is not one of the portable strftime directives "
                f"(%{' %'.join(STRFTIME_DIRECTIVES)} and %%)"
            )
        i += 2
    if not directives:
        return "has no strftime directive, so every event would get the same text"
    if not _strftime(1764136800123, pattern):
        return "renders nothing"
    return None


def render(value: Any) -> str:
    """A value as ``concat`` and ``cast: string`` write it: text as is, else compact JSON.

    >>> render("iOS"), render(4500), render(True), render(None), render({"a": [1, 2.5]})
    ('iOS', '4500', 'true', 'null', '{"a":[1,2.5]}')
    """
    if type(value) is str:
        return value
    return orjson.dumps(value).decode()


_FAIL = object()


def _to_int(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float:
        if not (math.isfinite(value) and value.is_integer()):
            return _FAIL
        number = int(value)
    elif kind is str:
        if len(value) > _MAX_NUMBER_TEXT or _INT_TEXT.fullmatch(value) is None:
            return _FAIL
        number = int(value)
    else:
        return None if value is None else _FAIL
    return number if INT_RANGE[0] <= number <= INT_RANGE[1] else _FAIL


def _to_float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else _FAIL
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return _FAIL
    if kind is str:
        if len(value) > _MAX_NUMBER_TEXT or _FLOAT_TEXT.fullmatch(value) is None:
            return _FAIL
        number = float(value)
        return number if math.isfinite(number) else _FAIL
    return None if value is None else _FAIL


def _to_string(value: Any) -> Any:
    return None if value is None else render(value)


_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


def _to_bool(value: Any) -> Any:
    kind = type(value)
    if kind is bool or value is None:
        return value
    if kind is int or kind is float:
        return bool(value) if value in (0, 1) else _FAIL
    if kind is str and len(value) <= 5:
        return _BOOL_TEXT.get(value.lower(), _FAIL)
    return _FAIL


_CASTERS: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "string": _to_string,
    "bool": _to_bool,
}


def _excerpt(value: Any) -> str:
    """A value for an error message, bounded: ``'fast' (string)``."""
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        shown = repr(value[:_EXCERPT]) + ("..." if len(value) > _EXCERPT else "")
        return f"{shown} (string)"
    if isinstance(value, bool):
        return f"{render(value)} (boolean)"
    if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
        return "an integer past 64 bits"
    return f"{value!r} (number)"


def caster(cast: str, name: str) -> Callable[[Any], Any]:
    """The function of ``cast: <cast>`` for field ``name``; it raises :class:`PackageCastError`.

    >>> caster("int", "bitrate")("4500")
    4500
    """
    convert = _CASTERS[cast]

    def cast_value(value: Any) -> Any:
        got = convert(value)
        if got is _FAIL:
            raise PackageCastError(f"field {name!r}: cannot cast {_excerpt(value)} to {cast}")
        return got

    return cast_value


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
class _ValueMap:
    """A field's ``map``: ``{from: to}``, ``map_default`` (MISSING: unchanged) and casefolding."""

    keys: dict[Any, Any]  # non-boolean keys, strings casefolded when casefold
    bool_keys: dict[bool, Any]  # kept apart: True == 1 to a dict, never to a template
    default: Any
    casefold: bool

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            hit = self.keys.get(value.casefold() if self.casefold else value, MISSING)
        elif kind is bool:
            hit = self.bool_keys.get(value, MISSING)
        elif kind is dict or kind is list:
            hit = MISSING
        else:
            hit = self.keys.get(value, MISSING)
        if hit is MISSING:
            return value if self.default is MISSING else self.default
        return hit


@dataclass(frozen=True)
class _Field:
    target: tuple[str, ...] | None  # None: spread ("*")
    source: tuple[str, ...] | None  # None: constant (or concat); () : the whole record
    const: Any
    default: Any
    fmt: str | None
    name: str = ""
    concat: tuple[str | _Field, ...] | None = None
    mapping: _ValueMap | None = None
    cast: str | None = None
    when: Callable[[dict[str, Any]], bool] | None = dataclasses.field(default=None, compare=False)

    @property
    def extended(self) -> bool:
        """Whether the field uses concat, cast, map, when or a strftime ``format``."""
        return (
            self.concat is not None
            or self.mapping is not None
            or self.cast is not None
            or self.when is not None
            or (self.fmt is not None and self.fmt not in TIME_FORMATS)
        )

    def value(self, record: dict[str, Any]) -> Any:
        """The field's value for ``record`` (MISSING: left out), step by step.

        The definition :meth:`getter` compiles; tests check one against the other.
        """
        if self.when is not None and not self.when(record):
            return MISSING
        if self.concat is not None:
            values = [p if isinstance(p, str) else p.value(record) for p in self.concat]
            got = MISSING if MISSING in values else "".join(render(v) for v in values)
        elif self.source is None:
            return self.const
        else:
            got = get_path(record, self.source) if self.source else record
        if got is MISSING:
            return self.default
        if self.fmt:
            got = format_time(got, self.fmt)
        if self.mapping is not None:
            got = self.mapping(got)
        if self.cast is not None:
            got = caster(self.cast, self.name)(got)
        return got

    def getter(self) -> Getter:
        """:meth:`value` compiled into one function of the record (the path read once)."""
        if self.extended:
            return self._extended_getter()
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

    def _extended_getter(self) -> Getter:
        # Only fields that use the additions get here, so plain fields pay nothing for them.
        source: Getter
        if self.concat is not None:
            source = _concat_getter(self.concat)
        elif self.source is None:
            const = self.const
            source = lambda record: const  # noqa: E731 - one expression, like the plain getters
        elif not self.source:
            source = lambda record: record  # noqa: E731
        else:
            source = path_getter(self.source)
        steps: list[Callable[[Any], Any]] = []
        if self.fmt:
            steps.append(functools.partial(format_time, fmt=self.fmt))
        if self.mapping is not None:
            steps.append(self.mapping)
        if self.cast is not None:
            steps.append(caster(self.cast, self.name))
        when, default, chain = self.when, self.default, tuple(steps)

        def extended(record: dict[str, Any]) -> Any:
            if when is not None and not when(record):
                return MISSING
            got = source(record)
            if got is MISSING:
                return default
            for step in chain:
                got = step(got)
            return got

        return extended


def _concat_getter(parts: tuple[str | _Field, ...]) -> Getter:
    items = tuple(p if isinstance(p, str) else p.getter() for p in parts)

    def concat(record: dict[str, Any]) -> Any:
        texts: list[str] = []
        for item in items:
            if isinstance(item, str):
                texts.append(item)
                continue
            got = item(record)
            if got is MISSING:
                return MISSING
            texts.append(got if type(got) is str else render(got))
        return "".join(texts)

    return concat


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


def _compile_field(template: str, key: str, spec: Any, part: str | None = None) -> _Field:
    """Compile one field spec; ``part`` names a concat part (``"ddtags, concat part 2"``)."""
    label = part or key
    where = f"template {template!r}, field {label!r}"
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping):
        raise TemplateError(f"{where}: expected a path string or a mapping, got {spec!r}")
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise TemplateError(
            f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_FIELD_KEYS)}"
        )
    if sum(k in spec for k in _SOURCE_KEYS) != 1:
        raise TemplateError(f"{where}: give exactly one of 'path', 'const' or 'concat'")
    if "const" in spec and set(spec) - {"const", "when"}:
        extra = sorted(set(spec) - {"const", "when"})
        raise TemplateError(
            f"{where}: 'const' is the value as written, so {extra} would have nothing to "
            "act on; remove them, or read a value with 'path'"
        )
    if key == "*" and part is None:
        spread_bad = sorted(
            {"cast", "map", "map_default", "case_insensitive", "concat"} & set(spec)
        )
        if spread_bad:
            raise TemplateError(
                f"{where}: '*' spreads an object's keys into the record; it takes no "
                f"{spread_bad} (give the values their own fields)"
            )
    if part is not None and "when" in spec:
        raise TemplateError(
            f"{where}: 'when' decides a whole field; put it on the field, not on a part"
        )
    fmt = spec.get("format")
    if fmt is not None:
        problem = "is not text" if not isinstance(fmt, str) else None
        if problem is None and fmt not in TIME_FORMATS:
            problem = strftime_problem(fmt) if fmt else "is empty"
        if problem:
            raise TemplateError(
                f"{where}: format {fmt!r} {problem}; use {', '.join(TIME_FORMATS)} or a "
                "strftime pattern such as '%Y-%m-%d'"
            )
    cast = spec.get("cast")
    if cast is not None and cast not in CASTS:
        raise TemplateError(f"{where}: cast {cast!r} is not one of {', '.join(CASTS)}")
    default = spec.get("default", MISSING)
    if cast is not None and not _of_cast_type(default, cast):
        raise TemplateError(
            f"{where}: default {default!r} is used as written, and is not of type {cast}; "
            f"give null or a {cast} value"
        )
    mapping = _compile_map(where, spec, cast)
    when = _compile_when(where, spec["when"]) if "when" in spec else None
    source: tuple[str, ...] | None = None
    if "path" in spec:
        path = spec["path"]
        if not isinstance(path, str) or not path:
            raise TemplateError(f"{where}: 'path' must be a dotted path or '$'")
        source = () if path == "$" else split_path(path)
    concat = None
    if "concat" in spec:
        parts = spec["concat"]
        if not isinstance(parts, list) or not parts:
            raise TemplateError(
                f"{where}: 'concat' must be a non-empty list of parts, each a string or a "
                "field spec such as {path: metadata.device.os}"
            )
        concat = tuple(_compile_part(template, key, label, n, p) for n, p in enumerate(parts, 1))
    target = None if key == "*" else split_path(key)
    return _Field(
        target, source, spec.get("const"), default, fmt, label, concat, mapping, cast, when
    )


def _compile_part(template: str, key: str, label: str, n: int, spec: Any) -> str | _Field:
    if isinstance(spec, str):
        return spec  # a literal: in a concat a plain string is text, never a path
    if not isinstance(spec, Mapping):
        raise TemplateError(
            f"template {template!r}, field {label!r}: concat part {n} must be a string or "
            f"a field spec such as {{path: metadata.device.os}}, got {spec!r}"
        )
    return _compile_field(template, key, spec, part=f"{label}, concat part {n}")


def _of_cast_type(value: Any, cast: str) -> bool:
    """Whether a default can be used as written by a field with ``cast``."""
    if value is MISSING or value is None:
        return True
    kind = type(value)
    if cast == "int":
        return kind is int
    if cast == "float":
        return kind is int or kind is float
    if cast == "string":
        return kind is str
    return kind is bool


def _compile_map(where: str, spec: Mapping[str, Any], cast: str | None) -> _ValueMap | None:
    if "map" not in spec:
        for key in ("map_default", "case_insensitive"):
            if key in spec:
                raise TemplateError(f"{where}: {key!r} needs 'map' beside it")
        return None
    raw = spec["map"]
    if not isinstance(raw, Mapping) or not raw:
        raise TemplateError(f"{where}: 'map' must be a non-empty mapping {{from: to}}")
    casefold = spec.get("case_insensitive", False)
    if not isinstance(casefold, bool):
        raise TemplateError(f"{where}: 'case_insensitive' must be true or false")
    keys: dict[Any, Any] = {}
    bool_keys: dict[bool, Any] = {}
    spelled: dict[Any, Any] = {}
    for source, value in raw.items():
        if isinstance(source, bool):
            bool_keys[source] = value
            continue
        key = source.casefold() if casefold and isinstance(source, str) else source
        if key in keys and keys[key] != value:
            raise TemplateError(
                f"{where}: map keys {spelled[key]!r} and {source!r} are the same key "
                f"when case_insensitive, with different values"
            )
        keys[key], spelled[key] = value, source
    default = spec.get("map_default", MISSING)
    if cast is not None:
        convert = _CASTERS[cast]
        outputs = [*raw.values(), *([] if default is MISSING else [default])]
        for value in outputs:
            if convert(value) is _FAIL:
                raise TemplateError(
                    f"{where}: map value {value!r} cannot be cast to {cast}, so every event "
                    "it maps would be a dead letter"
                )
    return _ValueMap(keys, bool_keys, default, casefold)


def _compile_when(where: str, spec: Any) -> Callable[[dict[str, Any]], bool]:
    """A field's ``when``: a route condition or group, or a list of them (all must hold)."""
    if isinstance(spec, list) and spec:
        spec = {"all": spec}
    if not isinstance(spec, Mapping):
        raise TemplateError(
            f"{where}: 'when' must be a condition {{field, op, value}}, a group "
            f"{{any|all|not: ...}} or a non-empty list of them, got {spec!r}"
        )
    try:
        return compile_when(spec, "when")
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc}") from exc


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
    function: str | None = None
    """``package.function`` (``module:callable``), kept as the reference: imported where it
    runs, on first use (:func:`load_function`). None: no function, and :meth:`apply` is
    the whole step."""
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
        function: str | None = None,
    ) -> Packager:
        """Compile a connector's ``package`` section (``function`` is not imported here)."""
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
            function,
        )

    @property
    def is_identity(self) -> bool:
        """True when packaging changes nothing (no values, renames, template or function)."""
        return (
            not self.values and not self.renames and self.template is None and self.function is None
        )

    def outputs(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Every record of one filtered event: :meth:`apply`, then the function, if any.

        ``[record]`` without a function; with one, what it made (``[]``: dropped). The
        input is never modified.

        Raises:
            PackageError: a template cast refused a value, or the function failed
                (:class:`PackageFunctionError`).
        """
        record = self.apply(event)
        if self.function is None:
            return [record]
        return call_function(self.function, record)

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """``values``, ``rename`` and the template on one filtered event; never modifies it.

        Not the function: :meth:`outputs` applies it after this.
        """
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
