"""An environment whose rubric names a reward model and a step scorer: both reach training through the run's
resolved `task.reward_models` (one path), scored per step in batches (tiny random models, MemoryRunStore)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rl.test_reward_model import scripted_records
from tests.rl.test_reward_model_terms import scripted_step_records
from tests.worker.test_core_jobs import tiny_config
from tests.worker.test_env_jobs import user_env_spec
from worker import jobs
from worker.store import MemoryRunStore


def test_environment_reward_model_terms_train_through_task_reward_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    labeled = store.add_run("train")
    steps = [{**r, "label_id": 100 + r["label_id"]} for r in scripted_step_records(12)]
    store.label_records = [*scripted_records(16), *steps]
    base = {"base_model": str(tiny_model_dir), "epochs": 1, "learning_rate": 3e-3, "max_length": 96, "device": "cpu"}
    rm_id = store.add_run("rm_train", config={"label_run_ids": [labeled], "reward_model": base})
    step_id = store.add_run("rm_train", config={"label_run_ids": [labeled], "reward_model": {**base, "kind": "step"}})
    runs_dir = tmp_path / "runs"
    jobs.rm_train_job(rm_id, store, hostname="w", runs_dir=runs_dir)
    step_result = jobs.rm_train_job(step_id, store, hostname="w", runs_dir=runs_dir)
    assert (step_result["kind"], step_result["scores"]) == ("step", {})  # a step scorer scores turns, not runs
    spec = user_env_spec(tmp_path)
    spec["rubric"] += [
        {"name": "rm", "reward_model": rm_id, "weight": 0.5},
        {"name": "prm", "step_reward_model": step_id, "normalize": True},
    ]
    version_id = store.add_environment_version(spec, environment_id=7, version=1)
    config = tiny_config(tiny_model_dir, total_steps=1)
    del config["task"]
    run_id = store.add_run("train", config=config, environment_id=7, environment_version_id=version_id)
    jobs.train_job(run_id, store, hostname="w", runs_dir=runs_dir)
    run = store.runs[run_id]
    assert run.status == "succeeded", run.error
    terms = run.resolved_config["task"]["reward_models"]
    assert [(t["id"], t["step"], t["weight"], t["normalize"]) for t in terms] == [
        (rm_id, False, 0.5, False),
        (step_id, True, 1.0, True),
    ]
    assert terms[1]["path"] == str(jobs.reward_model_dir(runs_dir, step_id))
    assert run.resolved_config["algorithm"]["process_reward_weight"] == 1.0  # a step scorer turns process rewards on
    metrics = run.metrics[1]
    for key in (
        f"reward/reward_model:{rm_id}",
        f"reward/step_reward_model:{step_id}",
        "reward/rubric",
        "perf/reward_model_s",
        "perf/step_reward_model_s",
    ):
        assert key in metrics, key
    assert metrics["perf/reward_model_texts"] > 0
    _, first = run.trajectories[0]
    rubric = first["reward_breakdown"]["rubric"]
    assert first["reward"] == pytest.approx(rubric + 0.5 * first["reward_breakdown"][f"reward_model:{rm_id}"])
    assert len(first["step_rewards"]) == sum(1 for t in first["turns"] if t["role"] == "assistant")
    assert any(s != 0.0 for _, d in run.trajectories for s in d["step_rewards"])  # z-scored step scores
