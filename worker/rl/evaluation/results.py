"""Evaluation results: per-example predictions, per-dataset metrics and the table math.

Kept apart from the runner so reports and the UI can read results without
pulling in the rollout stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.rl.rewards.qa_metrics import QAScores


@dataclass(frozen=True, slots=True)
class Prediction:
    """One evaluated example: the model's answer, its scores and (tool methods) its trajectory."""

    dataset: str
    method: str
    task_id: str
    question: str
    golds: tuple[str, ...]
    prediction: str
    scores: QAScores
    num_turns: int
    num_tool_calls: int
    retrieval_recall: float | None
    """Share of gold supporting titles among the passages shown; None when the task has no gold titles."""
    generated_tokens: int
    trajectory: Mapping[str, Any] | None = None
    """`Trajectory.to_dict()` for tool methods; None for single-turn ones."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "method": self.method,
            "task_id": self.task_id,
            "question": self.question,
            "gold": list(self.golds),
            "prediction": self.prediction,
            "scores": self.scores.to_dict(),
            "num_turns": self.num_turns,
            "num_tool_calls": self.num_tool_calls,
            "retrieval_recall": self.retrieval_recall,
            "generated_tokens": self.generated_tokens,
            "trajectory": dict(self.trajectory) if self.trajectory is not None else None,
        }


@dataclass(frozen=True, slots=True)
class DatasetMetrics:
    """Aggregate scores of one method on one dataset."""

    dataset: str
    method: str
    n: int
    em: float
    cover_em: float
    f1: float
    avg_turns: float
    avg_tool_calls: float
    retrieval_recall: float | None
    """Mean over the examples that have gold supporting titles; None when none has."""
    wall_s: float
    generated_tokens: int

    @property
    def examples_per_s(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "method": self.method,
            "n": self.n,
            "em": self.em,
            "cover_em": self.cover_em,
            "f1": self.f1,
            "avg_turns": self.avg_turns,
            "avg_tool_calls": self.avg_tool_calls,
            "retrieval_recall": self.retrieval_recall,
            "wall_s": self.wall_s,
            "generated_tokens": self.generated_tokens,
            "examples_per_s": self.examples_per_s,
            "tokens_per_s": self.tokens_per_s,
        }


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Everything one `evaluate` call produced."""

    method: str
    seed: int
    metrics: tuple[DatasetMetrics, ...]
    predictions: tuple[Prediction, ...]
    wall_s: float

    def average(self) -> dict[str, float]:
        """Unweighted mean over datasets of EM, cover-EM and F1 (the paper's "Avg." column)."""
        if not self.metrics:
            return {"em": 0.0, "cover_em": 0.0, "f1": 0.0}
        k = len(self.metrics)
        return {
            "em": sum(m.em for m in self.metrics) / k,
            "cover_em": sum(m.cover_em for m in self.metrics) / k,
            "f1": sum(m.f1 for m in self.metrics) / k,
        }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(dataset: str, method: str, predictions: Sequence[Prediction], wall_s: float) -> DatasetMetrics:
    """The table row for one dataset (plain means; recall over examples with gold titles)."""
    recalls = [p.retrieval_recall for p in predictions if p.retrieval_recall is not None]
    return DatasetMetrics(
        dataset=dataset,
        method=method,
        n=len(predictions),
        em=_mean([p.scores.em for p in predictions]),
        cover_em=_mean([p.scores.cover_em for p in predictions]),
        f1=_mean([p.scores.f1 for p in predictions]),
        avg_turns=_mean([p.num_turns for p in predictions]),
        avg_tool_calls=_mean([p.num_tool_calls for p in predictions]),
        retrieval_recall=_mean(recalls) if recalls else None,
        wall_s=wall_s,
        generated_tokens=sum(p.generated_tokens for p in predictions),
    )
