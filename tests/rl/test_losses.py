"""Clipped policy loss, KL estimators, aggregation and value loss on hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from worker.rl.algorithms.losses import aggregate, clipped_policy_loss, clipped_value_loss, kl_penalty

MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
VALUES = torch.tensor([[1.0, 3.0, 100.0], [5.0, 100.0, 100.0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("token-mean", 3.0), ("seq-mean-token-mean", (2.0 + 5.0) / 2), ("seq-mean-token-sum", (4.0 + 5.0) / 2)],
)
def test_aggregate_modes(mode: str, expected: float) -> None:
    assert aggregate(VALUES, MASK, mode).item() == pytest.approx(expected)


def test_aggregate_ignores_empty_rows_and_rejects_unknown_mode() -> None:
    mask = torch.cat([MASK, torch.zeros(1, 3)])
    values = torch.cat([VALUES, torch.full((1, 3), 9.0)])
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(VALUES, MASK, "sum")


def test_clipped_policy_loss_by_hand() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.ones(1, 3)
    loss, stats = clipped_policy_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.3)
    # token 0: ratio 1.5, A=1 -> min(1.5, 1.3) -> loss -1.3 (clipped)
    # token 1: ratio 0.5, A=-1 -> max(0.5, 0.8) -> loss 0.8 (clipped)
    # token 2: ratio 1.1, A=2 -> loss -2.2 (not clipped)
    assert loss.item() == pytest.approx((-1.3 + 0.8 - 2.2) / 3, abs=1e-6)
    assert stats.clip_fraction == pytest.approx(2 / 3)
    assert stats.ratio_mean == pytest.approx((1.5 + 0.5 + 1.1) / 3, abs=1e-6)
    k3 = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert stats.approx_kl == pytest.approx(k3, abs=1e-6)


def test_clipped_policy_loss_gradient_zero_when_clipped() -> None:
    new = torch.log(torch.tensor([[1.5]])).requires_grad_(True)
    loss, _ = clipped_policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    loss.backward()
    assert new.grad is not None
    assert new.grad.item() == 0.0


def test_kl_estimators_by_hand_and_zero_at_reference() -> None:
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    # d = ref - lp = [-0.5, 1.0]
    assert kl_penalty(lp, ref, "k1")[0].tolist() == pytest.approx([0.5, -1.0])
    assert kl_penalty(lp, ref, "k2")[0].tolist() == pytest.approx([0.125, 0.5])
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert kl_penalty(lp, ref, "k3")[0].tolist() == pytest.approx(k3, abs=1e-6)
    for kind in ("k1", "k2", "k3"):
        assert torch.all(kl_penalty(lp, lp.clone(), kind) == 0)
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(lp, ref, "k9")


def test_clipped_value_loss_by_hand() -> None:
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss = clipped_value_loss(values, old, returns, torch.ones(1, 2), clip_range=0.2)
    # token 0: v=1 -> (1-2)^2 = 1; clipped v=0.7 -> 1.69; max 1.69. token 1: 1
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2)
