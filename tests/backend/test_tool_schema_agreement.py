"""The API's schema (from source, never run) equals the worker's `@tool` schema (from the live function).

Both read docstrings through `worker.rl.tools.docstrings`; this table pins that the type mapping and the
required/optional split agree too, so what the studio shows is what the model is shown.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import pytest

from backend.crud.tool_schema import derive_tool_schema
from worker.rl.tools.base import tool
from worker.rl.tools.docstrings import parse_google_docstring

SOURCES = {
    "plain": '''
def lookup(city: str) -> str:
    """Weather for a city.

    Args:
        city: The city name.
    """
''',
    "typed args, defaults, continuation lines, other sections": '''
def search(query: str, top_k: int = 3, tags: list[str] | None = None, exact: bool = False) -> str:
    """Search the corpus
    for passages.

    Args:
        query (str): What to look for,
            over two lines.
        top_k: How many passages.
        tags: Optional filters.
        exact: Match whole words only.

    Returns:
        Passages.

    Raises:
        ValueError: never.
    """
''',
    "numbers, dicts, keyword-only, Literal, optional": '''
def scale(x: float, factors: dict, *, times: int = 1, unit: Literal["m", "km"] = "m", note: str | None = None) -> float:
    """Multiply.

    Arguments:
        x: The value.
        factors: Named factors.
        times: Repeats.
        unit: Unit of x.
        note: Free text.
    Example:
        scale(2.0, {})
    """
''',
}


def _worker_schema(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"Literal": Literal}
    exec(compile(source, "<tool>", "exec"), namespace)  # test-only: trusted table above
    fn = next(v for v in namespace.values() if inspect.isfunction(v))
    function = tool(fn).schema["function"]
    assert isinstance(function, dict)
    return function


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_api_and_worker_derive_the_same_schema(source: str) -> None:
    assert derive_tool_schema(source) == _worker_schema(source)


@pytest.mark.parametrize(
    ("doc", "summary", "args"),
    [
        ("One line.", "One line.", {}),
        (
            "Sum.\n\nArgs:\n    a: first\n    b (int): second\n        continued\n",
            "Sum.",
            {"a": "first", "b": "second continued"},
        ),
        (
            "S.\n\nParameters:\n    *args: rest\n    **kw: options\nReturns:\n    x: not an arg\n",
            "S.",
            {"args": "rest", "kw": "options"},
        ),
    ],
)
def test_the_shared_parser_on_a_table(doc: str, summary: str, args: dict[str, str]) -> None:
    assert parse_google_docstring(doc) == (summary, args)
