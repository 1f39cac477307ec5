"""A train job whose config asks `parallel.nproc = 2`: two gloo ranks, one writer, cancel and resume."""

from __future__ import annotations

from pathlib import Path

from tests.worker.test_core_jobs import tiny_config
from worker import jobs
from worker.store import MemoryRunStore


def test_two_rank_train_job_cancels_both_ranks_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, total_steps=2)
    config["rollout"] = {**config["rollout"], "prompts_per_step": 2, "max_turns": 1}
    config["algorithm"] = {"minibatch_size": 4}
    config["parallel"] = {"nproc": 2}
    store = MemoryRunStore()
    run_id = store.add_run("train", config=config)
    store.runs[run_id].cancel_requested = True  # rank 0 sees it after step 1 and stops rank 1 with it
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path)
    run = store.runs[run_id]
    assert run.status == "cancelled"
    assert sorted(run.metrics) == [1]
    assert [step for step, _ in run.trajectories] == [1] * 4  # both ranks' episodes, stored once, by rank 0
    assert sorted({t["group_id"].split("-")[1] for _, t in run.trajectories}) == ["r0", "r1"]
    assert [step for step, _ in run.checkpoints] == [1]
    run.cancel_requested = False
    store.set_status(run_id, "queued")
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path)  # both ranks resume from step 1's checkpoint
    assert run.status == "succeeded"
    assert sorted(run.metrics) == [1, 2]
    assert [step for step, _ in run.trajectories] == [1] * 4 + [2] * 4
    assert (tmp_path / f"run-{run_id}" / "checkpoints" / "step_00002").is_dir()
