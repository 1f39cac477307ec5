"""float32 master weights under half-precision compute, and the GPU memory check (issue #10, defect 1).

At lr 1e-6 and weights of ~0.02, an AdamW update (~1e-6 at the first step) lies below bf16's spacing
(~1.2e-4 there) and is lost; float32 masters keep it. The trainer's path (update_policy under autocast
bf16 over float32 weights) must change almost every weight in one step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tests.rl._learn_fixtures import tiny_llama
from worker.rl.training.batch import TrainBatch
from worker.rl.training.build import check_training_memory, make_optimizer, training_memory_bytes
from worker.rl.training.config import (
    AlgorithmConfig,
    EngineConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from worker.rl.training.update import update_policy

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3


def _batch() -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    n, t = 4, 10
    ids = torch.randint(1, 60, (n, t), generator=g)
    mask = torch.zeros(n, t)
    mask[:, 4:] = 1
    zeros = torch.zeros(n, t)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * mask
    return TrainBatch(
        input_ids=ids,
        attention_mask=torch.ones(n, t, dtype=torch.long),
        loss_mask=mask,
        old_logprobs=zeros - 4.0,
        token_rewards=zeros,
        step_rewards=zeros,
        step_mask=zeros,
        group_ids=torch.arange(n),
        rewards=torch.zeros(n),
        advantages=adv,
    )


def _small_weights(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    return model


def test_lr_1e6_step_changes_float32_masters_under_bf16_compute() -> None:
    model = _small_weights(tiny_llama())
    cfg = TrainConfig(
        model=ModelConfig(dtype="float32", compute_dtype="bfloat16"),
        algorithm=AlgorithmConfig(minibatch_size=8, micro_batch_tokens=0, share_prefix=False, drop_flat_rows=False),
        optim=OptimConfig(lr=1e-6, max_grad_norm=0.0, total_steps=1),
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, cfg.optim)
    grads: dict[int, torch.Tensor] = {}
    opt.register_step_pre_hook(lambda o, _a, _k: grads.update({id(q): q.grad.clone() for q in model.parameters()}))
    update_policy(model, _batch(), cfg, opt, Accelerator(cpu=True), 1)
    # AdamW's first step moves a weight by ~lr * g / (|g| + eps): every weight whose gradient is well above
    # eps = 1e-8 must move by ~1e-6, far above float32's spacing at 0.02 (~1.9e-9)
    moved = total = 0
    for name, q in model.named_parameters():
        strong = grads[id(q)].abs() > 1e-6  # same shape as q
        moved += int((q.detach() != before[name])[strong].sum())
        total += int(strong.sum())
    assert total > 2_000
    assert moved == total


def test_bf16_weights_lose_the_same_step() -> None:
    """The defect itself: the same AdamW step over bf16 weights leaves most of them unchanged."""
    model = _small_weights(tiny_llama()).to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # every gradient far above eps: a float32 master would move all of them
    opt.step()
    moved = sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters())
    assert moved / sum(p.numel() for p in model.parameters()) < 0.1


def test_half_precision_training_weights_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"model.dtype=bfloat16 .*model.dtype='float32' .*compute_dtype='bfloat16'"):
        ModelConfig(dtype="bfloat16")
    with pytest.raises(ValueError, match=r"model.dtype=float16 .*compute_dtype='float16'"):
        ModelConfig(dtype="float16")
    ModelConfig(dtype="bfloat16", lora=LoraConfig())  # frozen bf16 base, float32 adapters (peft)
    with pytest.raises(ValueError, match=r"trainable parameter .* is torch.bfloat16: AdamW needs float32 master"):
        make_optimizer(tiny_llama().to(torch.bfloat16), OptimConfig())


def test_gpu_recipe_uses_float32_masters_with_bf16_compute() -> None:
    cfg = load_config(REPO / "configs" / "paper_qwen2.5_3b_grpo.toml")
    assert (cfg.model.dtype, cfg.model.compute_dtype) == ("float32", "bfloat16")
    assert cfg.engine.gpu_memory_utilization <= 0.3


def _recipe_bytes(params: float) -> int:
    # the recipe: full fine-tuning (16 bytes per parameter) plus the bf16 reference model (2 bytes)
    return int(params * 16 + params * 2)


def test_memory_check_fits_an_h200_and_rejects_an_80gb_gpu() -> None:
    cfg = load_config(REPO / "configs" / "paper_qwen2.5_3b_grpo.toml")
    qwen_3b = 3.09e9
    check_training_memory(_recipe_bytes(qwen_3b), int(139.8 * GIB), cfg, "vllm")  # an H200 as torch reports it
    with pytest.raises(ValueError, match=r"80 GB GPUs need FSDP .* or an 8-bit optimizer") as err:
        check_training_memory(_recipe_bytes(qwen_3b), int(79.2 * GIB), cfg, "vllm")  # an 80 GB A100/H100
    assert "141 GB H200" in str(err.value)
    assert "gpu_memory_utilization=0.3" in str(err.value)


def test_training_memory_counts_masters_adamw_and_copies() -> None:
    model = tiny_llama()
    n = sum(p.numel() for p in model.parameters())
    plain = TrainConfig(model=ModelConfig(compute_dtype="float32"), engine=EngineConfig(backend="hf"))
    assert training_memory_bytes(model, plain, "hf") == 16 * n
    with_ref = TrainConfig(
        model=ModelConfig(compute_dtype="bfloat16"), algorithm=AlgorithmConfig(kl_coef=0.01, kl_estimator="k3")
    )
    assert training_memory_bytes(model, with_ref, "hf") == 16 * n + 2 * (2 * n)  # bf16 reference + sampling copy
    assert training_memory_bytes(model, with_ref, "vllm") == 16 * n + 2 * n
