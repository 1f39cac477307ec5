"""Tool schemas: a tool is a typed, documented Python function or a builtin by name.

`tool_schema` is the JSON function schema derived on the server from the
source (parsed with `ast`, never executed by the API).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from backend.schemas.common import MAX_SOURCE_CHARS, MAX_TEXT_CHARS, CappedJSONDict, JSONDict, ORMModel, ToolKind


class ToolCreate(BaseModel):
    """A new tool. For kind "python" `source` is one typed function with a Google docstring;
    for kind "builtin" `source` is the builtin's name (e.g. "bm25_search") and `params` its settings."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    description: str = Field(default="", max_length=MAX_TEXT_CHARS)
    kind: ToolKind = "python"
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    params: CappedJSONDict = Field(default_factory=dict)


class ToolUpdate(BaseModel):
    """A partial update; a changed `source` or `params` bumps the version."""

    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    source: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_CHARS)
    params: CappedJSONDict | None = None


class ToolPublic(ORMModel):
    id: int
    name: str
    description: str
    kind: ToolKind
    source: str
    params: JSONDict
    tool_schema: JSONDict
    version: int
    created_at: datetime
    updated_at: datetime


class ToolVersionPublic(ORMModel):
    tool_id: int
    version: int
    source: str
    params: JSONDict
    tool_schema: JSONDict
    created_at: datetime


class ToolTestRequest(BaseModel):
    """Arguments for one sandboxed trial call of the tool (run on a worker)."""

    arguments: CappedJSONDict = Field(default_factory=dict)
