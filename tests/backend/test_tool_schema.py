"""Deriving tool schemas from source with `ast` (the API never runs user code)."""

from __future__ import annotations

import pytest

from backend.core.errors import InvalidInputError
from backend.crud.tool_schema import derive_tool_schema


def test_schema_from_typed_documented_function() -> None:
    source = '''
def search(query: str, top_k: int = 3, tags: list[str] | None = None, mode: Literal['a'] = "a") -> str:
    """Search the corpus.

    Args:
        query: What to look for,
            over two lines.
        top_k (int): How many passages.
        tags: Optional filters.
        mode: Ignored.
    Returns:
        Passages.
    """
'''
    schema = derive_tool_schema(source)
    assert schema["name"] == "search"
    assert schema["description"] == "Search the corpus."
    props = schema["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for, over two lines."}
    assert props["top_k"]["type"] == "integer"
    assert props["tags"] == {"type": ["array", "null"], "items": {"type": "string"}, "description": "Optional filters."}
    assert props["mode"]["enum"] == ["a"]
    assert schema["parameters"]["required"] == ["query"]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("def f(x: str) -> str:\n    return x\n", "no docstring"),
        ('def f(x) -> str:\n    """Doc.\n\n    Args:\n        x: X.\n    """\n', "no type annotation"),
        ('def f(x: str) -> str:\n    """Doc."""\n', "not described under `Args:`"),
        ("x = 1\n", "no public top-level function"),
        ("def f(:\n", "not valid Python"),
        ('def f(x: set) -> str:\n    """Doc.\n\n    Args:\n        x: X.\n    """\n', "unsupported type"),
    ],
)
def test_bad_sources_name_the_problem(source: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match="source") as info:
        derive_tool_schema(source)
    assert fragment in info.value.detail
