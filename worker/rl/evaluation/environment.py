"""Evaluate a model or a trained checkpoint on a user environment's held-out split (greedy, one episode per task).

The metric of record is answer correctness (`exact_match` when the rubric has it, else the total reward);
every rubric term's mean and error count is reported beside it. User code runs through the caller's tool
runner, exactly as in training.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.rl.envs.from_spec import ToolRunner, env_factory, load_env_data
from worker.rl.envs.spec import EnvSpec
from worker.rl.evaluation.job import load_engine, loadable_checkpoint
from worker.rl.evaluation.runner import BATCH_SIZE
from worker.rl.generation.chat import ChatFormat
from worker.rl.rollout import RolloutLimits
from worker.rl.training.collect import collect_heldout, greedy_params

logger = logging.getLogger(__name__)


def evaluate_environment(
    spec: EnvSpec,
    *,
    model: str,
    tool_runner: ToolRunner | None,
    output_dir: Path,
    checkpoint_path: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    index_cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """`{"environment", "model", "n", "correctness", "reward_mean", "terms", "errors", "predictions"}`."""
    data = load_env_data(spec)
    tasks = data.heldout[:limit] if limit else data.heldout
    name = loadable_checkpoint(checkpoint_path, output_dir) if checkpoint_path else model
    generator, tokenizer = load_engine(name)
    chat = ChatFormat(tokenizer)
    make_env = env_factory(spec, tool_runner=tool_runner, passages=data.passages, index_cache_dir=index_cache_dir)
    lim = spec.limits
    limits = RolloutLimits(lim.max_turns, lim.max_new_tokens_per_turn, lim.max_total_tokens)

    def report(done: int) -> None:
        if progress is not None:
            progress(done, len(tasks))

    batch = collect_heldout(
        make_env,
        generator,
        chat,
        tasks,
        params=greedy_params(limits, seed),
        limits=limits,
        seed=seed,
        group_prefix="eval-env-",
        chunk_size=BATCH_SIZE,
        progress=report,
    )
    trajectories = batch.trajectories
    terms = sorted({k for t in trajectories for k in t.reward_breakdown})
    means = {
        k: statistics.fmean([t.reward_breakdown[k] for t in trajectories if k in t.reward_breakdown]) for k in terms
    }
    errors: dict[str, float] = {}
    for t in trajectories:
        for key, value in t.metrics.items():
            if key.endswith("/errors"):
                errors[key] = errors.get(key, 0.0) + float(value)
    rewards = [t.reward for t in trajectories]
    correctness = means.get("exact_match", statistics.fmean(rewards) if rewards else 0.0)
    logger.info("environment %s: correctness %.3f over %d held-out tasks", spec.name, correctness, len(tasks))
    predictions = [
        {"task_id": t.task_id, "answer": t.final_answer, "reward": t.reward, "num_tool_calls": t.num_tool_calls}
        for t in trajectories
    ]
    return {
        "environment": {"name": spec.name, "environment_id": spec.environment_id, "version": spec.version},
        "model": model,
        "checkpoint_path": checkpoint_path,
        "n": len(trajectories),
        "correctness": correctness,
        "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "terms": means,
        "errors": errors,
        "predictions": predictions,
    }
