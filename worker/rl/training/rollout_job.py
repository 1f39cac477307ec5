"""Rollout-only runs: the trainer's phase 1 for N steps, with no update (data collection, baselines).

Same keyword contract as `trainer.train` (the studio's jobs call either). Each step
samples `prompts_per_step` tasks from the seeded sampler and rolls out `group_size`
episodes each; `rollout_state.json` (step + sampler) makes a stopped run resumable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.rl.generation.base import SamplingParams
from worker.rl.rollout import collect_trajectories
from worker.rl.training.build import TaskSampler, TrainComponents, build_components
from worker.rl.training.config import TrainConfig, save_resolved
from worker.rl.training.metrics import MetricsWriter, reward_metrics, rollout_metrics, tool_metrics
from worker.rl.training.trainer import OnStep, rollout_limits, seed_everything
from worker.rl.trajectories import write_jsonl

logger = logging.getLogger(__name__)

STATE_FILE = "rollout_state.json"


@dataclass(frozen=True)
class RolloutResult:
    """How a rollout run ended."""

    status: str
    """'completed' or 'cancelled'."""
    steps_done: int
    run_dir: Path
    num_trajectories: int
    """Trajectories collected by this call (a resumed call counts only its own)."""
    final_metrics: dict[str, float] = field(default_factory=dict)


def _load_state(resume_from: str | Path | None, sampler: TaskSampler) -> int:
    """The step to continue after (0 for a fresh run); restores the sampler position."""
    if resume_from is None:
        return 0
    path = Path(resume_from) / STATE_FILE
    if not path.is_file():
        return 0
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    sampler.load_state_dict(state["sampler"])
    return int(state["step"])


def _save_state(run_dir: Path, step: int, sampler: TaskSampler) -> None:
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"step": step, "sampler": sampler.state_dict()}), encoding="utf-8")
    tmp.replace(run_dir / STATE_FILE)  # atomic: a killed worker never leaves half a state file


def run_rollouts(
    config: TrainConfig,
    *,
    run_dir: str | Path,
    resume_from: str | Path | None = None,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    components: TrainComponents | None = None,
) -> RolloutResult:
    """Collect `optim.total_steps` steps of trajectories with the current policy (no optimizer)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(config, run_dir)
    seed_everything(config.seed)
    comps = components or build_components(config)
    sampler = TaskSampler(len(comps.train_tasks), config.seed)
    start = _load_state(resume_from, sampler)
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    writer.truncate_after(start)
    r, total, collected = config.rollout, config.optim.total_steps, 0
    params = SamplingParams(max_new_tokens=r.max_new_tokens_per_turn, temperature=r.temperature, top_p=r.top_p,
                            seed=config.seed)  # fmt: skip
    metrics: dict[str, float] = {}
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        tasks = [comps.train_tasks[i] for i in sampler.sample(r.prompts_per_step)]
        batch = collect_trajectories(
            comps.env_factory, comps.generator, comps.chat, tasks, group_size=r.group_size, params=params,
            limits=rollout_limits(config), seed=config.seed * 100_003 + step, group_prefix=f"s{step}-",
        )  # fmt: skip
        trajs = batch.trajectories
        collected += len(trajs)
        metrics = {**reward_metrics(trajs), **rollout_metrics(trajs), **tool_metrics(batch.stats)}
        metrics.update({"perf/step_s": time.perf_counter() - t0, "perf/rollout_tokens_per_s": batch.stats.tokens_per_s})
        writer.write(step, metrics)
        if config.logging.save_trajectories:
            folder = run_dir / "trajectories"
            folder.mkdir(parents=True, exist_ok=True)
            write_jsonl(folder / f"step_{step:05d}.jsonl", trajs, extra={"step": step})
        if on_step is not None:
            on_step(step, metrics, trajs)
        _save_state(run_dir, step, sampler)
        logger.info("rollout step %d/%d reward %.3f", step, total, metrics["reward/mean"])
        if should_stop is not None and should_stop():
            return RolloutResult("cancelled", step, run_dir, collected, metrics)
    return RolloutResult("completed", total, run_dir, collected, metrics)
