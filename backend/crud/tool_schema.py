"""Derive a tool's JSON function schema from its Python source WITHOUT executing it.

The source is parsed with `ast`: the first public top-level function is the tool;
its annotated parameters become JSON-schema properties, and the Google-style
docstring's summary and `Args:` section become the descriptions, read by the worker's own parser
(`worker.rl.tools.docstrings`, a stdlib leaf) so both sides describe a tool alike.
"""

from __future__ import annotations

import ast
from typing import Any

from backend.core.errors import InvalidInputError
from worker.rl.tools.docstrings import parse_google_docstring

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "dict": "object"}
_SEQUENCES = {"list", "tuple", "Sequence", "List", "Tuple"}


def _annotation_schema(node: ast.expr | None, param: str) -> dict[str, Any]:
    if node is None:
        raise InvalidInputError("source", f"parameter {param!r} has no type annotation; add one (e.g. `{param}: str`)")
    if isinstance(node, ast.Name) and node.id in _JSON_TYPES:
        return {"type": _JSON_TYPES[node.id]}
    if isinstance(node, ast.Name) and node.id in _SEQUENCES:
        return {"type": "array"}
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        if node.value.id in _SEQUENCES:
            inner = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
            return {"type": "array", "items": _annotation_schema(inner, param)}
        if node.value.id in ("dict", "Dict", "Mapping"):
            return {"type": "object"}
        if node.value.id == "Literal" and isinstance(node.slice, ast.Tuple | ast.Constant):
            elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            values = [e.value for e in elts if isinstance(e, ast.Constant)]
            kinds = {_JSON_TYPES.get(type(v).__name__) for v in values}
            if None in kinds or len(kinds) != 1:
                raise InvalidInputError(
                    "source", f"parameter {param!r}: Literal values must all be str, int, float or bool"
                )
            return {"type": kinds.pop(), "enum": values}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        # `X | None` is a nullable X, as the worker's `@tool` schema writes it (test_tool_schema_agreement.py)
        left = node.left if not (isinstance(node.left, ast.Constant) and node.left.value is None) else node.right
        schema = _annotation_schema(left, param)
        return {**schema, "type": [schema["type"], "null"]} if isinstance(schema.get("type"), str) else schema
    raise InvalidInputError(
        "source",
        f"parameter {param!r} has unsupported type {ast.unparse(node)!r}; use str, int, float, bool, list or dict",
    )


def _find_function(source: str) -> ast.FunctionDef:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidInputError("source", f"is not valid Python: {exc.msg} (line {exc.lineno})") from exc
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            return node
    raise InvalidInputError("source", "defines no public top-level function; write `def my_tool(x: str) -> str:`")


def derive_tool_schema(source: str) -> dict[str, Any]:
    """`{"name", "description", "parameters": {type: object, properties, required}}` for the source's tool."""
    func = _find_function(source)
    doc = ast.get_docstring(func)
    if not doc:
        raise InvalidInputError("source", f"function {func.name!r} has no docstring; document it (Google style, Args:)")
    summary, arg_docs = parse_google_docstring(doc)
    positional = func.args.posonlyargs + func.args.args
    defaults_from = len(positional) - len(func.args.defaults)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for index, arg in enumerate(positional + func.args.kwonlyargs):
        prop = _annotation_schema(arg.annotation, arg.arg)
        if arg.arg not in arg_docs:
            raise InvalidInputError("source", f"parameter {arg.arg!r} is not described under `Args:` in the docstring")
        prop["description"] = arg_docs[arg.arg]
        properties[arg.arg] = prop
        kw_index = index - len(positional)
        has_default = index >= defaults_from if index < len(positional) else func.args.kw_defaults[kw_index] is not None
        if not has_default:
            required.append(arg.arg)
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"name": func.name, "description": summary, "parameters": parameters}
