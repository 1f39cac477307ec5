"""Loss terms against independent references (issue #10, defects 4, 5, 6, 8).

KL estimators: exact expected gradients over a small categorical (every outcome enumerated, weighted by
the detached policy probability, i.e. the expectation of a sampled on-policy loss). The PPO dual clip
against a per-token loop of verl's formula; the loss aggregations against TRL's GRPOTrainer formulas.
"""

from __future__ import annotations

import pytest
import torch

from worker.rl.algorithms.losses import aggregate, aggregate_weight, clipped_policy_loss, kl_penalty
from worker.rl.training.config import AlgorithmConfig, RolloutConfig, TrainConfig

V = 6


def _categorical(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(V, generator=g, dtype=torch.float64).requires_grad_(True)  # (V,) policy logits
    ref = torch.log_softmax(torch.randn(V, generator=g, dtype=torch.float64), dim=0)  # (V,)
    return theta, ref


def _expected_grad(kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E_{x ~ pi}[grad k(x)] enumerated exactly, and the exact grads of KL(pi||ref) and KL(ref||pi)."""
    theta, ref = _categorical(seed)
    logp = torch.log_softmax(theta, dim=0)  # (V,)
    weights = logp.exp().detach()  # (V,) the sampling distribution carries no gradient
    (grad,) = torch.autograd.grad((weights * kl_penalty(logp[None], ref[None], kind)[0]).sum(), theta)
    logp = torch.log_softmax(theta, dim=0)  # (V,) a fresh graph for the exact KL gradients
    forward = (logp.exp() * (logp - ref)).sum()  # KL(pi || ref)
    (g_fwd,) = torch.autograd.grad(forward, theta, retain_graph=True)
    backward = (ref.exp() * (ref - logp)).sum()  # KL(ref || pi)
    (g_bwd,) = torch.autograd.grad(backward, theta)
    return grad, g_fwd, g_bwd


@pytest.mark.parametrize("seed", range(5))
def test_kl_expected_gradients_over_a_categorical(seed: int) -> None:
    k1, g_fwd, g_bwd = _expected_grad("k1", seed)
    assert k1.norm() < 1e-12  # E[grad log pi] = 0: k1 as a loss does nothing
    k2, _, _ = _expected_grad("k2", seed)
    assert torch.allclose(k2, g_fwd, atol=1e-12)  # k2's expected gradient is grad KL(pi || ref)
    k3, _, _ = _expected_grad("k3", seed)
    assert torch.allclose(k3, g_bwd, atol=1e-12)  # k3's is grad KL(ref || pi)
    assert g_fwd.norm() > 1e-3


def test_kl_values_match_trl_and_k3_is_clamped() -> None:
    g = torch.Generator().manual_seed(0)
    lp, ref = -torch.rand(4, 7, generator=g) * 3, -torch.rand(4, 7, generator=g) * 3  # (4, 7)
    trl_k3 = torch.exp(ref - lp) - (ref - lp) - 1  # TRL GRPOTrainer's per_token_kl
    assert torch.allclose(kl_penalty(lp, ref, "k3"), trl_k3, atol=1e-6)
    far = kl_penalty(torch.tensor([[-30.0, 0.0, 0.0]]), torch.tensor([[0.0, -30.0, -5.0]]), "k3")
    # exp(20) - 21 ~ 4.9e8 and 20 - 1 + e^-20 clamped at 10 (verl's low_var_kl); exp(-5) + 4 kept
    assert far.tolist() == [[10.0, 10.0, pytest.approx(4.0 + float(torch.exp(torch.tensor(-5.0))), abs=1e-5)]]


def test_k1_is_allowed_in_the_reward_only() -> None:
    AlgorithmConfig(kl_coef=0.1, kl_estimator="k1", kl_in_reward=True)
    AlgorithmConfig(kl_coef=0.1, kl_estimator="k2")
    with pytest.raises(ValueError, match=r"k1.*zero expected gradient.*'k2' or 'k3'"):
        AlgorithmConfig(kl_coef=0.1, kl_estimator="k1")


def _loop_dual_clip(lp: list[float], old: list[float], adv: list[float], c: float) -> list[float]:
    import math

    out = []
    for a, b, advantage in zip(lp, old, adv, strict=True):
        r = math.exp(max(-20.0, min(20.0, a - b)))
        loss = max(-advantage * r, -advantage * min(max(r, 0.8), 1.2))
        if advantage < 0:
            loss = min(loss, -advantage * c)
        out.append(loss)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_dual_clip_matches_loop_and_stops_the_gradient(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(1, 40, generator=g) * 4  # (1, 40)
    lp = (old + torch.randn(1, 40, generator=g) * 2).requires_grad_(True)  # (1, 40) ratios up to e^6
    adv = torch.randn(1, 40, generator=g)  # (1, 40)
    mask = torch.ones(1, 40)
    loss, stats = clipped_policy_loss(lp, old, adv, mask, dual_clip_c=3.0)
    ref = _loop_dual_clip(lp[0].tolist(), old[0].tolist(), adv[0].tolist(), 3.0)
    assert float(loss.detach()) == pytest.approx(sum(ref) / 40, rel=1e-5)
    (grad,) = torch.autograd.grad(loss, lp)
    dual = (adv < 0) & ((lp - old).exp() > 3.0)  # (1, 40)
    assert dual.any()
    assert stats.dual_clip_fraction == pytest.approx(float(dual.float().mean()))
    assert torch.all(grad[dual] == 0)
    off, _ = clipped_policy_loss(lp, old, adv, mask, dual_clip_c=None)
    assert float(off.detach()) > float(
        loss.detach()
    )  # without the bound the negative-advantage, large-ratio tokens dominate


def test_dual_clip_is_on_by_default_and_validated() -> None:
    big = torch.tensor([[5.0]])  # ratio e^5 ~ 148 on a negative advantage
    loss, _ = clipped_policy_loss(big, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1))
    assert float(loss) == pytest.approx(3.0)
    assert AlgorithmConfig().dual_clip_c == 3.0
    with pytest.raises(ValueError, match=r"dual_clip_c must be > 1"):
        clipped_policy_loss(big, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1), dual_clip_c=0.5)


def _ragged(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(5, 9, generator=g)  # (5, 9)
    mask = (torch.rand(5, 9, generator=g) > 0.4).float()  # (5, 9) non-contiguous
    mask[3] = 0  # a row without a sampled token
    return values, mask


@pytest.mark.parametrize("seed", range(3))
def test_aggregations_match_trl_loss_types(seed: int) -> None:
    """TRL 1.16 GRPOTrainer._compute_loss: 'bnpo' / 'dapo' (one batch), 'grpo' and 'dr_grpo'."""
    loss, mask = _ragged(seed)
    bnpo = (loss * mask).sum() / mask.sum().clamp(min=1.0)
    assert torch.allclose(aggregate(loss, mask, "token-mean"), bnpo)
    max_completion_length = 16
    dr_grpo = (loss * mask).sum() / (loss.size(0) * max_completion_length)
    assert torch.allclose(aggregate(loss, mask, "seq-mean-token-sum-norm", max_completion_length), dr_grpo)
    # TRL's 'grpo' averages over every row (an all-masked row counts 0); ours over rows with a sampled token
    has = mask.sum(-1) > 0  # (B,)
    grpo = ((loss * mask).sum(-1)[has] / mask.sum(-1)[has]).mean()
    assert torch.allclose(aggregate(loss, mask, "seq-mean-token-mean"), grpo)


def test_norm_mode_is_constant_whatever_the_mask() -> None:
    loss, mask = _ragged(0)
    assert float(aggregate_weight(mask, "seq-mean-token-sum-norm", 16)) == 5 * 16
    assert float(aggregate_weight(torch.zeros_like(mask), "seq-mean-token-sum-norm", 16)) == 5 * 16
    with pytest.raises(ValueError, match=r"norm_tokens"):
        aggregate(loss, mask, "seq-mean-token-sum-norm")


def test_dr_grpo_defaults_to_the_constant_normaliser() -> None:
    """Issue #10 (8): dr_grpo's loss divides by a constant (max response tokens), not the token count."""
    cfg = TrainConfig(
        algorithm=AlgorithmConfig(estimator="dr_grpo"),
        rollout=RolloutConfig(max_turns=3, max_new_tokens_per_turn=64, max_total_tokens=1024),
    )
    assert cfg.algorithm.loss_agg_mode == "seq-mean-token-sum-norm"
    assert cfg.norm_tokens == cfg.max_response_tokens == 192
    assert TrainConfig().algorithm.loss_agg_mode == "token-mean"
    capped = TrainConfig(rollout=RolloutConfig(max_turns=8, max_new_tokens_per_turn=256, max_total_tokens=1024))
    assert capped.max_response_tokens == 1024
    fixed = TrainConfig(algorithm=AlgorithmConfig(estimator="dr_grpo", loss_norm_tokens=500))
    assert fixed.norm_tokens == 500
    explicit = AlgorithmConfig(estimator="dr_grpo", loss_agg="token-mean")
    assert explicit.loss_agg_mode == "token-mean"
