"""Run crud: create/list/cancel/resume from the API; status, progress, metrics and results from workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from backend.core.db import utcnow
from backend.core.errors import ConflictError, InvalidInputError, NotFoundError
from backend.models.dataset import Environment
from backend.models.run import Checkpoint, Evaluation, Metric, Run
from backend.schemas.common import ACTIVE_STATUSES
from backend.schemas.run import RunCreate

FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


def create_run(session: Session, *, run_in: RunCreate) -> Run:
    """A queued train/rollout/eval run; the worker resolves `preset` + `config` and stores the result."""
    if run_in.environment_id is not None and session.get(Environment, run_in.environment_id) is None:
        raise InvalidInputError("environment_id", f"environment {run_in.environment_id} does not exist")
    run = Run(
        name=run_in.name or f"{run_in.kind}-{run_in.preset or 'custom'}",
        kind=run_in.kind,
        status="queued",
        preset=run_in.preset,
        config=run_in.config,
        environment_id=run_in.environment_id,
        resumable=run_in.kind == "train",
    )
    session.add(run)
    session.flush()
    return run


def create_job_run(session: Session, *, kind: str, name: str, config: dict[str, Any]) -> Run:
    """A queued internal job row (ping, tool test, env validation, export)."""
    run = Run(name=name, kind=kind, status="queued", config=config)
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, *, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    return run


def list_runs(
    session: Session, *, status: str | None = None, kind: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[Run], int]:
    query = select(Run)
    if status:
        query = query.where(Run.status == status)
    if kind:
        query = query.where(Run.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Run.id.desc()).offset(offset).limit(limit))
    return list(rows), total


def request_cancel(session: Session, *, run_id: int) -> Run:
    """Queued runs are cancelled at once; running ones get `cancel_requested` and status cancelling."""
    run = get_run(session, run_id=run_id)
    if run.status in FINISHED_STATUSES:
        raise ConflictError(f"run {run_id} is already {run.status}")
    run.cancel_requested = True
    if run.status == "queued":
        run.status, run.finished_at = "cancelled", utcnow()
    else:
        run.status = "cancelling"
    session.flush()
    return run


def prepare_resume(session: Session, *, run_id: int) -> Run:
    run = get_run(session, run_id=run_id)
    if run.status in ACTIVE_STATUSES:
        raise ConflictError(f"run {run_id} is {run.status}; only finished runs can be resumed")
    if run.kind != "train" or not run.resumable:
        raise ConflictError(f"run {run_id} ({run.kind}) is not resumable")
    run.status, run.cancel_requested, run.error, run.finished_at = "queued", False, None, None
    run.config = {**run.config, "_resume": True}
    session.flush()
    return run


def mark_started(session: Session, *, run_id: int, hostname: str, task_id: str | None) -> Run:
    run = get_run(session, run_id=run_id)
    run.status, run.worker_hostname, run.celery_task_id = "running", hostname, task_id
    run.started_at = run.started_at or utcnow()
    run.heartbeat_at = utcnow()
    session.flush()
    return run


def claim_run(
    session: Session, *, run_id: int, hostname: str, stale_after_s: float, now: datetime | None = None
) -> bool:
    """Atomically take the run for this worker: a queued run, or an active one whose worker went silent.

    False for any other state (finished, cancelled while queued, or live on another worker): the
    delivery is a duplicate (e.g. the broker redelivering an unacked job) and must not run again.
    """
    now = now or utcnow()
    claimable = or_(
        Run.status == "queued",
        and_(Run.status.in_(("running", "cancelling")), Run.heartbeat_at < now - timedelta(seconds=stale_after_s)),
    )
    values = {"status": "running", "worker_hostname": hostname, "heartbeat_at": now,
              "started_at": func.coalesce(Run.started_at, now)}  # fmt: skip
    statement = update(Run).where(Run.id == run_id, claimable).values(**values)
    result = session.execute(statement.execution_options(synchronize_session=False))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def set_status(session: Session, *, run_id: int, status: str, error: str | None = None) -> Run:
    run = get_run(session, run_id=run_id)
    run.status = status
    if error is not None or status == "succeeded":  # success clears notes of earlier attempts
        run.error = error
    if status in FINISHED_STATUSES:
        run.finished_at = utcnow()
        if status == "succeeded":
            run.progress = 1.0
    session.flush()
    return run


def set_progress(
    session: Session, *, run_id: int, step: int, total_steps: int | None, eta_s: float | None = None
) -> None:
    progress = min(1.0, step / total_steps) if total_steps else 0.0
    values = {"current_step": step, "total_steps": total_steps, "eta_s": eta_s, "progress": progress}
    session.execute(update(Run).where(Run.id == run_id).values(**values))


def heartbeat(session: Session, *, run_id: int) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))


def is_cancel_requested(session: Session, *, run_id: int) -> bool:
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


@dataclass(frozen=True)
class StaleSweep:
    """Runs whose worker stopped sending heartbeats: failed ones, and train runs queued again to resume."""

    failed: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)


AUTO_RESUMES_KEY = "_auto_resumes"
"""Config key counting the automatic resumes of a run (kept across the worker storing its resolved config)."""


def sweep_stale_runs(
    session: Session, *, timeout_s: float, auto_resume_attempts: int = 0, now: datetime | None = None
) -> StaleSweep:
    """Handle `running`/`cancelling` runs whose heartbeat is older than `timeout_s` (their worker died).

    A train run that was not being cancelled and has automatic resumes left goes back to `queued` (the
    caller enqueues it after commit; the job resumes from the last checkpoint). Every other such run is
    marked failed, train runs resumable by hand.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_s)
    stale = list(
        session.scalars(select(Run).where(Run.status.in_(("running", "cancelling")), Run.heartbeat_at < cutoff))
    )
    sweep = StaleSweep()
    for run in stale:
        lost = f"worker {run.worker_hostname or '?'} stopped sending heartbeats (>{timeout_s:.0f} s)"
        done = int(run.config.get(AUTO_RESUMES_KEY, 0))
        if run.kind == "train" and run.status == "running" and done < auto_resume_attempts:
            run.status, run.resumable = "queued", True
            run.config = {**run.config, "_resume": True, AUTO_RESUMES_KEY: done + 1}
            attempt = f"automatic resume {done + 1} of {auto_resume_attempts}"
            run.error = f"{lost}; resuming from the last checkpoint ({attempt})"
            sweep.requeued.append(run.id)
        else:
            run.status, run.finished_at = "failed", utcnow()
            run.error = lost
            run.resumable = run.kind == "train"
            sweep.failed.append(run.id)
    session.flush()
    return sweep


def append_metrics(session: Session, *, run_id: int, step: int, values: dict[str, float]) -> None:
    """Upsert the metric row of one step (a redelivered job may repeat a step)."""
    existing = session.scalar(select(Metric).where(Metric.run_id == run_id, Metric.step == step))
    if existing is None:
        session.add(Metric(run_id=run_id, step=step, values=values))
    else:
        existing.values = values
    session.flush()


def list_metrics(session: Session, *, run_id: int, since: int | None = None, limit: int | None = None) -> list[Metric]:
    """Metric rows with step > `since`, ascending, at most `limit` (None = all)."""
    get_run(session, run_id=run_id)
    query = select(Metric).where(Metric.run_id == run_id)
    if since is not None:
        query = query.where(Metric.step > since)
    return list(session.scalars(query.order_by(Metric.step).limit(limit)))


def add_checkpoint(session: Session, *, run_id: int, step: int, path: str) -> Checkpoint:
    """Record a checkpoint once per path (a redelivered job re-scans the same run dir)."""
    query = select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path == path)
    existing = session.scalar(query)
    if existing is not None:
        return existing
    checkpoint = Checkpoint(run_id=run_id, step=step, path=path)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def list_checkpoints(session: Session, *, run_id: int, offset: int = 0, limit: int | None = None) -> list[Checkpoint]:
    get_run(session, run_id=run_id)
    query = select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step)
    return list(session.scalars(query.offset(offset).limit(limit)))


def get_checkpoint(session: Session, *, run_id: int, checkpoint_id: int) -> Checkpoint:
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None or checkpoint.run_id != run_id:
        raise NotFoundError("checkpoint", checkpoint_id)
    return checkpoint


def save_result(session: Session, *, run_id: int, result: dict[str, Any]) -> None:
    get_run(session, run_id=run_id).result = result
    session.flush()


def save_config(session: Session, *, run_id: int, config: dict[str, Any]) -> None:
    get_run(session, run_id=run_id).config = config
    session.flush()


def add_evaluation(session: Session, *, run_id: int, results: dict[str, Any]) -> Evaluation:
    evaluation = Evaluation(run_id=run_id, results=results)
    session.add(evaluation)
    session.flush()
    return evaluation


def latest_evaluation(session: Session, *, run_id: int) -> Evaluation | None:
    get_run(session, run_id=run_id)
    query = select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.id.desc()).limit(1)
    return session.scalar(query)
