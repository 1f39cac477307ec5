"""Per-step metrics with namespaced names, and the `metrics.jsonl` writer.

Namespaces: `reward/…`, `rollout/…`, `loss/…`, `critic/…` (PPO-GAE), `tool/…`, `perf/…`, `eval/…`.
Everything is a plain float so a line is valid JSON and the studio can chart it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.rl.types import Trajectory

ANSWER_KEYS = ("exact_match", "em", "answer")
"""Reward-breakdown names read as the answer's exact match, first found wins."""
FORMAT_KEYS = ("format", "format_reward")
"""Reward-breakdown names read as the format check."""


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _breakdown_mean(trajectories: Sequence[Trajectory], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        values = [t.reward_breakdown[key] for t in trajectories if key in t.reward_breakdown]
        if values:
            return _mean(values)
    return None


def zero_std_group_fraction(trajectories: Sequence[Trajectory]) -> float:
    """Share of groups whose rewards are all equal (no GRPO learning signal)."""
    groups: dict[str, list[float]] = {}
    for t in trajectories:
        groups.setdefault(t.group_id, []).append(t.reward)
    if not groups:
        return 0.0
    flat = sum(1 for rs in groups.values() if max(rs) - min(rs) < 1e-9)
    return flat / len(groups)


def reward_metrics(trajectories: Sequence[Trajectory], prefix: str = "reward") -> dict[str, float]:
    """Mean/std of the total, answer EM, format rate and every breakdown term's mean."""
    rewards = [t.reward for t in trajectories]
    out = {
        f"{prefix}/mean": _mean(rewards),
        f"{prefix}/std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
    }
    answer = _breakdown_mean(trajectories, ANSWER_KEYS)
    out[f"{prefix}/answer"] = (
        answer if answer is not None else _mean([float(t.finish_reason == "answer") for t in trajectories])
    )
    fmt = _breakdown_mean(trajectories, FORMAT_KEYS)
    out[f"{prefix}/format_rate"] = (
        fmt if fmt is not None else _mean([float(t.final_answer is not None) for t in trajectories])
    )
    names = sorted({k for t in trajectories for k in t.reward_breakdown})
    for name in names:
        out[f"{prefix}/{name}"] = _mean([t.reward_breakdown[name] for t in trajectories if name in t.reward_breakdown])
    for t in trajectories:  # terms that raised: counted per step, never silently scored 0
        for key, value in t.metrics.items():
            if key.startswith("reward/") and key.endswith("/errors"):
                name = f"{prefix}/{key[len('reward/') :]}"
                out[name] = out.get(name, 0.0) + float(value)
    return out


def rollout_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Episode shape: tool calls, parse errors, turns, lengths, truncation, flat groups."""
    turns = [t.num_turns for t in trajectories]
    assistant_turns = [turn for t in trajectories for turn in t.turns if turn.role == "assistant"]
    parse_errors = sum(1 for turn in assistant_turns if turn.parse_error)
    tool_msgs = [turn for t in trajectories for turn in t.turns if turn.role == "tool"]
    return {
        "rollout/tool_calls_per_traj": _mean([float(t.num_tool_calls) for t in trajectories]),
        "rollout/parse_error_rate": parse_errors / len(assistant_turns) if assistant_turns else 0.0,
        "rollout/tool_error_rate": sum(1 for m in tool_msgs if m.tool_error) / len(tool_msgs) if tool_msgs else 0.0,
        "rollout/turns": _mean([float(x) for x in turns]),
        "rollout/response_length": _mean([float(t.response_length) for t in trajectories]),
        "rollout/total_length": _mean([float(len(t.token_ids)) for t in trajectories]),
        "rollout/zero_std_group_frac": zero_std_group_fraction(trajectories),
        "rollout/truncated_frac": _mean([float(t.truncated) for t in trajectories]),
        "rollout/num_trajectories": float(len(trajectories)),
    }


def engine_metrics(stats: Any) -> dict[str, float]:
    """`engine/<token counter>` and `perf/engine_<seconds>` from a RolloutStats' engine counters, plus
    `engine/prefill_saved_frac`: the share of the prompt tokens the engine did not have to prefill (group
    prompts shared, earlier turns cached)."""
    raw: Mapping[str, float] = getattr(stats, "engine", None) or {}
    out = {(f"perf/engine_{key}" if key.endswith("_s") else f"engine/{key}"): float(v) for key, v in raw.items()}
    prompt = float(raw.get("prompt_tokens", 0.0))
    if prompt > 0:
        out["engine/prefill_saved_frac"] = 1.0 - float(raw.get("prefill_tokens", 0.0)) / prompt
    return out


def tool_metrics(stats: Any) -> dict[str, float]:
    """`tool/<name>/<metric>` from a RolloutStats-like object's tool metrics mapping."""
    raw: Mapping[str, float] = getattr(stats, "tool_metrics", None) or getattr(stats, "tools", None) or {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        name = key if key.startswith("tool/") else f"tool/{key}"
        out[name] = float(value)
    return out


@dataclass(frozen=True)
class LossStats:
    """Averages over one step's optimizer updates."""

    policy: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0
    clip_frac: float = 0.0
    approx_kl: float = 0.0
    ratio_mean: float = 1.0
    grad_norm: float = 0.0
    value: float = 0.0
    """Clipped value loss (0 without a critic)."""
    total: float = 0.0
    lr: float = 0.0
    updates: int = 0
    """Optimizer steps taken; 0 when every minibatch had no learning signal (the loss figures are then
    defaults, not measurements)."""
    extra: Mapping[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {
            "loss/policy": self.policy,
            "loss/kl": self.kl,
            "loss/entropy": self.entropy,
            "loss/clip_frac": self.clip_frac,
            "loss/approx_kl": self.approx_kl,
            "loss/ratio_mean": self.ratio_mean,
            "loss/grad_norm": self.grad_norm,
            "loss/value": self.value,
            "loss/total": self.total,
            "optim/lr": self.lr,
            "train/optimizer_steps": float(self.updates),
        }
        out.update(self.extra)
        return out


def collection_metrics(
    trajectories: Sequence[Trajectory], rollout_stats: Any, *, step_s: float, reward: Mapping[str, float] | None = None
) -> dict[str, float]:
    """What one step's rollouts log, in every kind of run: reward, episode shape, tools and timing.

    `reward`: the step's `reward_metrics` when the caller already computed them (the trainer's phase 2).
    """
    out = dict(reward) if reward is not None else reward_metrics(trajectories)
    out.update(rollout_metrics(trajectories))
    out.update(tool_metrics(rollout_stats))
    out.update(engine_metrics(rollout_stats))
    out["perf/step_s"] = step_s
    out["perf/rollout_tokens_per_s"] = float(getattr(rollout_stats, "tokens_per_s", 0.0))
    out["perf/rollout_s"] = float(getattr(rollout_stats, "seconds", 0.0))
    return out


def step_metrics(
    trajectories: Sequence[Trajectory],
    rollout_stats: Any,
    loss: LossStats,
    *,
    step_s: float,
    reward: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Everything logged for one training step: `collection_metrics` plus the update's losses."""
    out = collection_metrics(trajectories, rollout_stats, step_s=step_s, reward=reward)
    out.update(loss.metrics())
    return out


class MetricsWriter:
    """Appends one JSON object per step to `metrics.jsonl` (non-finite values become null)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        row: dict[str, Any] = {"step": step}
        row.update({k: (v if math.isfinite(v) else None) for k, v in metrics.items()})
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (a resumed run rewrites them)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
