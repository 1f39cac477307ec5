"""The worker's tool runner: user tools and reward functions of an environment, called sandboxed.

`ProcessPerCallPool` has the interface of the sandbox's `ToolServerPool` (`add_tool`, `add_function`,
`call(key, arguments) -> SandboxResult`, `close`) over today's `run_tool_source` (one limited process per
call); the long-lived tool-server pool replaces it without touching callers. `runner_for_spec` registers
every user tool and reward of an `EnvSpec` and returns the `tool_runner(key, arguments)` the RL core takes.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from worker.sandbox import SandboxLimits, SandboxResult, run_tool_source

logger = logging.getLogger(__name__)


class ToolPool(Protocol):
    def add_tool(self, key: str, source: str, function: str) -> None: ...
    def add_function(self, key: str, source: str, function: str) -> None: ...
    def call(self, key: str, arguments: dict[str, Any]) -> SandboxResult: ...
    def close(self) -> None: ...


class ProcessPerCallPool:
    """`ToolServerPool`'s shape over `run_tool_source`: each call is a fresh, limited child process."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._entries: dict[str, tuple[str, str]] = {}

    def add_tool(self, key: str, source: str, function: str) -> None:
        self._entries[key] = (source, function)

    def add_function(self, key: str, source: str, function: str) -> None:
        self._entries[key] = (source, function)

    def call(self, key: str, arguments: dict[str, Any]) -> SandboxResult:
        entry = self._entries.get(key)
        if entry is None:
            return SandboxResult(False, None, f"no user code registered under {key!r}", 0.0)
        source, function = entry
        return run_tool_source(source, function, arguments, self.limits)

    def close(self) -> None:
        self._entries.clear()


def register_spec(pool: ToolPool, spec: Any) -> None:
    """Register the user tools and reward functions of `spec` (an `EnvSpec`) with `pool`."""
    for tool in spec.user_tools:
        pool.add_tool(str(tool.key), tool.source, tool.function or tool.name)
    for term in spec.user_rewards:
        pool.add_function(str(term.key), term.source, term.function or "reward")


def pool_for_spec(spec: Any, *, limits: SandboxLimits) -> ToolPool:
    """A pool with `spec`'s user code registered (time limit: the environment's `tool_timeout_s`)."""
    timed = SandboxLimits(time_limit_s=float(spec.limits.tool_timeout_s), memory_limit_mb=limits.memory_limit_mb)
    pool = ProcessPerCallPool(timed)
    register_spec(pool, spec)
    return pool
