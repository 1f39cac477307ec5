"""Comparisons: several checkpoints and baselines evaluated over the same examples, kept to reopen.

A comparison owns no results of its own: its `members` name the eval runs it launched (one per
checkpoint, one for the baselines), whose evaluations hold the scores and per-example predictions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.core.db import Base, utcnow


class Comparison(Base):
    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The shared evaluation settings every member ran with (`ComparisonCreate` without its entries)."""
    members: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """One entry per eval run: `{run_id, label, methods, checkpoint_run_id, checkpoint_step, paper_row}`."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
