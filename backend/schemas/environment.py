"""Environment schemas: tools + dataset + rubric + limits, the unit a run trains on."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from backend.schemas.common import DbId, ORMModel


class RubricSpec(BaseModel):
    """Reward function weights by name (weight 0 = logged metric only) and the answer tag."""

    weights: dict[str, float] = Field(default_factory=lambda: {"exact_match": 1.0}, max_length=64)
    answer_tag: str = Field(default="answer", min_length=1, max_length=50)


class EnvLimits(BaseModel):
    max_turns: int = Field(default=4, ge=1, le=64)
    max_new_tokens_per_turn: int = Field(default=128, ge=1, le=1_000_000)
    max_total_tokens: int = Field(default=2048, ge=16, le=10_000_000)


class EnvironmentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    tool_ids: list[DbId] = Field(default_factory=list, max_length=64)
    dataset_id: DbId | None = None
    rubric: RubricSpec = Field(default_factory=RubricSpec)
    limits: EnvLimits = Field(default_factory=EnvLimits)


class EnvironmentUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    tool_ids: list[DbId] | None = Field(default=None, max_length=64)
    dataset_id: DbId | None = None
    rubric: RubricSpec | None = None
    limits: EnvLimits | None = None


class EnvironmentPublic(ORMModel):
    id: int
    name: str
    tool_ids: list[int]
    dataset_id: int | None
    rubric: RubricSpec
    limits: EnvLimits
    created_at: datetime
