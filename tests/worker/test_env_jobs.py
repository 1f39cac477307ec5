"""Jobs in a user environment (a stored version spec): train 2 steps with a tiny model, check, sandboxed user code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.worker.test_core_jobs import tiny_config
from worker import jobs
from worker.store import MemoryRunStore

TOOL_SOURCE = '''
def km_to_miles(km: float) -> float:
    """Convert kilometres to miles.

    Args:
        km: Distance in kilometres.
    """
    return round(km * 0.621371, 2)
'''
REWARD_SOURCE = "def reward(answer, gold, trajectory):\n    return float(trajectory['num_tool_calls'] > 0)\n"
CALL = '<tool_call>{"name": "km_to_miles", "arguments": {"km": 10}}</tool_call>'


def user_env_spec(tmp_path: Path, *, reward_source: str = REWARD_SOURCE) -> dict[str, Any]:
    tasks = tmp_path / "units.jsonl"
    rows = [
        {"id": f"u{i}", "question": f"How many miles are {i} km?", "answer": [str(round(i * 0.621371, 2))]}
        for i in range(1, 9)
    ]
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {
        "name": "units",
        "tools": [
            {
                "name": "km_to_miles",
                "key": "tool-1-v1",
                "description": "Convert km to miles.",
                "parameters": {"type": "object", "properties": {"km": {"type": "number"}}, "required": ["km"]},
                "source": TOOL_SOURCE,
                "function": "km_to_miles",
            }
        ],
        "data": {"source": "file", "location": str(tasks), "format": "flat", "heldout_fraction": 0.25},
        "rubric": [
            {"name": "exact_match", "weight": 1.0, "builtin": "exact_match"},
            {"name": "used_tool", "weight": 0.5, "key": "reward-1-v1-used_tool", "source": reward_source},
        ],
        # the whole call is prefilled: a random tiny model cannot write one, and the test is about the plumbing
        "prefill": {"first_turn_prefill": CALL},
        "limits": {"max_turns": 2, "max_new_tokens_per_turn": 4, "max_total_tokens": 4096, "tool_timeout_s": 5},
    }


def test_train_job_in_a_user_environment_calls_the_user_tool_and_reward(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    version_id = store.add_environment_version(user_env_spec(tmp_path), environment_id=7, version=3)
    config = tiny_config(tiny_model_dir, total_steps=2)
    del config["task"]
    run_id = store.add_run("train", config=config, environment_id=7, environment_version_id=version_id)
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path / "runs")
    run = store.runs[run_id]
    assert run.status == "succeeded", run.error
    assert sorted(run.metrics) == [1, 2]
    _step, first = run.trajectories[0]
    tool_turns = [t for t in first["turns"] if t["role"] == "tool"]
    assert tool_turns[0]["name"] == "km_to_miles"
    assert tool_turns[0]["text"] == "6.21"  # computed by the user's source in the sandbox
    assert first["reward_breakdown"]["used_tool"] == 1.0
    assert run.metrics[1]["reward/used_tool"] == 1.0
    assert run.metrics[1]["tool/km_to_miles/calls"] >= 2
    assert run.result["environment"] == {
        "version_id": version_id,
        "environment_id": 7,
        "version": 3,
        "name": "units",
        "tools": ["km_to_miles"],
        "train_tasks": 6,
        "heldout_tasks": 2,
        "rubric": {"exact_match": 1.0, "used_tool": 0.5},
    }
    stored = run.resolved_config
    assert stored["rollout"]["max_turns"] == 2  # the environment's limits
    assert stored["algorithm"]["estimator"] == "grpo"  # the base recipe


def test_check_job_on_a_user_environment_reports_failing_reward_and_prompt_tokens(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = MemoryRunStore()
    broken = "def reward(answer, gold, trajectory):\n    return 1 / 0\n"
    version_id = store.add_environment_version(user_env_spec(tmp_path, reward_source=broken))
    run_id = store.add_run(
        "validate", config={"environment_id": 1, "model": str(tiny_model_dir)}, environment_version_id=version_id
    )
    jobs.validate_env_job(run_id, store, hostname="w")
    run = store.runs[run_id]
    report = run.result
    assert run.status == "failed"
    assert report["tasks_checked"] == 2
    assert any("reward term 'used_tool' failed: RuntimeError: ZeroDivisionError" in f for f in report["failures"])
    assert not [f for f in report["failures"] if "reward term" not in f]  # the env contract itself holds
    assert report["counts"] == {"train": 6, "heldout": 2, "passages": 0}
    assert report["prompt"]["tokens"] > 50
    assert "km_to_miles" in report["prompt"]["text"]


def test_eval_job_on_a_user_environment_heldout_split(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRunStore()
    version_id = store.add_environment_version(user_env_spec(tmp_path), environment_id=7, version=3)
    eval_spec = {"model": str(tiny_model_dir), "limit": 2}
    run_id = store.add_run("eval", eval_spec=eval_spec, environment_id=7, environment_version_id=version_id)
    report = jobs.evaluate_job(run_id, store, hostname="w", runs_dir=tmp_path / "runs")
    run = store.runs[run_id]
    assert run.status == "succeeded"
    assert run.evaluations == [report]
    assert report["n"] == 2
    assert report["environment"] == {"name": "units", "environment_id": None, "version": None, "version_id": version_id}
    assert report["terms"]["used_tool"] == 1.0  # the prefilled call ran in the sandbox in every episode
    assert 0.0 <= report["correctness"] <= 1.0
    assert {p["task_id"] for p in report["predictions"]} <= {f"u{i}" for i in range(1, 9)}


def test_runaway_and_failing_user_tools_cost_only_a_tool_error() -> None:
    """Through the worker's pool and the real env: a loop is stopped at the time limit, a raise and bad arguments
    come back as tool errors, and every one is counted for its tool."""
    from tests.rl.conftest import CharTokenizer
    from worker.rl.envs.from_spec import env_from_spec
    from worker.rl.envs.spec import EnvSpec
    from worker.rl.generation.base import SamplingParams
    from worker.rl.generation.chat import ChatFormat
    from worker.rl.generation.scripted import ScriptedGenerator
    from worker.rl.rollout import RolloutLimits, collect_trajectories
    from worker.rl.types import Task
    from worker.sandbox.limits import SandboxLimits
    from worker.tool_runner import pool_for_spec

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    source = (
        "def spin(n: int) -> int:\n    if n < 0:\n        raise ValueError('n must be >= 0')\n"
        "    while n == 0:\n        pass\n    return n\n"
    )
    tool = {"name": "spin", "key": "spin-1", "parameters": schema, "source": source}
    spec = EnvSpec.from_dict({"name": "runaway", "limits": {"max_turns": 4, "tool_timeout_s": 1.0}, "tools": [tool]})
    pool = pool_for_spec(spec, limits=SandboxLimits())
    call = '<tool_call>{{"name": "spin", "arguments": {args}}}</tool_call>'
    replies = [
        call.format(args='{"n": 0}'),
        call.format(args='{"n": -1}'),
        call.format(args='{"m": 1}'),
        "<answer>1</answer>",
    ]
    tokenizer = CharTokenizer()
    try:
        batch = collect_trajectories(
            lambda: env_from_spec(spec, tool_runner=pool.call),
            ScriptedGenerator(tokenizer, replies),
            ChatFormat(tokenizer),
            [Task(id="t", question="q", answers=("1",))],
            group_size=1,
            params=SamplingParams(max_new_tokens=200),
            limits=RolloutLimits(max_turns=4, max_total_tokens=50_000),
        )
    finally:
        pool.close()
    tool_turns = [t for t in batch.trajectories[0].turns if t.role == "tool"]
    assert [t.tool_error for t in tool_turns] == [True, True, True]
    assert "time limit exceeded" in tool_turns[0].text
    assert "ValueError: n must be >= 0" in tool_turns[1].text
    assert "expects" in tool_turns[2].text  # bad arguments never reach the sandbox
    assert batch.trajectories[0].final_answer == "1"  # the episode went on
    assert batch.stats.tool_metrics["tool/spin/errors"] == 3.0
