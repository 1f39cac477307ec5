"""Run crud: create/list/cancel/resume from the API; claims, heartbeats, outcomes and sweeps for workers.

Everything that decides who owns a run (claim, heartbeat, owned outcome, stale sweep, requeue)
is one conditional UPDATE judged on the database clock, so two workers never both hold a run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, cast, func, literal, or_, select, update
from sqlalchemy.orm import Session

from backend.core.db import utcnow
from backend.core.dbtime import db_now, seconds_ago
from backend.core.errors import ConflictError, InvalidInputError, NotFoundError
from backend.models.dataset import Environment, EnvironmentVersion
from backend.models.run import Checkpoint, Evaluation, Metric, Run
from backend.schemas.common import ACTIVE_STATUSES
from backend.schemas.evaluation import EvaluationCreate
from backend.schemas.run import RunCreate

FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


def new_task_id() -> str:
    """The Celery task id a (re)queued run is sent under; stored first, so the sweeper can look for it."""
    return uuid.uuid4().hex


def create_run(session: Session, *, run_in: RunCreate) -> Run:
    """A queued train/rollout run; the worker resolves `preset` + `requested_config` into `resolved_config`."""
    if run_in.environment_id is not None and session.get(Environment, run_in.environment_id) is None:
        raise InvalidInputError("environment_id", f"environment {run_in.environment_id} does not exist")
    version_id = _pinned_version(
        session, environment_id=run_in.environment_id, version_id=run_in.environment_version_id
    )
    run = Run(
        name=run_in.name or f"{run_in.kind}-{run_in.preset or 'custom'}",
        kind=run_in.kind,
        status="queued",
        preset=run_in.preset,
        requested_config=run_in.config,
        environment_id=run_in.environment_id,
        environment_version_id=version_id,
        resumable=run_in.kind == "train",
        celery_task_id=new_task_id(),
        enqueued_at=db_now(),
    )
    session.add(run)
    session.flush()
    return run


def create_eval_run(session: Session, *, eval_in: EvaluationCreate) -> Run:
    """A queued eval run whose typed request lives in `eval_spec`."""
    spec = eval_in.spec()
    label = f"{spec.model} · {','.join(spec.methods)} · {','.join(spec.datasets)}"
    version_id = None
    if eval_in.environment_id is not None:
        env = session.get(Environment, eval_in.environment_id)
        if env is None:
            raise InvalidInputError("environment_id", f"environment {eval_in.environment_id} does not exist")
        version_id = _pinned_version(session, environment_id=env.id, version_id=None)
        label = f"{spec.model} · environment #{env.id} held-out"
    run = Run(
        name=eval_in.name or f"eval {label}"[:200],
        kind="eval",
        status="queued",
        preset=None,
        requested_config={},
        environment_id=eval_in.environment_id,
        environment_version_id=version_id,
        eval_spec=spec.model_dump(mode="json"),
        celery_task_id=new_task_id(),
        enqueued_at=db_now(),
    )
    session.add(run)
    session.flush()
    return run


def _pinned_version(session: Session, *, environment_id: int | None, version_id: int | None) -> int | None:
    """The environment version a run pins: the one asked for (of its environment), else the current one."""
    if version_id is not None:
        row = session.get(EnvironmentVersion, version_id)
        if row is None or (environment_id is not None and row.environment_id != environment_id):
            raise InvalidInputError(
                "environment_version_id", f"version {version_id} does not exist for environment {environment_id}"
            )
        return row.id
    if environment_id is None:
        return None
    env = session.get(Environment, environment_id)
    if env is None:
        return None
    query = select(EnvironmentVersion.id).where(
        EnvironmentVersion.environment_id == env.id, EnvironmentVersion.version == env.version
    )
    return session.scalar(query)


def create_job_run(session: Session, *, kind: str, name: str, config: dict[str, Any]) -> Run:
    """A queued internal job row (ping, tool test, env validation, export); `config` holds its arguments."""
    run = Run(
        name=name,
        kind=kind,
        status="queued",
        requested_config=config,
        celery_task_id=new_task_id(),
        enqueued_at=db_now(),
    )
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
    """Queue a finished train run again (its job resumes from the run dir's last checkpoint)."""
    run = get_run(session, run_id=run_id)
    if run.status in ACTIVE_STATUSES:
        raise ConflictError(f"run {run_id} is {run.status}; only finished runs can be resumed")
    if run.kind != "train" or not run.resumable:
        raise ConflictError(f"run {run_id} ({run.kind}) is not resumable")
    run.status, run.cancel_requested, run.error, run.finished_at = "queued", False, None, None
    run.owner_token, run.celery_task_id, run.enqueued_at = None, new_task_id(), db_now()
    session.flush()
    session.refresh(run)
    return run


def claim_run(session: Session, *, run_id: int, hostname: str, stale_after_s: float) -> str | None:
    """Atomically take the run for this worker: a queued run, or an active one whose owner went silent.

    Returns the new lease id (`owner_token`), or None for any other state (finished, cancelled while
    queued, or live on another worker): the delivery is a duplicate and must not run. Staleness is
    judged on the database clock.
    """
    claimable = or_(
        Run.status == "queued",
        and_(Run.status.in_(("running", "cancelling")), Run.heartbeat_at < seconds_ago(stale_after_s)),
    )
    token = uuid.uuid4().hex
    values = {
        "status": "running",
        "worker_hostname": hostname,
        "owner_token": token,
        "heartbeat_at": db_now(),
        "started_at": func.coalesce(Run.started_at, db_now()),
    }
    statement = update(Run).where(Run.id == run_id, claimable).values(**values)
    result = session.execute(statement.execution_options(synchronize_session=False))
    return token if result.rowcount == 1 else None  # type: ignore[attr-defined]


def heartbeat(session: Session, *, run_id: int, owner: str) -> tuple[int, float] | None:
    """Beat for the run's owner (database time); None when `owner` no longer holds the run.

    Returns `(current_step, progress)` so the caller's step watchdog can see whether the job advances.
    """
    statement = (
        update(Run)
        .where(Run.id == run_id, Run.owner_token == owner, Run.status.in_(("running", "cancelling")))
        .values(heartbeat_at=db_now())
        .execution_options(synchronize_session=False)
    )
    if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.execute(select(Run.current_step, Run.progress).where(Run.id == run_id)).one()
    return int(row.current_step), float(row.progress)


def owns(session: Session, *, run_id: int, owner: str) -> bool:
    """True while `owner` holds the run (it is active and no other claim replaced it)."""
    query = select(Run.id).where(Run.id == run_id, Run.owner_token == owner, Run.status.in_(("running", "cancelling")))
    return session.scalar(query) is not None


def finish_owned(session: Session, *, run_id: int, owner: str, status: str, error: str | None = None) -> bool:
    """Set the outcome only if `owner` still holds the run (one conditional UPDATE); False when it lost it."""
    values: dict[str, Any] = {"status": status, "owner_token": None}
    if error is not None or status == "succeeded":
        values["error"] = error
    if status in FINISHED_STATUSES:
        values["finished_at"] = db_now()
        if status == "succeeded":
            values["progress"] = 1.0
    statement = update(Run).where(Run.id == run_id, Run.owner_token == owner).values(**values)
    result = session.execute(statement.execution_options(synchronize_session=False))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def set_status(session: Session, *, run_id: int, status: str, error: str | None = None) -> Run:
    """Unconditional outcome (API-side failures, a task's `on_failure`)."""
    run = get_run(session, run_id=run_id)
    run.status = status
    if error is not None or status == "succeeded":  # success clears notes of earlier attempts
        run.error = error
    if status in FINISHED_STATUSES:
        run.finished_at = utcnow()
        run.owner_token = None
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


def is_cancel_requested(session: Session, *, run_id: int) -> bool:
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


@dataclass(frozen=True)
class StaleSweep:
    """Runs whose owner stopped sending heartbeats: failed ones, and train runs queued again to resume."""

    failed: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)


def _lost_message(timeout_s: float) -> Any:
    """SQL text: `worker <hostname> stopped sending heartbeats (>N s)`."""
    host = func.coalesce(Run.worker_hostname, "?")
    return literal("worker ", String) + host + literal(f" stopped sending heartbeats (>{timeout_s:.0f} s)", String)


def sweep_stale_runs(session: Session, *, timeout_s: float, auto_resume_attempts: int = 0) -> StaleSweep:
    """Handle `running`/`cancelling` runs whose heartbeat is older than `timeout_s` (database time).

    Two conditional UPDATEs, no read-then-write, so concurrent sweepers never act twice on one run:
    1. a train run that was not being cancelled and has automatic resumes left goes back to `queued`
       with no task id (the sweeper enqueues it after commit; the job resumes from its last checkpoint);
    2. every other stale run is marked failed, train runs resumable by hand.
    """
    stale = and_(Run.status.in_(("running", "cancelling")), Run.heartbeat_at < seconds_ago(timeout_s))
    attempt = cast(Run.auto_resumes + 1, String)
    resume_note = (
        _lost_message(timeout_s)
        + literal("; resuming from the last checkpoint (automatic resume ", String)
        + attempt
        + literal(f" of {auto_resume_attempts})", String)
    )
    requeue = (
        update(Run)
        .where(stale, Run.kind == "train", Run.status == "running", Run.auto_resumes < auto_resume_attempts)
        .values(
            status="queued",
            resumable=True,
            auto_resumes=Run.auto_resumes + 1,
            owner_token=None,
            celery_task_id=None,
            enqueued_at=None,
            error=resume_note,
        )
        .returning(Run.id)
        .execution_options(synchronize_session=False)
    )
    requeued = sorted(session.scalars(requeue))
    fail = (
        update(Run)
        .where(stale)
        .values(
            status="failed",
            finished_at=db_now(),
            error=_lost_message(timeout_s),
            owner_token=None,
            resumable=Run.kind == "train",
        )
        .returning(Run.id)
        .execution_options(synchronize_session=False)
    )
    failed = sorted(session.scalars(fail))
    session.flush()
    return StaleSweep(failed=failed, requeued=requeued)


def count_stale_runs(session: Session, *, timeout_s: float) -> int:
    """Active runs whose heartbeat is older than `timeout_s` (read-only; the worker's sweeper acts on them)."""
    query = select(func.count(Run.id)).where(
        Run.status.in_(("running", "cancelling")), Run.heartbeat_at < seconds_ago(timeout_s)
    )
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class QueuedRun:
    id: int
    kind: str
    celery_task_id: str | None


def queued_runs_to_check(session: Session, *, older_than_s: float) -> list[QueuedRun]:
    """Queued runs with no task id, or whose task was sent more than `older_than_s` ago (database time)."""
    since = func.coalesce(Run.enqueued_at, Run.created_at)
    query = select(Run.id, Run.kind, Run.celery_task_id).where(
        Run.status == "queued", or_(Run.celery_task_id.is_(None), since < seconds_ago(older_than_s))
    )
    return [QueuedRun(r.id, r.kind, r.celery_task_id) for r in session.execute(query.order_by(Run.id))]


def take_requeue(session: Session, *, run_id: int, old_task_id: str | None) -> str | None:
    """Atomically record a new task id for a still-queued run whose task was `old_task_id`.

    Only the sweeper whose UPDATE wins sends the task (returns the new id); None means another
    sweeper or a worker got there first.
    """
    task_id = new_task_id()
    same_task = Run.celery_task_id.is_(None) if old_task_id is None else Run.celery_task_id == old_task_id
    statement = (
        update(Run)
        .where(Run.id == run_id, Run.status == "queued", same_task)
        .values(celery_task_id=task_id, enqueued_at=db_now())
        .execution_options(synchronize_session=False)
    )
    return task_id if session.execute(statement).rowcount == 1 else None  # type: ignore[attr-defined]


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


def save_resolved_config(session: Session, *, run_id: int, config: dict[str, Any]) -> None:
    """The full config the worker resolved (the request stays in `requested_config`)."""
    get_run(session, run_id=run_id).resolved_config = config
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
