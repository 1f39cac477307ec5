"""No queued run is lost: the embedded Redis keeps its queue on disk, and the worker's sweeper rebuilds
the queue from the database when the broker lost it anyway (a Redis without persistence, an API crash
between commit and send). Real processes: the embedded redis-server and a Celery worker subprocess.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend import queue
from backend.core.db import session_scope
from backend.crud import runs as runs_crud
from backend.queue import TaskName
from studio.embedded_redis import EmbeddedRedis
from studio.processes import celery_worker_argv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "r")
    monkeypatch.setenv("STUDIO_REDIS_URL", server.start())
    yield server
    server.stop()


def _ping_run() -> tuple[int, str]:
    with session_scope() as s:
        run = runs_crud.create_job_run(s, kind="ping", name="ping", config={})
        assert run.celery_task_id is not None
        return run.id, run.celery_task_id


def test_embedded_redis_keeps_its_queue_across_a_crash(redis: EmbeddedRedis) -> None:
    task_id = queue.enqueue(TaskName.PING, 1, task_id="kept-task")
    assert task_id == "kept-task"
    assert "kept-task" in (queue.live_task_ids() or set())
    assert redis.process is not None
    os.kill(redis.process.pid, signal.SIGKILL)
    redis.process.wait(timeout=10)
    assert not redis.is_running()
    redis.start()
    assert "kept-task" in (queue.live_task_ids() or set()), "the queued task must survive a redis-server crash"


def test_runs_queued_while_redis_restarts_still_run(db_url: str, redis: EmbeddedRedis, tmp_path: Path) -> None:
    sent_id, sent_task = _ping_run()
    queue.enqueue(TaskName.PING, sent_id, task_id=sent_task)
    unsent_id, _ = _ping_run()  # the API died between its commit and its send
    # Redis restarts and has lost what it held (e.g. a server that keeps nothing on disk)
    redis.stop()
    shutil.rmtree(redis.directory)
    redis.start()
    assert sent_task not in (queue.live_task_ids() or set())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STUDIO_DATABASE_URL": db_url,
        "STUDIO_SWEEP_INTERVAL_S": "1",
        "STUDIO_REQUEUE_AFTER_S": "1",
    }
    args = celery_worker_argv("cpu", 1, "sweep-test@%h")
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        statuses: dict[int, str] = {}
        while time.monotonic() < deadline:
            with session_scope() as s:
                statuses = {i: runs_crud.get_run(s, run_id=i).status for i in (sent_id, unsent_id)}
            if all(status in ("succeeded", "failed") for status in statuses.values()):
                break
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        log.close()
    tail = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert statuses == {sent_id: "succeeded", unsent_id: "succeeded"}, tail
    with session_scope() as s:
        assert runs_crud.get_run(s, run_id=sent_id).celery_task_id != sent_task, "re-sent under a new task id"
        assert runs_crud.get_run(s, run_id=sent_id).result["hostname"].startswith("sweep-test@")
