"""`GET /health`: database (dialect, revision vs head), broker, live workers, versions."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from sqlalchemy.orm import Session

from backend import queue
from backend.api.deps import Enqueue, EnqueueDep, SessionDep, SettingsDep
from backend.core import db as migration_state
from backend.core.config import Settings
from backend.crud import runs as runs_crud
from backend.queue import TaskName
from backend.schemas.health import BrokerHealth, DatabaseHealth, HealthPublic, WorkersHealth

router = APIRouter(tags=["health"])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist, key in [("agent-studio", "studio"), ("fastapi", "fastapi"), ("sqlalchemy", "sqlalchemy"),
                      ("celery", "celery")]:  # fmt: skip
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "unknown"
    return out


def _db_health(session: Session, settings: Settings) -> tuple[DatabaseHealth, runs_crud.StaleSweep]:
    try:
        engine = session.get_bind()
        revision = migration_state.current_revision(engine)  # type: ignore[arg-type]
        head = migration_state.head_revision()
        sweep = runs_crud.sweep_stale_runs(
            session, timeout_s=settings.heartbeat_timeout_s, auto_resume_attempts=settings.auto_resume_attempts
        )
        session.commit()
        db = DatabaseHealth(ok=revision == head, dialect=engine.dialect.name, revision=revision, head=head)
        return db, sweep
    except Exception as exc:
        session.rollback()
        return DatabaseHealth(ok=False, error=str(exc)), runs_crud.StaleSweep()


def _requeue(session: Session, enqueue: Enqueue, run_ids: list[int]) -> None:
    """Send the automatic resumes (rows already committed as queued); a broker failure fails the run."""
    for run_id in run_ids:
        try:
            enqueue(TaskName.TRAIN, run_id)
        except Exception as exc:
            runs_crud.set_status(session, run_id=run_id, status="failed", error=f"could not queue the resume: {exc}")
            session.commit()


def _masked(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


def _broker_health(settings: Settings) -> tuple[BrokerHealth, WorkersHealth]:
    try:
        queue.ping_broker()
    except Exception as exc:
        broker = BrokerHealth(ok=False, url=_masked(settings.redis_url), error=str(exc))
        return broker, WorkersHealth(ok=False, error="broker unreachable")
    broker = BrokerHealth(ok=True, url=_masked(settings.redis_url))
    try:
        hostnames = queue.ping_workers(timeout_s=1.0)
    except Exception as exc:
        return broker, WorkersHealth(ok=False, error=str(exc))
    error = None if hostnames else "no worker answered"
    return broker, WorkersHealth(ok=bool(hostnames), hostnames=hostnames, error=error)


@router.get("/health")
def get_health(session: SessionDep, settings: SettingsDep, enqueue: EnqueueDep) -> HealthPublic:
    """Per-component status; also sweeps runs whose worker stopped sending heartbeats (resume or fail)."""
    db, sweep = _db_health(session, settings)
    _requeue(session, enqueue, sweep.requeued)
    broker, workers = _broker_health(settings)
    ok = db.ok and broker.ok and workers.ok
    return HealthPublic(
        ok=ok, db=db, broker=broker, workers=workers, versions=_versions(),
        stale_runs_failed=len(sweep.failed), stale_runs_resumed=len(sweep.requeued),
    )  # fmt: skip
