"""Tool schemas from hints/docstrings, ToolSet execution, errors, timeouts and the calculator."""

from __future__ import annotations

import time
from typing import Literal

import pytest

from worker.rl.tools.base import FunctionTool, ToolError, ToolResult, ToolSet, as_tool, tool
from worker.rl.tools.calculator import calculator
from worker.rl.types import ToolCall


@tool(timeout_s=5.0)
def lookup(query: str, top_k: int = 3, mode: Literal["fast", "exact"] = "fast", tags: list[str] | None = None) -> str:
    """Look something up.

    Args:
        query: What to look up.
        top_k: How many results
            to return.
        mode: Search mode.
        tags: Optional filters.
    """
    return f"{query}|{top_k}|{mode}|{tags}"


def test_schema_is_pinned_for_a_sample_tool() -> None:
    assert lookup.schema == {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look up."},
                    "top_k": {"type": "integer", "description": "How many results to return."},
                    "mode": {"type": "string", "enum": ["fast", "exact"], "description": "Search mode."},
                    "tags": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "Optional filters.",
                    },
                },
                "required": ["query"],
            },
        },
    }
    assert lookup.timeout_s == 5.0


def test_bare_decorator_and_name_override() -> None:
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    @tool(name="renamed")
    def other(x: float) -> float:
        """Echo.

        Args:
            x: A number.
        """
        return x

    assert isinstance(ping, FunctionTool)
    assert ping.name == "ping"
    assert ping() == "pong"
    assert other.name == "renamed"
    assert other.parameters["properties"]["x"]["type"] == "number"


def _no_hint(x) -> str:  # type: ignore[no-untyped-def]
    """Doc.

    Args:
        x: thing.
    """
    return ""


def _undocumented(x: int) -> str:
    """Doc without args."""
    return ""


def _bad_type(x: set[int]) -> str:
    """Doc.

    Args:
        x: thing.
    """
    return ""


@pytest.mark.parametrize(
    ("fn", "needle"),
    [(_no_hint, "no type hint"), (_undocumented, "not documented"), (_bad_type, "unsupported type")],
)
def test_decoration_errors_name_the_argument(fn: object, needle: str) -> None:
    with pytest.raises(TypeError, match=needle) as info:
        tool(fn)  # type: ignore[call-overload]
    assert "'x'" in str(info.value)


class WordCounter:
    """Counts words (a stateful tool)."""

    def __init__(self) -> None:
        self.seen = 0

    def execute(self, text: str) -> ToolResult:
        """Count the words of a text.

        Args:
            text: The text.
        """
        self.seen += 1
        return ToolResult(str(len(text.split())), reward=0.5)


def test_as_tool_accepts_stateful_objects_and_plain_functions() -> None:
    counter = WordCounter()
    built = as_tool(counter)
    assert built.name == "word_counter"
    assert built.description == "Count the words of a text."
    assert built.parameters["required"] == ["text"]

    def add(a: int, b: int) -> int:
        """Add.

        Args:
            a: First.
            b: Second.
        """
        return a + b

    tools = ToolSet([counter, add, lookup])
    assert tools.names == ("word_counter", "add", "lookup")
    out = tools.run([ToolCall("word_counter", {"text": "a b c"}), ToolCall("add", {"a": 2, "b": "3"})])
    assert out == [ToolResult("3", reward=0.5), ToolResult("5")]
    assert counter.seen == 1


def _fail(kind: str) -> str:
    """Fail on purpose.

    Args:
        kind: Which failure.
    """
    if kind == "tool":
        raise ToolError("bad input, try again")
    raise KeyError("boom")


def _slow(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "done"


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (ToolCall("nope", {}), "unknown tool 'nope'. Available tools: lookup, _fail, _slow"),
        (ToolCall("lookup", {}), "missing required argument(s) 'query'"),
        (ToolCall("lookup", {"query": "x", "k": 1}), "unknown argument(s) 'k'"),
        (ToolCall("lookup", {"query": "x", "top_k": "many"}), "for 'top_k', which must be integer"),
        (ToolCall("lookup", {"query": "x", "mode": "slow"}), "must be string one of 'fast', 'exact'"),
        (ToolCall("_fail", {"kind": "tool"}), "Error: bad input, try again"),
        (ToolCall("_fail", {"kind": "other"}), "raised KeyError: 'boom'"),
    ],
)
def test_failures_become_error_results(call: ToolCall, needle: str) -> None:
    tools = ToolSet([lookup, tool(_fail), tool(_slow)])
    (result,) = tools.run([call])
    assert result.is_error
    assert needle in result.content
    if call.name == "lookup":
        assert "It expects: query (string, required), top_k (integer, optional)" in result.content


def test_light_coercion_of_numeric_strings() -> None:
    (result,) = ToolSet([lookup]).run([ToolCall("lookup", {"query": "x", "top_k": "2", "tags": ["a"]})])
    assert result == ToolResult("x|2|fast|['a']")


def test_calls_run_concurrently_with_per_call_timeout_and_counters() -> None:
    slow = tool(timeout_s=0.3)(_slow)
    tools = ToolSet([slow, lookup])
    started = time.monotonic()
    results = tools.run([ToolCall("_slow", {"seconds": 0.2}), ToolCall("_slow", {"seconds": 0.2})])
    assert time.monotonic() - started < 0.35  # concurrent, not 0.4 s
    assert [r.content for r in results] == ["done", "done"]
    (late,) = tools.run([ToolCall("_slow", {"seconds": 2})])
    assert late.is_error
    assert late.content == "Error: tool '_slow' timed out after 0.3 s"
    tools.run([ToolCall("missing", {})])
    metrics = tools.metrics()
    assert metrics["tool/_slow/calls"] == 3
    assert metrics["tool/_slow/errors"] == 1
    assert 0.5 < metrics["tool/_slow/seconds"] < 1.0
    assert metrics["tool/_unknown/errors"] == 1


def test_json_values_are_dumped() -> None:
    @tool
    def info() -> dict:
        """Return a dict."""
        return {"a": [1, 2]}

    assert ToolSet([info]).run([ToolCall("info", {})]) == [ToolResult('{"a": [1, 2]}')]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("17*23", "391"), ("(2+3)**2", "25"), ("7/2", "3.5"), ("-4 // 3", "-2"), ("10 % 4", "2"), ("1/3", "0.3333333333")],
)
def test_calculator_values(expression: str, expected: str) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("__import__('os')", "unsupported syntax"),
        ("1/0", "division by zero"),
        ("2**1000", "exponent"),
        ("1 +", "cannot parse"),
        ("x * 2", "unsupported syntax"),
    ],
)
def test_calculator_rejects_unsafe_or_invalid_input(expression: str, needle: str) -> None:
    (result,) = ToolSet([calculator]).run([ToolCall("calculator", {"expression": expression})])
    assert result.is_error
    assert needle in result.content
