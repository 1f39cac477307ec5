"""Dataset routes: upload a task file or corpus, register a file / hub id / demo seed, list, preview, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from backend.api.deps import LimitQuery, OffsetQuery, SessionDep
from backend.core.errors import InvalidInputError
from backend.crud import datasets as datasets_crud
from backend.schemas.dataset import UPLOAD_FORMATS, DatasetCreate, DatasetPreview, DatasetPublic, DatasetUploadPublic

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("")
def list_datasets(session: SessionDep, offset: OffsetQuery = 0, limit: LimitQuery = 100) -> list[DatasetPublic]:
    return [DatasetPublic.model_validate(d) for d in datasets_crud.list_datasets(session, offset=offset, limit=limit)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_dataset(session: SessionDep, dataset_in: DatasetCreate) -> DatasetPublic:
    """Register a dataset; for kind "file" the file must exist on the API host and is counted."""
    dataset = datasets_crud.create_dataset(session, dataset_in=dataset_in)
    session.commit()
    return DatasetPublic.model_validate(dataset)


@router.post("/upload", status_code=status.HTTP_201_CREATED)
def upload_dataset(
    session: SessionDep,
    file: Annotated[UploadFile, File(description="JSONL / JSON / CSV / Parquet")],
    name: Annotated[str, Form(max_length=200, description="Default: the file name")] = "",
    kind: Annotated[str, Form(description="tasks | corpus")] = "tasks",
    format: Annotated[str, Form(description="auto | flat | hotpotqa | 2wiki | musique")] = "auto",
    question_column: Annotated[str, Form()] = "question",
    answer_column: Annotated[str, Form()] = "answer",
    id_column: Annotated[str, Form()] = "",
    dry_run: Annotated[bool, Form(description="Validate and preview only; register nothing")] = False,
    preview_rows: Annotated[int, Form(ge=0, le=100)] = 5,
) -> DatasetUploadPublic:
    """Validate every record, store the file in the data dir (normalised) and register it; or preview (dry run).

    A bad file answers 422 with one error naming the file, the line/record and the field.
    """
    if kind not in ("tasks", "corpus"):
        raise InvalidInputError("kind", f"must be 'tasks' or 'corpus', got {kind!r}")
    if format not in UPLOAD_FORMATS:
        raise InvalidInputError("format", f"must be one of {', '.join(UPLOAD_FORMATS)}, got {format!r}")
    filename = file.filename or "upload"
    data = file.file.read()
    dataset, normalised = datasets_crud.register_upload(
        session,
        name=name or filename,
        kind=kind,
        filename=filename,
        data=data,
        fmt=format,
        question=question_column,
        answer=answer_column,
        id_column=id_column or None,
        dry_run=dry_run,
    )
    session.commit()
    public = DatasetPublic.model_validate(dataset) if dataset is not None else None
    return DatasetUploadPublic(
        dataset=public,
        columns=normalised.columns,
        rows=normalised.records[:preview_rows],
        total=len(normalised.records),
        format=normalised.format,
    )


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(session: SessionDep, dataset_id: int) -> None:
    """Soft delete (environment versions and runs that used it keep their record)."""
    datasets_crud.delete_dataset(session, dataset_id=dataset_id)
    session.commit()


@router.get("/{dataset_id}")
def get_dataset(session: SessionDep, dataset_id: int) -> DatasetPublic:
    return DatasetPublic.model_validate(datasets_crud.get_dataset(session, dataset_id=dataset_id))


@router.get("/{dataset_id}/preview")
def preview_dataset(session: SessionDep, dataset_id: int, limit: int = Query(5, ge=1, le=100)) -> DatasetPreview:
    """The first raw records of a file dataset (hub and demo sets are parsed by workers, not here)."""
    dataset = datasets_crud.get_dataset(session, dataset_id=dataset_id)
    if dataset.kind not in ("file", "corpus"):
        note = f"{dataset.kind} datasets are loaded by workers; no preview in the API"
        return DatasetPreview(dataset_id=dataset.id, rows=[], total=None, note=note)
    rows, total = datasets_crud.read_records(Path(dataset.location).expanduser(), limit=limit)
    return DatasetPreview(dataset_id=dataset.id, rows=rows, total=total)
