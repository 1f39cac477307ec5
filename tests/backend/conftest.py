"""Backend fixtures: a migrated SQLite DB in tmp_path, a session, and a TestClient that records enqueues."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.api.deps import get_enqueue
from backend.core.config import get_settings
from backend.core.db import alembic_config, engine_for
from backend.main import create_app
from backend.queue import TaskName

LOOPBACK_URL = "http://127.0.0.1:8000"


@pytest.fixture
def studio_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every STUDIO_* setting at tmp_path (SQLite file, no broker, loopback, no token)."""
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STUDIO_REQUIRE_AUTH", "0")
    for name in ("DATABASE_URL", "REDIS_URL", "API_TOKEN", "ALLOWED_HOSTS"):
        monkeypatch.setenv(f"STUDIO_{name}", "")
    monkeypatch.setenv("STUDIO_API_HOST", "127.0.0.1")
    return tmp_path


@pytest.fixture
def db_url(studio_env: Path) -> str:
    url = get_settings().resolved_database_url
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    with Session(engine_for(db_url), expire_on_commit=False) as s:
        yield s


@pytest.fixture
def enqueued() -> list[tuple[TaskName, int]]:
    return []


@pytest.fixture
def client(db_url: str, enqueued: list[tuple[TaskName, int]]) -> Iterator[TestClient]:
    app = create_app()

    def record(task: TaskName, run_id: int, *, task_id: str | None = None) -> str:
        enqueued.append((task, run_id))
        return task_id or f"task-{run_id}"

    app.dependency_overrides[get_enqueue] = lambda: record
    # a loopback origin, and the header the studio's own clients send on state-changing requests (CSRF guard)
    with TestClient(app, base_url=LOOPBACK_URL, headers={"X-Studio-Client": "tests"}) as test_client:
        yield test_client
