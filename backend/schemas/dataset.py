"""Dataset schemas: a registered source of tasks (a local file, a hub id, or the demo)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.schemas.common import DatasetKind, JSONDict, ORMModel


class DatasetCreate(BaseModel):
    """`location` is a file path (kind "file"), a hub id (kind "hub") or a seed (kind "demo")."""

    name: str = Field(min_length=1, max_length=200)
    kind: DatasetKind = "file"
    location: str = Field(default="0", min_length=1, max_length=4096)
    format: str = Field(default="auto", max_length=50, description="hotpotqa | 2wiki | musique | jsonl | auto")


class DatasetPublic(ORMModel):
    id: int
    name: str
    kind: DatasetKind
    location: str
    format: str
    counts: JSONDict
    content_hash: str | None = None
    deleted_at: datetime | None = None
    created_at: datetime


class DatasetPreview(BaseModel):
    """The first raw records of a file dataset, as stored on disk."""

    dataset_id: int
    rows: list[Any]
    total: int | None = Field(default=None, description="Records in the file when known.")
    note: str = ""


UploadKind = Literal["tasks", "corpus"]
UPLOAD_FORMATS = ("auto", "flat", "hotpotqa", "2wiki", "musique")


class DatasetUploadPublic(BaseModel):
    """The outcome of an upload: the registered dataset (None for a dry run) and its first normalised rows."""

    dataset: DatasetPublic | None
    columns: list[str]
    rows: list[Any]
    total: int
    format: str
