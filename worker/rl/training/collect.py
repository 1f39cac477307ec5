"""Phase 1 of every run: one step's rollouts, shared by training, rollout-only runs and `studio rollout`.

One seed rule (`step_seed`), one sampling setup (`RolloutConfig.sampling_params`), one trajectory
layout (`trajectories/step_XXXXX.jsonl`, docs/trajectory-format.md) and one metric vocabulary
(`training.metrics.collection_metrics`: `reward/`, `rollout/`, `tool/`, `perf/rollout_s`, ...), so the
entry points cannot drift apart. `collect_heldout` is the evaluation variant (one episode per task, in
chunks), used by the trainer's held-out eval (`collect_eval`), the benchmark runner and environment evals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from worker.rl.envs.base import ToolEnv
from worker.rl.generation.base import Generator, SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.rollout import RolloutBatch, RolloutLimits, collect_trajectories, concat_batches, derive_seed
from worker.rl.training.config import TrainConfig
from worker.rl.trajectories import write_jsonl
from worker.rl.types import Task, Trajectory

if TYPE_CHECKING:  # build.py imports torch; this module only needs the type
    from worker.rl.training.build import TaskSampler, TrainComponents

TRAJECTORIES_DIR = "trajectories"
"""Run-dir folder of the per-step trajectory files."""


def step_seed(seed: int, step: int) -> int:
    """The rollout seed of training/rollout step `step` (1-based) of a run seeded `seed`."""
    return seed * 100_003 + step


def rank_seed(seed: int, rank: int) -> int:
    """The sampling seed (`RolloutConfig.sampling_params`) of rank `rank` of a run seeded `seed` (rank 0: `seed`)."""
    return seed if rank == 0 else derive_seed(seed, rank)


def rank_share(items: Sequence[Task], rank: int, world: int) -> list[Task]:
    """Rank `rank`'s contiguous share of a step's tasks (whole groups; ranks in order give back `items`)."""
    if len(items) % world:
        raise ValueError(f"{len(items)} tasks cannot be shared equally by {world} ranks")
    size = len(items) // world
    return list(items[rank * size : (rank + 1) * size])


def rollout_limits(config: TrainConfig) -> RolloutLimits:
    """The episode budgets of `config.rollout`."""
    r = config.rollout
    return RolloutLimits(r.max_turns, r.max_new_tokens_per_turn, r.max_total_tokens)


def collect_step(
    comps: TrainComponents, config: TrainConfig, sampler: TaskSampler, step: int, *, rank: int = 0, world: int = 1
) -> RolloutBatch:
    """`prompts_per_step` tasks from the seeded sampler, `group_size` episodes each, with step `step`'s seed.

    One rank of `world` (`training.distributed`) draws the same tasks, keeps its share (`rank_share`) and
    samples with its own seed (`rank_seed`); every rank's sampler stays in the same state.
    """
    tasks = [comps.train_tasks[i] for i in sampler.sample(config.rollout.prompts_per_step)]
    return collect_trajectories(
        comps.env_factory,
        comps.generator,
        comps.chat,
        rank_share(tasks, rank, world),
        group_size=config.rollout.group_size,
        params=config.rollout.sampling_params(rank_seed(config.seed, rank)),
        limits=rollout_limits(config),
        seed=step_seed(config.seed, step),
        group_prefix=f"s{step}-" if world == 1 else f"s{step}-r{rank}-",
    )


def greedy_params(limits: RolloutLimits, seed: int) -> SamplingParams:
    """Greedy turns of at most `limits.max_new_tokens_per_turn` tokens (benchmark and environment evals)."""
    return SamplingParams(max_new_tokens=limits.max_new_tokens_per_turn, temperature=0.0, seed=seed)


def collect_heldout(
    env_factory: Callable[[], ToolEnv],
    generator: Generator,
    chat: ChatFormat,
    tasks: Sequence[Task],
    *,
    params: SamplingParams,
    limits: RolloutLimits,
    seed: int,
    group_prefix: str = "eval-",
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RolloutBatch:
    """One episode per task, `chunk_size` tasks per rollout (all at once when None).

    The chunk starting at task `i` is seeded `seed + i`; `progress(episodes done)` runs after each chunk.
    """
    size = chunk_size or max(1, len(tasks))
    batches: list[RolloutBatch] = []
    for start in range(0, len(tasks), size):
        batches.append(
            collect_trajectories(
                env_factory,
                generator,
                chat,
                tasks[start : start + size],
                group_size=1,
                params=params,
                limits=limits,
                seed=seed + start,
                group_prefix=group_prefix,
            )
        )
        if progress is not None:
            progress(sum(len(b.trajectories) for b in batches))
    return concat_batches(batches)


def collect_eval(comps: TrainComponents, config: TrainConfig, tasks: Sequence[Task], *, seed: int) -> RolloutBatch:
    """The trainer's held-out eval: one episode per task, greedy unless `eval.greedy` is off."""
    params = config.rollout.sampling_params(seed, greedy=config.eval.greedy)
    return collect_heldout(
        comps.env_factory, comps.generator, comps.chat, tasks, params=params, limits=rollout_limits(config), seed=seed
    )


def write_step_trajectories(run_dir: Path, step: int, trajectories: Sequence[Trajectory]) -> Path:
    """`run_dir/trajectories/step_XXXXX.jsonl`, each record tagged with its step."""
    folder = run_dir / TRAJECTORIES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:05d}.jsonl"
    write_jsonl(path, trajectories, extra={"step": step})
    return path
