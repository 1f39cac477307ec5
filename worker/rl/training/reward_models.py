"""Reward-model terms in training: score each step's trajectories in one batch per model, fold into the reward.

`task.reward_models` adds `reward_model:<id>` terms next to the environment's rubric: the total
becomes `task.env_reward_weight * rubric total + sum(weight * score)`; each raw score is kept in
`reward_breakdown` (so `reward/reward_model:<id>` is logged) and the time as `perf/reward_model_s`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.rl.reward_model.scorer import RewardModelScorer
from worker.rl.training.config import RewardModelTermConfig, TaskConfig
from worker.rl.types import Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRewardModel:
    term: RewardModelTermConfig
    scorer: RewardModelScorer


def load_reward_models(task: TaskConfig) -> list[LoadedRewardModel]:
    """Load every `task.reward_models` artifact once per run (a missing artifact raises, naming the term)."""
    loaded = []
    for term in task.reward_models:
        if not term.path:
            raise ValueError(f"task.reward_models: {term.name} has no path; the studio worker fills it in from the id, "
                             "the CLI needs path = '<artifact dir>'")  # fmt: skip
        loaded.append(LoadedRewardModel(term, RewardModelScorer.load(term.path, device=term.device)))
    return loaded


def _zscore(values: Sequence[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / (std + 1e-6) for v in values]


def apply_reward_models(trajectories: Sequence[Trajectory], models: Sequence[LoadedRewardModel],
                        env_weight: float = 1.0) -> tuple[list[Trajectory], dict[str, float]]:  # fmt: skip
    """Rescore a step's trajectories: batch-score per model, weight, add; → (trajectories, perf metrics)."""
    if not models and env_weight == 1.0:
        return list(trajectories), {}
    t0 = time.perf_counter()
    totals = [env_weight * t.reward for t in trajectories]
    breakdowns: list[dict[str, Any]] = [dict(t.reward_breakdown) for t in trajectories]
    for model in models:
        raw = model.scorer.score_trajectories(trajectories) if trajectories else []
        used = _zscore(raw) if model.term.normalize and len(raw) > 1 else raw
        for i, (r, u) in enumerate(zip(raw, used, strict=True)):
            breakdowns[i][model.term.name] = r
            totals[i] += model.term.weight * u
    out = [dataclasses.replace(t, reward=total, reward_breakdown=b)
           for t, total, b in zip(trajectories, totals, breakdowns, strict=True)]  # fmt: skip
    return out, {"perf/reward_model_s": time.perf_counter() - t0} if models else {}
