"""Tools: typed, documented Python callables whose failures go back to the model.

`@tool` turns a function with type hints and a Google-style docstring into a
`FunctionTool` with an OpenAI-format JSON schema; `ToolSet` runs parsed calls
concurrently with timeouts and argument checks and never raises into the loop.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, overload

from worker.rl.tools.schema import check_arguments, describe_parameters, function_parameters, parse_docstring
from worker.rl.types import JSONValue, ToolCall

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one tool call produced, as the model will see it."""

    content: str
    """Text placed in the tool response."""
    is_error: bool = False
    """True when the call failed (bad arguments, exception, timeout)."""
    reward: float | None = None
    """Optional step (process) reward the tool grants for this call."""


class ToolError(Exception):
    """Raise inside a tool to send `message` back to the model as an error result."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A callable plus the JSON schema the model is shown."""

    name: str
    """Name the model calls the tool by."""
    description: str
    """What the tool does (the docstring's summary)."""
    parameters: Mapping[str, JSONValue]
    """JSON schema of the arguments (`{"type": "object", "properties": ..., "required": ...}`)."""
    fn: Callable[..., Any]
    """The function (or bound `execute` method) that does the work."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Seconds one call may take before it is reported as timed out."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}", self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 chars of letters, digits, '_' or '-'")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s of tool {self.name!r} must be > 0, got {self.timeout_s}")

    @property
    def schema(self) -> dict[str, JSONValue]:
        """OpenAI function-calling schema."""
        function = {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}
        return {"type": "function", "function": function}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _function_tool(fn: Callable[..., Any], name: str, timeout_s: float, fallback_doc: str = "") -> FunctionTool:
    doc = inspect.getdoc(fn) or fallback_doc
    label = getattr(fn, "__qualname__", name)
    if not doc:
        raise TypeError(f"tool {label!r} has no docstring: add a Google-style docstring with a summary and 'Args:'")
    summary, arg_docs = parse_docstring(doc)
    parameters = function_parameters(fn, arg_docs, label)
    return FunctionTool(name=name, description=summary, parameters=parameters, fn=fn, timeout_s=timeout_s)


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    fn: None = None, /, *, timeout_s: float = DEFAULT_TIMEOUT_S, name: str | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None, /, *, timeout_s: float = DEFAULT_TIMEOUT_S, name: str | None = None
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of a typed function; usable bare (`@tool`) or configured (`@tool(timeout_s=5)`)."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return _function_tool(f, name or f.__name__, timeout_s)

    return wrap(fn) if fn is not None else wrap


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def as_tool(obj: Any) -> FunctionTool:
    """Accept a FunctionTool, a typed function, or a stateful object with an `execute` method."""
    if isinstance(obj, FunctionTool):
        return obj
    execute = getattr(obj, "execute", None)
    if execute is not None and callable(execute) and not inspect.isfunction(obj):
        name = getattr(obj, "name", None) or _snake_case(type(obj).__name__)
        timeout_s = float(getattr(obj, "timeout_s", DEFAULT_TIMEOUT_S))
        return _function_tool(execute, str(name), timeout_s, fallback_doc=inspect.getdoc(type(obj)) or "")
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return _function_tool(obj, obj.__name__, DEFAULT_TIMEOUT_S)
    raise TypeError(f"cannot make a tool of {obj!r}: pass a typed function, a @tool, or an object with execute()")


def to_result(value: Any) -> ToolResult:
    """Normalise what a tool returned: str, ToolResult, or any JSON value (json-dumped)."""
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, str):
        return ToolResult(value)
    return ToolResult(json.dumps(value, ensure_ascii=False, default=str))


class ToolSet:
    """The tools of one environment: schemas for the prompt, safe concurrent execution, counters."""

    def __init__(self, tools: Sequence[Any], *, timeout_s: float | None = None) -> None:
        """`timeout_s`, when given, overrides every tool's own timeout."""
        built = [as_tool(t) for t in tools]
        self._tools = {t.name: t for t in built}
        if len(self._tools) != len(built):
            raise ValueError(f"tool names must be unique, got {[t.name for t in built]}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None (each tool's own), got {timeout_s}")
        self._timeout_s = timeout_s
        self.max_result_bytes: int | None = None
        """Results longer than this (UTF-8 bytes) are cut with a visible marker and counted as truncated."""
        self._counts: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    @property
    def schemas(self) -> list[dict[str, JSONValue]]:
        return [t.schema for t in self._tools.values()]

    def get(self, name: str) -> FunctionTool | None:
        return self._tools.get(name)

    def metrics(self) -> dict[str, float]:
        """`tool/<name>/calls`, `tool/<name>/errors` and `tool/<name>/seconds` so far."""
        with self._lock:
            return dict(self._counts)

    def _truncated(self, name: str, result: ToolResult) -> ToolResult:
        limit = self.max_result_bytes
        raw = result.content.encode("utf-8")
        if limit is None or len(raw) <= limit:
            return result
        with self._lock:
            key = f"tool/{name}/truncated"
            self._counts[key] = self._counts.get(key, 0.0) + 1.0
        kept = raw[:limit].decode("utf-8", errors="ignore")
        marker = f"\n[truncated: the result was {len(raw)} bytes; only the first {limit} are shown]"
        return ToolResult(kept + marker, is_error=result.is_error, reward=result.reward)

    def _count(self, name: str, seconds: float, is_error: bool) -> None:
        with self._lock:
            for key, inc in (("calls", 1.0), ("errors", float(is_error)), ("seconds", seconds)):
                full = f"tool/{name}/{key}"
                self._counts[full] = self._counts.get(full, 0.0) + inc

    def _invoke(self, tool_: FunctionTool, arguments: Mapping[str, Any]) -> ToolResult:
        try:
            return to_result(tool_.fn(**arguments))
        except ToolError as exc:
            return ToolResult(f"Error: {exc.message}", is_error=True)
        except Exception as exc:  # tool failures are observations, never crashes
            logger.debug("tool %s raised", tool_.name, exc_info=True)
            return ToolResult(f"Error: tool '{tool_.name}' raised {type(exc).__name__}: {exc}", is_error=True)

    def _prepare(self, call: ToolCall) -> tuple[FunctionTool | None, dict[str, Any] | ToolResult]:
        tool_ = self._tools.get(call.name)
        if tool_ is None:
            available = ", ".join(self._tools) or "(none)"
            return None, ToolResult(f"Error: unknown tool '{call.name}'. Available tools: {available}.", True)
        checked = check_arguments(tool_.parameters, call.arguments)
        if isinstance(checked, str):
            expects = describe_parameters(tool_.parameters)
            return tool_, ToolResult(f"Error: tool '{tool_.name}' {checked}. It expects: {expects}.", True)
        return tool_, checked

    def run(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Execute calls concurrently (same order out); every failure becomes an error result."""
        results: list[ToolResult | None] = [None] * len(calls)
        pending: list[tuple[int, FunctionTool, Any, float]] = []
        pool = ThreadPoolExecutor(max_workers=max(1, len(calls)), thread_name_prefix="tool")
        try:
            for i, call in enumerate(calls):
                tool_, prepared = self._prepare(call)
                if isinstance(prepared, ToolResult):
                    results[i] = prepared
                    self._count(tool_.name if tool_ else "_unknown", 0.0, True)
                else:
                    assert tool_ is not None  # internal invariant: arguments only come with a tool
                    pending.append((i, tool_, pool.submit(self._invoke, tool_, prepared), time.monotonic()))
            for i, tool_, future, started in pending:
                timeout_s = self._timeout_s or tool_.timeout_s
                try:
                    result = future.result(timeout=max(0.0, started + timeout_s - time.monotonic()))
                except FutureTimeout:
                    result = ToolResult(f"Error: tool '{tool_.name}' timed out after {timeout_s} s", is_error=True)
                results[i] = self._truncated(tool_.name, result)
                self._count(tool_.name, min(time.monotonic() - started, timeout_s), result.is_error)
        finally:
            # A timed-out call keeps its thread until it returns; we do not wait for it.
            pool.shutdown(wait=False, cancel_futures=True)
        return [r if r is not None else ToolResult("Error: no result", is_error=True) for r in results]
