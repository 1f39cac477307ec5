"""Length-sorted micro-batches: the accumulated update equals one pass over the whole minibatch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from accelerate import Accelerator

from tests.rl._learn_fixtures import char_tokenizer, make_trajectory, tiny_components, tiny_llama
from worker.rl.algorithms.losses import clipped_policy_loss
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rewards.rubric import RewardTerm, Rubric
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.config import AlgorithmConfig, ModelConfig, OptimConfig, TrainConfig
from worker.rl.training.logprobs import token_logprobs
from worker.rl.training.update import _shuffled_rows, micro_batches, prepare_batch, update_policy

FP32 = ModelConfig(compute_dtype="float32")
LENGTHS = (5, 12, 3, 12, 7)


def _ragged_batch(seed: int = 0) -> TrainBatch:
    """Right-padded rows of LENGTHS tokens (T = 14, two all-pad columns), the last half of each row sampled."""
    g = torch.Generator().manual_seed(seed)
    n, t = len(LENGTHS), max(LENGTHS) + 2
    ids = torch.randint(1, 60, (n, t), generator=g)
    attention = torch.zeros(n, t, dtype=torch.long)
    mask = torch.zeros(n, t)
    for i, length in enumerate(LENGTHS):
        attention[i, :length] = 1
        mask[i, length // 2 : length] = 1
        ids[i, length:] = 0
    adv = torch.randn(n, 1, generator=g).expand(n, t) * mask
    zeros = torch.zeros(n, t)
    return TrainBatch(
        input_ids=ids,
        attention_mask=attention,
        loss_mask=mask,
        old_logprobs=zeros,
        token_rewards=zeros,
        step_rewards=zeros,
        step_mask=zeros,
        group_ids=torch.arange(n),
        rewards=torch.zeros(n),
        advantages=adv,
    )


def test_rows_are_packed_longest_first_within_the_budget() -> None:
    batch = _ragged_batch()
    # sorted by length: rows 1, 3 (12), 4 (7), 0 (5), 2 (3); 12 x 2 = 24 fits, 12 x 3 does not; 7 x 3 = 21 fits
    assert [g.tolist() for g in micro_batches(batch, 24)] == [[1, 3], [4, 0, 2]]
    assert [g.tolist() for g in micro_batches(batch, 1)] == [[1], [3], [4], [0], [2]]  # a long row still gets a pass
    assert [g.tolist() for g in micro_batches(batch, 0)] == [[0, 1, 2, 3, 4]]


def test_trimmed_cuts_only_the_all_padding_columns() -> None:
    batch = _ragged_batch()
    cut = batch.select(torch.tensor([0, 2])).trimmed()
    assert cut.input_ids.shape == (2, 5)
    assert cut.loss_mask.sum() == batch.loss_mask[[0, 2]].sum()
    assert cut.group_ids.tolist() == [0, 2]
    assert batch.trimmed().input_ids.shape == (5, 12)


def _update(batch: TrainBatch, budget: int, agg: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    model = tiny_llama()
    with torch.no_grad():  # old log-probs a little off the current policy, so ratios differ from 1 and some clip
        lp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    noise = 0.3 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    batch = batch.with_(old_logprobs=(lp + noise) * batch.loss_mask)
    cfg = TrainConfig(
        model=FP32,  # the two summation orders agree to 1e-6 only in full precision
        algorithm=AlgorithmConfig(
            minibatch_size=8, micro_batch_tokens=budget, loss_agg=agg, entropy_coef=0.01, clip_low=0.1, clip_high=0.1
        ),
        optim=OptimConfig(total_steps=1, max_grad_norm=0.0),
    )
    stats = update_policy(model, batch, cfg, torch.optim.SGD(model.parameters(), lr=1.0), Accelerator(cpu=True), 1)
    return {k: v.clone() for k, v in model.state_dict().items()}, stats.metrics()


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("budget", [1, 24])
def test_accumulated_update_equals_one_pass(agg: str, budget: int) -> None:
    batch = _ragged_batch()
    whole, whole_stats = _update(batch, 0, agg)
    split, split_stats = _update(batch, budget, agg)
    untouched = tiny_llama().state_dict()
    assert not all(torch.allclose(whole[k], untouched[k]) for k in whole)  # the update did move the weights
    for key in whole:
        assert torch.allclose(whole[key], split[key], atol=1e-6), key
    assert whole_stats["loss/clip_frac"] > 0
    for key in ("loss/policy", "loss/entropy", "loss/clip_frac", "loss/approx_kl", "loss/total"):
        assert split_stats[key] == pytest.approx(whole_stats[key], rel=1e-5, abs=1e-7), key


def test_reference_logprobs_in_micro_batches_match_one_pass() -> None:
    tokenizer = char_tokenizer()
    rubric = Rubric([RewardTerm("zero", lambda _traj, _task: 0.0, 1.0)])
    comps = tiny_components(tokenizer, tiny_llama(), ScriptedGenerator(tokenizer, lambda _p: "x"), rubric)
    comps = dataclasses.replace(comps, ref_model=tiny_llama(seed=5))
    trajectories = [
        make_trajectory(list(range(1, 1 + p)), [list(range(10, 10 + r))], group_id=f"g{i % 2}")
        for i, (p, r) in enumerate([(4, 3), (9, 6), (2, 1), (7, 7)])
    ]
    out = {}
    for budget in (0, 1):
        cfg = TrainConfig(algorithm=AlgorithmConfig(kl_coef=0.1, micro_batch_tokens=budget))
        prepared, _ = prepare_batch(trajectories, comps, cfg, "cpu")
        out[budget] = prepared.ref_logprobs
    assert out[0] is not None
    assert out[1] is not None
    assert out[0].abs().sum() > 0
    assert torch.allclose(out[0], out[1], atol=1e-6)


def _grouped_batch() -> TrainBatch:
    """4 groups x 3 members sharing their group's prompt, 1-2 assistant turns with tool tokens (mask 0) between."""
    rng = torch.Generator().manual_seed(3)
    trajs = []
    for g in range(4):
        prompt = torch.randint(1, 60, (3 + g,), generator=rng).tolist()
        for m in range(3):
            turns = [torch.randint(1, 60, (2 + (m + g) % 3,), generator=rng).tolist() for _ in range(1 + m % 2)]
            trajs.append(make_trajectory(prompt, turns, group_id=f"g{g}", tool_tokens=[61, 62]))
    batch = collate(trajs)
    adv = torch.randn(batch.size, 1, generator=rng) * batch.loss_mask  # (N, T)
    return batch.with_(advantages=adv)


def _reference_update(batch: TrainBatch, cfg: TrainConfig, lr: float) -> dict[str, torch.Tensor]:
    """The algorithm written out: the same group-major minibatches, one padded pass each, SGD, for every epoch."""
    model = tiny_llama()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    alg = cfg.algorithm
    shuffle = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
    for _ in range(alg.ppo_epochs):
        for rows in _shuffled_rows(batch.size, alg.minibatch_size, shuffle, batch.group_ids):
            mb = batch.select(rows)
            lp, _ = token_logprobs(model, mb.input_ids, mb.attention_mask, mb.loss_mask)  # (B, T)
            assert mb.advantages is not None
            loss, _ = clipped_policy_loss(
                lp,
                mb.old_logprobs,
                mb.advantages,
                mb.loss_mask,
                clip_low=alg.clip_low,
                clip_high=alg.clip_high,
                dual_clip_c=alg.dual_clip_c,
                agg=alg.loss_agg_mode,
                norm_tokens=cfg.norm_tokens,
            )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("agg", "budget"),
    [
        ("token-mean", 0),
        ("token-mean", 20),
        ("seq-mean-token-mean", 20),
        ("seq-mean-token-sum", 20),
        ("seq-mean-token-sum-norm", 20),
    ],
)
def test_packed_micro_batched_epochs_equal_the_written_out_algorithm(agg: str, budget: int) -> None:
    """Several minibatches, two epochs, multi-member groups through the packed (shared-prefix) path."""
    batch = _grouped_batch()
    with torch.no_grad():
        lp, _ = token_logprobs(tiny_llama(), batch.input_ids, batch.attention_mask, batch.loss_mask)
    noise = 0.4 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    batch = batch.with_(old_logprobs=(lp + noise) * batch.loss_mask)
    cfg = TrainConfig(
        model=FP32,
        algorithm=AlgorithmConfig(
            minibatch_size=6,
            ppo_epochs=2,
            micro_batch_tokens=budget,
            share_prefix=True,
            loss_agg=agg,
            clip_low=0.1,
            clip_high=0.1,
            loss_norm_tokens=24,
        ),
        optim=OptimConfig(total_steps=1, max_grad_norm=0.0),
    )
    lr = 20.0 if agg in ("seq-mean-token-sum", "seq-mean-token-sum-norm") else 2.0
    model = tiny_llama()
    stats = update_policy(model, batch, cfg, torch.optim.SGD(model.parameters(), lr=lr), Accelerator(cpu=True), 1)
    assert stats.updates == 4  # 2 minibatches of 2 groups, 2 epochs
    assert len(micro_batches(batch.select(torch.arange(6)), budget, share_prefix=True)) > (1 if budget else 0)
    ref = _reference_update(batch, cfg, lr)
    untouched = tiny_llama().state_dict()
    assert not all(torch.allclose(ref[k], untouched[k], atol=1e-4) for k in ref)
    for key, value in model.state_dict().items():  # the updates agree to float32 summation-order noise
        step, ref_step = value - untouched[key], ref[key] - untouched[key]
        assert (step - ref_step).abs().max() <= 1e-4 * ref_step.abs().max() + 1e-7, key
