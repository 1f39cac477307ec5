"""Reward-model terms in training: score each step's trajectories in one batch per model, fold into the reward.

`task.reward_models` is the one path for trained-model terms, whether the train config names them
or an environment's rubric does (`environment_reward_models` turns those into the same entries of
the run's resolved config). A trajectory term adds `weight * score` to the total, which becomes
`task.env_reward_weight * rubric total + sum(weight * score)`; a step term (`step_reward_model:<id>`)
adds `weight * score` of each assistant turn's prefix to `step_rewards` (process rewards). Raw scores
are kept in `reward_breakdown` (step terms: their mean), the rubric's own total as `rubric`, and the
cost as `perf/reward_model_s`, `perf/step_reward_model_s` and `perf/reward_model_texts`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.rl.envs.spec import EnvSpec
from worker.rl.reward_model.scorer import RewardModelScorer
from worker.rl.training.config import RewardModelTermConfig, TaskConfig
from worker.rl.types import Trajectory

logger = logging.getLogger(__name__)

RUBRIC_KEY = "rubric"
"""`reward_breakdown` key of the environment rubric's own (automatic) total, next to the model terms."""


@dataclass(frozen=True)
class LoadedRewardModel:
    term: RewardModelTermConfig
    scorer: RewardModelScorer


def environment_reward_models(spec: EnvSpec) -> tuple[RewardModelTermConfig, ...]:
    """An environment rubric's `reward_model` / `step_reward_model` terms as `task.reward_models` entries."""
    terms = []
    for term in spec.reward_model_terms:
        step = term.step_reward_model is not None
        ident = term.step_reward_model if step else term.reward_model
        terms.append(RewardModelTermConfig(id=ident, weight=term.weight, normalize=term.normalize, step=step))
    return tuple(terms)


def load_reward_models(task: TaskConfig) -> list[LoadedRewardModel]:
    """Load every `task.reward_models` artifact once per run (a missing artifact or a wrong kind raises)."""
    loaded = []
    for term in task.reward_models:
        if not term.path:
            raise ValueError(
                f"task.reward_models: {term.name} has no path; the studio worker fills it in from the id, "
                "the CLI needs path = '<artifact dir>'"
            )
        scorer = RewardModelScorer.load(term.path, device=term.device)
        wanted = "step" if term.step else "trajectory"
        if scorer.kind != wanted:
            other = "step_reward_model" if scorer.kind == "step" else "reward_model"
            raise ValueError(
                f"task.reward_models: {term.name} is a {scorer.kind} reward model; use it as "
                f"{other}:<id> (step = {scorer.kind == 'step'}) or train a {wanted} model"
            )
        loaded.append(LoadedRewardModel(term, scorer))
    return loaded


def _zscore(values: Sequence[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / (std + 1e-6) for v in values]


def apply_reward_models(
    trajectories: Sequence[Trajectory], models: Sequence[LoadedRewardModel], env_weight: float = 1.0
) -> tuple[list[Trajectory], dict[str, float]]:
    """Rescore a step's trajectories: batch-score per model, weight, add; → (trajectories, perf metrics)."""
    if not models and env_weight == 1.0:
        return list(trajectories), {}
    totals = [env_weight * t.reward for t in trajectories]
    breakdowns: list[dict[str, Any]] = [{**t.reward_breakdown, RUBRIC_KEY: t.reward} for t in trajectories]
    steps = [list(t.step_rewards) or [0.0] * t.num_turns for t in trajectories]
    perf = {"perf/reward_model_s": 0.0, "perf/step_reward_model_s": 0.0, "perf/reward_model_texts": 0.0}
    for model in models:
        t0 = time.perf_counter()
        if model.term.step:
            raw_rows = model.scorer.score_prefixes(trajectories) if trajectories else []
            flat = [x for row in raw_rows for x in row]
            used_flat = _zscore(flat) if model.term.normalize and len(flat) > 1 else flat
            start = 0
            for i, row in enumerate(raw_rows):
                used = used_flat[start : start + len(row)]
                start += len(row)
                steps[i] = [s + model.term.weight * u for s, u in zip(steps[i], used, strict=True)]
                breakdowns[i][model.term.name] = sum(row) / len(row) if row else 0.0
            perf["perf/step_reward_model_s"] += time.perf_counter() - t0
            perf["perf/reward_model_texts"] += len(flat)
            continue
        raw = model.scorer.score_trajectories(trajectories) if trajectories else []
        used = _zscore(raw) if model.term.normalize and len(raw) > 1 else raw
        for i, (r, u) in enumerate(zip(raw, used, strict=True)):
            breakdowns[i][model.term.name] = r
            totals[i] += model.term.weight * u
        perf["perf/reward_model_s"] += time.perf_counter() - t0
        perf["perf/reward_model_texts"] += len(raw)
    out = [
        dataclasses.replace(t, reward=total, reward_breakdown=b, step_rewards=tuple(s))
        for t, total, b, s in zip(trajectories, totals, breakdowns, steps, strict=True)
    ]
    return out, perf if models else {}
