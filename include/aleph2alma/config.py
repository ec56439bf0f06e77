"""Loading the TOML configuration files into pydantic models, with one readable error.

Each per-migration file (``migration.toml``, ``rules.toml``, ``fixes.toml``) is described by
a pydantic model whose fields carry descriptions and whose unknown keys are errors
(``extra="forbid"``). ``load_toml`` reads a file into its model; whatever is wrong with it
(a missing file, a TOML syntax error, every invalid key) becomes ONE exception, a subclass
of ``errors.ConfigError`` given by the caller, so the task fails at once instead of being
retried. Its message has one line per problem, compiler style::

    include/config/demo/fixes.toml: remap[2].column: "Z30_COLECTION" is not a column of Z30; its columns: …
    include/config/demo/fixes.toml: remap[3].styl: unknown key; known keys: table, column, from, to, …

Each line names the file, the key path (tables joined with ``.``; the blocks of an array of
tables counted from 1, as a reader counts the ``[[remap]]`` blocks in the file and as the
fix log names the rules: ``remap#2``), and what is allowed: the allowed values, the
expected type, the known keys, or the domain rule a validator checks.
"""

from __future__ import annotations

import functools
import json
import math
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, cast, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from aleph2alma.errors import ConfigError

T = TypeVar("T")

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "dataclass_type": "a table",
    "model_attributes_type": "a table",
    "dataclass_args_type": "a table",
}
"""Pydantic error types of a value of the wrong kind → the TOML kind that was expected."""
_UNKNOWN = {"extra_forbidden", "unexpected_keyword_argument", "unexpected_positional_argument"}
_MISSING = {
    "missing",
    "missing_argument",
    "missing_keyword_only_argument",
    "missing_positional_only_argument",
}
_BOUNDS = {
    "greater_than": "> {gt}",
    "greater_than_equal": "≥ {ge}",
    "less_than": "< {lt}",
    "less_than_equal": "≤ {le}",
}


def read_toml(path: Path, error: type[ConfigError] = ConfigError, missing_hint: str = "") -> dict[str, Any]:
    """The parsed TOML file at ``path``; ``error`` naming the path if it is missing or not TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file" + (f"; {missing_hint}" if missing_hint else "")) from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def validate(
    model: type[T],
    data: Mapping[str, Any],
    source: str,
    error: type[ConfigError] = ConfigError,
    context: dict[str, Any] | None = None,
) -> T:
    """``data`` (a parsed file) as ``model``; ``error`` listing every problem (``format_errors``)."""
    try:
        return cast(T, _adapter(cast(Any, model)).validate_python(data, context=context))
    except ValidationError as exc:
        raise error(format_errors(exc, model, source)) from None


def load_toml(
    path: Path,
    model: type[T],
    error: type[ConfigError] = ConfigError,
    *,
    defaults: Mapping[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    missing_hint: str = "",
) -> T:
    """The TOML file at ``path`` as ``model`` (``defaults`` fill keys the file leaves out).

    Raises ``error`` (a ``ConfigError``) naming the file when it is missing, is not TOML,
    or does not fit the model; the message lists every problem, one line each.
    """
    data = {**(defaults or {}), **read_toml(path, error, missing_hint)}
    return validate(model, data, str(path), error, context)


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


# --- messages -----------------------------------------------------------------------------


def format_errors(exc: ValidationError, model: type[Any], source: str) -> str:
    """One line per problem: ``<source>: <key path>: <what is wrong and what is allowed>``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = key_path(loc)
        lines.append(
            f"{source}: {path}: {describe_error(err, model)}"
            if path
            else f"{source}: {describe_error(err, model)}"
        )
    return "\n".join(lines)


def key_path(loc: tuple[int | str, ...]) -> str:
    """``('remap', 1, 'where', 'Z30_SUB_LIBRARY')`` → ``remap[2].where.Z30_SUB_LIBRARY`` (blocks from 1)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif part == "[key]":
            continue
        else:
            name = part if part.replace("_", "a").isalnum() else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out


def describe_error(err: Any, model: type[Any]) -> str:
    """What is wrong with one value, and what would be allowed there."""
    kind, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    value = err.get("input")
    if kind in _UNKNOWN:
        parent = _type_at(model, loc[:-1])
        known = _keys(parent) if parent is not None else []
        return "unknown key" + (f"; known keys: {', '.join(known)}" if known else "")
    field = _field_at(model, loc)
    if kind in _MISSING:
        about = field.description if field is not None and field.description else ""
        return "required key missing" + (f": {about}" if about else "")
    if kind in ("literal_error", "enum"):
        return f"{show(value)} is not allowed; allowed: {ctx.get('expected', '?')}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind in _BOUNDS or kind == "finite_number":
        allowed = _bounds(field) or _BOUNDS.get(kind, "a finite number").format(**ctx)
        return f"{show(value)} is out of range; allowed: {allowed}"
    if kind == "too_short":
        return "must not be empty"
    if kind in _TYPE_WORDS:
        text = f"expected {_TYPE_WORDS[kind]}, got {show(value)}"
        if (
            kind in ("list_type", "tuple_type")
            and isinstance(value, Mapping)
            and loc
            and isinstance(loc[-1], str)
        ):
            text += f"; write [[{loc[-1]}]] blocks (an array of tables), not one [{loc[-1]}] table"
        if field is not None and field.examples and loc and isinstance(loc[-1], str):
            text += f"; e.g. {loc[-1]} = {field.examples[0]}"
        return text
    return str(err["msg"])


def time_zone(value: str) -> str:
    """``value`` if it is an IANA time zone, else a ``ValueError`` saying what is allowed (validators)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'{show(value)} is not a time zone; allowed: an IANA name such as "Asia/Shanghai" or "UTC"'
        ) from None
    return value


def show(value: Any) -> str:
    """A value as it would be written in TOML, shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, Mapping):
        text = "a table {" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(v) for v in value) + "]"
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _bounds(field: FieldInfo | None) -> str:
    if field is None:
        return ""
    parts = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
    if not parts:
        return ""
    number = (
        "a whole number"
        if _holds(field.annotation, int) and not _holds(field.annotation, float)
        else "a number"
    )
    return f"{number} {' and '.join(parts)}"


# --- walking a model along an error's location --------------------------------------------


def _fields(tp: Any) -> dict[str, FieldInfo] | None:
    """A model's fields (a ``BaseModel`` or a pydantic dataclass, also inside ``X | None``)."""
    if get_origin(tp) in (Union, UnionType):
        return next((f for arg in get_args(tp) if (f := _fields(arg)) is not None), None)
    fields = getattr(tp, "__pydantic_fields__", None) if isinstance(tp, type) else None
    return fields if isinstance(fields, dict) else None


def _holds(tp: Any, kind: type) -> bool:
    """Whether ``kind`` is ``tp`` or one of its type arguments (``int | None``, ``Annotated[int, …]``)."""
    return tp is kind or any(_holds(arg, kind) for arg in get_args(tp))


def _keys(tp: Any) -> list[str]:
    """The keys a model accepts in a file: its fields' aliases or names, in order."""
    return [f.alias or name for name, f in (_fields(tp) or {}).items()]


def _step(tp: Any, part: int | str) -> tuple[Any, FieldInfo | None] | None:
    """The type (and field) one location step below ``tp``; None if ``tp`` has nothing there."""
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        for arg in get_args(tp):
            if arg is not NoneType and (found := _step(arg, part)) is not None:
                return found
        return None
    fields = _fields(tp)
    if fields is not None:
        if not isinstance(part, str):
            return None
        for name, field in fields.items():
            if part in (name, field.alias):
                return field.annotation, field
        return None
    args = get_args(tp)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return args[0], None
    if origin in (dict, Mapping) and isinstance(part, str) and len(args) == 2:
        return (args[0] if part == "[key]" else args[1]), None
    return None


def _type_at(model: type[Any], loc: tuple[int | str, ...]) -> Any:
    """The type at a location in ``model`` (None if the location is not in the model)."""
    tp: Any = model
    for part in loc:
        found = _step(tp, part)
        if found is None:
            return None
        tp = found[0]
    return tp


def _field_at(model: type[Any], loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The field a location ends in (a dict value or array item keeps no field of its own)."""
    if not loc:
        return None
    parent = _type_at(model, loc[:-1])
    found = None if parent is None else _step(parent, loc[-1])
    return None if found is None else found[1]


def describe(model: type[Any]) -> dict[str, str]:
    """Key → description of a model's fields, in order: the documentation of a file's keys."""
    return {f.alias or name: f.description or "" for name, f in (_fields(model) or {}).items()}
