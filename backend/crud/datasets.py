"""Dataset and environment crud, plus a small raw-record reader for file previews."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.config import get_settings
from backend.core.db import utcnow
from backend.core.errors import InvalidInputError, NotFoundError
from backend.crud import environments as versions_crud
from backend.crud import reward_models as rm_crud
from backend.crud import uploads
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
    location = dataset_in.location
    if dataset_in.kind in ("file", "corpus"):
        path = uploads.check_under_roots(Path(dataset_in.location), get_settings().allowed_data_roots)
        location = str(path)
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
        location=location,
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
    """Datasets not deleted, a page at a time."""
    query = select(Dataset).where(Dataset.deleted_at.is_(None)).order_by(Dataset.id)
    return list(session.scalars(query.offset(offset).limit(limit)))


def delete_dataset(session: Session, *, dataset_id: int) -> None:
    """Soft delete: hidden from lists and new environments; versions that use it keep working."""
    get_dataset(session, dataset_id=dataset_id).deleted_at = utcnow()
    session.flush()


def register_upload(
    session: Session,
    *,
    name: str,
    kind: str,
    filename: str,
    data: bytes,
    fmt: str,
    question: str,
    answer: str,
    id_column: str | None,
    dry_run: bool,
) -> tuple[Dataset | None, uploads.Normalised]:
    """Validate an uploaded file fully, write it (temp name, then rename) and register it in one transaction."""
    settings = get_settings()
    if len(data) > settings.max_upload_mb * 1024 * 1024:
        raise InvalidInputError("file", f"{filename}: larger than {settings.max_upload_mb} MiB (STUDIO_MAX_UPLOAD_MB)")
    if kind == "corpus":
        normalised = uploads.normalise_corpus(filename, data)
    else:
        normalised = uploads.normalise_tasks(
            filename, data, fmt=fmt, question=question, answer=answer, id_column=id_column
        )
    if dry_run:
        return None, normalised
    suffix, payload = uploads.stored_payload(filename, data, normalised)
    digest = uploads.content_hash(payload)
    path = uploads.write_atomically(
        settings.uploads_dir, f"{uploads.safe_stem(filename)}-{digest[:12]}{suffix}", payload
    )
    dataset = Dataset(
        name=name,
        kind="corpus" if kind == "corpus" else "file",
        location=str(path.resolve()),
        format=normalised.format,
        counts={"records": len(normalised.records), "source": filename},
        content_hash=digest,
    )
    session.add(dataset)
    try:
        session.flush()
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return dataset, normalised


def _check_refs(
    session: Session, *, tool_ids: list[int] | None, dataset_id: int | None, corpus_id: int | None = None
) -> None:
    for tool_id in tool_ids or []:
        tool = session.get(Tool, tool_id)
        if tool is None:
            raise InvalidInputError("tool_ids", f"tool {tool_id} does not exist")
    for field, ident in (("dataset_id", dataset_id), ("corpus_id", corpus_id)):
        row = session.get(Dataset, ident) if ident is not None else None
        if ident is not None and (row is None or row.deleted_at is not None):
            raise InvalidInputError(field, f"dataset {ident} does not exist")


def create_environment(session: Session, *, env_in: EnvironmentCreate) -> Environment:
    """A new environment and its version 1 (validated by resolving it)."""
    _check_refs(session, tool_ids=env_in.tool_ids, dataset_id=env_in.dataset_id, corpus_id=env_in.corpus_id)
    env = Environment(
        name=env_in.name,
        tool_ids=env_in.tool_ids,
        dataset_id=env_in.dataset_id,
        corpus_id=env_in.corpus_id,
        rubric=env_in.rubric.model_dump(),
        limits=env_in.limits.model_dump(),
        settings=env_in.settings.model_dump(),
        version=1,
    )
    session.add(env)
    session.flush()
    versions_crud.write_version(session, env, version=1)
    return env


def import_environment(session: Session, *, name: str, spec: dict[str, Any]) -> Environment:
    """An environment whose version 1 is an exported spec (tool and reward sources inlined)."""
    tools = spec.get("tools")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise InvalidInputError("spec.tools", "must be a list of tool objects (export an environment to see one)")
    for t in tools:
        if t.get("key") and not str(t.get("source") or "").strip():
            raise InvalidInputError("spec.tools", f"user tool {t.get('name')!r} has no inlined source")
    for i, term in enumerate(spec.get("rubric") or []):
        if not isinstance(term, dict):
            continue
        kind = term.get("kind", "trajectory")
        if kind != "trajectory" and not term.get("key"):
            raise InvalidInputError(
                f"spec.rubric[{i}].kind",
                f"{kind!r} is for user reward functions (with a key and an inlined source); remove it from this term",
            )
        if term.get("key"):
            versions_crud.check_reward_source(
                str(term.get("name")), str(term.get("source") or ""), str(kind), where="spec.rubric"
            )
    versions_crud.tool_versions_exist(session, spec)
    versions_crud.check_imported_access(session, spec)
    rm_crud.check_spec_reward_models(session, spec=spec)
    limits = spec.get("limits") or {}
    env = Environment(
        name=name,
        tool_ids=[],
        rubric={},
        limits=limits if isinstance(limits, dict) else {},
        settings={"imported": True},
        version=1,
    )
    session.add(env)
    session.flush()
    versions_crud.write_version(session, env, version=1, spec={**spec, "name": name})
    return env


def get_environment(session: Session, *, environment_id: int) -> Environment:
    env = session.get(Environment, environment_id)
    if env is None:
        raise NotFoundError("environment", environment_id)
    return env


def list_environments(session: Session, *, offset: int = 0, limit: int | None = None) -> list[Environment]:
    """Environments not deleted, a page at a time."""
    query = select(Environment).where(Environment.deleted_at.is_(None)).order_by(Environment.id)
    return list(session.scalars(query.offset(offset).limit(limit)))


def update_environment(session: Session, *, environment_id: int, env_in: EnvironmentUpdate) -> Environment:
    """Apply the changes and freeze them as the next version (versions are immutable)."""
    env = get_environment(session, environment_id=environment_id)
    if env.deleted_at is not None:
        raise InvalidInputError("environment_id", f"environment {environment_id} was deleted")
    if (env.settings or {}).get("imported"):
        raise InvalidInputError("environment_id", "an imported environment is edited by importing a new file")
    _check_refs(session, tool_ids=env_in.tool_ids, dataset_id=env_in.dataset_id, corpus_id=env_in.corpus_id)
    for field in ("name", "tool_ids", "dataset_id", "corpus_id"):
        value = getattr(env_in, field)
        if value is not None:
            setattr(env, field, value)
    for field in ("rubric", "limits", "settings"):
        value = getattr(env_in, field)
        if value is not None:
            setattr(env, field, value.model_dump())
    session.flush()
    versions_crud.write_version(session, env, version=env.version + 1)
    return env


def delete_environment(session: Session, *, environment_id: int) -> None:
    """Soft delete: hidden from lists; its versions stay so runs keep their record."""
    get_environment(session, environment_id=environment_id).deleted_at = utcnow()
    session.flush()
