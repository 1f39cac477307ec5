"""Evaluation requests: `EvalSpec` (stored in `Run.eval_spec`) and `EvaluationCreate` (`POST /evaluations`).

The fields mirror the worker's `EvalRequest` one for one (a test keeps them in step),
so a request is validated here, at the boundary, and again never has to be guessed at.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.schemas.common import RetrieverKind, check_forced_searches

EvalMethod = Literal["direct", "naive-rag", "base-tool-call", "agent"]


class EvalSpec(BaseModel):
    """What to evaluate: datasets × methods on a base model and/or a trained checkpoint."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default="smollm2-135m", min_length=1, max_length=500, description="Base model (alias, local dir or hub id)."
    )
    datasets: list[str] = Field(
        default=["hotpotqa"],
        min_length=1,
        max_length=10,
        description="hotpotqa, 2wiki, musique, or `name=path` for a local file.",
    )
    methods: list[EvalMethod] = Field(default=["direct"], min_length=1, max_length=4)
    limit: int | None = Field(default=30, ge=1, le=1_000_000, description="Examples per dataset; null = all.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    checkpoint_path: str | None = Field(
        default=None, max_length=4096, description="Checkpoint dir the `agent` method evaluates."
    )
    checkpoint_run_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    checkpoint_step: int | None = Field(default=None, ge=0, le=2**63 - 1)
    max_turns: int = Field(default=3, ge=1, le=64)
    max_new_tokens: int = Field(default=96, ge=1, le=32_768)
    top_k: int = Field(default=3, ge=1, le=100)
    retriever: RetrieverKind = Field(default="bm25", description="bm25, or dense (the bundled all-MiniLM-L6-v2).")
    max_passage_chars: int = Field(default=400, ge=20, le=100_000, description="Characters kept of each passage.")
    force_first_search: bool = False
    forced_search_turns: int = Field(
        default=1, ge=1, le=64, description="With force_first_search: leading turns that open a search call."
    )
    answer_on_last_turn: bool = Field(default=False, description="Prefill `<answer>` on the last allowed turn.")
    agent_algorithm: str = Field(default="GRPO", max_length=50)
    engine: Literal["auto", "hf", "vllm"] = Field(default="auto", description="Rollout engine.")
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most sequences per engine call.")

    @model_validator(mode="after")
    def _forced_searches_fit(self) -> EvalSpec:
        check_forced_searches(self.forced_search_turns, self.force_first_search, self.max_turns)
        return self


class EvaluationCreate(EvalSpec):
    """Launch an eval run: the spec plus an optional run name."""

    name: str = Field(default="", max_length=200)
    environment_id: int | None = Field(
        default=None,
        ge=1,
        le=2**63 - 1,
        description="Evaluate on this environment's held-out split (its current version is pinned) instead of "
        "the benchmark datasets; reads model, checkpoint_path, limit and seed.",
    )

    def spec(self) -> EvalSpec:
        return EvalSpec.model_validate(self.model_dump(exclude={"name", "environment_id"}))
