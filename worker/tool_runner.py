"""The worker's tool runner: an environment's user tools and reward functions, called sandboxed.

`pool_for_spec` starts a `ToolServerPool` (long-lived bubblewrap tool servers, `worker.sandbox.pool`) and
registers every user tool and reward function of an `EnvSpec`; the pool itself is the `tool_runner`
the RL core's `env_from_spec` takes (`pool(key, arguments)` for one call, `pool.call_batch` for a reward
term's whole step). Jobs close the pool when the run ends.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from backend.core.config import Settings, get_settings
from worker.sandbox.limits import SandboxLimits, SandboxResult, ToolAccess, ToolLoadError
from worker.sandbox.pool import ToolServerPool


class ToolPool(Protocol):
    def add_tool(self, key: str, source: str, function: str, access: ToolAccess | None = None) -> None: ...
    def add_function(self, key: str, source: str, function: str) -> None: ...
    def call(self, key: str, arguments: dict[str, Any]) -> SandboxResult: ...
    def __call__(self, key: str, arguments: dict[str, Any]) -> SandboxResult: ...
    def call_batch(self, key: str, items: list[dict[str, Any]]) -> list[SandboxResult]: ...
    def close(self) -> None: ...


def tool_access(tool: Any, settings: Settings | None = None) -> ToolAccess:
    """A user tool's (`ToolSpec`) allow-list and declared files, each file checked like the API checks it.

    The API checks this when an environment is saved or imported; the worker checks it again here,
    because it is the one that mounts them (an environment file may also reach it through the CLI).
    """
    settings = settings or get_settings()
    files = []
    for name, path in dict(tool.files).items():
        resolved = Path(path).expanduser().resolve()
        problem = settings.tool_file_problem(resolved)
        if problem is not None:
            raise ToolLoadError(f"tools.{tool.name}: file {name!r}: {problem}")
        files.append((name, str(resolved)))
    try:
        return ToolAccess(hosts=tuple(tool.network), files=tuple(files))
    except ValueError as exc:
        raise ToolLoadError(f"tools.{tool.name}: {exc}") from exc


def register_spec(pool: ToolPool, spec: Any) -> None:
    """Register the user tools (with their network allow-lists and files) and reward functions of `spec`."""
    for tool in spec.user_tools:
        pool.add_tool(str(tool.key), tool.source, tool.function or tool.name, tool_access(tool))
    for term in spec.user_rewards:
        pool.add_function(str(term.key), term.source, term.function or "reward")


def pool_for_spec(spec: Any, *, limits: SandboxLimits, processes: int | None = None) -> ToolPool:
    """A started pool with `spec`'s user code loaded (per-call time limit: the environment's `tool_timeout_s`).

    Raises `SandboxUnavailable` (what to install) when the host cannot isolate user code, and
    `ToolLoadError` naming the tool when a source does not load.
    """
    timed = dataclasses.replace(limits, time_limit_s=float(spec.limits.tool_timeout_s))
    pool = ToolServerPool(limits=timed, processes=processes)
    try:
        register_spec(pool, spec)
    except BaseException:
        pool.close()
        raise
    return pool
