"""PPO with GAE: the value head, one critic update, checkpointing the head, and `train()` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tests.rl._learn_fixtures import (
    answer_is,
    char_tokenizer,
    make_trajectory,
    tiny_components,
    tiny_llama,
)
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.checkpoint import VALUE_HEAD_FILE, load_checkpoint, save_checkpoint
from worker.rl.training.config import (
    AlgorithmConfig,
    EvalConfig,
    LoggingConfig,
    OptimConfig,
    RolloutConfig,
    TrainConfig,
)
from worker.rl.training.critic import (
    ValueHead,
    critic_metrics,
    explained_variance,
    token_values,
    value_head_for,
)
from worker.rl.training.trainer import train
from worker.rl.training.update import _shuffled_rows, attach_value_head, prepare_batch, update_policy
from worker.rl.types import Trajectory

GAE = {"estimator": "gae", "vf_coef": 0.5, "gamma": 1.0, "lam": 1.0}


def _ids_and_mask() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 64, (2, 9), generator=g)  # (B, T)
    attn = torch.ones_like(ids)  # (B, T)
    attn[1, 6:] = 0  # right padding
    ids[1, 6:] = 0
    mask = torch.zeros(ids.shape)  # (B, T)
    mask[0, 3:9] = 1
    mask[1, 2:6] = 1
    return ids, attn, mask


def test_values_are_masked_aligned_and_start_near_zero() -> None:
    model = tiny_llama()
    head = value_head_for(model, seed=1)
    ids, attn, mask = _ids_and_mask()
    with torch.no_grad():
        values = token_values(model, head, ids, attn, mask)
        hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, H)
        solo = token_values(model, head, ids[1:, :6], attn[1:, :6], mask[1:, :6])
    assert values.shape == ids.shape
    assert torch.all(values[mask == 0] == 0)
    assert torch.all(values[mask == 1] != 0)
    # position t reads the state at t-1 (the one that predicts token t), like token_logprobs
    assert torch.allclose(values[0, 3], head(hidden[0, 2]), atol=1e-6)
    assert torch.allclose(values[1, 2:6], solo[0, 2:6], atol=1e-5)  # right padding changes nothing
    assert float(values.abs().max()) < 0.1  # small init: early values do not swamp the returns


def test_value_head_width_follows_the_lm_head_and_validates() -> None:
    assert value_head_for(tiny_llama(hidden=48, tie=True)).proj.in_features == 48
    with pytest.raises(ValueError, match="hidden_size"):
        ValueHead(0)
    with pytest.raises(ValueError, match="init_std"):
        ValueHead(8, init_std=-1.0)
    a, b = ValueHead(8, seed=3), ValueHead(8, seed=3)
    assert torch.equal(a.proj.weight, b.proj.weight)
    assert not torch.equal(a.proj.weight, ValueHead(8, seed=4).proj.weight)


def test_explained_variance_and_critic_metrics() -> None:
    returns = torch.tensor([[0.0, 1.0, 2.0, 9.0]])  # (1, T)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 5.0), returns, mask) == pytest.approx(0.0)
    assert explained_variance(returns, torch.full_like(returns, 1.0 + 1e-9), mask) == 0.0  # undefined: constant
    # residuals (0, 0, 1): Var = 2/9 against Var(returns) = 2/3 -> 1 - 1/3
    values = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(2.0 / 3.0)
    out = critic_metrics(values, returns, mask)
    assert out["critic/value_mean"] == pytest.approx(2.0 / 3.0)
    assert out["critic/return_mean"] == pytest.approx(1.0)


def _config(steps: int = 2, new_tokens: int = 8, **alg: object) -> TrainConfig:
    return TrainConfig(
        rollout=RolloutConfig(prompts_per_step=2, group_size=2, max_turns=1, max_new_tokens_per_turn=new_tokens),
        algorithm=AlgorithmConfig(**{**GAE, "minibatch_size": 2, **alg}),  # type: ignore[arg-type]
        optim=OptimConfig(lr=1e-3, total_steps=steps, warmup_steps=0),
        eval=EvalConfig(num_tasks=0),
        logging=LoggingConfig(save_every_steps=0),
        seed=5,
    )


def _fixed_batch() -> list[Trajectory]:
    return [
        make_trajectory([5, 6, 7], [[8, 9, 10, 11]], group_id="a", reward=1.0),
        make_trajectory([5, 6, 7], [[12, 13, 14]], group_id="a", reward=0.0),
        make_trajectory([7, 6], [[20, 21], [22, 23]], group_id="b", reward=1.0, tool_tokens=[30, 31]),
        make_trajectory([7, 6], [[24, 25, 26]], group_id="b", reward=0.0),
    ]


def _mse(model: torch.nn.Module, head: ValueHead, batch: TrainBatch) -> float:
    with torch.no_grad():
        values = token_values(model, head, batch.input_ids, batch.attention_mask, batch.loss_mask)
    assert batch.returns is not None
    m = batch.loss_mask
    return float((((values - batch.returns) * m) ** 2).sum() / m.sum())


def test_ppo_gae_updates_move_head_and_policy_and_fit_the_returns() -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    comps = tiny_components(tok, model, ScriptedGenerator(tok, lambda p: "x"), answer_is("A"))
    config = _config(value_head_lr=1e-2)
    head = value_head_for(model, seed=config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    attach_value_head(opt, head, config)
    assert opt.param_groups[1]["lr"] == 1e-2
    acc = Accelerator(cpu=True)
    head_before = head.proj.weight.detach().clone()
    body_before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    batch, old_values = prepare_batch(_fixed_batch(), comps, config, "cpu", value_head=head)
    assert old_values is not None
    assert old_values.shape == batch.input_ids.shape
    # gamma = lam = 1: value targets are the Monte-Carlo returns (the episode reward on every sampled token)
    assert batch.returns is not None
    assert torch.allclose(batch.returns, batch.rewards[:, None] * batch.loss_mask)
    mse = [_mse(model, head, batch)]
    losses = []
    for step in range(1, 6):
        batch, old_values = prepare_batch(_fixed_batch(), comps, config, "cpu", value_head=head)
        stats = update_policy(model, batch, config, opt, acc, step, value_head=head, old_values=old_values)
        losses.append(stats.value)
        mse.append(_mse(model, head, batch))
    assert not torch.equal(head.proj.weight, head_before)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, body_before)
    assert losses[0] > 0.0
    assert losses[-1] < 0.5 * losses[0]
    assert mse[-1] < 0.5 * mse[0]


def test_update_refuses_half_a_critic() -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    batch = collate(_fixed_batch())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="old_values"):
        update_policy(model, batch, _config(), opt, Accelerator(cpu=True), 1, value_head=value_head_for(model))


def _reference_minibatches(batch: TrainBatch, size: int, generator: torch.Generator) -> list[TrainBatch]:
    """The minibatch draw the trainer used before the critic refactor: one randperm, cut in order."""
    order = torch.randperm(batch.size, generator=generator)  # (N,)
    return [batch.select(order[start : start + size]) for start in range(0, batch.size, size)]


def test_shuffled_rows_match_the_reference_minibatches() -> None:
    """The update's index draw equals the pre-refactor draw, so GRPO runs are unchanged by the critic refactor."""
    batch = collate(_fixed_batch() + _fixed_batch()[:1])
    ours = [batch.select(r).input_ids for r in _shuffled_rows(batch.size, 2, torch.Generator().manual_seed(9))]
    theirs = [mb.input_ids for mb in _reference_minibatches(batch, 2, torch.Generator().manual_seed(9))]
    assert len(ours) == len(theirs) == 3
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_checkpoint_round_trip_restores_the_value_head(tmp_path: Path) -> None:
    model = tiny_llama()
    head = value_head_for(model, seed=1)
    with torch.no_grad():
        head.proj.bias.fill_(0.7)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    attach_value_head(opt, head, _config())
    ckpt = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, value_head=head)
    assert (ckpt / VALUE_HEAD_FILE).is_file()
    fresh_model, fresh = tiny_llama(seed=2), value_head_for(model, seed=9)
    opt2 = torch.optim.AdamW(fresh_model.parameters(), lr=1e-3)
    attach_value_head(opt2, fresh, _config())
    load_checkpoint(ckpt, model=fresh_model, optimizer=opt2, value_head=fresh)
    assert torch.equal(fresh.proj.weight, head.proj.weight)
    assert float(fresh.proj.bias.detach()) == pytest.approx(0.7)
    plain = save_checkpoint(tmp_path / "plain", 1, model=model)
    with pytest.raises(ValueError, match="without a critic"):
        load_checkpoint(plain, model=fresh_model, value_head=fresh)


def test_config_rules_for_the_critic() -> None:
    assert AlgorithmConfig(**GAE).uses_critic  # type: ignore[arg-type]
    assert not AlgorithmConfig().uses_critic
    with pytest.raises(ValueError, match=r"algorithm\.vf_coef only applies"):
        AlgorithmConfig(vf_coef=0.5)
    with pytest.raises(ValueError, match=r"algorithm\.value_clip"):
        AlgorithmConfig(**GAE, value_clip=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"algorithm\.value_head_lr"):
        AlgorithmConfig(**GAE, value_head_lr=-1.0)  # type: ignore[arg-type]


def test_demo_ppo_config_loads() -> None:
    from worker.rl.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo_ppo.toml")
    assert cfg.algorithm.uses_critic
    assert (cfg.algorithm.gamma, cfg.algorithm.lam) == (1.0, 1.0)
    assert cfg.algorithm.vf_coef > 0


class Alternating:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompt: str) -> str:
        self.calls += 1
        return "<answer>A</answer>" if self.calls % 2 else "<answer>B</answer>"


def test_train_with_gae_runs_end_to_end(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    initial_head = value_head_for(model, seed=5)
    gen = ScriptedGenerator(tok, Alternating(), logprob=-math.log(len(tok)))
    comps = tiny_components(tok, model, gen, answer_is("A"))
    seen: list[dict[str, float]] = []
    result = train(
        _config(2, new_tokens=24, value_head_lr=1e-2),
        run_dir=tmp_path,
        components=comps,
        on_step=lambda s, m, t: seen.append(m),
    )
    assert result.status == "completed"
    assert len(seen) == 2
    for m in seen:
        assert m["loss/value"] > 0.0
        assert math.isfinite(m["critic/explained_variance"])
        assert "critic/value_mean" in m
    assert seen[0]["critic/return_mean"] == pytest.approx(0.5)  # half the episodes answer "A"
    assert abs(seen[1]["critic/value_mean"]) > abs(seen[0]["critic/value_mean"])  # the head learned something
    assert result.last_checkpoint is not None
    saved = load_file(str(result.last_checkpoint / VALUE_HEAD_FILE))
    assert not torch.equal(saved["proj.weight"], initial_head.proj.weight)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "critic/explained_variance" in lines[-1]


def _run(tmp: Path, stop_after: int | None, resume: bool = False) -> list[dict[str, float]]:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=11)
    gen = ScriptedGenerator(tok, Alternating(), logprob=-math.log(len(tok)))  # 4 calls a step: parity survives resume
    comps = tiny_components(tok, model, gen, answer_is("A"))
    out: list[dict[str, float]] = []
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return stop_after is not None and calls["n"] >= stop_after

    config = _config(3, new_tokens=24, value_head_lr=1e-2)
    train(
        config,
        run_dir=tmp,
        components=comps,
        on_step=lambda s, m, t: out.append(m),
        should_stop=stop,
        resume_from=tmp if resume else None,
    )
    return out


def test_gae_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    full = _run(tmp_path / "full", None)
    first = _run(tmp_path / "split", 2)
    rest = _run(tmp_path / "split", None, resume=True)
    assert (len(first), len(rest)) == (2, 1)

    def strip(m: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in m.items() if not k.startswith("perf/")}

    assert strip(full[2]) == strip(rest[0])
    assert full[2]["loss/value"] > 0.0
    assert full[2]["critic/value_mean"] != 0.0
