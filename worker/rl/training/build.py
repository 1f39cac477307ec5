"""Compose the core objects of a run from a TrainConfig: data, retriever, env factory, model, engine.

Everything heavy is built here once so `trainer.train` reads as the algorithm;
tests pass their own `TrainComponents` (tiny model, scripted engine) instead.
Also the seeded, resumable task sampler, the optimizer/scheduler factories, and the start-up check that
float32 master weights + AdamW state fit the GPU (issue #10).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from worker.rl.envs.base import EnvConfig, ToolEnv
from worker.rl.envs.from_spec import ToolRunner
from worker.rl.envs.spec import CorpusSpec, DataSpec, EnvSpec, LimitsSpec, PrefillSpec, RewardSpec, ToolSpec
from worker.rl.generation.base import Generator, Tokenizer
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.precision import TORCH_DTYPES, resolve_compute_dtype
from worker.rl.training.config import OptimConfig, TaskConfig, TrainConfig
from worker.rl.types import Passage, Task
from worker.rl.vocab import ComputeDType

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """Train and held-out tasks (disjoint) and the corpus the search tool indexes."""

    train: list[Task]
    eval: list[Task]
    passages: list[Passage]


@dataclass
class TrainComponents:
    """The live objects a training run needs (built by `build_components` or by a test)."""

    model: Any
    tokenizer: Any
    generator: Generator
    chat: ChatFormat
    env_factory: Callable[[], ToolEnv]
    train_tasks: list[Task]
    eval_tasks: list[Task]
    ref_model: Any | None = None


class TaskSampler:
    """Walks seeded shuffles of the train tasks, epoch after epoch; its state is two ints."""

    def __init__(self, num_tasks: int, seed: int) -> None:
        if num_tasks < 1:
            raise ValueError("the task sampler needs at least one training task; check task.source / task.train_size")
        self.num_tasks, self.seed = num_tasks, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> list[int]:
        order = list(range(self.num_tasks))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def sample(self, k: int) -> list[int]:
        """The next `k` task indices (crossing into a fresh shuffle when an epoch ends)."""
        out: list[int] = []
        while len(out) < k:
            order = self._order()
            take = min(k - len(out), self.num_tasks - self.position)
            out.extend(order[self.position : self.position + take])
            self.position += take
            if self.position >= self.num_tasks:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "num_tasks": self.num_tasks, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("num_tasks", self.num_tasks) != self.num_tasks:
            raise ValueError(
                "the checkpoint's task sampler saw a different number of train tasks; resume with the same task config"
            )
        self.epoch, self.position = int(state.get("epoch", 0)), int(state.get("position", 0))


def load_task_data(cfg: TaskConfig) -> TaskData:
    """Demo KB, or a QA file / hub set split deterministically (no overlap) into train and eval."""
    from worker.rl.data.splits import sample_subset, split_tasks
    from worker.rl.tools.search import corpus_from_tasks

    if cfg.source == "demo":
        from worker.rl.data.demo_kb import build_demo_dataset

        demo = build_demo_dataset(seed=cfg.seed)
        train, heldout = list(demo.train), list(demo.heldout)
        if cfg.max_hops is not None:
            train = [t for t in train if int(t.metadata.get("num_hops", 1)) <= cfg.max_hops]
            heldout = [t for t in heldout if int(t.metadata.get("num_hops", 1)) <= cfg.max_hops]
        train = sample_subset(train, cfg.train_size, cfg.seed) if cfg.train_size else train
        # a seeded sample, not the first N: the held-out list is sorted by id, i.e. grouped by relation type
        return TaskData(train=train, eval=sample_subset(heldout, cfg.eval_size, cfg.seed), passages=list(demo.passages))
    if cfg.source == "protocol":
        return protocol_task_data(cfg)
    from worker.rl.data.qa_formats import load_qa_tasks

    tasks = load_qa_tasks(cfg.source, dataset=cfg.dataset, seed=cfg.seed)
    if len(tasks) < 2:
        raise ValueError(f"task.source {cfg.source!r} gave {len(tasks)} tasks; need at least 2 to split train/eval")
    train, held = split_tasks(tasks, eval_size=min(cfg.eval_size, len(tasks) // 2), seed=cfg.seed)
    if cfg.train_size:
        train = sample_subset(train, cfg.train_size, cfg.seed)
    return TaskData(train=train, eval=held, passages=corpus_from_tasks([*train, *held]))


def protocol_task_data(cfg: TaskConfig) -> TaskData:
    """The protocol's training pool under `task.data_dir`, a validation split carved out of it (`eval_size`),
    and one BM25 corpus pooled over every context paragraph of the pool (de-duplicated by title and text)."""
    from worker.rl.data.protocol import build_training_pool
    from worker.rl.data.splits import sample_subset, split_tasks
    from worker.rl.tools.search import corpus_from_tasks

    pool = build_training_pool(Path(cfg.data_dir or "."))
    if len(pool.tasks) < 2:
        raise ValueError(f"task.data_dir {cfg.data_dir!r}: the training pool has {len(pool.tasks)} tasks; need >= 2")
    train, validation = split_tasks(pool.tasks, eval_size=min(cfg.eval_size, len(pool.tasks) // 2), seed=cfg.seed)
    if cfg.train_size:
        train = sample_subset(train, cfg.train_size, cfg.seed)
    logger.info(
        "protocol pool: %d tasks (%d duplicates, %d evaluation examples dropped); %d train, %d validation",
        len(pool.tasks),
        pool.duplicates,
        pool.excluded,
        len(train),
        len(validation),
    )
    return TaskData(train=train, eval=validation, passages=corpus_from_tasks(pool.tasks))


def uses_demo_prompt(config: TrainConfig) -> bool:
    """The built-in demo task on qa_search gets its compact prompt (see `envs.qa.DEMO_SYSTEM_PROMPT`)."""
    return config.task.source == "demo" and config.task.env == "qa_search"


def env_config(config: TrainConfig) -> EnvConfig:
    """Env knobs from the run spec; the demo task adds its compact prompt and answers right after a search."""
    from worker.rl.envs.qa import DEMO_SYSTEM_PROMPT, FORCE_FIRST_SEARCH_PREFILL

    prefill = FORCE_FIRST_SEARCH_PREFILL if config.task.force_first_search else (config.task.first_turn_prefill or "")
    if not uses_demo_prompt(config):
        return EnvConfig(
            max_turns=config.rollout.max_turns,
            first_turn_prefill=prefill,
            first_turn_prefill_turns=config.task.forced_search_turns,
            answer_prefill_on_last_turn=config.task.answer_on_last_turn,
        )
    # Demo: every fact sits in one paragraph, so search -> `<answer>` is the whole episode (2 turns).
    return EnvConfig(
        max_turns=config.rollout.max_turns,
        first_turn_prefill=prefill,
        first_turn_prefill_turns=config.task.forced_search_turns,
        system_prompt=DEMO_SYSTEM_PROMPT,
        answer_prefill_after_tool="<answer>",
    )


def spec_from_config(config: TrainConfig) -> EnvSpec:
    """The preset task of a run spec (`task.env` qa_search or calculator) as an `EnvSpec`."""
    from worker.rl.envs.calculator import CALCULATOR_SYSTEM_PROMPT
    from worker.rl.envs.qa import DEMO_SYSTEM_PROMPT, QA_SYSTEM_PROMPT

    task, rollout = config.task, config.rollout
    limits = LimitsSpec(
        max_turns=rollout.max_turns,
        max_new_tokens_per_turn=rollout.max_new_tokens_per_turn,
        max_total_tokens=max(16, rollout.max_total_tokens),
    )
    prefill = PrefillSpec(first_turn_prefill=task.first_turn_prefill or "")
    if task.env == "calculator":
        return EnvSpec(
            name="calculator",
            tools=(ToolSpec("calculator", builtin="calculator"),),
            limits=limits,
            prefill=prefill,
            system_prompt=CALCULATOR_SYSTEM_PROMPT.format(answer_tag="{answer_tag}"),
            rubric=(
                RewardSpec("exact_match", 1.0, builtin="exact_match"),
                RewardSpec("format", 0.1, builtin="format"),
                RewardSpec("called_tool", 0.0, builtin="called_tool"),
                RewardSpec("tool_error_penalty", 0.0, builtin="tool_error_penalty"),
            ),
        )
    if task.env != "qa_search":
        raise ValueError(f"task.env {task.env!r} has no environment spec; use qa_search, calculator or an environment")
    demo = uses_demo_prompt(config)
    if task.force_first_search:
        prefill = PrefillSpec(force_first_call="search", prefill_turns=task.forced_search_turns)
    prefill = dataclasses.replace(prefill, answer_after_tool=demo, answer_on_last_turn=task.answer_on_last_turn)
    if task.source == "demo":
        data = DataSpec(source="demo", location=str(task.seed), seed=task.seed, max_hops=task.max_hops)
    else:
        data = DataSpec(source="file", location=task.source, format=task.dataset or "auto", seed=task.seed)
    search_params = {"top_k": task.top_k, "max_passage_chars": task.max_passage_chars}
    search = ToolSpec("search", builtin="search", params=search_params)
    rubric = (
        RewardSpec("exact_match", 1.0, builtin="exact_match"),
        RewardSpec("f1", task.f1_reward_weight, builtin="f1"),
        RewardSpec("format", task.format_reward_weight, builtin="format"),
        RewardSpec("cover_exact_match", task.cover_em_reward_weight, builtin="cover_exact_match"),
        RewardSpec("tool_error_penalty", 0.0, builtin="tool_error_penalty"),
        RewardSpec("called_tool", 0.0, builtin="called_tool"),
        RewardSpec("retrieval_recall", task.retrieval_reward_weight, builtin="retrieval_recall"),
    )
    prompt = (DEMO_SYSTEM_PROMPT if demo else QA_SYSTEM_PROMPT).format(answer_tag="{answer_tag}")
    return EnvSpec(
        name=f"qa_search/{task.source}",
        tools=(search,),
        data=data,
        rubric=rubric,
        limits=limits,
        corpus=CorpusSpec(retriever=task.retriever),
        system_prompt=prompt,
        question_template="Question: {question}",
        prefill=prefill,
        show_tool_schemas=False,  # both prompts teach the call by example
    )


def make_env_factory(
    config: TrainConfig, passages: Sequence[Passage], index_cache_dir: Path | None = None
) -> Callable[[], ToolEnv]:
    """A factory of fresh envs of the preset task, through `env_from_spec` (one retriever, built once and
    cached under `index_cache_dir`)."""
    from worker.rl.envs.from_spec import env_factory
    from worker.rl.envs.registry import list_envs, make

    name = config.task.env
    if name not in list_envs():
        raise ValueError(f"unknown environment {name!r} in task.env; valid names: {', '.join(list_envs())}")
    if name not in ("qa_search", "calculator"):
        return lambda: make(name, config=env_config(config))
    return env_factory(spec_from_config(config), passages=passages, index_cache_dir=index_cache_dir)


def spec_task_data(spec: EnvSpec) -> TaskData:
    """An environment spec's tasks (train and its held-out split) and corpus."""
    from worker.rl.envs.from_spec import load_env_data

    data = load_env_data(spec)
    return TaskData(train=data.train, eval=data.heldout, passages=data.passages)


def env_spec_of(config: TrainConfig) -> EnvSpec | None:
    """The environment file named by `task.environment`, when there is one."""
    if config.task.environment is None:
        return None
    from worker.rl.envs.spec import load_spec_file

    return load_spec_file(config.task.environment)


def check_reward_model_terms(spec: EnvSpec, config: TrainConfig) -> None:
    """Every reward-model term of the rubric must be in `task.reward_models` (the one path that scores them)."""
    from worker.rl.training.reward_models import environment_reward_models

    have = {t.name for t in config.task.reward_models}
    missing = [t.name for t in environment_reward_models(spec) if t.name not in have]
    if missing:
        raise ValueError(
            f"the environment's rubric uses {', '.join(missing)}, which the run's task.reward_models does not list; "
            "studio runs get them from the environment, a CLI run lists each under [[task.reward_models]] with "
            "its id, path (the artifact dir) and step = true for a step scorer"
        )


def check_step_terms(spec: EnvSpec, config: TrainConfig) -> None:
    """Step reward functions give process rewards: without `algorithm.process_reward_weight` they would be lost."""
    steps = [t.name for t in spec.rubric if t.is_step]
    if steps and config.algorithm.process_reward_weight == 0.0:
        raise ValueError(
            f"the environment's step reward function(s) {', '.join(steps)} give process rewards but "
            "algorithm.process_reward_weight is 0, so they would never reach the advantages; set "
            "algorithm.process_reward_weight > 0 (e.g. 1.0; studio runs get 1.0 unless they set it)"
        )


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def with_resolved_precision(config: TrainConfig) -> TrainConfig:
    """`model.compute_dtype` 'auto' made concrete for this machine, so the run's stored config says what ran."""
    device = resolve_device(config.model.device)
    compute = cast(ComputeDType, resolve_compute_dtype(config.model.compute_dtype, config.model.dtype, device))
    return dataclasses.replace(config, model=dataclasses.replace(config.model, compute_dtype=compute))


def cpu_kv_cache_bytes(config: TrainConfig, model_config: Any) -> int:
    """vLLM's KV cache on CPU: `engine.cpu_kv_cache_gb`, else room for one step's trajectories at full length."""
    if config.engine.cpu_kv_cache_gb > 0:
        return int(config.engine.cpu_kv_cache_gb * 1024**3)
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    compute = resolve_compute_dtype(config.model.compute_dtype, config.model.dtype, "cpu")
    dtype = getattr(torch, compute, torch.float32)  # vLLM keeps its KV cache in the dtype it serves the model in
    per_token = 2 * model_config.num_hidden_layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
    rollout = config.rollout
    sequences = rollout.prompts_per_step * rollout.group_size
    return int(sequences * (rollout.max_total_tokens + rollout.max_new_tokens_per_turn) * per_token)


ADAMW_BYTES_PER_PARAM = 16
"""A trained parameter in float32: the weight (master copy), its gradient and AdamW's two moments, 4 bytes each."""
ACTIVATION_HEADROOM = 0.2
"""Share of the trainer's GPU memory the estimate must leave free for activations, the CUDA context and caches."""
_GIB = 1024**3


def training_memory_bytes(model: Any, config: TrainConfig, engine: str) -> int:
    """GPU bytes training holds before activations: trainable weights at 16 bytes (float32 master, gradient,
    AdamW moments), frozen weights at their own size, plus the reference model and the HF engine's sampling
    copy, both in the compute dtype."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    device = resolve_device(config.model.device)
    compute = resolve_compute_dtype(config.model.compute_dtype, config.model.dtype, device)
    compute_bytes = torch.empty((), dtype=TORCH_DTYPES[compute]).element_size()
    copies = int(config.uses_reference) + int(engine == "hf" and compute != config.model.dtype)
    return int(trainable * ADAMW_BYTES_PER_PARAM + frozen + copies * total * compute_bytes)


def check_training_memory(needed_bytes: int, gpu_total_bytes: int, config: TrainConfig, engine: str) -> None:
    """Fail at start-up, naming the ways out, when the estimate does not fit beside the rollout engine."""
    share = config.engine.gpu_memory_utilization if engine == "vllm" else 0.0
    available = gpu_total_bytes * (1.0 - share)
    if needed_bytes <= available * (1.0 - ACTIVATION_HEADROOM):
        return
    beside = f", {available / _GIB:.0f} GiB beside vLLM (engine.gpu_memory_utilization={share})" if share else ""
    raise ValueError(
        f"training needs ~{needed_bytes / _GIB:.0f} GiB of GPU memory before activations (float32 master weights, "
        f"gradients and AdamW state at {ADAMW_BYTES_PER_PARAM} bytes per trained parameter, plus the reference "
        f"and sampling copies), and activations need {ACTIVATION_HEADROOM:.0%} of the rest free; this GPU has "
        f"{gpu_total_bytes / _GIB:.0f} GiB{beside}. A 3B model fits one 141 GB H200 beside vLLM at a reduced "
        "share (engine.gpu_memory_utilization = 0.3); 80 GB GPUs need FSDP over several GPUs or an 8-bit "
        "optimizer (neither is built in). Otherwise train LoRA adapters (model.lora), lower "
        "engine.gpu_memory_utilization, or pick a smaller model."
    )


def check_sampling_logprobs(config: TrainConfig, engine: str) -> None:
    """vLLM's logprobs are the full softmax only without top-p/top-k (see `generation.vllm`)."""
    if engine == "vllm" and config.rollout.top_p < 1.0:
        raise ValueError(
            f"rollout.top_p={config.rollout.top_p} with the vLLM engine: its sampling logprobs are renormalised over "
            "the nucleus while the trainer's are the full softmax, biasing the PPO ratio; set rollout.top_p=1.0 or "
            "engine.backend='hf'"
        )


def build_components(
    config: TrainConfig,
    *,
    env_spec: EnvSpec | None = None,
    tool_runner: ToolRunner | None = None,
    index_cache_dir: Path | None = None,
) -> TrainComponents:
    """Load data, model, engine and (only when kl_coef > 0) a frozen reference model.

    With `env_spec` (or `task.environment`) the run trains in that environment, its user tools and
    rewards called through `tool_runner` (default for a file: `LocalToolRunner`, in-process).
    """
    from worker.rl.envs.from_spec import env_factory
    from worker.rl.generation.factory import make_generator, resolve_engine
    from worker.rl.generation.loading import LoraSpec, load_model_and_tokenizer, resolve_model_path

    env_spec = env_spec or env_spec_of(config)
    if env_spec is not None:
        check_reward_model_terms(env_spec, config)
        check_step_terms(env_spec, config)
        data = spec_task_data(env_spec)
        if tool_runner is None and (env_spec.user_tools or env_spec.user_rewards):
            from worker.rl.envs.local_runner import LocalToolRunner

            tool_runner = LocalToolRunner.from_spec(env_spec)
        make_envs = env_factory(
            env_spec, tool_runner=tool_runner, passages=data.passages, index_cache_dir=index_cache_dir
        )
    else:
        data = load_task_data(config.task)
        make_envs = make_env_factory(config, data.passages, index_cache_dir)
    device = resolve_device(config.model.device)
    lora = config.model.lora
    spec = (
        LoraSpec(r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules) if lora else None
    )
    model, tokenizer = load_model_and_tokenizer(
        config.model.name_or_path, dtype=config.model.dtype, device=device, lora=spec
    )
    if config.model.gradient_checkpointing:  # active only in train mode; generation (eval mode) is unaffected
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model_path = resolve_model_path(config.model.name_or_path)
    engine = resolve_engine(config.engine.backend, model_path=model_path)
    check_sampling_logprobs(config, engine)
    if torch.device(device).type == "cuda":  # before the engine, the copies and the optimizer take memory
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        check_training_memory(training_memory_bytes(model, config, engine), total, config, engine)
    compute = resolve_compute_dtype(config.model.compute_dtype, config.model.dtype, device)
    logger.info("weights in %s, forward/backward and rollouts in %s", config.model.dtype, compute)
    options: dict[str, Any] = {"prefix_cache": config.engine.prefix_cache}
    if engine == "vllm":
        options.update(
            dtype=compute,
            gpu_memory_utilization=config.engine.gpu_memory_utilization,
            max_model_len=config.rollout.max_total_tokens + config.rollout.max_new_tokens_per_turn,
            seed=config.seed,
            kv_cache_bytes=cpu_kv_cache_bytes(config, model.config) if device == "cpu" else None,
        )
    else:
        options.update(max_batch_size=config.engine.max_batch_size, packed_linear=config.engine.packed_linear)
    served = model
    if engine == "hf" and compute != config.model.dtype:
        # Sample from a copy held in the compute dtype, synced after every optimizer step like vLLM: autocast
        # would re-cast every weight at every decode step (SmolLM2, 2 CPU cores, batch 1 / 16: 44.5 / 235.0
        # tok/s from bf16 weights, 20.2 / 179.2 under autocast, 25.0 / 159.9 in fp32).
        served, _ = load_model_and_tokenizer(config.model.name_or_path, dtype=compute, device=device)
        served.eval().requires_grad_(False)
    generator = make_generator(engine, served, tokenizer, model_path=model_path, device=device, **options)
    ref_model = None
    if config.uses_reference:
        # frozen: held in the compute dtype (half the memory of float32 masters on a GPU); autocast runs it alike
        ref_model, _ = load_model_and_tokenizer(config.model.name_or_path, dtype=compute, device=device)
        ref_model.eval().requires_grad_(False)
    logger.info("tasks: %d train, %d eval, %d passages", len(data.train), len(data.eval), len(data.passages))
    return TrainComponents(
        model=model,
        tokenizer=tokenizer,
        generator=generator,
        # HF's decode also takes batches (-> str | list[str]); the rollout only decodes one sequence at a time
        chat=ChatFormat(cast(Tokenizer, tokenizer)),
        env_factory=make_envs,
        train_tasks=data.train,
        eval_tasks=data.eval,
        ref_model=ref_model,
    )


def make_optimizer(model: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, which must be float32 master weights (issue #10: in bf16 an
    lr-1e-6 update falls below the weights' spacing and is lost; in fp16 `exp_avg_sq` underflows)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (check model.lora.target_modules)")
    half = [(n, p.dtype) for n, p in named if p.dtype != torch.float32]
    if half:
        name, dtype = half[0]
        raise ValueError(
            f"trainable parameter {name!r} (and {len(half) - 1} more) is {dtype}: AdamW needs float32 master weights; "
            "load the model with model.dtype='float32' and run the passes in half precision with "
            "model.compute_dtype='bfloat16'"
        )
    params = [p for _, p in named]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        # one fused kernel: on SmolLM2-135M on 2 CPU cores 0.09 s per step and 0.5 GB less peak memory
        # than the default multi-tensor AdamW (0.48 s)
        kwargs["fused"] = True
    # FSDP (`training.distributed`): sharded (DTensor) and replicated parameters in separate groups, since
    # one fused or multi-tensor kernel cannot mix the two
    sharded = [p for p in params if type(p).__name__ == "DTensor"]
    if sharded and len(sharded) < len(params):
        ids = {id(p) for p in sharded}
        groups = [{"params": [p for p in params if id(p) not in ids]}, {"params": sharded}]
        return torch.optim.AdamW(groups, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr after `step` training steps: linear warm-up, then the schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    if cfg.scheduler == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per training step (not per minibatch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))


def policy_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """Plain (LoRA-merged) named weights to push to a separate rollout engine."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if not hasattr(model, "merge_adapter"):
        return list(model.state_dict().items())
    model.merge_adapter()
    try:
        state = model.get_base_model().state_dict()
        out = [(k.replace(".base_layer", ""), v.detach().clone()) for k, v in state.items() if "lora_" not in k]
    finally:
        model.unmerge_adapter()
    return out
