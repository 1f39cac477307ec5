"""The RL training loop: one function, numbered phases (cleanrl style).

Each step: 1 collect → 2 reward → 3 reference/critic passes → 4 advantages (the named estimator) →
5 clipped-PPO update → 6 weight sync → 7 log/eval → 8 checkpoint; phases 2-5 are calls into `update.py`
('gae' adds a value head). `setup` and `resume` come before the loop. Rollout seeds and minibatch shuffles
derive from (config.seed, step), and RNG + sampler state ride in checkpoints, so a resumed run reproduces
the uninterrupted one step for step. With `parallel.nproc` > 1 the same loop runs on every rank of a process
group (`training.distributed`): each collects its share of the prompts, the episodes are gathered for the
advantages and the logs, the update sums gradients over the ranks, and rank 0 alone writes and calls back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor

from worker.rl.algorithms.advantages import ADVANTAGE_ESTIMATORS
from worker.rl.algorithms.losses import aggregate
from worker.rl.generation.base import WeightSyncable
from worker.rl.rollout import RolloutBatch
from worker.rl.training.batch import TrainBatch
from worker.rl.training.build import (
    TaskSampler,
    TrainComponents,
    build_components,
    make_optimizer,
    make_scheduler,
    policy_weights,
    with_resolved_precision,
)
from worker.rl.training.checkpoint import (
    CHECKPOINT_DIR,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    step_dir_name,
)
from worker.rl.training.collect import collect_eval, collect_step, write_step_trajectories
from worker.rl.training.config import TrainConfig, save_resolved
from worker.rl.training.critic import ValueHead, critic_metrics, value_head_for
from worker.rl.training.distributed import (
    SINGLE,
    Ranks,
    agree_stop,
    broadcast_parameters,
    check_rollout_engine,
    full_weights,
    gather_rollout,
    gathered_state,
    global_advantages,
    global_token_mean,
    initialized,
    launch,
    load_gathered,
    mean_over_ranks,
    ranks_of,
    shard_policy,
)
from worker.rl.training.logprobs import enable_shared_prefix
from worker.rl.training.metrics import LossStats, MetricsWriter, reward_metrics, rollout_metrics, step_metrics
from worker.rl.training.reward_models import apply_reward_models, load_reward_models
from worker.rl.training.update import (
    advantage_inputs,
    attach_value_head,
    critic_values,
    reward_batch,
    update_policy,
    with_reference_logprobs,
)
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


def sync_weights(generator: Any, model: Any, ranks: Ranks = SINGLE) -> None:
    """Push new weights to a separate engine; nothing to do when it serves the training model itself.
    FSDP: the sharded layers are gathered first (every rank calls this)."""
    shares = getattr(generator, "shares_model_with", None)
    if shares is not None and shares(model):
        return
    full = full_weights(model, ranks)
    if isinstance(generator, WeightSyncable):
        generator.load_weights(policy_weights(model) if full is None else list(full.items()))


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


@dataclass
class TrainState:
    """What the loop carries between steps: the prepared model, optimizer, schedule, sampler and writer."""

    comps: TrainComponents
    acc: Accelerator
    model: Any
    head: ValueHead | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    sampler: TaskSampler
    writer: MetricsWriter
    ranks: Ranks = SINGLE


def setup(config: TrainConfig, run_dir: Path, components: TrainComponents | None) -> TrainState:
    """Seed, build (or take) the components, and prepare model (+ value head for 'gae') and optimizer."""
    seed_everything(config.seed)
    ranks = ranks_of(config)
    comps = components or build_components(config)
    if config.algorithm.share_prefix:
        for net in (comps.model, comps.ref_model):
            if net is not None:
                enable_shared_prefix(net)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    broadcast_parameters([comps.model], ranks)  # every replica starts from rank 0's weights
    check_rollout_engine(comps.generator, comps.model, ranks)
    model = shard_policy(comps.model, config, ranks)
    opt = make_optimizer(model, config.optim)
    head: ValueHead | None = None
    if config.algorithm.uses_critic:  # PPO-GAE: value head on the shared policy body, own param group
        head = value_head_for(model, seed=config.seed)
        broadcast_parameters([head], ranks)
        attach_value_head(opt, head, config)
        model, head, opt = acc.prepare(model, head, opt)
    else:
        model, opt = acc.prepare(model, opt)
    sched = make_scheduler(opt, config.optim)
    sampler = TaskSampler(len(comps.train_tasks), config.seed)
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    return TrainState(comps, acc, model, head, opt, sched, sampler, writer, ranks)


def resume(state: TrainState, resume_from: str | Path | None) -> tuple[int, Path | None]:
    """Restore weights, optimizer, schedule and sampler from a checkpoint; returns (last step done, its path)."""
    ckpt = _resume_dir(resume_from)
    if ckpt is None:
        return 0, None
    if state.ranks.sharded:  # every rank reads the whole states, then keeps its shards
        weights, optim = gathered_state(state.model, state.opt)
        loaded = load_checkpoint(ckpt, model=weights, optimizer=optim, scheduler=state.sched)  # type: ignore[arg-type]
        load_gathered(state.model, state.opt, weights, optim)
    else:
        loaded = load_checkpoint(
            ckpt, model=state.model, optimizer=state.opt, scheduler=state.sched, value_head=state.head
        )
    state.sampler.load_state_dict(loaded.sampler_state)
    if state.ranks.main:
        state.writer.truncate_after(loaded.step)
    sync_weights(state.comps.generator, state.model, state.ranks)
    logger.info("resumed from %s at step %d", ckpt, loaded.step)
    return loaded.step, ckpt


def train_step_metrics(
    rollout: RolloutBatch,
    reward: dict[str, float],
    loss: LossStats,
    batch: TrainBatch,
    advantages: Tensor,
    old_values: Tensor | None,
    *,
    t0: float,
    t_update: float,
    t_sync: float,
    ranks: Ranks = SINGLE,
) -> dict[str, float]:
    """One step's log line: reward, rollout, tool, loss, advantage and (PPO-GAE) critic metrics, and timings.

    Across ranks `rollout` holds every rank's episodes and `loss` is already the union's; the advantage
    mean is over every rank's tokens and the critic metrics are the ranks' mean.
    """
    metrics = step_metrics(rollout.trajectories, rollout.stats, loss, step_s=time.perf_counter() - t0, reward=reward)
    metrics["perf/update_s"] = t_sync - t_update  # phases 2-5: batch, reference/critic passes and the PPO update
    metrics["perf/weight_sync_s"] = time.perf_counter() - t_sync
    if ranks.active:
        metrics["reward/advantage_abs_mean"] = global_token_mean(advantages.abs(), batch.loss_mask, ranks)
    else:
        metrics["reward/advantage_abs_mean"] = float(aggregate(advantages.abs(), batch.loss_mask).item())
    if old_values is not None and batch.returns is not None:
        metrics.update(mean_over_ranks(critic_metrics(old_values, batch.returns, batch.loss_mask), ranks))
    return metrics


def train(
    config: TrainConfig,
    *,
    run_dir: str | Path,
    resume_from: str | Path | None = None,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    components: TrainComponents | None = None,
    components_factory: Callable[[], TrainComponents] | None = None,
) -> TrainResult:
    """Run (or resume) GRPO-family or PPO-GAE training; see the module docstring for the phases.

    `parallel.nproc` > 1: this process becomes rank 0 of a job whose other ranks are spawned
    (`distributed.launch`); they build their components with the picklable `components_factory`, else
    from the config. The callbacks run on rank 0 only.
    """
    if config.parallel.nproc > 1 and not initialized():
        child = partial(_train_rank, config, run_dir, resume_from, components_factory)
        return launch(
            config,
            lambda: train(
                config,
                run_dir=run_dir,
                resume_from=resume_from,
                on_step=on_step,
                should_stop=should_stop,
                components=components if components is not None else _built(components_factory),
            ),
            child,
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = with_resolved_precision(config)
    ranks = ranks_of(config)
    if ranks.main:
        save_resolved(config, run_dir)
    state = setup(config, run_dir, components)
    comps, acc, model, head, opt = state.comps, state.acc, state.model, state.head, state.opt
    start, last_ckpt = resume(state, resume_from)
    model.eval()
    eval_tasks = comps.eval_tasks[: config.eval.num_tasks] if ranks.main else []  # rank 0 evaluates alone
    eval_metrics: dict[str, float] = {}
    if start == 0 and config.eval.at_start and eval_tasks:
        eval_metrics, _ = evaluate_policy(comps, eval_tasks, config, seed=config.seed)
        state.writer.write(0, eval_metrics)
    reward_models = load_reward_models(config.task)
    metrics: dict[str, float] = {}
    total = config.optim.total_steps
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        # 1. Collect: prompts_per_step tasks from the seeded sampler, group_size episodes each
        #    (a rank: its share of the tasks, whole groups, its own seed)
        rollout = collect_step(comps, config, sampler=state.sampler, step=step, rank=ranks.rank, world=ranks.world)
        trajs = rollout.trajectories
        # 2. Reward: the env's rubric scored each episode as it ended; totals and per-turn rewards onto the
        #    (N, T) token grid, and the reward/... metrics (over every rank's episodes)
        trajs, rm_perf = apply_reward_models(trajs, reward_models, config.task.env_reward_weight)  # (#15)
        rollout = gather_rollout(trajs, rollout.stats, ranks)  # every rank's episodes, for logs and files
        t_update = time.perf_counter()
        batch = reward_batch(trajs, comps.tokenizer, acc.device)
        reward = reward_metrics(rollout.trajectories)
        # 3. Reference and critic passes (no grad): reference log-probs for the KL, pre-update values for GAE
        batch = with_reference_logprobs(batch, comps.ref_model, config)
        old_values = None if head is None else critic_values(batch, comps.model, head, config)  # (N, T)
        # 4. Advantages from the named estimator (token rewards KL-shaped when algorithm.kl_in_reward)
        estimator = ADVANTAGE_ESTIMATORS[config.algorithm.estimator]
        adv = global_advantages(estimator, advantage_inputs(batch, config, old_values), ranks)
        advantages = adv.advantages.to(acc.device)  # (N, T)
        batch = batch.with_(advantages=advantages, returns=adv.returns.to(acc.device))
        # 5. Update: ppo_epochs of clipped-PPO minibatch steps, then the lr schedule
        loss = update_policy(model, batch, config, opt, acc, step, value_head=head, old_values=old_values, ranks=ranks)
        state.sched.step()
        # 6. Weight sync to the rollout engine
        t_sync = time.perf_counter()
        sync_weights(comps.generator, model, ranks)
        # 7. Log (and evaluate every eval.every_steps and at the end)
        metrics = train_step_metrics(
            rollout, reward, loss, batch, advantages, old_values, t0=t0, t_update=t_update, t_sync=t_sync, ranks=ranks
        )
        metrics.update(rm_perf)
        every = config.eval.every_steps
        if eval_tasks and ((every and step % every == 0) or step == total):
            eval_metrics, _ = evaluate_policy(comps, eval_tasks, config, seed=config.seed)
            metrics.update(eval_metrics)
        if ranks.main:  # one writer: rank 0 logs, stores the step's episodes (all ranks') and calls back
            state.writer.write(step, metrics)
            if config.logging.save_trajectories:
                write_step_trajectories(run_dir, step, rollout.trajectories)
            if on_step is not None:
                on_step(step, metrics, rollout.trajectories)
        logger.info("step %d/%d reward %.3f (%.1fs)", step, total, metrics["reward/mean"], metrics["perf/step_s"])
        # 8. Checkpoint (periodic, at the end, or on a stop request: rank 0's cancel/heartbeat verdict)
        stopping = agree_stop(should_stop is not None and should_stop(), ranks)
        save_every = config.logging.save_every_steps
        if stopping or step == total or (save_every and step % save_every == 0):
            last_ckpt = save_checkpoint_of(state, run_dir, step, config)
        if stopping:
            return TrainResult("cancelled", step, run_dir, last_ckpt, metrics, eval_metrics)
    return TrainResult("completed", total, run_dir, last_ckpt, metrics, eval_metrics)


def _built(factory: Callable[[], TrainComponents] | None) -> TrainComponents | None:
    return None if factory is None else factory()


def _train_rank(
    config: TrainConfig,
    run_dir: str | Path,
    resume_from: str | Path | None,
    components_factory: Callable[[], TrainComponents] | None,
) -> None:
    """Body of a spawned rank (1..nproc-1): the same loop, no callbacks, nothing written."""
    train(config, run_dir=run_dir, resume_from=resume_from, components=_built(components_factory))


def save_checkpoint_of(state: TrainState, run_dir: Path, step: int, config: TrainConfig) -> Path:
    """Weights, optimizer, schedule, sampler, RNG and value head after `step` (older ones pruned).

    Rank 0 writes; the other ranks return the path it writes to (their replicas are identical). FSDP: the
    whole weights and optimizer state are gathered first, so the checkpoint is the same as DDP's.
    """
    model: Any = state.model
    opt: Any = state.opt
    if state.ranks.sharded:
        model, opt = gathered_state(state.model, state.opt)
    if not state.ranks.main:
        return run_dir / CHECKPOINT_DIR / step_dir_name(step)
    return save_checkpoint(
        run_dir,
        step,
        model=model,
        optimizer=opt,
        scheduler=state.sched,
        sampler_state=state.sampler.state_dict(),
        config=config.to_dict(),
        value_head=state.head,
        tokenizer=state.comps.tokenizer,
        keep_last=config.logging.keep_last_checkpoints,
    )
