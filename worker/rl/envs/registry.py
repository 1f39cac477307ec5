"""Environment registry: names → "module:Class" strings, imported only when made.

Lazy imports keep `list_envs()` cheap and let an env pull heavy dependencies
(a retriever index, a sandbox) without every caller paying for them.
"""

from __future__ import annotations

import importlib
from typing import Any

from worker.rl.envs.base import ToolEnv

_REGISTRY: dict[str, str] = {}


def register(name: str, entry_point: str) -> None:
    """Register `entry_point` ("package.module:ClassName") under `name` (re-registering replaces it)."""
    module, sep, attr = entry_point.partition(":")
    if not name or not sep or not module or not attr:
        raise ValueError(f"register({name!r}, {entry_point!r}): use a non-empty name and 'package.module:ClassName'")
    _REGISTRY[name] = entry_point


def list_envs() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def make(name: str, **kwargs: Any) -> ToolEnv:
    """Import and build the env registered as `name`, passing `kwargs` to its constructor."""
    entry_point = _REGISTRY.get(name)
    if entry_point is None:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(list_envs()) or '(none)'}")
    module, _, attr = entry_point.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    env = cls(**kwargs)
    if not isinstance(env, ToolEnv):
        raise TypeError(f"{entry_point} built {type(env).__name__}, which is not a ToolEnv")
    return env


register("qa_search", "worker.rl.envs.qa:QASearchEnv")
register("calculator", "worker.rl.envs.calculator:CalculatorEnv")
