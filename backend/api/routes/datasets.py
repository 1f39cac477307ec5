"""Dataset routes: register a file / hub id / demo seed, list, preview raw records."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query, status

from backend.api.deps import LimitQuery, OffsetQuery, SessionDep
from backend.crud import datasets as datasets_crud
from backend.schemas.dataset import DatasetCreate, DatasetPreview, DatasetPublic

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


@router.get("/{dataset_id}")
def get_dataset(session: SessionDep, dataset_id: int) -> DatasetPublic:
    return DatasetPublic.model_validate(datasets_crud.get_dataset(session, dataset_id=dataset_id))


@router.get("/{dataset_id}/preview")
def preview_dataset(session: SessionDep, dataset_id: int, limit: int = Query(5, ge=1, le=100)) -> DatasetPreview:
    """The first raw records of a file dataset (hub and demo sets are parsed by workers, not here)."""
    dataset = datasets_crud.get_dataset(session, dataset_id=dataset_id)
    if dataset.kind != "file":
        note = f"{dataset.kind} datasets are loaded by workers; no preview in the API"
        return DatasetPreview(dataset_id=dataset.id, rows=[], total=None, note=note)
    rows, total = datasets_crud.read_records(Path(dataset.location).expanduser(), limit=limit)
    return DatasetPreview(dataset_id=dataset.id, rows=rows, total=total)
