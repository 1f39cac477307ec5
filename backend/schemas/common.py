"""Shared pieces of the HTTP contract: literals for kinds and statuses, error bodies.

This package is the published contract between the API and its clients (the
Gradio app, the CLI). It imports pydantic and the stdlib-only run-spec vocabulary
(`worker.rl.vocab`: presets and value lists, one copy for config, API and UI).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# re-exported: the environment crud checks rubric terms and builtin tools against the core's names
from worker.rl.vocab import BUILTIN_REWARDS as BUILTIN_REWARDS
from worker.rl.vocab import BUILTIN_TOOLS as BUILTIN_TOOLS
from worker.rl.vocab import REWARD_ARGUMENTS as REWARD_ARGUMENTS
from worker.rl.vocab import REWARD_KINDS as REWARD_KINDS
from worker.rl.vocab import TOOL_ALIASES as TOOL_ALIASES
from worker.rl.vocab import Preset as Preset  # re-exported: `RunCreate.preset` uses the registry's names
from worker.rl.vocab import RetrieverKind as RetrieverKind  # re-exported: corpus / eval retriever choices
from worker.rl.vocab import RewardKind as RewardKind
from worker.rl.vocab import check_forced_searches as check_forced_searches  # the scaffold rule, one copy

JSONDict = dict[str, Any]
"""A JSON object (configs, results, metric values)."""

INT64_MAX = 2**63 - 1
DbId = Annotated[int, Field(ge=1, le=INT64_MAX)]
"""A row id as the client sends it: positive and within the database's signed 64-bit range."""

MAX_SOURCE_CHARS = 64 * 1024
"""Longest tool source (one function with its docstring)."""
MAX_TEXT_CHARS = 10_000
"""Longest free text (descriptions, label notes)."""
MAX_JSON_BYTES = 64 * 1024
"""Largest client-sent JSON object (run configs, tool params, tool-test arguments), serialized."""


def _json_capped(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, default=str))
    if size > MAX_JSON_BYTES:
        raise ValueError(f"is {size} bytes as JSON, over the {MAX_JSON_BYTES}-byte limit; send less")
    return value


CappedJSONDict = Annotated[JSONDict, AfterValidator(_json_capped)]
"""A client-sent JSON object of at most `MAX_JSON_BYTES` serialized."""

ToolKind = Literal["python", "builtin"]
DatasetKind = Literal["file", "hub", "demo", "corpus"]
RunKind = Literal["train", "rollout", "eval", "tool_test", "ping", "validate", "export", "rm_train"]
LaunchKind = Literal["train", "rollout", "eval"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]

ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running", "cancelling")
"""Statuses of a run that is not finished (resume is refused, cancel allowed)."""


class ORMModel(BaseModel):
    """Base for `XPublic` models: built from ORM rows by attribute access."""

    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    """The body of every 4xx answer: `{"detail": "..."}`."""

    detail: str | list[Any]
