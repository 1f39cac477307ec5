"""Who owns a run: lease-guarded claims and heartbeats, database time, conditional sweeps (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from backend.core import db as core_db
from backend.core.db import alembic_config, engine_for, utcnow
from backend.crud import runs as runs_crud
from backend.schemas.run import RunCreate

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"studio_own_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    command.upgrade(alembic_config(url), "head")
    yield url
    engine_for(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    sqlite_url = f"sqlite:///{tmp_path / 'own.db'}"
    command.upgrade(alembic_config(sqlite_url), "head")
    return sqlite_url


def _session(url: str) -> Session:
    return Session(engine_for(url), expire_on_commit=False)


def _new_run(url: str, kind: str = "train") -> int:
    with _session(url) as s:
        run_id = runs_crud.create_run(s, run_in=RunCreate(kind=kind)).id  # type: ignore[arg-type]
        s.commit()
        return run_id


def _claim(url: str, run_id: int, host: str, stale_after_s: float = 60) -> str | None:
    with _session(url) as s:
        token = runs_crud.claim_run(s, run_id=run_id, hostname=host, stale_after_s=stale_after_s)
        s.commit()
        return token


def _beat(url: str, run_id: int, owner: str) -> tuple[int, float] | None:
    with _session(url) as s:
        seen = runs_crud.heartbeat(s, run_id=run_id, owner=owner)
        s.commit()
        return seen


def _age_heartbeat(url: str, run_id: int, seconds: float) -> None:
    with _session(url) as s:
        runs_crud.get_run(s, run_id=run_id).heartbeat_at = utcnow() - timedelta(seconds=seconds)
        s.commit()


def _sweep(url: str, timeout_s: float, attempts: int = 0) -> runs_crud.StaleSweep:
    with _session(url) as s:
        sweep = runs_crud.sweep_stale_runs(s, timeout_s=timeout_s, auto_resume_attempts=attempts)
        s.commit()
        return sweep


def _run(url: str, run_id: int):  # type: ignore[no-untyped-def]
    with _session(url) as s:
        return runs_crud.get_run(s, run_id=run_id)


def test_a_taken_over_claim_loses_its_heartbeat_and_its_outcome(url: str) -> None:
    run_id = _new_run(url)
    first = _claim(url, run_id, "w1")
    assert first is not None
    assert _claim(url, run_id, "w2") is None, "live on w1: a duplicate delivery must not claim it"
    assert _beat(url, run_id, first) == (0, 0.0)
    _age_heartbeat(url, run_id, 120)  # w1 stalls (GC pause, DB outage, partition)
    second = _claim(url, run_id, "w2")
    assert second not in (None, first)
    assert _beat(url, run_id, first) is None, "the old owner's heartbeat must update no row"
    assert _beat(url, run_id, second) is not None
    with _session(url) as s:
        assert not runs_crud.owns(s, run_id=run_id, owner=first)
        assert runs_crud.owns(s, run_id=run_id, owner=second)
        assert not runs_crud.finish_owned(s, run_id=run_id, owner=first, status="succeeded")
        assert runs_crud.finish_owned(s, run_id=run_id, owner=second, status="succeeded")
        s.commit()
    run = _run(url, run_id)
    assert (run.status, run.worker_hostname, run.owner_token, run.progress) == ("succeeded", "w2", None, 1.0)


@pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=1)], ids=["worker-behind", "worker-ahead"])
def test_worker_clock_skew_does_not_matter(url: str, monkeypatch: pytest.MonkeyPatch, skew: timedelta) -> None:
    """The worker's wall clock is off by an hour; claims, heartbeats and the sweep still agree (database time)."""
    run_id = _new_run(url)
    real_utcnow = core_db.utcnow
    with monkeypatch.context() as worker_clock:
        for module in (core_db, runs_crud):
            worker_clock.setattr(module, "utcnow", lambda: real_utcnow() + skew)
        owner = _claim(url, run_id, "skewed")
        assert owner is not None
        assert _beat(url, run_id, owner) is not None
    # the API host's clock is right: a live run is not stale...
    assert _sweep(url, timeout_s=30) == runs_crud.StaleSweep()
    assert _run(url, run_id).status == "running"
    # ...and once the skewed worker falls silent, the run goes stale after the timeout, not an hour off
    time.sleep(1.2)
    assert _sweep(url, timeout_s=1).failed == [run_id]


def test_sweep_requeues_then_fails_and_counts_in_a_typed_column(url: str) -> None:
    train, evaluation, live = _new_run(url), _new_run(url, "rollout"), _new_run(url)
    for run_id in (train, evaluation, live):
        assert _claim(url, run_id, "w9")
    _age_heartbeat(url, train, 3600)
    _age_heartbeat(url, evaluation, 3600)
    sweep = _sweep(url, timeout_s=60, attempts=1)
    assert (sweep.requeued, sweep.failed) == ([train], [evaluation])
    queued = _run(url, train)
    assert (queued.status, queued.auto_resumes, queued.owner_token, queued.celery_task_id) == ("queued", 1, None, None)
    assert "worker w9 stopped sending heartbeats" in queued.error
    assert "automatic resume 1 of 1" in queued.error
    failed = _run(url, evaluation)
    assert (failed.status, failed.resumable) == ("failed", False)
    assert _run(url, live).status == "running", "a run with a fresh heartbeat is left alone"
    assert _sweep(url, timeout_s=60, attempts=1) == runs_crud.StaleSweep(), "a second sweep finds nothing"
    # the resumed job dies too: no attempts left, so the run fails, resumable by hand
    assert _claim(url, train, "w9")
    _age_heartbeat(url, train, 3600)
    assert _sweep(url, timeout_s=60, attempts=1).failed == [train]
    again = _run(url, train)
    assert (again.status, again.resumable, again.auto_resumes) == ("failed", True, 1)


def test_requeue_is_taken_by_one_sweeper_only(url: str) -> None:
    run_id = _new_run(url)
    old = _run(url, run_id).celery_task_id
    with _session(url) as s:
        assert [q.id for q in runs_crud.queued_runs_to_check(s, older_than_s=3600)] == []
        assert [q.id for q in runs_crud.queued_runs_to_check(s, older_than_s=0)] == [run_id]
        new = runs_crud.take_requeue(s, run_id=run_id, old_task_id=old)
        assert new not in (None, old)
        assert runs_crud.take_requeue(s, run_id=run_id, old_task_id=old) is None, "the second sweeper lost"
        s.commit()
    assert _run(url, run_id).celery_task_id == new
