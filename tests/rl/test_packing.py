"""Shared-prefix packing: the same hidden states, log-probs and update as one padded pass, on fewer tokens."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from tests.rl._learn_fixtures import tiny_llama
from worker.rl.training.batch import TrainBatch
from worker.rl.training.config import AlgorithmConfig, ModelConfig, OptimConfig, TrainConfig
from worker.rl.training.logprobs import hidden_states, token_logprobs
from worker.rl.training.packing import ATTENTION_NAME, common_prefix_length, pack_rows, packed_length
from worker.rl.training.update import _shuffled_rows, micro_batches, update_policy

FP32 = ModelConfig(compute_dtype="float32")
PROMPT_A = [5, 6, 7, 8, 9, 10]
PROMPT_B = [5, 6, 11, 12]
ROWS = (  # (group, ids): group 0 shares PROMPT_A (one row is the prompt alone), group 1 PROMPT_B, group 2 alone
    (0, [*PROMPT_A, 20, 21, 22]),
    (1, [*PROMPT_B, 30, 31, 32, 33, 34]),
    (0, [*PROMPT_A, 23, 24]),
    (2, [5, 40, 41]),
    (0, list(PROMPT_A)),
    (1, [*PROMPT_B, 35]),
)


def _batch() -> TrainBatch:
    n, t = len(ROWS), max(len(ids) for _, ids in ROWS) + 1
    input_ids = torch.zeros(n, t, dtype=torch.long)
    attention = torch.zeros(n, t, dtype=torch.long)
    mask = torch.zeros(n, t)
    for i, (_, ids) in enumerate(ROWS):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        mask[i, 3 : len(ids)] = 1  # some sampled tokens inside the shared prompts too
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(n, 1, generator=g).expand(n, t) * mask
    zeros = torch.zeros(n, t)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention,
        loss_mask=mask,
        old_logprobs=zeros,
        token_rewards=zeros,
        step_rewards=zeros,
        step_mask=zeros,
        group_ids=torch.tensor([g for g, _ in ROWS]),
        rewards=torch.zeros(n),
        advantages=adv,
    )


def test_common_prefix_and_packed_length() -> None:
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [3]]) == 0
    assert common_prefix_length([[7, 8]]) == 2
    assert packed_length([[1, 2, 3], [1, 2, 4, 5]]) == 2 + 1 + 2


def test_packed_layout_shares_each_group_prompt_once() -> None:
    batch = _batch()
    packed = pack_rows(batch.input_ids, batch.attention_mask, batch.group_ids)
    # group 0: 6 shared + 3 + 2 + 0; group 1: 4 shared + 5 + 1; group 2: its 3 tokens
    assert packed.length == (6 + 3 + 2) + (4 + 5 + 1) + 3
    for i, (_, ids) in enumerate(ROWS):  # every row's tokens are where the index says, in order
        assert packed.input_ids[0, packed.index[i, : len(ids)]].tolist() == ids
        assert packed.position_ids[0, packed.index[i, : len(ids)]].tolist() == list(range(len(ids)))
    assert [c.prefix for c in packed.layout] == [(0, 6), (11, 4), (21, 3)]
    assert packed.layout[0].suffixes == ((6, 3), (9, 2), (11, 0))
    assert packed.layout[2].suffixes == ((24, 0),)


def _hidden_both_ways(model: torch.nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        padded = hidden_states(model, batch.input_ids, batch.attention_mask)  # (B, T, H)
        packed = hidden_states(model, batch.input_ids, batch.attention_mask, batch.group_ids)  # (B, T, H)
    return padded, packed


def test_packed_hidden_states_and_logprobs_equal_the_padded_pass() -> None:
    model, batch = tiny_llama(), _batch()
    padded, packed = _hidden_both_ways(model, batch)
    real = batch.attention_mask.bool()
    assert torch.allclose(padded[real], packed[real], atol=1e-5)
    lp_padded, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    lp_packed, _ = token_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.loss_mask, group_ids=batch.group_ids
    )
    assert torch.allclose(lp_padded, lp_packed, atol=1e-5)
    # the decoder now routes attention through the packed path; ordinary padded passes are unchanged
    assert model.config._attn_implementation == ATTENTION_NAME
    again, _ = _hidden_both_ways(model, batch)
    assert torch.allclose(padded[real], again[real], atol=1e-6)


def test_eager_attention_takes_padded_rows() -> None:
    model, batch = tiny_llama(), _batch()
    model.config._attn_implementation = "eager"
    padded, packed = _hidden_both_ways(model, batch)
    assert model.config._attn_implementation == "eager"
    assert torch.equal(padded, packed)


def test_groups_stay_together_in_packed_micro_batches() -> None:
    batch = _batch()
    # groups in order of their longest row: group 0 packs to 11 tokens, group 1 to 10 (no room beside group 0
    # under 14), then group 2's 3 tokens fit beside group 1
    micro = [sorted(m.tolist()) for m in micro_batches(batch, 14, share_prefix=True)]
    assert micro == [[0, 2, 4], [1, 3, 5]]
    for m in micro:
        rows = [ROWS[i][1] for i in m]
        groups = {ROWS[i][0] for i in m}
        cost = sum(packed_length([r for i, r in zip(m, rows, strict=True) if ROWS[i][0] == g]) for g in groups)
        assert cost <= 14 or len(m) == 1


def _update(share: bool, budget: int) -> dict[str, torch.Tensor]:
    batch = _batch()
    model = tiny_llama()
    with torch.no_grad():
        lp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    noise = 0.3 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    batch = batch.with_(old_logprobs=(lp + noise) * batch.loss_mask)
    cfg = TrainConfig(
        model=FP32,  # the two summation orders agree to 1e-6 only in full precision
        algorithm=AlgorithmConfig(
            minibatch_size=8, micro_batch_tokens=budget, share_prefix=share, entropy_coef=0.01, clip_low=0.1
        ),
        optim=OptimConfig(total_steps=1, max_grad_norm=0.0),
    )
    update_policy(model, batch, cfg, torch.optim.SGD(model.parameters(), lr=1.0), Accelerator(cpu=True), 1)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("budget", [0, 14])
def test_update_with_shared_prefixes_equals_the_padded_update(budget: int) -> None:
    padded = _update(share=False, budget=0)
    shared = _update(share=True, budget=budget)
    untouched = tiny_llama().state_dict()
    assert not all(torch.allclose(padded[k], untouched[k]) for k in padded)
    for key in padded:
        assert torch.allclose(padded[key], shared[key], atol=1e-5), key


def test_minibatches_hold_whole_groups_when_prefixes_are_shared() -> None:
    groups = torch.tensor([0, 1, 2, 3] * 4)  # 4 groups of 4, members interleaved as a rollout returns them
    minibatches = list(_shuffled_rows(16, 4, torch.Generator().manual_seed(5), groups))
    assert sorted(torch.cat(minibatches).tolist()) == list(range(16))
    assert all(len(set(groups[rows].tolist())) == 1 for rows in minibatches)
    mixed = list(_shuffled_rows(16, 4, torch.Generator().manual_seed(5)))
    assert any(len(set(groups[rows].tolist())) > 1 for rows in mixed)  # row-shuffled without groups
