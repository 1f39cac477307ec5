"""Weighted rubrics over reward functions: weight 0 means logged metric only.

A term that raises (or returns a non-finite value) is left out of the total,
reported in `RubricResult.errors` and counted as `reward/<name>/errors`; it is
never silently scored 0. External sources (human labels, reward models) plug in
through `RewardSource`, whose `None` means "no score yet" (also left out).
`score_batch` scores many trajectories at once: a term whose function has
`score_batch` (`BatchReward`, e.g. a sandboxed user function) is called once for
the whole batch; step terms (`StepRewardTerm`) add per-turn process rewards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from worker.rl.rewards.functions import RewardFn
from worker.rl.types import Task, Trajectory

Outcome = float | None | Exception
"""One item of a batch: a value, None (no score yet), or the exception that item raised."""

logger = logging.getLogger(__name__)


@runtime_checkable
class RewardSource(Protocol):
    """A reward computed outside the trajectory: a human label store, a reward model."""

    def score(self, trajectory: Trajectory, task: Task) -> float | None:
        """The reward, or None when there is no score yet."""
        ...


@runtime_checkable
class BatchReward(Protocol):
    """A reward computed for a whole batch in one call (one sandbox round trip for a user function)."""

    def score_batch(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[Outcome]:
        """One outcome per trajectory, in order; a failing item is its exception, not a raise."""
        ...


@runtime_checkable
class StepReward(Protocol):
    """Process rewards for a batch: per trajectory, assistant-turn index -> value (or that item's exception)."""

    def score_steps(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[dict[int, Outcome]]: ...


@dataclass(frozen=True, slots=True)
class RewardTerm:
    """One named, weighted part of a rubric."""

    name: str
    """Metric name (logged as `reward/<name>`)."""
    fn: RewardFn | RewardSource
    """A reward function `(trajectory, task) -> float` or a `RewardSource`."""
    weight: float = 1.0
    """Contribution to the total; 0 logs the value without rewarding it."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"RewardTerm.name must be non-empty without '/', got {self.name!r}")
        if not math.isfinite(self.weight):
            raise ValueError(f"RewardTerm.weight of {self.name!r} must be finite, got {self.weight}")
        if not callable(self.fn) and not isinstance(self.fn, RewardSource):
            raise ValueError(f"RewardTerm.fn of {self.name!r} must be a function or have score(trajectory, task)")

    def evaluate(self, trajectory: Trajectory, task: Task) -> float | None:
        if isinstance(self.fn, RewardSource) and not callable(self.fn):
            return self.fn.score(trajectory, task)
        return self.fn(trajectory, task)

    def evaluate_batch(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[Outcome]:
        """One call for a `BatchReward`, else `evaluate` per item; an exception is that item's outcome."""
        if isinstance(self.fn, BatchReward):
            try:
                outcomes = list(self.fn.score_batch(trajectories, tasks))
            except Exception as exc:  # the whole batch failed: every item counts it
                return [exc] * len(trajectories)
            if len(outcomes) != len(trajectories):
                error = RuntimeError(f"score_batch gave {len(outcomes)} values for {len(trajectories)} trajectories")
                return [error] * len(trajectories)
            return outcomes
        out: list[Outcome] = []
        for trajectory, task in zip(trajectories, tasks, strict=True):
            try:
                out.append(self.evaluate(trajectory, task))
            except Exception as exc:
                out.append(exc)
        return out


@dataclass(frozen=True, slots=True)
class StepRewardTerm:
    """A named, weighted process-reward term: `weight * value` joins the step reward of each scored turn."""

    name: str
    fn: StepReward
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"StepRewardTerm.name must be non-empty without '/', got {self.name!r}")
        if not math.isfinite(self.weight):
            raise ValueError(f"StepRewardTerm.weight of {self.name!r} must be finite, got {self.weight}")
        if not isinstance(self.fn, StepReward):
            raise ValueError(f"StepRewardTerm.fn of {self.name!r} must have score_steps(trajectories, tasks)")

    def evaluate_batch(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[dict[int, Outcome]]:
        try:
            rows = list(self.fn.score_steps(trajectories, tasks))
        except Exception as exc:  # the whole batch failed: every assistant turn counts it
            return [dict.fromkeys(range(t.num_turns), exc) for t in trajectories]
        if len(rows) != len(trajectories):
            error = RuntimeError(f"score_steps gave {len(rows)} rows for {len(trajectories)} trajectories")
            return [dict.fromkeys(range(t.num_turns), error) for t in trajectories]
        return rows


@dataclass(frozen=True, slots=True)
class RubricResult:
    """A scored trajectory."""

    total: float
    """Weighted sum over terms that produced a value."""
    breakdown: Mapping[str, float] = field(default_factory=dict)
    """Raw (unweighted) value per term that produced one."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """Term name → error text for terms that raised or returned a non-finite value."""
    pending: tuple[str, ...] = ()
    """Terms whose source has no score yet (returned None)."""
    step_rewards: tuple[float, ...] = ()
    """Weighted step terms per assistant turn, to add to the trajectory's `step_rewards` (empty: no step terms)."""
    error_counts: Mapping[str, int] = field(default_factory=dict)
    """Failed items per term in `errors` when more than one (a step term fails per turn); absent means 1."""

    def metrics(self) -> dict[str, float]:
        """`reward/total`, `reward/<name>` and `reward/<name>/errors` (the number of failed items)."""
        out = {"reward/total": self.total}
        out.update({f"reward/{k}": v for k, v in self.breakdown.items()})
        out.update({f"reward/{k}/errors": float(self.error_counts.get(k, 1)) for k in self.errors})
        return out


def _value_error(value: Outcome) -> str | None:
    """Why an outcome is not a usable value (None for a finite number; pending is handled by the caller)."""
    if isinstance(value, Exception):
        return f"{type(value).__name__}: {value}"
    if not isinstance(value, int | float) or not math.isfinite(value):
        return f"returned {value!r}, expected a finite float"
    return None


class Rubric:
    """Named, weighted reward terms, and optional step terms (process rewards)."""

    def __init__(self, terms: Sequence[RewardTerm], step_terms: Sequence[StepRewardTerm] = ()) -> None:
        names = [t.name for t in terms] + [t.name for t in step_terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rubric term names must be unique; repeated: {', '.join(duplicates)}")
        self.terms: tuple[RewardTerm, ...] = tuple(terms)
        self.step_terms: tuple[StepRewardTerm, ...] = tuple(step_terms)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric `score(...).metrics()` can emit."""
        names = [t.name for t in self.terms] + [t.name for t in self.step_terms]
        per_term = [m for name in names for m in (f"reward/{name}", f"reward/{name}/errors")]
        return ("reward/total", *per_term)

    def score(self, trajectory: Trajectory, task: Task) -> RubricResult:
        return self.score_batch([trajectory], [task])[0]

    def score_batch(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[RubricResult]:
        """Score every trajectory: one `evaluate_batch` per term, then per-item totals, errors and step rewards."""
        if len(trajectories) != len(tasks):
            raise ValueError(f"score_batch needs one task per trajectory, got {len(trajectories)} and {len(tasks)}")
        parts = [_Parts(t.num_turns if self.step_terms else 0) for t in trajectories]
        for term in self.terms:
            for part, value, task in zip(parts, term.evaluate_batch(trajectories, tasks), tasks, strict=True):
                part.add(term.name, term.weight, value, task)
        for step_term in self.step_terms:
            for part, row, task in zip(parts, step_term.evaluate_batch(trajectories, tasks), tasks, strict=True):
                part.add_steps(step_term.name, step_term.weight, row, task)
        return [p.result() for p in parts]


@dataclass
class _Parts:
    """One trajectory's result while the terms are evaluated (internal)."""

    num_turns: int
    total: float = 0.0
    breakdown: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error_counts: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.steps = [0.0] * self.num_turns

    def _error(self, name: str, error: str, task: Task) -> None:
        if name not in self.errors:  # surfaced, counted, and kept out of the total
            self.errors[name] = error
            logger.warning("reward term %r failed on task %s: %s", name, task.id, error)
        self.error_counts[name] = self.error_counts.get(name, 0) + 1

    def add(self, name: str, weight: float, value: Outcome, task: Task) -> None:
        if value is None:
            self.pending.append(name)
            return
        error = _value_error(value)
        if error is not None:
            self._error(name, error, task)
            return
        self.breakdown[name] = float(value)  # type: ignore[arg-type]
        self.total += weight * float(value)  # type: ignore[arg-type]

    def add_steps(self, name: str, weight: float, row: dict[int, Outcome], task: Task) -> None:
        used = []
        for turn, value in sorted(row.items()):
            error = "no score for a step" if value is None else _value_error(value)
            if error is not None or not 0 <= turn < self.num_turns:
                self._error(name, error or f"turn {turn} is not one of the {self.num_turns} assistant turns", task)
                continue
            self.steps[turn] += weight * float(value)  # type: ignore[arg-type]
            used.append(float(value))  # type: ignore[arg-type]
        if used:
            self.breakdown[name] = sum(used) / len(used)

    def result(self) -> RubricResult:
        counts = {k: v for k, v in self.error_counts.items() if v > 1}
        return RubricResult(
            total=self.total,
            breakdown=self.breakdown,
            errors=self.errors,
            pending=tuple(self.pending),
            step_rewards=tuple(self.steps),
            error_counts=counts,
        )
