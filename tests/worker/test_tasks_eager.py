"""Celery tasks in eager mode (unit only): names, queues, and `RunTask.on_failure` bookkeeping."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from backend.core.db import engine_for, session_scope
from backend.crud import runs as runs_crud
from backend.queue import QUEUE_OF, TaskName


@pytest.fixture
def eager_app(db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STUDIO_REDIS_URL", "redis://127.0.0.1:1/0")
    from worker.celery_app import celery_app

    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    monkeypatch.setitem(celery_app.conf, "task_eager_propagates", False)
    return celery_app


def test_every_task_name_is_registered_on_its_queue(eager_app) -> None:
    import worker.tasks  # noqa: F401

    for name in TaskName:
        task = eager_app.tasks[str(name)]
        assert task.queue == QUEUE_OF[name]
    assert eager_app.conf.task_acks_late is True
    assert eager_app.conf.worker_prefetch_multiplier == 1


def test_ping_task_eager(eager_app, db_url: str) -> None:
    from worker.tasks import ping

    with session_scope() as s:
        run_id = runs_crud.create_job_run(s, kind="ping", name="p", config={}).id
    ping.delay(run_id)
    with Session(engine_for(db_url)) as s:
        run = runs_crud.get_run(s, run_id=run_id)
        assert run.status == "succeeded"
        assert run.result["hostname"]


def test_on_failure_marks_run_failed(eager_app, db_url: str) -> None:
    from worker.tasks import train_policy

    with session_scope() as s:
        run = runs_crud.create_job_run(s, kind="train", name="t", config={})
        run.preset = "nope"
        run_id = run.id
    result = train_policy.delay(run_id)
    assert result.failed()
    with Session(engine_for(db_url)) as s:
        run = runs_crud.get_run(s, run_id=run_id)
        assert run.status == "failed"
        assert "preset 'nope' is unknown" in run.error


def test_a_duplicate_delivery_leaves_the_run_alone(eager_app, db_url: str) -> None:
    from worker.tasks import ping

    with session_scope() as s:
        run_id = runs_crud.create_job_run(s, kind="ping", name="p", config={}).id
    ping.delay(run_id)
    with Session(engine_for(db_url)) as s:
        first = runs_crud.get_run(s, run_id=run_id).result
    result = ping.delay(run_id)  # the broker delivers the same job again
    assert result.successful()
    with Session(engine_for(db_url)) as s:
        run = runs_crud.get_run(s, run_id=run_id)
        assert run.status == "succeeded"
        assert run.error is None
        assert run.result == first, "the duplicate did not run the job again"
