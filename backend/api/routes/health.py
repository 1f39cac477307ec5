"""`GET /health`: database (dialect, revision vs head), broker, live workers, versions; no side effects."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from sqlalchemy.orm import Session

from backend import queue
from backend.api.deps import SessionDep, SettingsDep
from backend.core import db as migration_state
from backend.core.config import Settings
from backend.crud import runs as runs_crud
from backend.schemas.health import BrokerHealth, DatabaseHealth, HealthPublic, WorkersHealth

router = APIRouter(tags=["health"])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist, key in [
        ("agent-studio", "studio"),
        ("fastapi", "fastapi"),
        ("sqlalchemy", "sqlalchemy"),
        ("celery", "celery"),
    ]:
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "unknown"
    return out


def _db_health(session: Session, settings: Settings) -> tuple[DatabaseHealth, int]:
    """Revision vs head and the number of stale runs; reads only (the worker's sweeper acts on them)."""
    try:
        engine = session.get_bind()
        revision = migration_state.current_revision(engine)  # type: ignore[arg-type]
        head = migration_state.head_revision()
        stale = runs_crud.count_stale_runs(session, timeout_s=settings.heartbeat_timeout_s)
        db = DatabaseHealth(ok=revision == head, dialect=engine.dialect.name, revision=revision, head=head)
        return db, stale
    except Exception as exc:
        return DatabaseHealth(ok=False, error=str(exc)), 0
    finally:
        session.rollback()


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
def get_health(session: SessionDep, settings: SettingsDep) -> HealthPublic:
    """Per-component status. Read-only: stale runs are counted here and handled by the worker's sweeper."""
    db, stale = _db_health(session, settings)
    broker, workers = _broker_health(settings)
    ok = db.ok and broker.ok and workers.ok
    return HealthPublic(ok=ok, db=db, broker=broker, workers=workers, versions=_versions(), stale_runs=stale)
