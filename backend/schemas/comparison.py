"""Comparisons: `ComparisonCreate` (`POST /comparisons`), `ComparisonSummary` (the list) and `ComparisonPublic`.

A comparison evaluates several train-run checkpoints (method `agent`) and baselines over the same
datasets and seeded examples, each member one eval run sharing every `EvalSpec` setting below; the
public form carries the one table, the members' reports and their per-example predictions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.schemas.common import DbId, JSONDict, RetrieverKind, check_forced_searches

Baseline = Literal["direct", "naive-rag", "base-tool-call"]
MAX_CHECKPOINTS = 8


class ComparisonCheckpoint(BaseModel):
    """A train run's checkpoint: `step` None = its newest."""

    model_config = ConfigDict(extra="forbid")

    run_id: DbId
    step: int | None = Field(default=None, ge=0, le=2**63 - 1)


class ComparisonCreate(BaseModel):
    """What to compare, and the evaluation settings all of it shares (same examples, same scaffold)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    checkpoints: list[ComparisonCheckpoint] = Field(default_factory=list, max_length=MAX_CHECKPOINTS)
    baselines: list[Baseline] = Field(default_factory=list, max_length=3)
    model: str = Field(default="smollm2-135m", min_length=1, max_length=500, description="Base model of the baselines.")
    datasets: list[str] = Field(default=["hotpotqa", "2wiki", "musique"], min_length=1, max_length=10)
    limit: int | None = Field(default=50, ge=1, le=1_000_000, description="Examples per dataset; null = all.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_turns: int = Field(default=3, ge=1, le=64)
    max_new_tokens: int = Field(default=96, ge=1, le=32_768)
    top_k: int = Field(default=3, ge=1, le=100)
    retriever: RetrieverKind = Field(default="bm25", description="bm25, or dense (the bundled all-MiniLM-L6-v2).")
    max_passage_chars: int = Field(default=400, ge=20, le=100_000, description="Characters kept of each passage.")
    force_first_search: bool = Field(default=True, description="The agent's forced first search, for every row.")
    forced_search_turns: int = Field(
        default=1, ge=1, le=64, description="Leading turns that open a search (the recipe's), for every row."
    )
    answer_on_last_turn: bool = Field(default=False, description="The recipe's answer prefill on the last turn.")
    engine: Literal["auto", "hf", "vllm"] = "auto"
    max_batch_size: int = Field(default=32, ge=1, le=4096)

    @model_validator(mode="after")
    def _something_to_compare(self) -> ComparisonCreate:
        if not self.checkpoints and not self.baselines:
            raise ValueError("pick at least one checkpoint or baseline to compare")
        check_forced_searches(self.forced_search_turns, self.force_first_search, self.max_turns)
        keys = [(c.run_id, c.step) for c in self.checkpoints]
        if len(set(keys)) != len(keys):
            raise ValueError("checkpoints: the same run and step is listed twice; list each checkpoint once")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError("baselines: a baseline is listed twice; list each once")
        return self

    def shared_spec(self) -> JSONDict:
        """The `EvalSpec` fields every member eval run gets."""
        return self.model_dump(mode="json", exclude={"name", "checkpoints", "baselines"})


class ComparisonMember(BaseModel):
    """One eval run of the comparison, with its live status and report."""

    run_id: int
    label: str
    methods: list[str]
    checkpoint_run_id: int | None = None
    checkpoint_step: int | None = None
    paper_row: str | None = None
    status: str = "queued"
    error: str | None = None
    results: JSONDict | None = None


class ComparisonExample(BaseModel):
    """One example as one row of the comparison answered it, with its replayable trajectory (tool methods)."""

    label: str
    dataset: str
    task_id: str
    question: str
    gold: list[str]
    prediction: str
    em: float
    cover_em: float
    f1: float
    num_tool_calls: int = 0
    trajectory_id: int | None = None


class ComparisonSummary(BaseModel):
    """A row of the comparison list."""

    id: int
    name: str
    created_at: datetime
    labels: list[str]
    status: str
    """queued | running | succeeded | failed: failed when any member failed, succeeded when all did."""


class ComparisonPublic(ComparisonSummary):
    """The comparison: its settings, members, the one table (rows as `comparison.ComparisonRow.to_dict`),
    per-example predictions of every row, and the paper's reference numbers."""

    spec: JSONDict
    members: list[ComparisonMember]
    rows: list[JSONDict]
    datasets: list[str]
    """The datasets of the table, in the paper's column order."""
    table: list[list[str]]
    """The table as shown: a header, then one formatted row per entry of `rows`."""
    examples: list[ComparisonExample]
    reference: dict[str, dict[str, float]]
    reference_source: str
