"""`rm_train_job` over the real core (tiny random model, MemoryRunStore), and a GRPO step rewarded by the result."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rl.test_reward_model import scripted_records, snapshot
from tests.worker.test_core_jobs import tiny_config
from worker import jobs
from worker.rl.reward_model.pairs import TooFewLabelsError
from worker.rl.training.config import config_from_dict
from worker.store import MemoryRunStore


def _rm_config(base: Path) -> dict[str, object]:
    return {"base_model": str(base), "epochs": 2, "learning_rate": 3e-3, "max_length": 96, "device": "cpu"}


def test_rm_train_job_then_train_with_only_that_reward(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    labeled = store.add_run("train")
    store.save_trajectories(
        labeled,
        1,
        [{**snapshot("Q?", "Rome", "Rome [Rome]"), "reward": 1.0}, {**snapshot("Q?", "Rome", "Rome"), "reward": 0.0}],
    )
    store.label_records = scripted_records(24)  # run_id 1 = `labeled`
    rm_id = store.add_run("rm_train", config={"label_run_ids": [labeled], "reward_model": _rm_config(tiny_model_dir)})
    result = jobs.rm_train_job(rm_id, store, hostname="w", runs_dir=tmp_path)
    assert store.runs[rm_id].status == "succeeded"
    artifact = Path(result["artifact_dir"])
    assert artifact == tmp_path / "reward-models" / f"rm-{rm_id}"
    assert (artifact / "reward_model.json").is_file()
    assert result["label_ids"] == list(range(1, 25))
    assert 0.0 <= result["metrics"]["heldout_accuracy"] <= 1.0
    assert result["metrics"]["train_pairs"] + result["metrics"]["heldout_pairs"] == 24
    assert len(result["scores"]) == 2
    # a GRPO step whose only reward is that model: the env rubric is scaled to 0, the term is batch-scored
    train_cfg = tiny_config(tiny_model_dir, total_steps=1)
    train_cfg["task"] = {**train_cfg["task"], "reward_models": [{"id": rm_id}], "env_reward_weight": 0.0}
    run_id = store.add_run("train", config=train_cfg)
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path)
    run = store.runs[run_id]
    assert run.status == "succeeded", run.error
    metrics = run.metrics[1]
    assert metrics["perf/reward_model_s"] > 0
    name = f"reward_model:{rm_id}"
    assert f"reward/{name}" in metrics
    for _, data in run.trajectories:
        assert data["reward"] == pytest.approx(data["reward_breakdown"][name])
    assert run.resolved_config["task"]["reward_models"][0]["path"] == str(artifact)


def test_rm_train_job_errors_are_clear(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    labeled = store.add_run("train")
    store.label_records = scripted_records(3)
    rm_id = store.add_run("rm_train", config={"label_run_ids": [labeled], "reward_model": _rm_config(tiny_model_dir)})
    with pytest.raises(TooFewLabelsError, match=r"3 preference pair\(s\), at least 8 are needed"):
        jobs.rm_train_job(rm_id, store, hostname="w", runs_dir=tmp_path)
    bad = store.add_run("rm_train", config={"label_run_ids": [labeled], "reward_model": {"epochz": 1}})
    with pytest.raises(ValueError, match="unknown reward model config key"):
        jobs.rm_train_job(bad, store, hostname="w", runs_dir=tmp_path)
    config = config_from_dict({"task": {"reward_models": [{"id": 99, "weight": 0.5}]}})
    assert config.task.reward_models[0].name == "reward_model:99"
    with pytest.raises(FileNotFoundError, match="reward model 99 has no artifact"):
        jobs.with_reward_model_paths(config, tmp_path)
    with pytest.raises(ValueError, match="needs an id"):
        config_from_dict({"task": {"reward_models": [{"weight": 1.0}]}})
