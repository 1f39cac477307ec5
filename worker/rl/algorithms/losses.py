"""Policy, KL, entropy and value losses as pure tensor functions.

Every loss takes per-token (B, T) tensors plus the response mask and reduces
with `aggregate`, so the token-vs-sequence averaging choice (DAPO / Dr. GRPO
discussion) is one config string, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KLKind = Literal["k1", "k2", "k3"]
KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")


@dataclass(frozen=True)
class PolicyLossStats:
    """Diagnostics of one clipped-loss evaluation (detached floats)."""

    clip_fraction: float
    """Share of response tokens where the clipped branch was active."""
    approx_kl: float
    """k3 estimate of KL(old || new) over response tokens."""
    ratio_mean: float
    """Mean importance ratio new/old over response tokens."""


def aggregate_weight(mask: Tensor, mode: str = "token-mean") -> Tensor:
    """What `aggregate` divides by (before clamping to >= 1): the masked tokens (token-mean) or the
    sequences with any masked token (the seq-mean modes). Losses over parts of a batch, each scaled by its
    share of this weight, add up to the loss over the whole batch (gradient accumulation)."""
    m = mask.float()  # (B, T)
    if mode == "token-mean":
        return m.sum()
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid modes: {', '.join(AGG_MODES)}")
    return (m.sum(dim=1) > 0).float().sum()


def aggregate(values: Tensor, mask: Tensor, mode: str = "token-mean") -> Tensor:
    """Reduce (B, T) per-token values to a scalar over the mask.

    token-mean: sum over all response tokens / their count. seq-mean-token-mean:
    per-sequence token mean, then mean over sequences that have any token.
    seq-mean-token-sum: per-sequence token sum, then the same sequence mean.
    """
    m = mask.to(values.dtype)  # (B, T)
    weight = aggregate_weight(mask, mode).to(values.dtype).clamp(min=1.0)
    if mode == "token-mean":
        return (values * m).sum() / weight
    per_seq = (values * m).sum(dim=1)  # (B,)
    lengths = m.sum(dim=1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / lengths.clamp(min=1.0)
    return (per_seq * (lengths > 0).to(values.dtype)).sum() / weight


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    m = mask.to(values.dtype)  # (B, T)
    return float(((values * m).sum() / m.sum().clamp(min=1.0)).item())


def clipped_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
) -> tuple[Tensor, PolicyLossStats]:
    """PPO clipped surrogate, ratio clipped to [1 - clip_low, 1 + clip_high] (asymmetric = DAPO clip-higher)."""
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    loss = aggregate(per_token, mask, agg)
    with torch.no_grad():
        stats = PolicyLossStats(
            clip_fraction=_masked_mean((clipped > unclipped).to(per_token.dtype), mask),
            approx_kl=_masked_mean(ratio - 1.0 - log_ratio, mask),
            ratio_mean=_masked_mean(ratio, mask),
        )
    return loss, stats


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL(policy || reference) estimate (Schulman's k1/k2/k3), (B, T).

    k1 = lp - ref (unbiased, high variance); k2 = (lp - ref)^2 / 2;
    k3 = exp(ref - lp) - (ref - lp) - 1 (unbiased, non-negative, low variance; GRPO's choice).
    All three are exactly 0 where the policy equals the reference.
    """
    diff = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # (B, T)
    if kind == "k1":
        return -diff
    if kind == "k2":
        return 0.5 * diff**2
    if kind == "k3":
        return torch.exp(diff) - diff - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {', '.join(KL_KINDS)}")


def entropy_loss(entropy: Tensor, mask: Tensor, agg: str = "token-mean") -> Tensor:
    """Mean token entropy over the response; the trainer subtracts `entropy_coef` times it."""
    return aggregate(entropy, mask, agg)


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip_range: float = 0.2,
    agg: str = "token-mean",
) -> Tensor:
    """PPO value loss: 0.5 * max((v - R)^2, (v_clipped - R)^2), v clipped around the old values."""
    v_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)  # (B, T)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)  # (B, T)
    return aggregate(per_token, mask, agg)
