"""The RL training loop: one function, numbered phases (cleanrl style).

Each step: 1 rollout → 2 rewards → 3 advantages → 4 clipped-PPO update (2-4 live in `update.py`; 'gae'
adds a value head) → 5 weight sync → 6 log → 7 checkpoint. Rollout seeds and minibatch shuffles derive
from (config.seed, step), and RNG + sampler state ride in checkpoints, so a resumed run reproduces the
uninterrupted one step for step.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from worker.rl.algorithms.losses import aggregate
from worker.rl.generation.base import WeightSyncable
from worker.rl.training.build import (
    TaskSampler,
    TrainComponents,
    build_components,
    make_optimizer,
    make_scheduler,
    policy_weights,
    with_resolved_precision,
)
from worker.rl.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from worker.rl.training.collect import collect_eval, collect_step, write_step_trajectories
from worker.rl.training.config import TrainConfig, save_resolved
from worker.rl.training.critic import ValueHead, critic_metrics, value_head_for
from worker.rl.training.logprobs import enable_shared_prefix
from worker.rl.training.metrics import MetricsWriter, reward_metrics, rollout_metrics, step_metrics
from worker.rl.training.reward_models import apply_reward_models, load_reward_models
from worker.rl.training.update import attach_value_head, prepare_batch, update_policy
from worker.rl.types import Task, Trajectory

logger = logging.getLogger(__name__)

OnStep = Callable[[int, dict[str, float], list[Trajectory]], None]


@dataclass(frozen=True)
class TrainResult:
    """How a run ended."""

    status: str
    """'completed' or 'cancelled'."""
    steps_done: int
    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def evaluate_policy(
    comps: TrainComponents, tasks: Sequence[Task], config: TrainConfig, *, seed: int = 0
) -> tuple[dict[str, float], list[Trajectory]]:
    """One episode per held-out task (greedy unless eval.greedy is off) → `eval/...` metrics."""
    if not tasks:
        return {}, []
    batch = collect_eval(comps, config, tasks, seed=seed)
    out = reward_metrics(batch.trajectories, prefix="eval")
    shape = rollout_metrics(batch.trajectories)
    out.update({k.replace("rollout/", "eval/"): v for k, v in shape.items() if "group" not in k})
    return out, batch.trajectories


def sync_weights(generator: Any, model: Any) -> None:
    """Push new weights to a separate engine; nothing to do when it serves the training model itself."""
    shares = getattr(generator, "shares_model_with", None)
    if shares is not None and shares(model):
        return
    if isinstance(generator, WeightSyncable):
        generator.load_weights(policy_weights(model))


def _resume_dir(resume_from: str | Path | None) -> Path | None:
    if resume_from is None:
        return None
    path = Path(resume_from)
    if (path / "trainer_state.json").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise ValueError(f"--resume {path}: no checkpoint found (expected {path}/checkpoints/step_*)")
    return found


def train(
    config: TrainConfig,
    *,
    run_dir: str | Path,
    resume_from: str | Path | None = None,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    components: TrainComponents | None = None,
) -> TrainResult:
    """Run (or resume) GRPO-family or PPO-GAE training; see the module docstring for the phases."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = with_resolved_precision(config)
    save_resolved(config, run_dir)
    seed_everything(config.seed)
    comps = components or build_components(config)
    if config.algorithm.share_prefix:
        for net in (comps.model, comps.ref_model):
            if net is not None:
                enable_shared_prefix(net)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model = comps.model
    opt = make_optimizer(model, config.optim)
    head: ValueHead | None = None
    if config.algorithm.uses_critic:  # PPO-GAE: value head on the shared policy body, own param group
        head = value_head_for(model, seed=config.seed)
        attach_value_head(opt, head, config)
        model, head, opt = acc.prepare(model, head, opt)
    else:
        model, opt = acc.prepare(model, opt)
    sched = make_scheduler(opt, config.optim)
    sampler = TaskSampler(len(comps.train_tasks), config.seed)
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    start, ckpt_kwargs = 0, {"tokenizer": comps.tokenizer, "keep_last": config.logging.keep_last_checkpoints}
    last_ckpt = _resume_dir(resume_from)
    if last_ckpt is not None:
        state = load_checkpoint(last_ckpt, model=model, optimizer=opt, scheduler=sched, value_head=head)
        sampler.load_state_dict(state.sampler_state)
        start = state.step
        writer.truncate_after(start)
        sync_weights(comps.generator, model)
        logger.info("resumed from %s at step %d", last_ckpt, start)
    model.eval()
    eval_tasks = comps.eval_tasks[: config.eval.num_tasks]
    eval_metrics: dict[str, float] = {}
    if start == 0 and config.eval.at_start and eval_tasks:
        eval_metrics, _ = evaluate_policy(comps, eval_tasks, config, seed=config.seed)
        writer.write(0, eval_metrics)
    reward_models = load_reward_models(config.task)
    metrics: dict[str, float] = {}
    total = config.optim.total_steps
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        # 1. Rollout: prompts_per_step tasks from the seeded sampler, group_size episodes each
        rollout = collect_step(comps, config, sampler, step)
        trajs = rollout.trajectories
        # 2. Rewards: the env's rubric scored each episode; reward models score the step in batches (#15);
        #    optional KL-in-reward is applied in 3
        trajs, rm_perf = apply_reward_models(trajs, reward_models, config.task.env_reward_weight)
        # 3. Advantages (with a critic: its pre-update values feed GAE and the value-loss clipping)
        t_update = time.perf_counter()
        batch, old_values = prepare_batch(trajs, comps, config, acc.device, value_head=head)
        # 4. Update
        loss_stats = update_policy(model, batch, config, opt, acc, step, value_head=head, old_values=old_values)
        sched.step()
        t_sync = time.perf_counter()
        # 5. Weight sync
        sync_weights(comps.generator, model)
        # 6. Log
        metrics = step_metrics(trajs, rollout.stats, loss_stats, step_s=time.perf_counter() - t0)
        metrics.update(rm_perf)
        metrics["perf/update_s"] = t_sync - t_update  # phases 3-4: reference/critic passes and the PPO update
        metrics["perf/weight_sync_s"] = time.perf_counter() - t_sync
        metrics["reward/advantage_abs_mean"] = float(aggregate(batch.advantages.abs(), batch.loss_mask).item())  # type: ignore[union-attr]
        if old_values is not None and batch.returns is not None:
            metrics.update(critic_metrics(old_values, batch.returns, batch.loss_mask))
        every = config.eval.every_steps
        if eval_tasks and ((every and step % every == 0) or step == total):
            eval_metrics, _ = evaluate_policy(comps, eval_tasks, config, seed=config.seed)
            metrics.update(eval_metrics)
        writer.write(step, metrics)
        if config.logging.save_trajectories:
            write_step_trajectories(run_dir, step, trajs)
        if on_step is not None:
            on_step(step, metrics, trajs)
        logger.info("step %d/%d reward %.3f (%.1fs)", step, total, metrics["reward/mean"], metrics["perf/step_s"])
        # 7. Checkpoint (periodic, at the end, or on a stop request)
        stopping = should_stop is not None and should_stop()
        save_every = config.logging.save_every_steps
        if stopping or step == total or (save_every and step % save_every == 0):
            last_ckpt = save_checkpoint(
                run_dir, step, model=model, optimizer=opt, scheduler=sched, sampler_state=sampler.state_dict(),
                config=config.to_dict(), value_head=head, **ckpt_kwargs,
            )  # fmt: skip
        if stopping:
            return TrainResult("cancelled", step, run_dir, last_ckpt, metrics, eval_metrics)
    return TrainResult("completed", total, run_dir, last_ckpt, metrics, eval_metrics)
