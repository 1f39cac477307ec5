"""Job bodies over the REAL RL core (tiny random model on disk, MemoryRunStore): rollout, evaluate, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker import jobs
from worker.store import EnvironmentSpec, MemoryRunStore, ToolSpec

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BM25 = ToolSpec(2, "search", "builtin", "bm25_search", {}, {"name": "bm25_search"}, 1)


def tiny_config(model_dir: Path, total_steps: int) -> dict[str, Any]:
    return {
        "model": {"name_or_path": str(model_dir), "device": "cpu"},
        "engine": {"backend": "hf"},
        "task": {"source": "demo", "eval_size": 2, "force_first_search": True, "top_k": 1, "max_passage_chars": 60},
        "rollout": {
            "prompts_per_step": 1,
            "group_size": 2,
            "max_turns": 2,
            "max_new_tokens_per_turn": 4,
            "max_total_tokens": 4096,
        },
        "optim": {"total_steps": total_steps},
        "eval": {"num_tasks": 0, "at_start": False},
    }


def test_rollout_job_stores_steps_with_token_texts_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    run_id = store.add_run("rollout", config=tiny_config(tiny_model_dir, total_steps=3))
    store.runs[run_id].cancel_requested = True  # stops after the first step, leaving rollout_state.json
    jobs.rollout_job(run_id, store, hostname="w", runs_dir=tmp_path)
    run = store.runs[run_id]
    assert run.status == "cancelled"
    assert sorted(run.metrics) == [1]
    step, first = run.trajectories[0]
    assert step == 1
    assert len(first["token_texts"]) == len(first["token_ids"])
    assert "".join(first["token_texts"]).count("<|im_start|>") >= 3
    run.cancel_requested = False
    store.set_status(run_id, "queued")  # resumed
    jobs.rollout_job(run_id, store, hostname="w", runs_dir=tmp_path)
    assert run.status == "succeeded"
    assert sorted(run.metrics) == [1, 2, 3]
    assert sorted({s for s, _ in run.trajectories}) == [1, 2, 3]
    assert len(run.trajectories) == 6
    assert run.result is not None
    assert run.result["num_trajectories"] == 4, "the resumed call collects only steps 2 and 3"


@pytest.mark.skipif(not (DATA_DIR / "hotpotqa" / "dev_sample.json").is_file(), reason="no shared benchmark samples")
def test_evaluate_job_stores_build_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    request = {"model": str(tiny_model_dir), "datasets": ["hotpotqa"], "methods": ["direct"], "limit": 2, "seed": 0}
    run_id = store.add_run("eval", eval_spec=request)
    jobs.evaluate_job(run_id, store, hostname="w", runs_dir=tmp_path, data_dir=DATA_DIR)
    run = store.runs[run_id]
    assert run.status == "succeeded"
    report = run.evaluations[0]
    assert report is run.result
    method = report["methods"][0]
    assert method["method"] == "direct"
    assert [(d["dataset"], d["n"]) for d in method["datasets"]] == [("hotpotqa", 2)]
    assert (run.step, run.total_steps) == (2, 2)
    assert (tmp_path / f"run-{run_id}" / "eval" / "report.json").is_file()


@pytest.mark.skipif(not (DATA_DIR / "hotpotqa" / "dev_sample.json").is_file(), reason="no shared benchmark samples")
def test_evaluate_job_keeps_examples_and_tool_trajectories(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each example's prediction is in the report; a tool method's trajectory is stored once under its key."""
    store = MemoryRunStore()
    request = {
        "model": str(tiny_model_dir),
        "datasets": ["hotpotqa"],
        "methods": ["direct", "base-tool-call"],
        "limit": 2,
        "seed": 0,
        "max_turns": 2,
        "max_new_tokens": 8,
    }
    run_id = store.add_run("eval", eval_spec=request)
    jobs.evaluate_job(run_id, store, hostname="w", runs_dir=tmp_path, data_dir=DATA_DIR)
    run = store.runs[run_id]
    examples = run.result["examples"]  # type: ignore[index]
    assert sorted(e["method"] for e in examples) == ["base-tool-call", "base-tool-call", "direct", "direct"]
    assert {"question", "gold", "prediction", "em", "f1", "task_id"} <= set(examples[0])
    groups = sorted(t["group_id"] for _, t in run.trajectories)
    tool_ids = sorted(e["task_id"] for e in examples if e["method"] == "base-tool-call")
    assert groups == [f"base-tool-call/hotpotqa/{t}" for t in tool_ids]
    store.set_status(run_id, "queued")  # redelivered: the trajectories are not stored twice
    jobs.evaluate_job(run_id, store, hostname="w", runs_dir=tmp_path, data_dir=DATA_DIR)
    assert len(run.trajectories) == 2


def test_evaluate_job_names_bad_request(tmp_path: Path) -> None:
    store = MemoryRunStore()
    run_id = store.add_run("eval", eval_spec={"datasets": ["hotpotqa"], "methods": ["guess"]})
    with pytest.raises(ValueError, match="methods"):
        jobs.evaluate_job(run_id, store, hostname="w", runs_dir=tmp_path, data_dir=DATA_DIR)
    missing = store.add_run("eval", config={})
    with pytest.raises(ValueError, match="no eval_spec; launch evaluations with POST /evaluations"):
        jobs.evaluate_job(missing, store, hostname="w", runs_dir=tmp_path, data_dir=DATA_DIR)


@pytest.mark.skipif(not (DATA_DIR / "hotpotqa" / "dev_sample.json").is_file(), reason="no shared benchmark samples")
def test_evaluate_job_reads_the_benchmark_data_dir_setting(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No development path in product code: the data root is `benchmark_data_dir`; unset, offline, it says so."""
    from backend.core.config import get_settings

    request = {"datasets": ["hotpotqa"], "methods": ["direct"], "limit": 1, "seed": 0}
    eval_spec = {"model": str(tiny_model_dir), **request}
    monkeypatch.setenv("STUDIO_BENCHMARK_DATA_DIR", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get_settings().benchmark_data_dir is None
    store = MemoryRunStore()
    unset = store.add_run("eval", eval_spec=eval_spec)
    with pytest.raises(ValueError, match="STUDIO_BENCHMARK_DATA_DIR"):
        jobs.evaluate_job(unset, store, hostname="w", runs_dir=tmp_path)
    monkeypatch.setenv("STUDIO_BENCHMARK_DATA_DIR", str(DATA_DIR))
    run_id = store.add_run("eval", eval_spec=eval_spec)
    jobs.evaluate_job(run_id, store, hostname="w", runs_dir=tmp_path)
    assert store.runs[run_id].status == "succeeded"
    monkeypatch.setenv("STUDIO_BENCHMARK_DATA_DIR", str(tmp_path / "nowhere"))
    wrong = store.add_run("eval", eval_spec=eval_spec)
    with pytest.raises(ValueError, match="is not a folder"):
        jobs.evaluate_job(wrong, store, hostname="w", runs_dir=tmp_path)


def test_validate_env_job_demo_kb_passes() -> None:
    store = MemoryRunStore()
    store.environments[1] = EnvironmentSpec(1, "demo", (BM25,), None, {}, {"max_turns": 2})
    run_id = store.add_run("validate", config={"environment_id": 1})
    jobs.validate_env_job(run_id, store, hostname="w")
    run = store.runs[run_id]
    assert run.status == "succeeded", run.result
    assert run.result["ok"]
    assert run.result["tasks_checked"] == 3
    assert "max_turns truncates" in run.result["passed"]


@pytest.mark.skipif(not (DATA_DIR / "hotpotqa" / "dev_sample.json").is_file(), reason="no shared benchmark samples")
def test_validate_env_job_file_dataset_and_missing_file(tmp_path: Path) -> None:
    dataset = {"kind": "file", "location": str(DATA_DIR / "hotpotqa" / "dev_sample.json"), "format": "auto"}
    report = jobs.check_environment_spec(EnvironmentSpec(1, "hq", (BM25,), dataset, {}, {}))
    assert report["ok"], report["failures"]
    missing = {"kind": "file", "location": str(tmp_path / "nope.json"), "format": "auto"}
    store = MemoryRunStore()
    store.environments[2] = EnvironmentSpec(2, "bad", (BM25,), missing, {}, {})
    run_id = store.add_run("validate", config={"environment_id": 2})
    jobs.validate_env_job(run_id, store, hostname="w")
    assert store.runs[run_id].status == "failed"
    assert "loading the dataset failed" in store.runs[run_id].result["failures"][0]


def test_quickstart_overrides_from_the_api_config_reach_the_trainer_config() -> None:
    from worker.store import RunSpec

    overrides = {
        "rollout": {"group_size": 2, "prompts_per_step": 1, "max_new_tokens_per_turn": 32},
        "optim": {"total_steps": 2},
        "eval": {"num_tasks": 0, "at_start": False},
    }
    config = jobs.resolve_config(RunSpec(1, "train", "t", "queued", "quickstart", overrides, None))
    assert (config.rollout.group_size, config.rollout.prompts_per_step) == (2, 1)
    assert config.rollout.max_new_tokens_per_turn == 32
    assert (config.optim.total_steps, config.eval.num_tasks, config.eval.at_start) == (2, 0, False)
    assert config.model.name_or_path == "smollm2-135m", "keys not overridden come from the preset"


def test_the_api_eval_spec_and_the_core_eval_request_agree() -> None:
    """`EvalSpec` (the API's typed request) and `EvalRequest` (what the job runs) have the same fields and defaults."""
    import dataclasses

    from backend.schemas.evaluation import EvalSpec
    from worker.rl.evaluation.job import EvalRequest

    core = {f.name: f.default for f in dataclasses.fields(EvalRequest)}
    api = {name: field.default for name, field in EvalSpec.model_fields.items()}
    assert set(api) == set(core)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in api.items()} == core
    request = EvalRequest.from_dict(EvalSpec(datasets=["2wiki"], methods=["agent"], limit=4).model_dump())
    assert (request.datasets, request.methods, request.limit) == (("2wiki",), ("agent",), 4)
