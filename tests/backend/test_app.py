"""App-level behaviour: health, auth, startup refusals, stable operation ids, stale-run sweep."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.core.config import get_settings
from backend.core.db import alembic_config, head_revision, utcnow
from backend.core.errors import InsecureConfigError, SchemaOutdatedError
from backend.crud import runs as runs_crud
from backend.main import create_app
from backend.schemas.run import RunCreate
from tests.backend.conftest import LOOPBACK_URL

API = "/api/v1"


def test_health_reports_db_and_missing_broker(client: TestClient) -> None:
    health = client.get(f"{API}/health").json()
    assert health["db"]["ok"] is True
    assert health["db"]["dialect"] == "sqlite"
    assert health["db"]["revision"] == health["db"]["head"] == head_revision()
    assert health["broker"]["ok"] is False
    assert "STUDIO_REDIS_URL" in health["broker"]["error"]
    assert health["ok"] is False
    assert set(health["versions"]) >= {"python", "fastapi", "sqlalchemy", "celery", "studio"}


def _orphan(session: Session, kind: str) -> int:
    """A run whose worker died an hour ago."""
    run = runs_crud.create_run(session, run_in=RunCreate(kind=kind))
    assert runs_crud.claim_run(session, run_id=run.id, hostname="w9", stale_after_s=60)
    session.commit()
    session.refresh(run)
    run.heartbeat_at = utcnow() - timedelta(hours=1)
    session.commit()
    return run.id


def test_health_is_read_only(client: TestClient, session: Session, enqueued: list) -> None:
    """GET /health counts stale runs but never changes them (the worker's sweeper does)."""
    run_id = _orphan(session, "train")
    before = client.get(f"{API}/runs/{run_id}").json()
    for _ in range(3):
        assert client.get(f"{API}/health").json()["stale_runs"] == 1
    after = client.get(f"{API}/runs/{run_id}").json()
    assert after == before
    assert after["status"] == "running"
    assert enqueued == [], "a GET must not send tasks"


def test_refuses_to_start_behind_head(studio_env: Path) -> None:
    with pytest.raises(SchemaOutdatedError, match="run `studio db upgrade`") as info:
        create_app()
    assert f"code expects {head_revision()}" in str(info.value)
    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")
    create_app()


def test_public_bind_requires_token(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_API_HOST", "0.0.0.0")
    with pytest.raises(InsecureConfigError, match="STUDIO_API_TOKEN"):
        create_app()
    monkeypatch.setenv("STUDIO_API_TOKEN", "s3cret")
    with TestClient(create_app(), base_url=LOOPBACK_URL) as client:
        assert client.get(f"{API}/tools").status_code == 401
        assert client.get(f"{API}/tools", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(f"{API}/tools", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_loopback_with_token_still_requires_it(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_API_TOKEN", "tok")
    with TestClient(create_app(), base_url=LOOPBACK_URL) as client:
        assert client.get(f"{API}/runs").status_code == 401
        assert client.get(f"{API}/runs", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_operation_ids_are_route_names(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"create_run", "list_runs", "get_health", "ping_worker", "get_label_queue", "test_tool"} <= ids
    assert client.get("/docs").status_code == 200
