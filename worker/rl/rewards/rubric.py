"""Weighted rubrics over reward functions: weight 0 means logged metric only.

A term that raises (or returns a non-finite value) is left out of the total,
reported in `RubricResult.errors` and counted as `reward/<name>/errors`; it is
never silently scored 0. External sources (human labels, reward models) plug in
through `RewardSource`, whose `None` means "no score yet" (also left out).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from worker.rl.rewards.functions import RewardFn
from worker.rl.types import Task, Trajectory

logger = logging.getLogger(__name__)


@runtime_checkable
class RewardSource(Protocol):
    """A reward computed outside the trajectory: a human label store, a reward model."""

    def score(self, trajectory: Trajectory, task: Task) -> float | None:
        """The reward, or None when there is no score yet."""
        ...


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

    def metrics(self) -> dict[str, float]:
        """`reward/total`, `reward/<name>` and `reward/<name>/errors`."""
        out = {"reward/total": self.total}
        out.update({f"reward/{k}": v for k, v in self.breakdown.items()})
        out.update({f"reward/{k}/errors": 1.0 for k in self.errors})
        return out


class Rubric:
    """Named, weighted reward terms."""

    def __init__(self, terms: Sequence[RewardTerm]) -> None:
        names = [t.name for t in terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rubric term names must be unique; repeated: {', '.join(duplicates)}")
        self.terms: tuple[RewardTerm, ...] = tuple(terms)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric `score(...).metrics()` can emit."""
        per_term = [m for t in self.terms for m in (f"reward/{t.name}", f"reward/{t.name}/errors")]
        return ("reward/total", *per_term)

    def score(self, trajectory: Trajectory, task: Task) -> RubricResult:
        total = 0.0
        breakdown: dict[str, float] = {}
        errors: dict[str, str] = {}
        pending: list[str] = []
        for term in self.terms:
            try:
                value = term.evaluate(trajectory, task)
            except Exception as exc:  # surfaced, counted, and kept out of the total
                errors[term.name] = f"{type(exc).__name__}: {exc}"
                logger.warning("reward term %r failed on task %s: %s", term.name, task.id, errors[term.name])
                continue
            if value is None:
                pending.append(term.name)
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                errors[term.name] = f"returned {value!r}, expected a finite float"
                continue
            breakdown[term.name] = float(value)
            total += term.weight * float(value)
        return RubricResult(total=total, breakdown=breakdown, errors=errors, pending=tuple(pending))
