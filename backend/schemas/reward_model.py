"""Reward-model schemas: train one from labels (`POST /reward-models`), read its accuracy and provenance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.schemas.common import CappedJSONDict, DbId, JSONDict, RunStatus


class RewardModelCreate(BaseModel):
    """Train a reward model on the labels of `label_run_ids`, starting from `base_model`.

    `config` sets the trainer's other knobs (train_layers, epochs, learning_rate, batch_size,
    max_length, heldout_fraction, seed, device, view); the worker validates them.
    """

    name: str = Field(default="", max_length=200)
    label_run_ids: list[DbId] = Field(
        min_length=1, max_length=100, description="Runs whose labels (all kinds) make the pairs."
    )
    base_model: str = Field(
        default="smollm2-135m", min_length=1, max_length=500, description="Any causal LM: alias, dir, hub id."
    )
    kind: Literal["trajectory", "step"] = Field(
        default="trajectory",
        description="'trajectory': one score per episode (pairwise and score labels); 'step': a step scorer, "
        "one score per assistant turn's prefix (good/bad step marks), used as step_reward_model:<id>.",
    )
    min_pairs: int = Field(default=8, ge=2, le=1_000_000, description="Fewer preference pairs than this is refused.")
    config: CappedJSONDict = Field(default_factory=dict)


class RewardModelPublic(BaseModel):
    """A reward model = its `rm_train` run; `id` is that run's id (use it as `reward_model:<id>`)."""

    id: int
    name: str
    status: RunStatus
    error: str | None
    base_model: str
    kind: str = "trajectory"
    """'trajectory' (use as reward_model:<id>) or 'step' (use as step_reward_model:<id>)."""
    input: str = "text"
    """What the model reads: decoded text views, so its tokenizer may differ from the policy's."""
    label_run_ids: list[int]
    tokenizer: str | None = None
    artifact_dir: str | None = None
    heldout_accuracy: float | None = None
    heldout_ece: float | None = None
    train_pairs: int | None = None
    heldout_pairs: int | None = None
    label_ids: list[int] = Field(default_factory=list)
    metrics: JSONDict = Field(default_factory=dict)
    created_at: datetime
    finished_at: datetime | None
