"""A job's lease on its run: a worker that lost its run stops without touching it; a hung step is failed.

The duplicated-worker test runs two real worker processes over one SQLite file. Each drives
`jobs.running` + `StepRecorder` the way the trainer does (`should_stop` before each step, `on_step`
after it); the first is frozen with SIGSTOP past the heartbeat timeout (a GC pause, a DB outage, a
network partition), the second takes the run over, and the first is thawed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backend.core.db import session_scope
from backend.crud import runs as runs_crud
from backend.schemas.run import RunCreate
from worker import jobs
from worker.store import MemoryRunStore, SqlRunStore

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from worker import jobs
    from worker.store import SqlRunStore

    run_id, name, steps, run_dir = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = SqlRunStore()
    try:
        with jobs.running(store, run_id, hostname=name, heartbeat_s=0.2) as spec:
            recorder = jobs.StepRecorder(store, run_id, run_dir=run_dir, total_steps=steps, owner=spec.owner_token)
            for step in range(1, steps + 1):
                if recorder.should_stop():
                    print(f"{name} stopped before step {step}", flush=True)
                    break
                time.sleep(0.1)
                recorder.on_step(step, {"worker": float(name[-1])}, [])
                print(f"{name} step {step}", flush=True)
        store.set_status(run_id, "succeeded", owner=spec.owner_token)
        print(f"{name} succeeded", flush=True)
    except jobs.LeaseLost as exc:
        print(f"{name} lease lost: {exc}", flush=True)
        sys.exit(3)
    except jobs.DuplicateDelivery as exc:
        print(f"{name} duplicate: {exc}", flush=True)
        sys.exit(4)
    """
)


def _spawn(run_id: int, name: str, steps: int, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", WORKER, str(run_id), name, str(steps), str(tmp_path / "run")]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_step(run_id: int, at_least: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope() as s:
            if runs_crud.get_run(s, run_id=run_id).current_step >= at_least:
                return
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach step {at_least}")


def test_a_duplicated_worker_cannot_train_a_run_it_does_not_own(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_DATABASE_URL", db_url)
    monkeypatch.setenv("STUDIO_HEARTBEAT_TIMEOUT_S", "1.5")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with session_scope() as s:
        run_id = runs_crud.create_run(s, run_in=RunCreate(kind="train")).id
    first = _spawn(run_id, "w1", 200, tmp_path, env)
    try:
        _wait_step(run_id, 2)
        os.kill(first.pid, signal.SIGSTOP)  # w1 freezes mid-run; its heartbeat goes stale
        time.sleep(2.5)
        second = _spawn(run_id, "w2", 15, tmp_path, env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # w2's claim of the silent run
            with session_scope() as s:
                if runs_crud.get_run(s, run_id=run_id).worker_hostname == "w2":
                    break
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGCONT)  # w1 wakes up and carries on as if it still owned the run
        first_out, _ = first.communicate(timeout=30)
        second_out, _ = second.communicate(timeout=60)
    finally:
        for process in (first,):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
    assert second.returncode == 0, second_out
    assert "w2 succeeded" in second_out
    assert first.returncode == 3, first_out
    assert "lease lost" in first_out
    assert "w1 stopped before step" in first_out, "the thawed worker stops at its next step boundary"
    assert "w1 succeeded" not in first_out
    with session_scope() as s:
        run = runs_crud.get_run(s, run_id=run_id)
        assert (run.status, run.worker_hostname) == ("succeeded", "w2")
        metrics = runs_crud.list_metrics(s, run_id=run_id)
    assert [m.step for m in metrics] == list(range(1, 16))
    # w2 rewrote every step; at most the one step w1 was frozen inside can carry w1's late write
    assert sum(m.values["worker"] == 1.0 for m in metrics) <= 1, [m.values for m in metrics]


def test_step_watchdog_fails_a_hung_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STUDIO_STEP_TIMEOUT_S", "0.4")
    store = MemoryRunStore()
    run_id = store.add_run("train")
    with (  # noqa: PT012
        pytest.raises(jobs.LeaseLost, match="step watchdog"),
        jobs.running(store, run_id, hostname="w", heartbeat_s=0.05) as spec,
    ):
        recorder = jobs.StepRecorder(store, run_id, run_dir=tmp_path, total_steps=3, owner=spec.owner_token)
        recorder.on_step(1, {}, [])
        deadline = time.monotonic() + 10
        while not recorder.should_stop() and time.monotonic() < deadline:  # step 2 hangs
            time.sleep(0.05)
        assert recorder.lost
    run = store.runs[run_id]
    assert run.status == "failed"
    assert "stuck at step 1" in (run.error or "")
    assert "step watchdog" in (run.error or "")
    assert "STUDIO_STEP_TIMEOUT_S" in (run.error or "")


def test_progress_keeps_the_watchdog_quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STUDIO_STEP_TIMEOUT_S", "0.5")
    store = MemoryRunStore()
    run_id = store.add_run("train")
    with jobs.running(store, run_id, hostname="w", heartbeat_s=0.05) as spec:
        recorder = jobs.StepRecorder(store, run_id, run_dir=tmp_path, total_steps=10, owner=spec.owner_token)
        for step in range(1, 11):
            assert not recorder.should_stop()
            time.sleep(0.15)
            recorder.on_step(step, {}, [])
    assert store.set_status(run_id, "succeeded", owner=spec.owner_token)
    assert store.runs[run_id].status == "succeeded"


def test_sql_heartbeat_of_a_lost_lease_stops_the_job(db_url: str, tmp_path: Path) -> None:
    """In one process: the run is taken over while the job works; the job ends with `LeaseLost`, run untouched."""
    store = SqlRunStore()
    with session_scope() as s:
        run_id = runs_crud.create_run(s, run_in=RunCreate(kind="train")).id
    with (  # noqa: PT012
        pytest.raises(jobs.LeaseLost),
        jobs.running(store, run_id, hostname="w1", heartbeat_s=0.05) as spec,
    ):
        with session_scope() as s:  # another worker's claim wins (e.g. after a stall)
            run = runs_crud.get_run(s, run_id=run_id)
            run.owner_token, run.worker_hostname = "other-lease", "w2"
        recorder = jobs.StepRecorder(store, run_id, run_dir=tmp_path, total_steps=3, owner=spec.owner_token)
        assert recorder.should_stop(), "the trainer stops at the next step boundary"
        time.sleep(0.3)
    with session_scope() as s:
        run = runs_crud.get_run(s, run_id=run_id)
        assert (run.status, run.owner_token, run.worker_hostname) == ("running", "other-lease", "w2")
