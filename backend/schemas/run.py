"""Run schemas: launching, listing and watching jobs (train, rollout, eval, tool tests, pings)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from backend.schemas.common import CappedJSONDict, DbId, JSONDict, LaunchKind, ORMModel, Preset, RunKind, RunStatus

CLIENT_INTERNAL_KEYS = frozenset({"_eval"})
"""The one `_` key a client still sends: the Evaluate tab's request, until evaluation gets its own typed body."""


class RunCreate(BaseModel):
    """Launch a run. `config` holds dotted-section overrides on top of `preset` (e.g.
    `{"rollout": {"group_size": 4}}`); the worker stores the fully resolved config."""

    name: str = Field(default="", max_length=200)
    kind: LaunchKind = "train"
    preset: Preset | None = "quickstart"
    config: CappedJSONDict = Field(default_factory=dict)
    environment_id: DbId | None = None

    @field_validator("config")
    @classmethod
    def _no_internal_keys(cls, config: JSONDict) -> JSONDict:
        """`_`-prefixed keys are the server's bookkeeping (`_resume`, `_auto_resumes`): clients may not set them."""
        internal = sorted(k for k in config if k.startswith("_") and k not in CLIENT_INTERNAL_KEYS)
        if internal:
            raise ValueError(f"keys starting with '_' are reserved for the server: remove {', '.join(internal)}")
        return config


class RunPublic(ORMModel):
    id: int
    name: str
    kind: RunKind
    status: RunStatus
    preset: str | None
    config: JSONDict
    environment_id: int | None
    progress: float
    current_step: int
    total_steps: int | None
    eta_s: float | None
    error: str | None
    resumable: bool
    cancel_requested: bool
    worker_hostname: str | None
    celery_task_id: str | None
    heartbeat_at: datetime | None
    result: JSONDict | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def duration_s(self) -> float | None:
        """Wall time from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class RunsPage(BaseModel):
    items: list[RunPublic]
    total: int


class MetricPoint(BaseModel):
    step: int
    values: dict[str, float]


class MetricsPage(BaseModel):
    """Metric rows with `step > since`, ascending; pass `last_step` as the next `since`."""

    run_id: int
    points: list[MetricPoint]
    last_step: int | None


class CheckpointPublic(ORMModel):
    id: int
    run_id: int
    step: int
    path: str
    created_at: datetime


class EvaluationPublic(BaseModel):
    """The run's evaluation tables (per dataset) beside the paper's reference numbers."""

    run_id: int
    results: JSONDict | None
    created_at: datetime | None
    reference: dict[str, dict[str, float]]
    reference_source: str
