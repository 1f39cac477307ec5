"""Job bodies against `MemoryRunStore` (and `SqlRunStore` for the DB path), no Celery."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.core.db import utcnow
from worker import jobs
from worker.rl.training import presets
from worker.rl.training.config_loader import deep_merge
from worker.sandbox.limits import SandboxLimits
from worker.store import EnvironmentSpec, MemoryRunStore, SqlRunStore, ToolSpec

TOOL = ToolSpec(1, "double", "python", "def double(x: int) -> int:\n    return 2 * x\n", {}, {"name": "double"}, 1)


def test_ping_job_writes_hostname() -> None:
    store = MemoryRunStore()
    run_id = store.add_run("ping")
    jobs.ping_job(run_id, store, hostname="w@host")
    run = store.runs[run_id]
    assert run.status == "succeeded"
    assert run.result["hostname"] == "w@host"
    assert run.result["timestamp"].endswith("Z")


def test_tool_test_job_success_and_failure() -> None:
    store = MemoryRunStore()
    store.tools[1] = TOOL
    ok = store.add_run("tool_test", config={"tool_id": 1, "arguments": {"x": 21}})
    jobs.tool_test_job(ok, store, hostname="w", limits=SandboxLimits())
    assert store.runs[ok].status == "succeeded"
    assert store.runs[ok].result["result"] == 42
    bad = store.add_run("tool_test", config={"tool_id": 1, "arguments": {"y": 1}})
    jobs.tool_test_job(bad, store, hostname="w", limits=SandboxLimits())
    assert store.runs[bad].status == "failed"
    assert "TypeError" in store.runs[bad].error


def test_validate_env_job_stores_report() -> None:
    store = MemoryRunStore()
    store.environments[5] = EnvironmentSpec(5, "env", (TOOL,), None, {}, {"max_turns": 2})
    seen: list[EnvironmentSpec] = []

    def check(env: EnvironmentSpec) -> dict[str, Any]:
        seen.append(env)
        return {"ok": False, "failures": ["max_turns does not truncate"]}

    run_id = store.add_run("validate", config={"environment_id": 5})
    jobs.validate_env_job(run_id, store, hostname="w", check=check)
    assert seen[0].name == "env"
    assert store.runs[run_id].status == "failed"
    assert store.runs[run_id].result["failures"] == ["max_turns does not truncate"]


@dataclass
class FakeTrajectory:
    reward: float

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": "t", "group_id": "g", "reward": self.reward, "turns": []}


@dataclass
class FakeResult:
    status: str
    steps: int


def _install_fake_core(monkeypatch: pytest.MonkeyPatch, calls: list[dict[str, Any]]) -> None:
    """A stand-in for `worker.rl.training.{presets,trainer}` honouring the trainer contract."""

    @dataclass(frozen=True)
    class Optim:
        total_steps: int

    @dataclass(frozen=True)
    class Config:
        optim: Optim
        raw: dict[str, Any]

        def to_dict(self) -> dict[str, Any]:
            return self.raw

    def resolve_run_config(preset: str | None, overrides: dict[str, Any]) -> Config:
        base: dict[str, Any] = {}
        if preset:
            base = {"optim": {"total_steps": 5}, "preset_file": presets.preset_path(preset).name}
        data = deep_merge(base, overrides)
        return Config(Optim(int(data["optim"]["total_steps"])), data)

    presets_mod = types.ModuleType("worker.rl.training.presets")
    presets_mod.resolve_run_config = resolve_run_config  # type: ignore[attr-defined]
    trainer_mod = types.ModuleType("worker.rl.training.trainer")

    def train(config: Any, *, run_dir: Path, resume_from: Path | None, on_step: Any, should_stop: Any) -> FakeResult:
        calls.append({"config": config.raw, "resume_from": resume_from})
        for step in range(1, config.optim.total_steps + 1):
            if should_stop():
                return FakeResult("cancelled", step - 1)
            folder = run_dir / "checkpoints" / f"step_{step:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "trainer_state.json").write_text("{}")
            on_step(step, {"reward/mean": step / 10}, [FakeTrajectory(0.5), FakeTrajectory(1.0)])
        return FakeResult("completed", config.optim.total_steps)

    trainer_mod.train = train  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "worker.rl.training.presets", presets_mod)
    monkeypatch.setitem(sys.modules, "worker.rl.training.trainer", trainer_mod)


def test_train_job_streams_metrics_trajectories_checkpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    _install_fake_core(monkeypatch, calls)
    store = MemoryRunStore()
    run_id = store.add_run("train", preset="quickstart", config={"optim": {"total_steps": 3}})
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path, decoder=lambda _c: None)
    run = store.runs[run_id]
    assert run.status == "succeeded"
    assert calls[0]["config"] == {"optim": {"total_steps": 3}, "preset_file": "quickstart.toml"}
    assert calls[0]["resume_from"] is None
    assert sorted(run.metrics) == [1, 2, 3]
    assert len(run.trajectories) == 6
    assert [step for step, _ in run.checkpoints] == [1, 2, 3]
    assert (run.step, run.total_steps) == (3, 3)
    assert run.result == {"status": "completed", "steps": 3}
    assert run.resolved_config is not None
    assert run.resolved_config["preset_file"] == "quickstart.toml"
    assert run.spec.config == {"optim": {"total_steps": 3}}, "the request is kept beside the resolved config"
    with pytest.raises(jobs.DuplicateDelivery, match="is succeeded"):  # a stray redelivery of a finished job
        jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path, decoder=lambda _c: None)
    assert len(calls) == 1
    store.set_status(run_id, "queued")  # resumed (e.g. after its worker died mid-run)
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path, decoder=lambda _c: None)
    assert calls[1]["resume_from"] == tmp_path / f"run-{run_id}"
    assert len(run.trajectories) == 6, "a repeated step keeps its stored trajectories instead of duplicating them"
    assert len(run.checkpoints) == 3


def test_train_job_cancel_and_bad_preset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install_fake_core(monkeypatch, [])
    store = MemoryRunStore()
    run_id = store.add_run("train", preset=None, config={"optim": {"total_steps": 4}})
    store.runs[run_id].cancel_requested = True
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path, decoder=lambda _c: None)
    assert store.runs[run_id].status == "cancelled"
    bad = store.add_run("train", preset="nope", config={})
    with pytest.raises(ValueError, match="preset 'nope' is unknown"):
        jobs.train_job(bad, store, hostname="w", runs_dir=tmp_path, decoder=lambda _c: None)


def test_heartbeat_thread_beats(db_url: str) -> None:
    store = MemoryRunStore()
    run_id = store.add_run("train")
    owner = store.claim(run_id, hostname="w", stale_after_s=60)
    assert owner is not None
    first = store.runs[run_id].heartbeat_at
    with jobs.Heartbeat(store, run_id, owner, interval_s=0.05) as beat:
        time.sleep(0.3)
    assert store.runs[run_id].heartbeat_at > first
    assert not beat.lost.is_set()


def test_sql_store_round_trip(db_url: str) -> None:
    from backend.core.db import session_scope
    from backend.crud import runs as runs_crud
    from backend.schemas.run import RunCreate

    with session_scope() as s:
        run_id = runs_crud.create_run(s, run_in=RunCreate(kind="train")).id
    store = SqlRunStore()
    assert store.claim(run_id, hostname="w1", stale_after_s=60)
    store.append_metrics(run_id, 1, {"loss/policy": 0.5})
    assert store.save_trajectories(run_id, 1, [FakeTrajectory(1.0).to_dict()] * 3) == 3
    store.add_checkpoint(run_id, 1, "/tmp/ck")
    store.set_progress(run_id, step=1, total_steps=4)
    store.save_result(run_id, {"x": 1})
    store.set_status(run_id, "succeeded")
    spec = store.load_run(run_id)
    assert spec.status == "succeeded"
    assert not store.is_cancel_requested(run_id)
    with session_scope() as s:
        run = runs_crud.get_run(s, run_id=run_id)
        assert (run.progress, run.worker_hostname, run.result) == (1.0, "w1", {"x": 1})
        assert [m.step for m in runs_crud.list_metrics(s, run_id=run_id)] == [1]


def test_sql_checkpoints_are_recorded_once(db_url: str) -> None:
    from backend.core.db import session_scope
    from backend.crud import runs as runs_crud

    with session_scope() as s:
        run_id = runs_crud.create_job_run(s, kind="train", name="t", config={}).id
    store = SqlRunStore()
    store.add_checkpoint(run_id, 2, "/ck/step_2")
    store.add_checkpoint(run_id, 2, "/ck/step_2")
    with session_scope() as s:
        assert len(runs_crud.list_checkpoints(s, run_id=run_id)) == 1


def test_claim_takes_queued_and_orphaned_runs_only() -> None:
    store = MemoryRunStore()
    run_id = store.add_run("train")
    assert store.claim(run_id, hostname="w1", stale_after_s=60)
    assert not store.claim(run_id, hostname="w2", stale_after_s=60), "live on w1: a second delivery must not run"
    store.runs[run_id].heartbeat_at = utcnow() - timedelta(seconds=120)
    assert store.claim(run_id, hostname="w2", stale_after_s=60), "w1 went silent: its job may be taken over"
    assert store.runs[run_id].hostname == "w2"
    for status in ("succeeded", "failed", "cancelled"):
        store.set_status(run_id, status)
        assert not store.claim(run_id, hostname="w3", stale_after_s=60)


def test_sql_claim_is_conditional(db_url: str) -> None:
    from backend.core.db import session_scope
    from backend.crud import runs as runs_crud
    from backend.schemas.run import RunCreate

    with session_scope() as s:
        run_id = runs_crud.create_run(s, run_in=RunCreate(kind="train")).id
    store = SqlRunStore()
    assert store.claim(run_id, hostname="w1", stale_after_s=60)
    assert store.load_run(run_id).status == "running"
    assert not store.claim(run_id, hostname="w2", stale_after_s=60)
    with session_scope() as s:
        runs_crud.get_run(s, run_id=run_id).heartbeat_at = utcnow() - timedelta(seconds=120)
    assert store.claim(run_id, hostname="w2", stale_after_s=60), "w1 went silent: its job may be taken over"
    store.set_status(run_id, "cancelled")
    assert not store.claim(run_id, hostname="w3", stale_after_s=60)
