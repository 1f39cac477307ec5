"""Dataset and environment crud, plus a small raw-record reader for file previews."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.errors import InvalidInputError, NotFoundError
from backend.models.dataset import Dataset, Environment
from backend.models.tool import Tool
from backend.schemas.dataset import DatasetCreate
from backend.schemas.environment import EnvironmentCreate, EnvironmentUpdate

MAX_PREVIEW_BYTES = 64 * 1024 * 1024
"""Whole-JSON files larger than this are not parsed by the API for a preview."""


def read_records(path: Path, *, limit: int) -> tuple[list[Any], int | None]:
    """The first `limit` records of a JSON array or JSONL file, and the total when cheap to know."""
    with path.open("rb") as fh:
        head = fh.read(1024).lstrip()
    if head.startswith(b"["):
        if path.stat().st_size > MAX_PREVIEW_BYTES:
            raise InvalidInputError("location", f"{path.name} is too large to preview in the API")
        records = json.loads(path.read_text(encoding="utf-8"))
        return records[:limit], len(records)
    rows: list[Any] = []
    total = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            total += 1
            if len(rows) < limit:
                rows.append(json.loads(line))
    return rows, total


def create_dataset(session: Session, *, dataset_in: DatasetCreate) -> Dataset:
    counts: dict[str, Any] = {}
    if dataset_in.kind == "file":
        path = Path(dataset_in.location).expanduser()
        if not path.is_file():
            raise InvalidInputError("location", f"file {dataset_in.location!r} does not exist on the API host")
        try:
            _rows, total = read_records(path, limit=0)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError("location", f"is not a JSON array or JSONL file: {exc}") from exc
        counts = {"records": total}
    dataset = Dataset(
        name=dataset_in.name,
        kind=dataset_in.kind,
        location=dataset_in.location,
        format=dataset_in.format,
        counts=counts,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, *, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFoundError("dataset", dataset_id)
    return dataset


def list_datasets(session: Session, *, offset: int = 0, limit: int | None = None) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.id).offset(offset).limit(limit)))


def _check_refs(session: Session, *, tool_ids: list[int] | None, dataset_id: int | None) -> None:
    for tool_id in tool_ids or []:
        if session.get(Tool, tool_id) is None:
            raise InvalidInputError("tool_ids", f"tool {tool_id} does not exist")
    if dataset_id is not None and session.get(Dataset, dataset_id) is None:
        raise InvalidInputError("dataset_id", f"dataset {dataset_id} does not exist")


def create_environment(session: Session, *, env_in: EnvironmentCreate) -> Environment:
    _check_refs(session, tool_ids=env_in.tool_ids, dataset_id=env_in.dataset_id)
    env = Environment(
        name=env_in.name,
        tool_ids=env_in.tool_ids,
        dataset_id=env_in.dataset_id,
        rubric=env_in.rubric.model_dump(),
        limits=env_in.limits.model_dump(),
    )
    session.add(env)
    session.flush()
    return env


def get_environment(session: Session, *, environment_id: int) -> Environment:
    env = session.get(Environment, environment_id)
    if env is None:
        raise NotFoundError("environment", environment_id)
    return env


def list_environments(session: Session, *, offset: int = 0, limit: int | None = None) -> list[Environment]:
    return list(session.scalars(select(Environment).order_by(Environment.id).offset(offset).limit(limit)))


def update_environment(session: Session, *, environment_id: int, env_in: EnvironmentUpdate) -> Environment:
    env = get_environment(session, environment_id=environment_id)
    _check_refs(session, tool_ids=env_in.tool_ids, dataset_id=env_in.dataset_id)
    if env_in.name is not None:
        env.name = env_in.name
    if env_in.tool_ids is not None:
        env.tool_ids = env_in.tool_ids
    if env_in.dataset_id is not None:
        env.dataset_id = env_in.dataset_id
    if env_in.rubric is not None:
        env.rubric = env_in.rubric.model_dump()
    if env_in.limits is not None:
        env.limits = env_in.limits.model_dump()
    session.flush()
    return env


def delete_environment(session: Session, *, environment_id: int) -> None:
    session.delete(get_environment(session, environment_id=environment_id))
    session.flush()
