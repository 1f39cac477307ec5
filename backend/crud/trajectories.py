"""Trajectory crud: bulk ingest from workers and filtered pages (labels live in `backend.crud.labels`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, func, insert, select
from sqlalchemy.orm import Session, load_only

from backend.core.errors import NotFoundError
from backend.models.trajectory import Label, Trajectory, TrajectoryData

SUMMARY_COLUMNS = (
    Trajectory.id,
    Trajectory.run_id,
    Trajectory.step,
    Trajectory.group_id,
    Trajectory.task_id,
    Trajectory.reward,
    Trajectory.has_parse_error,
    Trajectory.has_tool_error,
    Trajectory.truncated,
    Trajectory.finish_reason,
    Trajectory.num_turns,
    Trajectory.num_tool_calls,
    Trajectory.created_at,
)


@dataclass(frozen=True)
class TrajectoryFilter:
    """List filters; None means no filter on that field."""

    run_id: int | None = None
    step: int | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    has_parse_error: bool | None = None
    has_tool_error: bool | None = None
    truncated: bool | None = None
    labeled: bool | None = None


def row_from_dict(*, run_id: int, step: int, data: dict[str, Any]) -> dict[str, Any]:
    """Column values of one trajectory from `Trajectory.to_dict()` output (flags derived from turns)."""
    turns = data.get("turns") or []
    assistant = [t for t in turns if t.get("role") == "assistant"]
    return {
        "run_id": run_id,
        "step": step,
        "group_id": str(data.get("group_id", "")),
        "task_id": str(data.get("task_id", "")),
        "reward": float(data.get("reward", 0.0)),
        "has_parse_error": any(t.get("parse_error") for t in turns),
        "has_tool_error": any(t.get("tool_error") for t in turns),
        "truncated": bool(data.get("truncated", False)),
        "finish_reason": str(data.get("finish_reason", "")),
        "num_turns": len(assistant),
        "num_tool_calls": sum(len(t.get("tool_calls") or ()) for t in assistant),
    }


def bulk_insert(session: Session, *, run_id: int, step: int, trajectories: Sequence[dict[str, Any]]) -> int:
    """Insert many trajectory dicts (two executemany statements: rows, then payloads); returns the count."""
    if not trajectories:
        return 0
    rows = [row_from_dict(run_id=run_id, step=step, data=d) for d in trajectories]
    ids = session.scalars(insert(Trajectory).returning(Trajectory.id, sort_by_parameter_order=True), rows).all()
    payloads = [{"trajectory_id": i, "data": d} for i, d in zip(ids, trajectories, strict=True)]
    session.execute(insert(TrajectoryData), payloads)
    return len(rows)


def _labeled_clause() -> Any:
    return exists().where(Label.trajectory_id == Trajectory.id)


def _filtered(query: Select[Any], flt: TrajectoryFilter) -> Select[Any]:
    equal = {
        Trajectory.run_id: flt.run_id,
        Trajectory.step: flt.step,
        Trajectory.has_parse_error: flt.has_parse_error,
        Trajectory.has_tool_error: flt.has_tool_error,
        Trajectory.truncated: flt.truncated,
    }
    for column, value in equal.items():
        if value is not None:
            query = query.where(column == value)
    if flt.min_reward is not None:
        query = query.where(Trajectory.reward >= flt.min_reward)
    if flt.max_reward is not None:
        query = query.where(Trajectory.reward <= flt.max_reward)
    if flt.labeled is not None:
        query = query.where(_labeled_clause() if flt.labeled else ~_labeled_clause())
    return query


def list_trajectories(
    session: Session, *, flt: TrajectoryFilter, offset: int = 0, limit: int = 50
) -> tuple[list[Trajectory], int]:
    """A page of trajectories (summary columns only; payloads are not loaded)."""
    total = session.scalar(_filtered(select(func.count(Trajectory.id)), flt)) or 0
    query = _filtered(select(Trajectory).options(load_only(*SUMMARY_COLUMNS)), flt)
    rows = session.scalars(query.order_by(Trajectory.id.desc()).offset(offset).limit(limit))
    return list(rows), total


def get_trajectory(session: Session, *, trajectory_id: int) -> Trajectory:
    trajectory = session.get(Trajectory, trajectory_id)
    if trajectory is None:
        raise NotFoundError("trajectory", trajectory_id)
    return trajectory


def sibling_ids(session: Session, *, trajectory: Trajectory) -> list[int]:
    query = select(Trajectory.id).where(
        Trajectory.run_id == trajectory.run_id,
        Trajectory.group_id == trajectory.group_id,
        Trajectory.step == trajectory.step,
        Trajectory.id != trajectory.id,
    )
    return list(session.scalars(query.order_by(Trajectory.id)))
