"""Trajectory and label schemas: browse rollouts, label them, build a labeling queue."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from backend.schemas.common import MAX_TEXT_CHARS, JSONDict, ORMModel


class TrajectorySummary(ORMModel):
    """A list item: everything but the heavy token arrays."""

    id: int
    run_id: int
    step: int
    group_id: str
    task_id: str
    reward: float
    has_parse_error: bool
    has_tool_error: bool
    truncated: bool
    finish_reason: str
    num_turns: int
    num_tool_calls: int
    created_at: datetime


class TrajectoriesPage(BaseModel):
    items: list[TrajectorySummary]
    total: int


class LabelCreate(BaseModel):
    score: float = Field(ge=-1.0, le=1.0, description="Human reward for the whole trajectory.")
    step_scores: list[float] = Field(
        default_factory=list, max_length=256, description="Optional per-assistant-turn scores."
    )
    note: str = Field(default="", max_length=MAX_TEXT_CHARS)
    labeler: str = Field(
        default="anonymous",
        min_length=1,
        max_length=100,
        description="Used only by the unauthenticated loopback user; a signed-in caller's account name wins.",
    )


class LabelPublic(ORMModel):
    id: int
    trajectory_id: int
    score: float
    step_scores: list[float]
    note: str
    labeler: str
    created_at: datetime


class TrajectoryPublic(TrajectorySummary):
    """The full record: `data` is `Trajectory.to_dict()` (token ids, loss mask, logprobs, turns...)."""

    data: JSONDict
    sibling_ids: list[int] = Field(default_factory=list, description="Other trajectories of the same group.")
    labels: list[LabelPublic] = Field(default_factory=list, description="Newest first; the first one wins.")
