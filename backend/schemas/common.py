"""Shared pieces of the HTTP contract: literals for kinds and statuses, error bodies.

This package is the published contract between the API and its clients (the
Gradio app, the CLI). It imports pydantic only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

JSONDict = dict[str, Any]
"""A JSON object (configs, results, metric values)."""

ToolKind = Literal["python", "builtin"]
DatasetKind = Literal["file", "hub", "demo"]
RunKind = Literal["train", "rollout", "eval", "tool_test", "ping", "validate", "export", "rm_train"]
LaunchKind = Literal["train", "rollout", "eval"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]
Preset = Literal["quickstart", "hotpotqa_cpu", "paper"]

ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running", "cancelling")
"""Statuses of a run that is not finished (resume is refused, cancel allowed)."""


class ORMModel(BaseModel):
    """Base for `XPublic` models: built from ORM rows by attribute access."""

    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    """The body of every 4xx answer: `{"detail": "..."}`."""

    detail: str | list[Any]
