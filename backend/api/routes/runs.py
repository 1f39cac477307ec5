"""Run routes: launch, list, watch, cancel, resume, metrics, checkpoints, and the worker ping."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from backend.api.deps import EnqueueDep, LimitQuery, OffsetQuery, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import reward_models as rm_crud
from backend.crud import runs as runs_crud
from backend.queue import TASK_OF_RUN_KIND, TaskName
from backend.schemas.common import RunKind, RunStatus
from backend.schemas.run import CheckpointPublic, MetricPoint, MetricsPage, RunCreate, RunPublic, RunsPage
from worker.rl.training.presets import resolve_run_config  # torch-free (import-linter: "The run spec ...")

router = APIRouter(prefix="/runs", tags=["runs"])
MAX_METRIC_POINTS = 10_000


@router.post("", status_code=status.HTTP_201_CREATED)
def create_run(session: SessionDep, enqueue: EnqueueDep, run_in: RunCreate) -> RunPublic:
    """Create a train/rollout/eval run, commit, then enqueue it (gpu queue).

    A train or rollout run's preset + overrides are resolved here as the worker will resolve them, so a
    bad field is a 422 naming it (e.g. "rollout.group_size must be >= 1") instead of a failed run.
    """
    rm_crud.check_reward_model_terms(session, config=run_in.config)  # reward_model terms must exist
    if run_in.kind in ("train", "rollout"):
        try:
            resolve_run_config(run_in.preset, run_in.config)
        except ValueError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"config: {err}") from None
    run = runs_crud.create_run(session, run_in=run_in)
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TASK_OF_RUN_KIND[run.kind], run))


@router.post("/ping", status_code=status.HTTP_201_CREATED)
def ping_worker(session: SessionDep, enqueue: EnqueueDep) -> RunPublic:
    """A real round-trip: a `cpu` worker writes its hostname and time into the run's result."""
    run = runs_crud.create_job_run(session, kind="ping", name="ping", config={})
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.PING, run))


@router.get("")
def list_runs(
    session: SessionDep,
    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
    kind: RunKind | None = None,
    offset: OffsetQuery = 0,
    limit: LimitQuery = 50,
) -> RunsPage:
    runs, total = runs_crud.list_runs(session, status=status_filter, kind=kind, offset=offset, limit=limit)
    return RunsPage(items=[RunPublic.model_validate(r) for r in runs], total=total)


@router.get("/{run_id}")
def get_run(session: SessionDep, run_id: int) -> RunPublic:
    return RunPublic.model_validate(runs_crud.get_run(session, run_id=run_id))


@router.post("/{run_id}/cancel")
def cancel_run(session: SessionDep, run_id: int) -> RunPublic:
    """Ask the worker to stop at the next step boundary (a queued run is cancelled at once)."""
    run = runs_crud.request_cancel(session, run_id=run_id)
    session.commit()
    return RunPublic.model_validate(run)


@router.post("/{run_id}/resume")
def resume_run(session: SessionDep, enqueue: EnqueueDep, run_id: int) -> RunPublic:
    """Requeue a finished train run from its last checkpoint (409 while queued or running)."""
    run = runs_crud.prepare_resume(session, run_id=run_id)
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TASK_OF_RUN_KIND[run.kind], run))


@router.get("/{run_id}/metrics")
def get_run_metrics(
    session: SessionDep,
    run_id: int,
    since: Annotated[int | None, Query(description="Only steps > since.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_METRIC_POINTS, description="Points to return, oldest first.")] = (
        MAX_METRIC_POINTS
    ),
) -> MetricsPage:
    """Metric points after `since`, oldest first; page on by passing `last_step` back as `since`."""
    rows = runs_crud.list_metrics(session, run_id=run_id, since=since, limit=limit)
    points = [MetricPoint(step=m.step, values=m.values) for m in rows]
    return MetricsPage(run_id=run_id, points=points, last_step=points[-1].step if points else since)


@router.get("/{run_id}/checkpoints")
def list_run_checkpoints(
    session: SessionDep, run_id: int, offset: OffsetQuery = 0, limit: LimitQuery = 100
) -> list[CheckpointPublic]:
    checkpoints = runs_crud.list_checkpoints(session, run_id=run_id, offset=offset, limit=limit)
    return [CheckpointPublic.model_validate(c) for c in checkpoints]


@router.post("/{run_id}/checkpoints/{checkpoint_id}/export", status_code=status.HTTP_202_ACCEPTED)
def export_checkpoint(session: SessionDep, enqueue: EnqueueDep, run_id: int, checkpoint_id: int) -> RunPublic:
    """Queue an export of the checkpoint as a `from_pretrained` folder; the path lands in the job's result."""
    checkpoint = runs_crud.get_checkpoint(session, run_id=run_id, checkpoint_id=checkpoint_id)
    config = {"run_id": run_id, "checkpoint_id": checkpoint.id, "checkpoint_path": checkpoint.path}
    job = runs_crud.create_job_run(
        session, kind="export", name=f"export run {run_id} step {checkpoint.step}", config=config
    )
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.EXPORT_CHECKPOINT, job))
