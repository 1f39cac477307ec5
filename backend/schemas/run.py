"""Run schemas: launching, listing and watching jobs (train, rollout, eval, tool tests, pings)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from backend.schemas.common import CappedJSONDict, DbId, JSONDict, LaunchKind, ORMModel, Preset, RunKind, RunStatus


class RunCreate(BaseModel):
    """Launch a train or rollout run. `config` holds section overrides on top of `preset` (e.g.
    `{"rollout": {"group_size": 4}}`); the worker stores the fully resolved config beside it.
    Evaluations have their own typed request: `POST /evaluations` (`EvaluationCreate`)."""

    name: str = Field(default="", max_length=200)
    kind: LaunchKind = "train"
    preset: Preset | None = "quickstart"
    config: CappedJSONDict = Field(default_factory=dict)
    environment_id: DbId | None = None
    environment_version_id: DbId | None = Field(
        default=None, description="Pin this version of the environment (default: its current version)."
    )

    @field_validator("kind")
    @classmethod
    def _no_eval(cls, kind: str) -> str:
        if kind == "eval":
            raise ValueError("eval runs are launched with POST /evaluations (a typed EvaluationCreate body)")
        return kind

    @field_validator("config")
    @classmethod
    def _no_private_keys(cls, config: JSONDict) -> JSONDict:
        bad = private_keys(config)
        if bad:
            raise ValueError(f"config key {bad[0]!r} starts with '_': such keys are reserved; remove it")
        return config


def private_keys(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of `_`-prefixed keys anywhere in a JSON value."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}{key}"
            if str(key).startswith("_"):
                found.append(path)
            found.extend(private_keys(item, path + "."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(private_keys(item, f"{prefix}{index}."))
    return found


class RunPublic(ORMModel):
    id: int
    name: str
    kind: RunKind
    status: RunStatus
    preset: str | None
    requested_config: JSONDict
    """What the client sent (overrides on top of `preset`, or a job's arguments)."""
    resolved_config: JSONDict | None
    """The full config the worker resolved and ran with (train/rollout runs, once started)."""
    eval_spec: JSONDict | None
    """An eval run's request: `EvalSpec` as JSON (kept raw so rows migrated from old `_eval` keys always load)."""
    auto_resumes: int
    environment_id: int | None
    environment_version_id: int | None = None
    environment_name: str | None = None
    """The pinned environment version's name and number (the run card: "environment <name> v<version>")."""
    environment_version: int | None = None
    progress: float
    current_step: int
    total_steps: int | None
    eta_s: float | None
    error: str | None
    resumable: bool
    cancel_requested: bool
    worker_hostname: str | None
    celery_task_id: str | None
    enqueued_at: datetime | None
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
