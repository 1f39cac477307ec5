"""JSON schemas for tools, built from type hints and Google-style docstrings.

Split from `tools/base.py` to keep modules small: hint → schema mapping,
docstring parsing, and the light argument check/coercion run before each call.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from worker.rl.tools.docstrings import parse_google_docstring
from worker.rl.types import JSONValue

_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {arg: description}) (`tools.docstrings`)."""
    return parse_google_docstring(doc)


def hint_schema(hint: Any, where: str) -> dict[str, JSONValue]:
    """JSON schema of one type hint; TypeError naming `where` when the type is unsupported."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint in (list, tuple):
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    if origin in (list, tuple) and args:
        item = args[0]
        return {"type": "array", "items": hint_schema(item, where)}
    if origin is dict:
        return {"type": "object"}
    if origin is Literal:
        kinds = {_SCALARS.get(type(a)) for a in args}
        if None in kinds or len(kinds) != 1:
            raise TypeError(f"{where}: Literal values must all be str, int, float or bool")
        return {"type": kinds.pop(), "enum": list(args)}
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = hint_schema(rest[0], where)
            return {**inner, "type": [inner["type"], "null"]} if isinstance(inner.get("type"), str) else inner
    raise TypeError(
        f"{where}: unsupported type {hint!r}; use str, int, float, bool, list[...], dict, Literal[...] or X | None"
    )


def function_parameters(fn: Callable[..., Any], arg_docs: Mapping[str, str], label: str) -> dict[str, JSONValue]:
    """The `parameters` object of a tool schema, from `fn`'s signature, hints and arg docs."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"tool {label!r}: cannot resolve type hints ({exc})") from exc
    properties: dict[str, JSONValue] = {}
    required: list[str] = []
    for pname, param in inspect.signature(fn).parameters.items():
        where = f"tool {label!r} argument {pname!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{where}: *args/**kwargs are not allowed; name every argument")
        if pname not in hints:
            raise TypeError(f"{where} has no type hint; annotate it (e.g. `{pname}: str`)")
        if pname not in arg_docs:
            raise TypeError(f"{where} is not documented; add `{pname}: <what it is>` under 'Args:' in the docstring")
        prop = hint_schema(hints[pname], where)
        prop["description"] = arg_docs[pname]
        properties[pname] = prop
        if param.default is inspect.Parameter.empty:
            required.append(pname)
    return {"type": "object", "properties": properties, "required": required}


def _coerce(value: Any, schema: Mapping[str, Any]) -> tuple[bool, Any]:
    """(ok, value) with light coercion: numeric strings → numbers, 'true'/'false' → bool."""
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    if value is None:
        return ("null" in kinds, None)
    if "enum" in schema and value not in schema["enum"]:
        return False, value
    for kind in kinds:
        if kind == "string" and isinstance(value, str):
            return True, value
        if kind == "boolean":
            if isinstance(value, bool):
                return True, value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return True, value.strip().lower() == "true"
        if kind in ("integer", "number") and not isinstance(value, bool):
            try:
                number = float(value.strip()) if isinstance(value, str) else value
            except ValueError:
                continue
            if kind == "number" and isinstance(number, int | float):
                return True, number if isinstance(value, int | float) else float(number)
            if isinstance(number, int) or (isinstance(number, float) and number.is_integer()):
                return True, int(number)
        if kind == "array" and isinstance(value, list):
            items = schema.get("items")
            if items is None:
                return True, value
            coerced = [_coerce(v, items) for v in value]
            return (all(ok for ok, _ in coerced), [v for _, v in coerced])
        if kind == "object" and isinstance(value, dict):
            return True, value
    return False, value


def _type_name(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "any")
    name = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in schema:
        name += " one of " + ", ".join(repr(v) for v in schema["enum"])
    if "items" in schema:
        name += f" of {_type_name(schema['items'])}"
    return name


def check_arguments(parameters: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any] | str:
    """Validated (lightly coerced) keyword arguments, or a message saying what is wrong."""
    properties: Mapping[str, Any] = parameters.get("properties", {})
    unknown = [k for k in arguments if k not in properties]
    if unknown:
        return f"got unknown argument(s) {', '.join(repr(k) for k in unknown)}"
    missing = [k for k in parameters.get("required", []) if k not in arguments]
    if missing:
        return f"is missing required argument(s) {', '.join(repr(k) for k in missing)}"
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        ok, coerced = _coerce(value, properties[key])
        if not ok:
            return f"got {type(value).__name__} {value!r} for '{key}', which must be {_type_name(properties[key])}"
        out[key] = coerced
    return out


def describe_parameters(parameters: Mapping[str, Any]) -> str:
    """One-line human description of a tool's arguments, for error messages."""
    required = set(parameters.get("required", []))
    parts = [
        f"{name} ({_type_name(prop)}, {'required' if name in required else 'optional'})"
        for name, prop in parameters.get("properties", {}).items()
    ]
    return ", ".join(parts) or "no arguments"
