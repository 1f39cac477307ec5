"""CUDA checks of the training path (marker `gpu`; skipped without a CUDA device), issue #10.

Needs only torch, transformers, peft, accelerate and pytest (what a lent GPU machine has) plus this repo;
the models are tiny random Llamas built in-process. Run with `make test-gpu`, or where nothing can be
installed `PY=python3 make test-gpu-here`. Covered: bf16 compute over float32 master weights (an lr-1e-6
AdamW step moves every weight with a real gradient), shared-prefix packing equal to the padded pass, and
a 3-step GRPO run with the HF engine.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tests.rl._learn_fixtures import char_tokenizer, make_trajectory, parity_rubric, tiny_llama
from worker.rl.envs.base import EnvConfig
from worker.rl.envs.calculator import CalculatorEnv
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.hf import HFGenerator
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.build import TrainComponents, make_optimizer
from worker.rl.training.config import (
    AlgorithmConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    TrainConfig,
)
from worker.rl.training.logprobs import token_logprobs
from worker.rl.training.trainer import train
from worker.rl.training.update import update_policy
from worker.rl.types import Task

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = "cuda"


def _grouped_batch(device: str) -> TrainBatch:
    """3 groups x 3 members sharing their group's prompt, tool tokens (mask 0) between two turns."""
    rng = torch.Generator().manual_seed(3)
    trajs = []
    for g in range(3):
        prompt = torch.randint(1, 60, (4 + g,), generator=rng).tolist()
        for m in range(3):
            turns = [torch.randint(1, 60, (2 + (m + g) % 3,), generator=rng).tolist() for _ in range(1 + m % 2)]
            trajs.append(make_trajectory(prompt, turns, group_id=f"g{g}", tool_tokens=[61, 62]))
    batch = collate(trajs)
    adv = torch.randn(batch.size, 1, generator=rng) * batch.loss_mask  # (N, T)
    return batch.with_(advantages=adv).to(device)


def _small_weights(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    return model


def test_bf16_compute_over_float32_masters_keeps_lr_1e6_updates() -> None:
    model = _small_weights(tiny_llama()).to(CUDA)
    batch = _grouped_batch(CUDA)
    cfg = TrainConfig(
        model=ModelConfig(dtype="float32", compute_dtype="bfloat16", device=CUDA),
        algorithm=AlgorithmConfig(minibatch_size=16, micro_batch_tokens=24, drop_flat_rows=False),
        optim=OptimConfig(lr=1e-6, max_grad_norm=0.0, total_steps=1),
    )
    seen: set[torch.dtype] = set()
    hook = model.lm_head.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, cfg.optim)
    grads: dict[int, torch.Tensor] = {}
    opt.register_step_pre_hook(lambda o, _a, _k: grads.update({id(q): q.grad.clone() for q in model.parameters()}))
    update_policy(model, batch, cfg, opt, Accelerator(), 1)
    hook.remove()
    assert seen == {torch.bfloat16}  # the passes ran in bf16 ...
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # ... over float32 masters
    moved = total = 0
    for name, q in model.named_parameters():
        strong = grads[id(q)].abs() > 1e-6
        moved += int((q.detach() != before[name])[strong].sum())
        total += int(strong.sum())
    assert total > 1_000
    assert moved == total


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_packed_logprobs_equal_the_padded_pass_on_cuda(dtype: torch.dtype, atol: float) -> None:
    model = tiny_llama().to(CUDA).eval()
    batch = _grouped_batch(CUDA)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        padded, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)  # (N, T)
        packed, _ = token_logprobs(
            model, batch.input_ids, batch.attention_mask, batch.loss_mask, group_ids=batch.group_ids
        )  # (N, T)
    assert padded.abs().sum() > 0
    assert torch.allclose(padded.float(), packed.float(), atol=atol)


def test_packed_micro_batched_update_equals_the_padded_update_on_cuda() -> None:
    batch = _grouped_batch(CUDA)
    with torch.no_grad():
        lp, _ = token_logprobs(tiny_llama().to(CUDA), batch.input_ids, batch.attention_mask, batch.loss_mask)
    noise = 0.4 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(1)).to(CUDA)
    batch = batch.with_(old_logprobs=(lp + noise) * batch.loss_mask)
    out = {}
    for share, budget in ((False, 0), (True, 20)):
        cfg = TrainConfig(
            model=ModelConfig(compute_dtype="float32", device=CUDA),
            algorithm=AlgorithmConfig(minibatch_size=16, micro_batch_tokens=budget, share_prefix=share, clip_low=0.1),
            optim=OptimConfig(total_steps=1, max_grad_norm=0.0),
        )
        model = tiny_llama().to(CUDA)
        update_policy(model, batch, cfg, torch.optim.SGD(model.parameters(), lr=2.0), Accelerator(), 1)
        out[share] = {k: v.clone() for k, v in model.state_dict().items()}
    init = tiny_llama().state_dict()
    for key, padded in out[False].items():
        step, packed_step = padded.cpu() - init[key], out[True][key].cpu() - init[key]
        assert (step - packed_step).abs().max() <= 1e-3 * step.abs().max() + 1e-6, key
    assert any(out[False][k].cpu().ne(init[k]).any() for k in init)


def test_three_grpo_steps_with_the_hf_engine_on_cuda(tmp_path: Path) -> None:
    tokenizer = char_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer)).to(CUDA)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tasks = [Task(id=f"t{i}", question=f"What is {i}+{i}?", answers=(str(2 * i),)) for i in range(4)]
    env_cfg = EnvConfig(max_turns=1, system_prompt="Answer in <answer></answer>.")
    comps = TrainComponents(
        model=model,
        tokenizer=tokenizer,
        generator=HFGenerator(model, tokenizer),
        chat=ChatFormat(tokenizer),
        env_factory=lambda: CalculatorEnv(config=env_cfg, rubric=parity_rubric()),
        train_tasks=tasks,
        eval_tasks=[],
    )
    cfg = TrainConfig(
        model=ModelConfig(dtype="float32", compute_dtype="bfloat16", device=CUDA),
        rollout=RolloutConfig(prompts_per_step=2, group_size=4, max_turns=1, max_new_tokens_per_turn=12),
        algorithm=AlgorithmConfig(estimator="grpo", minibatch_size=4, kl_coef=0.0),
        optim=OptimConfig(lr=1e-3, total_steps=3),
        eval=EvalConfig(num_tasks=0, at_start=False),
        logging=LoggingConfig(output_dir=str(tmp_path), save_trajectories=False),
        seed=1,
    )
    steps: list[dict[str, float]] = []
    result = train(cfg, run_dir=tmp_path, components=comps, on_step=lambda s, m, t: steps.append(m))
    assert (result.status, result.steps_done) == ("completed", 3)
    assert len(steps) == 3
    assert all(math.isfinite(m["loss/total"]) for m in steps)
    assert any(m["train/optimizer_steps"] > 0 for m in steps)  # the parity reward varies, so groups carry signal
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
