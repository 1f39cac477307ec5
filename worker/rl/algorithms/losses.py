"""Policy, KL, entropy and value losses as pure tensor functions.

Every loss takes per-token (B, T) tensors plus the response mask and reduces
with `aggregate`, so the token-vs-sequence averaging choice (DAPO / Dr. GRPO
discussion) is one config string, not a code path. The PPO loss dual-clips
negative advantages (Ye et al. 2020, verl's `clip_ratio_c`); KL estimators
follow Schulman's k1/k2/k3 with verl's +-10 clamp on k3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
NORM_MODE = "seq-mean-token-sum-norm"
"""Dr. GRPO's constant normaliser: per-sequence token sums over (sequences x a fixed token count)."""
K3_CLAMP = 10.0
"""|k3| is clamped here, as verl's low_var_kl does: exp(20) at the log-ratio clamp would be ~4.9e8."""
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
    dual_clip_fraction: float = 0.0
    """Share of response tokens (negative advantage) where the dual clip at -A * c was active."""


def aggregate_weight(mask: Tensor, mode: str = "token-mean", norm_tokens: int | None = None) -> Tensor:
    """What `aggregate` divides by (before clamping to >= 1): the masked tokens (token-mean), the
    sequences with any masked token (seq-mean-token-mean / -sum), or every sequence x `norm_tokens`
    (seq-mean-token-sum-norm, whatever the mask). Losses over parts of a batch, each scaled by its share
    of this weight, add up to the loss over the whole batch (gradient accumulation)."""
    m = mask.float()  # (B, T)
    if mode == "token-mean":
        return m.sum()
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid modes: {', '.join(AGG_MODES)}")
    if mode == NORM_MODE:
        if norm_tokens is None or norm_tokens < 1:
            raise ValueError(f"loss aggregation {NORM_MODE} needs norm_tokens >= 1 (the max response tokens)")
        return torch.tensor(float(mask.shape[0] * norm_tokens))
    return (m.sum(dim=1) > 0).float().sum()


def aggregate(values: Tensor, mask: Tensor, mode: str = "token-mean", norm_tokens: int | None = None) -> Tensor:
    """Reduce (B, T) per-token values to a scalar over the mask.

    token-mean: sum over all response tokens / their count (TRL's 'bnpo'; over a minibatch accumulated
    across micro-batches, DAPO's token-level loss). seq-mean-token-mean: per-sequence token mean, then mean
    over sequences that have any token (TRL's 'grpo', which also counts all-masked rows as 0 in its mean).
    seq-mean-token-sum: per-sequence token sum, then the same sequence mean. seq-mean-token-sum-norm
    (Dr. GRPO): per-sequence token sum / `norm_tokens`, a fixed constant (the configured maximum response
    tokens, as in the paper) whatever the mask, then the mean over every sequence: TRL's 'dr_grpo'
    `sum / (B * max_completion_length)`. verl's mode of that name divides the sum over sequences by the
    constant alone; averaging over sequences keeps the loss scale independent of the minibatch size.
    """
    m = mask.to(values.dtype)  # (B, T)
    weight = aggregate_weight(mask, mode, norm_tokens).to(device=values.device, dtype=values.dtype).clamp(min=1.0)
    if mode in ("token-mean", NORM_MODE):
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
    dual_clip_c: float | None = 3.0,
    agg: str = "token-mean",
    norm_tokens: int | None = None,
) -> tuple[Tensor, PolicyLossStats]:
    """PPO clipped surrogate, ratio clipped to [1 - clip_low, 1 + clip_high] (asymmetric = DAPO clip-higher).

    Dual clip (Ye et al. 2020; verl `clip_ratio_c`): where the advantage is negative the per-token loss is
    also bounded by -A * dual_clip_c, so a token whose ratio has run far above 1 (pi_old is the engine's
    sampling logprob) cannot dominate the step; None turns it off. dual_clip_c must be > 1.
    """
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (e.g. 3) or None to turn the dual clip off; got {dual_clip_c}")
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    dual = torch.zeros_like(per_token, dtype=torch.bool)  # (B, T)
    if dual_clip_c is not None:
        bound = -advantages * dual_clip_c  # (B, T)
        dual = (advantages < 0) & (per_token > bound)  # (B, T)
        per_token = torch.where(advantages < 0, torch.minimum(per_token, bound), per_token)  # (B, T)
    loss = aggregate(per_token, mask, agg, norm_tokens)
    with torch.no_grad():
        stats = PolicyLossStats(
            clip_fraction=_masked_mean((clipped > unclipped).to(per_token.dtype), mask),
            approx_kl=_masked_mean(ratio - 1.0 - log_ratio, mask),
            ratio_mean=_masked_mean(ratio, mask),
            dual_clip_fraction=_masked_mean(dual.to(per_token.dtype), mask),
        )
    return loss, stats


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL(policy || reference) estimate (Schulman's k1/k2/k3), (B, T).

    With x sampled from the policy and lr = lp - ref: k1 = lr (unbiased value, high variance; its expected
    gradient is 0, so use it only in the reward); k2 = lr^2 / 2 (biased value, but its expected gradient is
    exactly grad KL(pi || ref): the loss-term choice of GRPO-style KL); k3 = exp(-lr) + lr - 1 (unbiased,
    non-negative, low variance; as a loss its expected gradient is that of KL(ref || pi), TRL's and verl's
    'low_var_kl'), clamped to [-10, 10] like verl. All three are exactly 0 where the policy equals the
    reference. The log-ratio is clamped to +-20 first.
    """
    diff = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # (B, T)
    if kind == "k1":
        return -diff
    if kind == "k2":
        return 0.5 * diff**2
    if kind == "k3":
        return (torch.exp(diff) - diff - 1.0).clamp(-K3_CLAMP, K3_CLAMP)
    raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {', '.join(KL_KINDS)}")


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip_range: float = 0.2,
    agg: str = "token-mean",
    norm_tokens: int | None = None,
) -> Tensor:
    """PPO value loss: 0.5 * max((v - R)^2, (v_clipped - R)^2), v clipped around the old values."""
    v_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)  # (B, T)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)  # (B, T)
    return aggregate(per_token, mask, agg, norm_tokens)
