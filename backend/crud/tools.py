"""Tool crud: create/update derive the schema from source (via `ast`) and save a version row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.errors import ConflictError, InvalidInputError, NotFoundError
from backend.crud.tool_schema import derive_tool_schema
from backend.models.tool import Tool, ToolVersion
from backend.schemas.tool import ToolCreate, ToolUpdate

BUILTIN_TOOLS: dict[str, dict[str, Any]] = {
    "bm25_search": {
        "description": "Search the environment's passage corpus (BM25) and return the top passages.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for."}},
            "required": ["query"],
        },
    },
    "calculator": {
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * 4"}},
            "required": ["expression"],
        },
    },
}
"""Builtins the worker's RL core provides; their schema is fixed here so the API needs no worker import."""


def tool_schema_for(*, kind: str, name: str, source: str) -> dict[str, Any]:
    """The JSON function schema of a tool (422-style `InvalidInputError` when it cannot be derived)."""
    if kind == "builtin":
        if source not in BUILTIN_TOOLS:
            raise InvalidInputError("source", f"unknown builtin {source!r}; valid: {', '.join(sorted(BUILTIN_TOOLS))}")
        return {"name": name, **BUILTIN_TOOLS[source]}
    return derive_tool_schema(source)


def get_tool(session: Session, *, tool_id: int) -> Tool:
    tool = session.get(Tool, tool_id)
    if tool is None:
        raise NotFoundError("tool", tool_id)
    return tool


def list_tools(session: Session, *, offset: int = 0, limit: int | None = None) -> list[Tool]:
    return list(session.scalars(select(Tool).order_by(Tool.id).offset(offset).limit(limit)))


def _check_name_free(session: Session, *, name: str, tool_id: int | None = None) -> None:
    existing = session.scalar(select(Tool).where(Tool.name == name))
    if existing is not None and existing.id != tool_id:
        raise ConflictError(f"a tool named {name!r} already exists (id {existing.id})")


def _save_version(session: Session, tool: Tool) -> None:
    session.add(
        ToolVersion(
            tool_id=tool.id,
            version=tool.version,
            source=tool.source,
            params=tool.params,
            tool_schema=tool.tool_schema,
        )
    )


def create_tool(session: Session, *, tool_in: ToolCreate) -> Tool:
    _check_name_free(session, name=tool_in.name)
    schema = tool_schema_for(kind=tool_in.kind, name=tool_in.name, source=tool_in.source)
    description = tool_in.description or str(schema.get("description", ""))
    tool = Tool(
        name=tool_in.name,
        description=description,
        kind=tool_in.kind,
        source=tool_in.source,
        params=tool_in.params,
        tool_schema=schema,
        version=1,
    )
    session.add(tool)
    session.flush()
    _save_version(session, tool)
    return tool


def update_tool(session: Session, *, tool_id: int, tool_in: ToolUpdate) -> Tool:
    tool = get_tool(session, tool_id=tool_id)
    if tool_in.name is not None and tool_in.name != tool.name:
        _check_name_free(session, name=tool_in.name, tool_id=tool.id)
        tool.name = tool_in.name
    if tool_in.description is not None:
        tool.description = tool_in.description
    changed = False
    if tool_in.source is not None and tool_in.source != tool.source:
        tool.source, changed = tool_in.source, True
    if tool_in.params is not None and tool_in.params != tool.params:
        tool.params, changed = tool_in.params, True
    tool.tool_schema = tool_schema_for(kind=tool.kind, name=tool.name, source=tool.source)
    if changed:
        tool.version += 1
        session.flush()
        _save_version(session, tool)
    session.flush()
    return tool


def delete_tool(session: Session, *, tool_id: int) -> None:
    session.delete(get_tool(session, tool_id=tool_id))
    session.flush()


def list_tool_versions(
    session: Session, *, tool_id: int, offset: int = 0, limit: int | None = None
) -> list[ToolVersion]:
    get_tool(session, tool_id=tool_id)
    query = select(ToolVersion).where(ToolVersion.tool_id == tool_id).order_by(ToolVersion.version.desc())
    return list(session.scalars(query.offset(offset).limit(limit)))
