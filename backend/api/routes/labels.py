"""Label routes: add a label (score, pairwise, step), the labeling queues, progress and agreement, JSONL I/O."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from backend.api.deps import PrincipalDep, SessionDep, SettingsDep
from backend.core.db import engine_for
from backend.crud import labels as labels_crud
from backend.schemas.trajectory import (
    LabelCreate,
    LabelImportReport,
    LabelPair,
    LabelPublic,
    LabelStats,
    TrajectorySummary,
)

router = APIRouter(tags=["labels"])
MAX_IMPORT_BYTES = 64 * 1024 * 1024


@router.post("/trajectories/{trajectory_id}/labels", status_code=status.HTTP_201_CREATED)
def create_label(
    session: SessionDep, principal: PrincipalDep, trajectory_id: int, label_in: LabelCreate
) -> LabelPublic:
    """Add a label: a score, a pairwise choice against a group member (`other_trajectory_id`), or step marks.

    The label keeps a snapshot of the judged trajectories; several labels per trajectory are kept. A
    signed-in caller's account name is the labeler, whatever the body says; the body's `labeler` is used
    only by the loopback local user (and by imports).
    """
    if principal.authenticated:
        label_in = label_in.model_copy(update={"labeler": principal.name})
    label = labels_crud.add_label(session, trajectory_id=trajectory_id, label_in=label_in)
    session.commit()
    return LabelPublic.model_validate(label)


@router.get("/runs/{run_id}/label-queue")
def get_label_queue(
    session: SessionDep, run_id: int, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[TrajectorySummary]:
    """Unlabeled trajectories: mixed-reward groups, then reward-model disagreement, then |reward - 0.5|."""
    rows = labels_crud.label_queue(session, run_id=run_id, limit=limit)
    return [TrajectorySummary.model_validate(t) for t in rows]


@router.get("/runs/{run_id}/pair-queue")
def get_pair_queue(
    session: SessionDep, run_id: int, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[LabelPair]:
    """Unlabeled same-group pairs: mixed rewards, then reward-model disagreement, then its uncertainty."""
    return [
        LabelPair(a=TrajectorySummary.model_validate(a), b=TrajectorySummary.model_validate(b), reason=reason)
        for a, b, reason in labels_crud.pair_queue(session, run_id=run_id, limit=limit)
    ]


@router.get("/runs/{run_id}/labels/stats")
def get_label_stats(session: SessionDep, run_id: int) -> LabelStats:
    """Progress, labels per kind and labeler, Cohen's kappa on pairwise choices and on step marks."""
    return LabelStats.model_validate(labels_crud.label_stats(session, run_id=run_id))


@router.get("/runs/{run_id}/labels/export", response_class=StreamingResponse)
def export_labels(session: SessionDep, settings: SettingsDep, run_id: int) -> StreamingResponse:
    """Every label of the run as JSONL (docs/labels-format.md: the label and its snapshot per line), streamed."""
    labels_crud.iter_label_export(session, run_id=run_id)  # 404 before the stream starts
    engine = engine_for(settings.resolved_database_url)

    def lines() -> Iterator[bytes]:
        with Session(engine) as stream_session:
            for record in labels_crud.iter_label_export(stream_session, run_id=run_id):
                yield (json.dumps(record) + "\n").encode()

    headers = {"Content-Disposition": f'attachment; filename="run-{run_id}-labels.jsonl"'}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@router.post("/labels/import", status_code=status.HTTP_201_CREATED)
async def import_labels(session: SessionDep, request: Request) -> LabelImportReport:
    """Add labels from a JSONL body in the export format; a bad line rejects the whole file (422 names it)."""
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(status_code=413, detail=f"import body over {MAX_IMPORT_BYTES} bytes; split the file")
    records = []
    for line_no, line in enumerate(body.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise HTTPException(status_code=422, detail=f"line {line_no}: not JSON ({exc.msg})") from None
    if not records:
        raise HTTPException(status_code=422, detail="the body holds no JSONL label records")
    imported, linked = labels_crud.import_labels(session, records=records)
    session.commit()
    return LabelImportReport(imported=imported, linked=linked)
