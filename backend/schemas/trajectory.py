"""Trajectory and label schemas: browse rollouts, label them, build a labeling queue."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

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


LabelKind = Literal["score", "pairwise", "step"]
PairChoice = Literal["a", "b", "tie"]
LABEL_FORMAT = "agent-studio.label/v1"
"""The `format` tag of every exported/imported JSONL label line (see docs/labels-format.md)."""


class StepMark(BaseModel):
    """A good/bad mark on one assistant turn (`turn` counts assistant turns from 0)."""

    turn: int = Field(ge=0, description="Index among the trajectory's assistant turns, from 0.")
    good: bool


class LabelCreate(BaseModel):
    """A label on the trajectory in the URL.

    - `kind='score'`: `score` in [-1, 1] for the whole trajectory (optional `step_scores`).
    - `kind='pairwise'`: `other_trajectory_id` (a member of the same group) and `choice`
      ('a' = the trajectory in the URL is better, 'b' = the other one, 'tie').
    - `kind='step'`: `step_marks`, good/bad per assistant turn.
    """

    kind: LabelKind = "score"
    score: float | None = Field(default=None, ge=-1.0, le=1.0, description="Human reward for the whole trajectory.")
    step_scores: list[float] = Field(
        default_factory=list, max_length=256, description="Optional per-assistant-turn scores."
    )
    other_trajectory_id: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Pairwise: trajectory B (A is the URL's; 0 on import = gone)."
    )
    choice: PairChoice | None = Field(default=None, description="Pairwise: 'a', 'b' or 'tie'.")
    step_marks: list[StepMark] = Field(
        default_factory=list, max_length=256, description="Step: good/bad per assistant turn."
    )
    note: str = Field(default="", max_length=MAX_TEXT_CHARS)
    labeler: str = Field(
        default="anonymous",
        min_length=1,
        max_length=100,
        description="Used only by the unauthenticated loopback user and imports; a signed-in caller's name wins.",
    )

    @model_validator(mode="after")
    def _fields_match_kind(self) -> LabelCreate:
        if self.kind == "score" and self.score is None:
            raise ValueError("a 'score' label needs `score` in [-1, 1]")
        if self.kind == "pairwise" and (self.other_trajectory_id is None or self.choice is None):
            raise ValueError("a 'pairwise' label needs `other_trajectory_id` (trajectory B) and `choice` (a, b, tie)")
        if self.kind == "step" and not self.step_marks:
            raise ValueError("a 'step' label needs at least one entry in `step_marks` ({turn, good})")
        turns = [m.turn for m in self.step_marks]
        if len(set(turns)) != len(turns):
            raise ValueError(f"step_marks repeat a turn: {sorted(turns)}; mark each assistant turn once")
        return self


class LabelPublic(ORMModel):
    id: int
    kind: LabelKind = "score"
    trajectory_id: int | None
    other_trajectory_id: int | None = None
    score: float | None
    choice: PairChoice | None = None
    step_scores: list[float]
    step_marks: list[StepMark] = Field(default_factory=list)
    run_id: int | None = None
    step: int | None = None
    group_id: str = ""
    task_id: str = ""
    note: str
    labeler: str
    created_at: datetime


class LabelPair(BaseModel):
    """One pairwise-queue item: two members of the same group and why it was picked."""

    a: TrajectorySummary
    b: TrajectorySummary
    reason: str = Field(description="'mixed rewards', 'reward model disagrees', or 'uncertain'.")


class KappaPublic(BaseModel):
    """Cohen's kappa between the first two labelers of items labeled twice (None below 1 shared item)."""

    kappa: float | None
    items: int = Field(description="Items judged by two different labelers.")
    agreement: float | None = Field(description="Raw fraction of those items with the same judgement.")


class LabelStats(BaseModel):
    """Labeling progress of a run and agreement between labelers."""

    run_id: int
    trajectories: int
    labeled_trajectories: int
    labels_by_kind: dict[str, int]
    labels_by_labeler: dict[str, int]
    pairwise_kappa: KappaPublic
    step_kappa: KappaPublic


class LabelImportReport(BaseModel):
    imported: int
    linked: int = Field(description="Imported labels whose trajectory still exists here (others keep the snapshot).")


class TrajectoryPublic(TrajectorySummary):
    """The full record: `data` is `Trajectory.to_dict()` (token ids, loss mask, logprobs, turns...)."""

    data: JSONDict
    sibling_ids: list[int] = Field(default_factory=list, description="Other trajectories of the same group.")
    labels: list[LabelPublic] = Field(default_factory=list, description="Newest first; the first one wins.")
    reward_model_scores: dict[str, float] = Field(
        default_factory=dict,
        description="`reward_model:<id>` → its score of this trajectory (models trained on the run's labels, and "
        "the models a training run was rewarded by).",
    )
    automatic_reward: float | None = Field(
        default=None,
        description="The environment rubric's own total (differs from `reward` when reward models are in it).",
    )
    environment_name: str | None = Field(default=None, description="The run's pinned environment version's name.")
    environment_version: int | None = Field(default=None, description="...and its version number.")
