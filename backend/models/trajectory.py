"""Trajectories (one rollout episode each) with their heavy payload in a side table, and human labels.

The full `Trajectory.to_dict()` (token ids, mask, logprobs, turns) lives in
`trajectory_data`, so filtering and paging the narrow `trajectories` rows never
reads megabytes of token arrays (SQLite stores a row's payload inline).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.core.db import Base, utcnow


class Trajectory(Base):
    __tablename__ = "trajectories"
    __table_args__ = (
        Index("ix_trajectories_run_id_id", "run_id", "id"),
        Index("ix_trajectories_run_id_step", "run_id", "step"),
        Index("ix_trajectories_run_id_reward", "run_id", "reward"),
        Index("ix_trajectories_run_id_group_id", "run_id", "group_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer, default=0)
    group_id: Mapped[str] = mapped_column(String(255), default="")
    task_id: Mapped[str] = mapped_column(String(255), default="")
    reward: Mapped[float] = mapped_column(Float, default=0.0)
    has_parse_error: Mapped[bool] = mapped_column(Boolean, default=False)
    has_tool_error: Mapped[bool] = mapped_column(Boolean, default=False)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    finish_reason: Mapped[str] = mapped_column(String(50), default="")
    num_turns: Mapped[int] = mapped_column(Integer, default=0)
    num_tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    payload: Mapped[TrajectoryData | None] = relationship(lazy="select", cascade="all, delete-orphan")

    @property
    def data(self) -> dict[str, Any]:
        """The full `Trajectory.to_dict()` (loads the side-table row)."""
        return self.payload.data if self.payload is not None else {}


class TrajectoryData(Base):
    __tablename__ = "trajectory_data"

    trajectory_id: Mapped[int] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Label(Base):
    """A human judgement: a score (`kind='score'`), a pairwise choice or per-step good/bad marks.

    The labeled trajectories' data is copied into `snapshot` (and run/step/group/task into
    columns), so a label outlives its trajectory: the foreign keys are SET NULL on delete.
    """

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_run_id_kind", "run_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="score")
    trajectory_id: Mapped[int | None] = mapped_column(
        ForeignKey("trajectories.id", ondelete="SET NULL"), index=True, nullable=True
    )
    other_trajectory_id: Mapped[int | None] = mapped_column(
        ForeignKey("trajectories.id", ondelete="SET NULL"), index=True, nullable=True
    )
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    choice: Mapped[str | None] = mapped_column(String(10), nullable=True)
    step_scores: Mapped[list[float]] = mapped_column(JSON, default=list)
    step_marks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    group_id: Mapped[str] = mapped_column(String(255), default="")
    task_id: Mapped[str] = mapped_column(String(255), default="")
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    labeler: Mapped[str] = mapped_column(String(100), default="anonymous")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
