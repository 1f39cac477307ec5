"""`studio up` keeps the embedded Redis and the worker alive: real processes killed, restarted, budgeted."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from studio.embedded_redis import EmbeddedRedis, _ping
from studio.launcher import RestartBudget, keep_alive
from studio.supervisor import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_dead_redis_and_worker_are_started_again(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "data")
    redis.start()
    supervisor = Supervisor(env=dict(os.environ))
    console = Console(file=io.StringIO())
    try:
        worker = supervisor.spawn("worker", SLEEPER)
        supervisor.spawn("api", SLEEPER)
        budget = RestartBudget(limit=2)
        assert keep_alive(supervisor, redis, budget, console) is None
        assert redis.process is not None
        old_redis, old_worker = redis.process.pid, worker.process.pid  # type: ignore[union-attr]
        os.kill(old_redis, signal.SIGKILL)
        os.kill(old_worker, signal.SIGKILL)
        redis.process.wait(timeout=10)
        worker.process.wait(timeout=10)  # type: ignore[union-attr]
        assert keep_alive(supervisor, redis, budget, console) is None
        assert redis.is_running()
        assert redis.process.pid != old_redis
        assert _ping(redis.socket_path)
        assert worker.process.poll() is None  # type: ignore[union-attr]
        assert worker.process.pid != old_worker  # type: ignore[union-attr]
        output = console.file.getvalue()  # type: ignore[attr-defined]
        assert "embedded Redis stopped" in output
        assert "worker stopped unexpectedly" in output
        # a worker that keeps dying exhausts its budget and ends the studio
        os.kill(worker.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        worker.process.wait(timeout=10)  # type: ignore[union-attr]
        assert keep_alive(supervisor, redis, budget, console) is None
        os.kill(worker.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        worker.process.wait(timeout=10)  # type: ignore[union-attr]
        assert keep_alive(supervisor, redis, budget, console) == "worker"
    finally:
        supervisor.stop_all()
        redis.stop()


def test_a_dead_api_is_not_restarted(tmp_path: Path) -> None:
    supervisor = Supervisor(env=dict(os.environ))
    try:
        api = supervisor.spawn("api", SLEEPER)
        os.kill(api.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        api.process.wait(timeout=10)  # type: ignore[union-attr]
        assert keep_alive(supervisor, None, RestartBudget(), Console(file=io.StringIO())) == "api"
    finally:
        supervisor.stop_all()


def test_restart_budget_forgets_old_restarts() -> None:
    now = [0.0]
    budget = RestartBudget(limit=1, window_s=10, clock=lambda: now[0])
    assert budget.allow("worker")
    assert not budget.allow("worker")
    now[0] = 11
    assert budget.allow("worker")
