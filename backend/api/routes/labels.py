"""Label routes: add a label, the run's labeling queue, and a streaming JSONL export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from backend.api.deps import PrincipalDep, SessionDep, SettingsDep
from backend.core.db import engine_for
from backend.crud import runs as runs_crud
from backend.crud import trajectories as traj_crud
from backend.schemas.trajectory import LabelCreate, LabelPublic, TrajectorySummary

router = APIRouter(tags=["labels"])


@router.post("/trajectories/{trajectory_id}/labels", status_code=status.HTTP_201_CREATED)
def create_label(
    session: SessionDep, principal: PrincipalDep, trajectory_id: int, label_in: LabelCreate
) -> LabelPublic:
    """Add a label (several per trajectory are kept; the newest wins). A signed-in caller's account name
    is the labeler, whatever the body says; the body's `labeler` is used only by the loopback local user."""
    if principal.authenticated:
        label_in = label_in.model_copy(update={"labeler": principal.name})
    label = traj_crud.add_label(session, trajectory_id=trajectory_id, label_in=label_in)
    session.commit()
    return LabelPublic.model_validate(label)


@router.get("/runs/{run_id}/label-queue")
def get_label_queue(
    session: SessionDep, run_id: int, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[TrajectorySummary]:
    """Unlabeled trajectories: mixed-reward groups first, then |reward - 0.5| ascending."""
    return [TrajectorySummary.model_validate(t) for t in traj_crud.label_queue(session, run_id=run_id, limit=limit)]


@router.get("/runs/{run_id}/labels/export", response_class=StreamingResponse)
def export_labels(session: SessionDep, settings: SettingsDep, run_id: int) -> StreamingResponse:
    """Every label of the run as JSONL (one label + its trajectory per line), streamed."""
    runs_crud.get_run(session, run_id=run_id)
    engine = engine_for(settings.resolved_database_url)

    def lines() -> Iterator[bytes]:
        with Session(engine) as stream_session:
            for record in traj_crud.iter_label_export(stream_session, run_id=run_id):
                yield (json.dumps(record) + "\n").encode()

    headers = {"Content-Disposition": f'attachment; filename="run-{run_id}-labels.jsonl"'}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)
