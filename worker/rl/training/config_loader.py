"""Strict TOML/YAML → frozen-dataclass loading, generic over the target class.

`build_dataclass` coerces parsed values to the field types (Literal value lists included) and
raises a `ValueError` naming the key path; `read_spec_file` parses a .toml/.yaml/.yml file;
`apply_overrides` applies CLI `--set a.b=value` edits to plain data. `training.config` wraps
these for `TrainConfig`; this module knows no config class, so the two never import each other.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _convert(value: Any, hint: Any, path: str) -> Any:
    """Coerce a parsed TOML/YAML value to the field type `hint`, or raise naming `path`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{path} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"{path} must be a table of settings, got {type(value).__name__}")
        return build_dataclass(hint, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{path} must be a list, got {type(value).__name__}")
        item = args[0] if args and args[-1] is Ellipsis else None
        hints = [item] * len(value) if item is not None else list(args)
        if len(hints) != len(value):
            raise ValueError(f"{path} must have {len(hints)} items, got {len(value)}")
        return tuple(_convert(v, h, f"{path}[{i}]") for i, (v, h) in enumerate(zip(value, hints, strict=True)))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ValueError(f"{path} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")


def build_dataclass(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys name the key path and list the valid keys."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in valid:
            where = f"{path}.{key}" if path else key
            raise ValueError(f"unknown config key {where!r}; valid keys here: {', '.join(valid)}")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The top-level table of a TOML (.toml) or YAML (.yaml/.yml) run spec."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist")
    if p.suffix == ".toml":
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{p}: invalid TOML: {err}") from None
    elif p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    else:
        raise ValueError(f"config file {str(p)!r} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level must be a table of settings")
    return data


def _parse_value(text: str) -> Any:
    """A TOML literal (8, 0.5, true, "x", [1, 2]) or, failing that, the bare string; 'none' means None."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], assignments: list[str], *, optional_sections: tuple[str, ...] = ()) -> None:
    """Apply `section.key=value` edits to nested plain `data` in place.

    A section in `optional_sections` that is None (e.g. `model.lora`) is created by its first edit.
    """
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. rollout.group_size=8")
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None and part in optional_sections:
                node[part] = {}
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown config section {'.'.join(parts[: i + 1])!r} in override {item!r}")
            node = node[part]
        node[parts[-1]] = _parse_value(raw.strip())


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` on top of `base`, section by section."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
