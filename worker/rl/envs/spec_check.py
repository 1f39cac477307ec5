"""Check an `EnvSpec` as the studio's "Check" button does: load its data, build the real env, run `check_env`.

User tools and reward functions go through the caller's tool runner, exactly as in training. Besides the
contract checks, each user reward term is scored once on a gold-answer trajectory, so a reward function
that raises or returns a non-number shows up here instead of as `reward/<name>/errors` mid-run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from worker.rl.envs.checker import check_env
from worker.rl.envs.from_spec import ToolRunner, env_factory, load_env_data
from worker.rl.envs.spec import EnvSpec
from worker.rl.types import Task, Trajectory, Turn

logger = logging.getLogger(__name__)


def _gold_trajectory(task: Task, answer_tag: str) -> Trajectory:
    gold = task.answers[0] if task.answers else ""
    text = f"<{answer_tag}>{gold}</{answer_tag}>"
    return Trajectory(
        task_id=task.id,
        group_id="check",
        token_ids=(),
        loss_mask=(),
        logprobs=(),
        prompt_length=0,
        turns=(Turn("assistant", text, 0, 0),),
        terminated=True,
        final_answer=gold,
    )


def check_spec(
    spec: EnvSpec, *, tool_runner: ToolRunner | None, num_tasks: int = 3, index_cache_dir: Path | None = None
) -> dict[str, Any]:
    """`{"ok", "env_name", "tasks_checked", "passed", "failures", "notes", "counts", "gold_scores"}`."""
    try:
        data = load_env_data(spec)
        make_env = env_factory(spec, tool_runner=tool_runner, passages=data.passages, index_cache_dir=index_cache_dir)
    except Exception as exc:  # a bad file, corpus or spec is a failed check the user must see, not a crash
        return {
            "ok": False,
            "env_name": spec.name,
            "tasks_checked": 0,
            "passed": [],
            "notes": [],
            "failures": [f"building the environment failed: {type(exc).__name__}: {exc}"],
        }
    tasks = (data.heldout or data.train)[:num_tasks]
    failures: list[str] = []
    passed: set[str] = set()
    gold_scores: list[dict[str, Any]] = []
    for task in tasks:
        report = check_env(make_env(), task)
        passed.update(report.passed)
        failures.extend(f"task {task.id}: {failure}" for failure in report.failures)
        env = make_env()
        scored = env.score(_gold_trajectory(task, spec.answer_tag), task)
        env.close()
        gold_scores.append(
            {
                "task_id": task.id,
                "total": scored.total,
                "breakdown": dict(scored.breakdown),
                "errors": dict(scored.errors),
            }
        )
        failures.extend(f"task {task.id}: reward term {name!r} failed: {err}" for name, err in scored.errors.items())
    counts = {"train": len(data.train), "heldout": len(data.heldout), "passages": len(data.passages)}
    logger.info("spec check of %s on %d task(s): %d failure(s)", spec.name, len(tasks), len(failures))
    return {
        "ok": not failures and bool(tasks),
        "env_name": spec.name,
        "tasks_checked": len(tasks),
        "passed": sorted(passed),
        "failures": failures or ([] if tasks else ["the dataset gave no tasks"]),
        "notes": [],
        "counts": counts,
        "gold_scores": gold_scores,
    }
