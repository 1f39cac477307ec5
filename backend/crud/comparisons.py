"""Comparison crud: launch one eval run per checkpoint plus one for the baselines, then assemble their reports.

Every member is an ordinary eval run (`runs.create_eval_run`) with the same datasets, limit, seed and
scaffold, so the seeded subsets are the same examples and the one evaluation path scores them all. The
table is shaped by `worker.rl.evaluation.comparison` (a stdlib leaf), the same code `bench/table3.py` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.core.errors import InvalidInputError, NotFoundError
from backend.crud import runs as runs_crud
from backend.models.comparison import Comparison
from backend.models.run import Checkpoint, Run
from backend.models.trajectory import Trajectory
from backend.schemas.comparison import ComparisonCheckpoint, ComparisonCreate
from backend.schemas.evaluation import EvaluationCreate
from worker.rl.evaluation.comparison import (
    ComparisonRow,
    dataset_order,
    method_rows,
    paper_row_for_estimator,
    table_cells,
)

FAILED = ("failed", "cancelled")


def _checkpoint(session: Session, entry: ComparisonCheckpoint) -> tuple[Run, Checkpoint]:
    run = session.get(Run, entry.run_id)
    if run is None or run.kind != "train":
        raise InvalidInputError("checkpoints", f"run {entry.run_id} is not a train run; pick a train run's checkpoint")
    query = select(Checkpoint).where(Checkpoint.run_id == run.id)
    query = query.where(Checkpoint.step == entry.step) if entry.step is not None else query
    checkpoint = session.scalar(query.order_by(Checkpoint.step.desc(), Checkpoint.id.desc()).limit(1))
    if checkpoint is None:
        at = f" at step {entry.step}" if entry.step is not None else ""
        raise InvalidInputError(
            "checkpoints", f"run {run.id} has no checkpoint{at}; wait for it to save one or pick another"
        )
    return run, checkpoint


def _estimator(run: Run) -> str | None:
    for config in (run.resolved_config or {}, run.requested_config or {}):
        algorithm = config.get("algorithm") if isinstance(config, dict) else None
        if isinstance(algorithm, dict) and algorithm.get("estimator"):
            return str(algorithm["estimator"])
    return None


def create_comparison(session: Session, *, comparison_in: ComparisonCreate) -> tuple[Comparison, list[Run]]:
    """The comparison row and its queued member eval runs (flushed, not committed; the route enqueues them)."""
    shared = comparison_in.shared_spec()
    members: list[dict[str, Any]] = []
    runs: list[Run] = []
    for entry in comparison_in.checkpoints:
        train_run, checkpoint = _checkpoint(session, entry)
        estimator = _estimator(train_run)
        paper_row = paper_row_for_estimator(estimator)
        label = f"run #{train_run.id} step {checkpoint.step} ({estimator or 'grpo'})"
        eval_in = EvaluationCreate(
            **shared,
            name=f"compare · {label}"[:200],
            methods=["agent"],
            checkpoint_path=checkpoint.path,
            checkpoint_run_id=train_run.id,
            checkpoint_step=checkpoint.step,
            agent_algorithm=paper_row,
        )
        runs.append(runs_crud.create_eval_run(session, eval_in=eval_in))
        members.append(
            {
                "run_id": runs[-1].id,
                "label": label,
                "methods": ["agent"],
                "paper_row": paper_row,
                "checkpoint_run_id": train_run.id,
                "checkpoint_step": checkpoint.step,
            }
        )
    if comparison_in.baselines:
        label = ", ".join(comparison_in.baselines)
        eval_in = EvaluationCreate(**shared, name=f"compare · {label}"[:200], methods=list(comparison_in.baselines))
        runs.append(runs_crud.create_eval_run(session, eval_in=eval_in))
        members.append({"run_id": runs[-1].id, "label": label, "methods": list(comparison_in.baselines)})
    name = comparison_in.name or " vs ".join(m["label"] for m in members)
    comparison = Comparison(name=name[:200], spec=shared, members=members)
    session.add(comparison)
    session.flush()
    return comparison, runs


def get_comparison(session: Session, *, comparison_id: int) -> Comparison:
    comparison = session.get(Comparison, comparison_id)
    if comparison is None:
        raise NotFoundError("comparison", comparison_id)
    return comparison


def list_comparisons(session: Session, *, offset: int = 0, limit: int = 50) -> tuple[list[Comparison], int]:
    total = session.scalar(select(func.count(Comparison.id))) or 0
    rows = session.scalars(select(Comparison).order_by(Comparison.id.desc()).offset(offset).limit(limit))
    return list(rows), total


def member_runs(session: Session, comparisons: Sequence[Comparison]) -> dict[int, Run]:
    """The member eval runs of `comparisons`, by id (a deleted run is simply absent)."""
    ids = {int(m["run_id"]) for c in comparisons for m in c.members}
    return {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))} if ids else {}


def overall_status(comparison: Comparison, runs: dict[int, Run]) -> str:
    """failed when any member failed (or is gone), succeeded when all did, running when any started, else queued."""
    statuses = [runs[m["run_id"]].status if m["run_id"] in runs else "failed" for m in comparison.members]
    if any(s in FAILED for s in statuses):
        return "failed"
    if all(s == "succeeded" for s in statuses):
        return "succeeded"
    return "running" if any(s in ("running", "cancelling", "succeeded") for s in statuses) else "queued"


def _trajectory_ids(session: Session, run_ids: Sequence[int]) -> dict[tuple[int, str], int]:
    """(eval run id, group id) → trajectory id; an eval trajectory's group is its method/dataset/task."""
    if not run_ids:
        return {}
    query = select(Trajectory.run_id, Trajectory.group_id, Trajectory.id).where(Trajectory.run_id.in_(run_ids))
    return {(run_id, group): tid for run_id, group, tid in session.execute(query)}


def _member_examples(member: dict[str, Any], results: dict[str, Any], ids: dict[tuple[int, str], int]) -> list[Any]:
    out = []
    for ex in results.get("examples") or []:
        method = str(ex.get("method", ""))
        label = member["label"] if method == "agent" else method
        group = f"{method}/{ex.get('dataset')}/{ex.get('task_id')}"  # worker.rl.evaluation.job.example_key
        out.append(
            {
                **{
                    k: ex.get(k)
                    for k in (
                        "dataset",
                        "task_id",
                        "question",
                        "gold",
                        "prediction",
                        "em",
                        "cover_em",
                        "f1",
                        "num_tool_calls",
                    )
                },
                "label": label,
                "trajectory_id": ids.get((member["run_id"], group)),
            }
        )
    return out


def comparison_view(session: Session, *, comparison: Comparison) -> dict[str, Any]:
    """Everything `ComparisonPublic` shows except the paper reference: members, table rows, examples."""
    runs = member_runs(session, [comparison])
    ids = _trajectory_ids(session, list(runs))
    members: list[dict[str, Any]] = []
    rows: list[ComparisonRow] = []
    examples: list[Any] = []
    for member in comparison.members:
        run = runs.get(member["run_id"])
        evaluation = runs_crud.latest_evaluation(session, run_id=run.id) if run is not None else None
        results = dict(evaluation.results) if evaluation is not None else None
        if results is not None:
            rows += method_rows(results, label=member["label"], run_id=member["run_id"])
            examples += _member_examples(member, results, ids)
            results.pop("examples", None)  # served once, in `examples`
        members.append(
            {
                **member,
                "status": run.status if run else "failed",
                "error": run.error if run else "the eval run was deleted",
                "results": results,
            }
        )
    return {
        "members": members,
        "rows": [r.to_dict() for r in rows],
        "table": table_cells(rows) if rows else [],
        "datasets": dataset_order(rows),
        "examples": examples,
        "status": overall_status(comparison, runs),
        "labels": [m["label"] for m in comparison.members],
    }
