"""App-level behaviour: health, auth, startup refusals, stable operation ids, stale-run sweep."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.core.config import get_settings
from backend.core.db import alembic_config, utcnow
from backend.core.errors import InsecureConfigError, SchemaOutdatedError
from backend.crud import runs as runs_crud
from backend.main import create_app
from backend.queue import TaskName
from backend.schemas.run import RunCreate

API = "/api/v1"


def test_health_reports_db_and_missing_broker(client: TestClient) -> None:
    health = client.get(f"{API}/health").json()
    assert health["db"]["ok"] is True
    assert health["db"]["dialect"] == "sqlite"
    assert health["db"]["revision"] == health["db"]["head"]
    assert health["db"]["head"]
    assert health["broker"]["ok"] is False
    assert "STUDIO_REDIS_URL" in health["broker"]["error"]
    assert health["ok"] is False
    assert set(health["versions"]) >= {"python", "fastapi", "sqlalchemy", "celery", "studio"}


def _orphan(session: Session, kind: str) -> int:
    """A run whose worker died an hour ago."""
    run = runs_crud.create_run(session, run_in=RunCreate(kind=kind))
    runs_crud.mark_started(session, run_id=run.id, hostname="w9", task_id=None)
    run.heartbeat_at = utcnow() - timedelta(hours=1)
    session.commit()
    return run.id


def test_health_resumes_orphaned_train_runs_then_fails_them(
    client: TestClient, session: Session, enqueued: list
) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"auto_resume_attempts": 1})
    run_id = _orphan(session, "train")
    health = client.get(f"{API}/health").json()
    assert (health["stale_runs_resumed"], health["stale_runs_failed"]) == (1, 0)
    assert enqueued == [(TaskName.TRAIN, run_id)]
    queued = client.get(f"{API}/runs/{run_id}").json()
    assert queued["status"] == "queued"
    assert "w9" in queued["error"]
    assert "automatic resume 1 of 1" in queued["error"]
    # the resumed job dies too: no attempts left, so the run fails, resumable by hand
    session.expire_all()
    runs_crud.mark_started(session, run_id=run_id, hostname="w9", task_id=None)
    runs_crud.get_run(session, run_id=run_id).heartbeat_at = utcnow() - timedelta(hours=1)
    session.commit()
    assert client.get(f"{API}/health").json()["stale_runs_failed"] == 1
    failed = client.get(f"{API}/runs/{run_id}").json()
    assert failed["status"] == "failed"
    assert failed["resumable"] is True
    assert len(enqueued) == 1


def test_health_fails_orphaned_runs_that_cannot_resume(client: TestClient, session: Session, enqueued: list) -> None:
    run_id = _orphan(session, "eval")
    assert client.get(f"{API}/health").json()["stale_runs_failed"] == 1
    failed = client.get(f"{API}/runs/{run_id}").json()
    assert failed["status"] == "failed"
    assert "w9" in failed["error"]
    assert failed["resumable"] is False
    assert enqueued == []


def test_refuses_to_start_behind_head(studio_env: Path) -> None:
    with pytest.raises(SchemaOutdatedError, match="run `studio db upgrade`") as info:
        create_app()
    assert "code expects " in str(info.value)
    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")
    create_app()


def test_public_bind_requires_token(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_API_HOST", "0.0.0.0")
    with pytest.raises(InsecureConfigError, match="STUDIO_API_TOKEN"):
        create_app()
    monkeypatch.setenv("STUDIO_API_TOKEN", "s3cret")
    with TestClient(create_app()) as client:
        assert client.get(f"{API}/tools").status_code == 401
        assert client.get(f"{API}/tools", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(f"{API}/tools", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_loopback_with_token_still_requires_it(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_API_TOKEN", "tok")
    with TestClient(create_app()) as client:
        assert client.get(f"{API}/runs").status_code == 401
        assert client.get(f"{API}/runs", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_operation_ids_are_route_names(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"create_run", "list_runs", "get_health", "ping_worker", "get_label_queue", "test_tool"} <= ids
    assert client.get("/docs").status_code == 200
