"""The training loop on a tiny random Llama: learning signal, artifacts, KL, cancel and exact resume."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tests.rl._learn_fixtures import answer_is, char_tokenizer, parity_rubric, tiny_components, tiny_llama
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rewards.rubric import RewardTerm, Rubric
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.config import (
    AlgorithmConfig,
    EvalConfig,
    LoggingConfig,
    OptimConfig,
    RolloutConfig,
    TrainConfig,
)
from worker.rl.training.logprobs import token_logprobs
from worker.rl.training.trainer import train
from worker.rl.training.update import informative_rows, update_policy
from worker.rl.types import Trajectory


def _config(steps: int, *, light: bool = False, **alg: object) -> TrainConfig:
    """`light`: one prompt, one turn, no evaluation (the HF-engine tests, where sampling dominates)."""
    return TrainConfig(
        rollout=RolloutConfig(
            prompts_per_step=1 if light else 2,
            group_size=4,
            max_turns=1 if light else 2,
            max_new_tokens_per_turn=8 if light else 24,
            max_total_tokens=1000,
        ),
        algorithm=AlgorithmConfig(minibatch_size=4, clip_high=0.28, **alg),  # type: ignore[arg-type]
        optim=OptimConfig(lr=1e-2, total_steps=steps, warmup_steps=0),
        eval=EvalConfig(num_tasks=0 if light else 2, every_steps=0),
        logging=LoggingConfig(save_every_steps=0, keep_last_checkpoints=2),
        seed=3,
    )


class Alternating:
    """Scripted replies that alternate a rewarded and an unrewarded answer."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompt: str) -> str:
        self.calls += 1
        return "<answer>A</answer>" if self.calls % 2 else "<answer>B</answer>"


def _seq_logprob(model: torch.nn.Module, traj: Trajectory) -> float:
    b = collate([traj])
    with torch.no_grad():
        lp, _ = token_logprobs(model, b.input_ids, b.attention_mask, b.loss_mask)
    return float(lp.sum())


def test_policy_moves_toward_rewarded_answer(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    initial = copy.deepcopy(model)
    gen = ScriptedGenerator(tok, Alternating(), logprob=-math.log(len(tok)))
    comps = tiny_components(tok, model, gen, answer_is("A"))
    seen: list[tuple[int, dict[str, float], list[Trajectory]]] = []
    result = train(_config(4), run_dir=tmp_path, components=comps, on_step=lambda s, m, t: seen.append((s, m, t)))
    assert result.status == "completed"
    assert result.steps_done == 4
    trajs = seen[0][2]
    good = next(t for t in trajs if t.final_answer == "A")
    bad = next(t for t in trajs if t.final_answer == "B")
    before = _seq_logprob(initial, good) - _seq_logprob(initial, bad)
    after = _seq_logprob(model, good) - _seq_logprob(model, bad)
    assert after > before + 1.0
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert seen[0][1]["reward/mean"] == pytest.approx(0.5)
    assert seen[0][1]["rollout/zero_std_group_frac"] == 0.0
    # artifacts: metrics (eval at start and end), trajectories, resolved config, a final checkpoint
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2, 3, 4]
    assert "eval/answer" in lines[0]
    assert "eval/answer" in lines[-1]
    assert "eval/answer" not in lines[1]
    assert (tmp_path / "trajectories" / "step_00004.jsonl").is_file()
    assert json.loads((tmp_path / "config.resolved.json").read_text())["seed"] == 3
    assert result.last_checkpoint is not None
    assert result.last_checkpoint.name == "step_00004"


def test_kl_is_zero_on_the_first_update_and_positive_later(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    comps = tiny_components(tok, model, HFGenerator(model, tok), parity_rubric())
    comps.ref_model = copy.deepcopy(model).requires_grad_(False)
    cfg = _config(2, light=True, kl_coef=0.1, kl_estimator="k3")
    metrics: list[dict[str, float]] = []
    train(cfg, run_dir=tmp_path, components=comps, on_step=lambda s, m, t: metrics.append(m))
    assert metrics[0]["loss/kl"] == 0.0
    assert metrics[1]["loss/kl"] > 0.0


def test_should_stop_checkpoints_and_cancels(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    comps = tiny_components(tok, model, HFGenerator(model, tok), parity_rubric())
    result = train(_config(5, light=True), run_dir=tmp_path, components=comps, should_stop=lambda: True)
    assert result.status == "cancelled"
    assert result.steps_done == 1
    assert result.last_checkpoint is not None
    assert result.last_checkpoint.name == "step_00001"


def _run(tmp: Path, steps_stop: int | None, resume: bool = False) -> list[dict[str, float]]:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=11)
    comps = tiny_components(tok, model, HFGenerator(model, tok), parity_rubric())
    out: list[dict[str, float]] = []
    done = {"n": 0}

    def stop() -> bool:
        done["n"] += 1
        return steps_stop is not None and done["n"] >= steps_stop

    train(
        _config(3, light=True),
        run_dir=tmp,
        components=comps,
        on_step=lambda s, m, t: out.append({"step": s, **m}),
        should_stop=stop,
        resume_from=tmp if resume else None,
    )
    return out


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    full = _run(tmp_path / "full", None)
    first = _run(tmp_path / "split", 2)
    rest = _run(tmp_path / "split", None, resume=True)
    assert [m["step"] for m in first] == [1, 2]
    assert [m["step"] for m in rest] == [3]

    def strip(m: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in m.items() if not k.startswith("perf/")}

    assert strip(full[2]) == strip(rest[0])
    assert full[2]["loss/grad_norm"] > 0.0
    assert full[2]["reward/std"] > 0.0


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path: Path) -> None:
    from worker.rl.training.config import load_config, override

    config = override(load_config(Path("configs/quickstart.toml")), ["model.gradient_checkpointing=true"])
    assert config.model.gradient_checkpointing is True
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tiny_llama()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        ids = torch.randint(3, 40, (2, 12))  # (B, T)
        mask = torch.zeros_like(ids)
        mask[:, 6:] = 1  # (B, T)
        lp, _ = token_logprobs(model, ids, torch.ones_like(ids), mask)
        lp.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_a_step_without_learning_signal_leaves_the_weights_alone(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    constant = Rubric([RewardTerm("constant", lambda trajectory, task: 1.0, 1.0)])  # every group has zero variance
    comps = tiny_components(tok, model, HFGenerator(model, tok), constant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _config(1, light=True)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, weight_decay=0.1))  # decay alone would move
    result = train(cfg, run_dir=tmp_path, components=comps)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.final_metrics["train/optimizer_steps"] == 0
    assert result.final_metrics["train/rows_updated_frac"] == 0


def _hand_batch(advantages: list[list[float]]) -> TrainBatch:
    """Rows of 6 tokens, the last 3 sampled; old log-probs equal the current policy's (ratio 1)."""
    n, t = len(advantages), 6
    ids = torch.arange(n * t).reshape(n, t) % 50 + 1
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]] * n)
    zeros = torch.zeros(n, t)
    adv = torch.tensor([[0.0, 0.0, 0.0, *row] for row in advantages])
    return TrainBatch(
        input_ids=ids,
        attention_mask=torch.ones(n, t, dtype=torch.long),
        loss_mask=mask,
        old_logprobs=zeros,
        token_rewards=zeros,
        step_rewards=torch.zeros(n, 1),
        step_mask=torch.zeros(n, 1),
        group_ids=torch.arange(n),
        rewards=torch.zeros(n),
        advantages=adv,
    )


def _update_once(batch: TrainBatch, *, drop: bool) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    model = tiny_llama()
    with torch.no_grad():
        lp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    batch = batch.with_(old_logprobs=lp)
    cfg = dataclasses.replace(
        _config(1),
        algorithm=AlgorithmConfig(minibatch_size=8, drop_flat_rows=drop),
        optim=OptimConfig(total_steps=1, max_grad_norm=0.0),  # clipping would hide the 2x gradient scale
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = update_policy(model, batch, cfg, opt, Accelerator(cpu=True), step=1)
    return {k: v.clone() for k, v in model.state_dict().items()}, stats.metrics()


def test_flat_rows_are_left_out_of_the_update() -> None:
    mixed = _hand_batch([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
    assert informative_rows(mixed).tolist() == [0, 2]
    dropped, stats = _update_once(mixed, drop=True)
    assert stats["train/rows_updated_frac"] == 0.5
    # the same as updating on the two informative rows alone: token-mean over their 6 tokens, not all 12
    alone, _ = _update_once(mixed.select(torch.tensor([0, 2])), drop=False)
    kept, kept_stats = _update_once(mixed, drop=False)
    assert kept_stats["train/rows_updated_frac"] == 1.0
    assert all(torch.allclose(dropped[k], alone[k], atol=1e-6) for k in dropped)
    assert not all(torch.allclose(dropped[k], kept[k], atol=1e-6) for k in dropped)


def test_flat_rows_stay_when_another_loss_term_needs_them() -> None:
    mixed = _hand_batch([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    model = tiny_llama()
    cfg = dataclasses.replace(_config(1), algorithm=AlgorithmConfig(minibatch_size=8, entropy_coef=0.01))
    with torch.no_grad():
        lp, _ = token_logprobs(model, mixed.input_ids, mixed.attention_mask, mixed.loss_mask)
    stats = update_policy(
        model,
        mixed.with_(old_logprobs=lp),
        cfg,
        torch.optim.SGD(model.parameters(), lr=0.1),
        Accelerator(cpu=True),
        step=1,
    )
    assert stats.metrics()["train/rows_updated_frac"] == 1.0
