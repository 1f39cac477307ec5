"""Runs (every queued job is one row), their metrics, checkpoints and evaluations."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.core.db import Base, utcnow

if TYPE_CHECKING:
    from backend.models.dataset import EnvironmentVersion


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_kind", "status", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    preset: Mapped[str | None] = mapped_column(String(50), nullable=True)
    requested_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the client sent: overrides on top of `preset` (train/rollout) or a job's arguments."""
    resolved_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The fully resolved config the worker ran with (train/rollout), stored once the run starts."""
    eval_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """An eval run's typed request (`backend.schemas.evaluation.EvalSpec` as JSON)."""
    auto_resumes: Mapped[int] = mapped_column(Integer, default=0)
    """Times the sweeper queued this run again after its worker went silent."""
    environment_id: Mapped[int | None] = mapped_column(
        ForeignKey("environments.id", ondelete="SET NULL"), nullable=True
    )
    environment_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("environment_versions.id", ondelete="SET NULL"), nullable=True
    )
    """The exact environment version the run trained/evaluated on (pinned at launch)."""
    pinned_version: Mapped[EnvironmentVersion | None] = relationship(lazy="select", viewonly=True)
    """That version's row (loaded only when read: the run card's "environment <name> v<version>")."""
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    resumable: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_hostname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Lease id of the claim that owns the run; heartbeats and outcomes are written only with it."""
    celery_task_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """Id of the task last sent for the run (the sweeper looks for it in the broker)."""
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    """Database time the run was last (re)queued."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    """Database time of the owner's last heartbeat."""
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    @property
    def environment_name(self) -> str | None:
        """The pinned environment version's name (as it was named in that version)."""
        row = self.pinned_version
        return str(row.spec.get("name") or "") or None if row is not None else None

    @property
    def environment_version(self) -> int | None:
        row = self.pinned_version
        return row.version if row is not None else None


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_metrics_run_id_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
