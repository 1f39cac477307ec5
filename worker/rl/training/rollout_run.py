"""Rollout-only runs: the trainer's phase 1 (`collect_step`) for N steps, with no update.

Same keyword contract as `trainer.train` (the studio's rollout job and `studio rollout` call it), the
same seeds, files (`trajectories/step_XXXXX.jsonl`, `metrics.jsonl`, `config.resolved.json`) and metric
names as training; `rollout_state.json` (step + sampler) makes a stopped run resumable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.rl.training.build import TaskSampler, TrainComponents, build_components, with_resolved_precision
from worker.rl.training.collect import collect_step, write_step_trajectories
from worker.rl.training.config import TrainConfig, save_resolved
from worker.rl.training.metrics import MetricsWriter, collection_metrics
from worker.rl.training.trainer import OnStep, seed_everything

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
    config = with_resolved_precision(config)  # stored as the trainer stores it: the dtype actually used
    save_resolved(config, run_dir)
    seed_everything(config.seed)
    comps = components or build_components(config)
    sampler = TaskSampler(len(comps.train_tasks), config.seed)
    start = _load_state(resume_from, sampler)
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    writer.truncate_after(start)
    total, collected = config.optim.total_steps, 0
    metrics: dict[str, float] = {}
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        batch = collect_step(comps, config, sampler, step)
        trajs = batch.trajectories
        collected += len(trajs)
        metrics = collection_metrics(trajs, batch.stats, step_s=time.perf_counter() - t0)
        writer.write(step, metrics)
        if config.logging.save_trajectories:
            write_step_trajectories(run_dir, step, trajs)
        if on_step is not None:
            on_step(step, metrics, trajs)
        _save_state(run_dir, step, sampler)
        logger.info("rollout step %d/%d reward %.3f", step, total, metrics["reward/mean"])
        if should_stop is not None and should_stop():
            return RolloutResult("cancelled", step, run_dir, collected, metrics)
    return RolloutResult("completed", total, run_dir, collected, metrics)
