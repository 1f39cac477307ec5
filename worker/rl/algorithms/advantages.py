"""Advantage estimators as small pure functions behind a name registry.

Rewards arrive per token: the outcome reward sits on the last response token of
a trajectory, process (per-step) rewards on the last sampled token of each
assistant turn (`step_rewards`, positions flagged by `step_mask`). Process
rewards are normalised within their group *separately* from the outcome (mean/std
over every step of every trajectory of the group), turned into a return-to-go
(sum of the normalised step rewards at or after each token), scaled by
`process_reward_weight` and added to the estimator's advantages
(`compute_advantages`); with `gae` they enter the token rewards before GAE instead, so the critic fits a
stationary return (issue #10). Group std uses the unbiased estimator; a singleton group gets advantage 0.
Group statistics run in float64 and a flat group (max == min) gets advantage exactly 0: float32 means of
rewards like 0.7 / 0.9 / 1.1 miss by an ulp and `/ (std + eps)` would blow that up to +-0.3 (issue #10).
TRL divides by std + 1e-4 and verl by std + 1e-6 without that guard; exact zeros are what
`drop_flat_rows` and the no-signal check test for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AdvantageInputs:
    """Everything an estimator may look at; all tensors share the (N, T) grid."""

    token_rewards: Tensor
    """(N, T) outcome reward on the last response token (plus per-token KL penalties when KL is in the reward)."""
    response_mask: Tensor
    """(N, T) 1 on policy-sampled tokens."""
    group_ids: Tensor
    """(N,) integer group id: trajectories of one prompt share it."""
    values: Tensor | None = None
    """(N, T) critic values, needed by `gae` only."""
    gamma: float = 1.0
    """Discount per token (token-level estimators)."""
    lam: float = 1.0
    """GAE lambda."""
    scale_by_std: bool = True
    """GRPO: divide by the group std (False is Dr. GRPO's centring; `dr_grpo_advantages` sets it)."""
    eps: float = 1e-6
    """Added to std denominators."""
    step_rewards: Tensor | None = None
    """(N, T) process reward on the last token of each assistant turn, 0 elsewhere."""
    step_mask: Tensor | None = None
    """(N, T) 1 where a step reward sits."""
    process_reward_weight: float = 0.0
    """Weight of the normalised process-reward return-to-go added to the advantages."""

    def __post_init__(self) -> None:
        if self.token_rewards.shape != self.response_mask.shape or self.token_rewards.dim() != 2:
            raise ValueError("token_rewards and response_mask must both be (N, T) tensors of the same shape")
        if self.group_ids.shape != (self.token_rewards.shape[0],):
            raise ValueError("group_ids must be an (N,) tensor with one id per trajectory")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError("gamma and lam must lie in [0, 1]")


@dataclass(frozen=True)
class AdvantageOutputs:
    """Per-token advantages and returns (value targets)."""

    advantages: Tensor
    """(N, T), zero outside the response mask."""
    returns: Tensor
    """(N, T), zero outside the response mask."""


Estimator = Callable[[AdvantageInputs], AdvantageOutputs]


def _group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    _, inverse = torch.unique(group_ids, return_inverse=True)  # (N,)
    return inverse, int(inverse.max().item()) + 1 if inverse.numel() else 0


def group_mean_std(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-trajectory group mean, unbiased std (0 for singletons) and group size, each (N,) float64."""
    inverse, n_groups = _group_index(group_ids)
    x = scores.double()  # (N,) group statistics in float64 (module docstring)
    counts = torch.zeros(n_groups, dtype=x.dtype).index_add_(0, inverse, torch.ones_like(x))  # (G,)
    sums = torch.zeros(n_groups, dtype=x.dtype).index_add_(0, inverse, x)  # (G,)
    mean = (sums / counts)[inverse]  # (N,)
    sq = torch.zeros(n_groups, dtype=x.dtype).index_add_(0, inverse, (x - mean) ** 2)  # (G,)
    var = sq / (counts - 1).clamp(min=1)  # (G,)
    return mean, var.sqrt()[inverse], counts[inverse]


def flat_groups(scores: Tensor, group_ids: Tensor) -> Tensor:
    """(N,) bool: the trajectory's group has one score value only (max == min), singletons included."""
    inverse, n_groups = _group_index(group_ids)
    x = scores.double()  # (N,)
    hi = torch.full((n_groups,), -torch.inf, dtype=x.dtype).scatter_reduce(0, inverse, x, "amax")  # (G,)
    lo = torch.full((n_groups,), torch.inf, dtype=x.dtype).scatter_reduce(0, inverse, x, "amin")  # (G,)
    return (hi == lo)[inverse]  # (N,)


def masked_whiten(values: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalise `values` to zero mean / unit std over the mask (global batch whitening), in float64.

    All masked values equal (e.g. every group flat): zeros, not the rounding residue over eps. Biased
    variance over the tokens (verl's `masked_whiten` uses the unbiased one; the difference is n/(n-1)).
    """
    m = mask.double()  # (N, T)
    x = values.double()  # (N, T)
    on = m > 0  # (N, T)
    if not bool(on.any()) or bool(x[on].max() == x[on].min()):
        return torch.zeros_like(values)
    n = m.sum()
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    return ((x - mean) / (var.sqrt() + eps) * m).to(values.dtype)  # (N, T)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Return-to-go over response tokens: G_t = r_t + gamma * G_{t+1} (masked positions skipped)."""
    m = mask.to(rewards.dtype)  # (N, T)
    out = torch.zeros_like(rewards)  # (N, T)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype)  # (N,)
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = torch.where(m[:, t] > 0, rewards[:, t] + gamma * running, running)
        out[:, t] = running * m[:, t]
    return out


def _sequence_scores(inputs: AdvantageInputs) -> tuple[Tensor, Tensor]:
    mask = inputs.response_mask.to(inputs.token_rewards.dtype)  # (N, T)
    return (inputs.token_rewards * mask).sum(dim=1), mask  # (N,), (N, T)


def _broadcast(adv: Tensor, flat: Tensor, mask: Tensor) -> Tensor:
    """(N,) float64 sequence advantages, exactly 0 where `flat`, spread over the (N, T) response mask."""
    adv = torch.where(flat, torch.zeros_like(adv), adv)  # (N,)
    return adv.to(mask.dtype)[:, None] * mask  # (N, T)


def grpo_advantages(inputs: AdvantageInputs) -> AdvantageOutputs:
    """GRPO: (score - group mean) / (group std + eps), broadcast over the response; 0 for flat groups."""
    scores, mask = _sequence_scores(inputs)
    mean, std, _ = group_mean_std(scores, inputs.group_ids)
    adv = scores.double() - mean  # (N,)
    if inputs.scale_by_std:
        adv = adv / (std + inputs.eps)
    out = _broadcast(adv, flat_groups(scores, inputs.group_ids), mask)  # (N, T)
    return AdvantageOutputs(out, out.clone())


def dr_grpo_advantages(inputs: AdvantageInputs) -> AdvantageOutputs:
    """Dr. GRPO (Liu et al. 2025): GRPO's group-mean centring without the std division; 0 for flat groups.

    Pair it with the constant-normaliser loss `seq-mean-token-sum-norm` (the default `loss_agg` for
    dr_grpo): the paper removes both the std and the per-length normalisers.
    """
    return grpo_advantages(dataclasses.replace(inputs, scale_by_std=False))


def rloo_advantages(inputs: AdvantageInputs) -> AdvantageOutputs:
    """RLOO: score minus the mean of the *other* members of the group (0 for singletons and flat groups)."""
    scores, mask = _sequence_scores(inputs)
    mean, _, counts = group_mean_std(scores, inputs.group_ids)
    x = scores.double()  # (N,)
    baseline = (mean * counts - x) / (counts - 1).clamp(min=1)  # (N,)
    out = _broadcast(x - baseline, flat_groups(scores, inputs.group_ids) | (counts <= 1), mask)  # (N, T)
    return AdvantageOutputs(out, out.clone())


def reinforce_pp_advantages(inputs: AdvantageInputs) -> AdvantageOutputs:
    """REINFORCE++ (Hu 2025): discounted token returns, whitened over the whole batch."""
    returns = discounted_returns(inputs.token_rewards, inputs.response_mask, inputs.gamma)  # (N, T)
    adv = masked_whiten(returns, inputs.response_mask, inputs.eps)  # (N, T)
    return AdvantageOutputs(adv, returns)


def reinforce_pp_baseline_advantages(inputs: AdvantageInputs) -> AdvantageOutputs:
    """REINFORCE++ with a group-mean baseline (0 for flat groups), then global whitening over response tokens.

    Like verl, the whitening subtracts the batch mean, so a flat group's rows are 0 only when every group is.
    """
    scores, mask = _sequence_scores(inputs)
    mean, _, _ = group_mean_std(scores, inputs.group_ids)
    centred = _broadcast(scores.double() - mean, flat_groups(scores, inputs.group_ids), mask)  # (N, T)
    adv = masked_whiten(centred, inputs.response_mask, inputs.eps)  # (N, T)
    return AdvantageOutputs(adv, centred)


def gae_advantages(inputs: AdvantageInputs) -> AdvantageOutputs:
    """PPO with GAE over response tokens (skipping masked gaps), then global whitening.

    Process rewards are already in `token_rewards` here (`compute_advantages`); the returns (value
    targets) are advantages + values before whitening, as in verl / OpenRLHF.
    """
    if inputs.values is None:
        raise ValueError("estimator 'gae' needs critic values: set algorithm.vf_coef > 0 so a value head is trained")
    mask = inputs.response_mask.to(inputs.token_rewards.dtype)  # (N, T)
    values = inputs.values * mask  # (N, T)
    n, t_len = mask.shape
    adv = torch.zeros_like(values)  # (N, T)
    next_value = torch.zeros(n, dtype=values.dtype)  # (N,)
    running = torch.zeros(n, dtype=values.dtype)  # (N,)
    for t in range(t_len - 1, -1, -1):
        on = mask[:, t] > 0
        delta = inputs.token_rewards[:, t] + inputs.gamma * next_value - values[:, t]
        running = torch.where(on, delta + inputs.gamma * inputs.lam * running, running)
        next_value = torch.where(on, values[:, t], next_value)
        adv[:, t] = running * mask[:, t]
    returns = (adv + values) * mask  # (N, T)
    return AdvantageOutputs(masked_whiten(adv, mask, inputs.eps), returns)


def process_reward_advantages(inputs: AdvantageInputs) -> Tensor:
    """(N, T) return-to-go of step rewards normalised within each group (see module docstring).

    Statistics in float64; a group whose step rewards are all equal contributes exactly 0.
    """
    if inputs.step_rewards is None or inputs.step_mask is None:
        return torch.zeros_like(inputs.token_rewards)
    smask = inputs.step_mask.double()  # (N, T)
    steps = inputs.step_rewards.double()  # (N, T)
    on = smask > 0  # (N, T)
    inverse, n_groups = _group_index(inputs.group_ids)
    zeros = torch.zeros(n_groups, dtype=smask.dtype)  # (G,)
    counts = zeros.clone().index_add_(0, inverse, smask.sum(1))  # (G,)
    sums = zeros.clone().index_add_(0, inverse, (steps * smask).sum(1))  # (G,)
    mean = (sums / counts.clamp(min=1))[inverse][:, None]  # (N, 1)
    sq = zeros.clone().index_add_(0, inverse, (((steps - mean) * smask) ** 2).sum(1))  # (G,)
    std = (sq / (counts - 1).clamp(min=1)).sqrt()[inverse][:, None]  # (N, 1)
    hi = torch.where(on, steps, -torch.inf).amax(1)  # (N,)
    lo = torch.where(on, steps, torch.inf).amin(1)  # (N,)
    g_hi = torch.full((n_groups,), -torch.inf, dtype=steps.dtype).scatter_reduce(0, inverse, hi, "amax")  # (G,)
    g_lo = torch.full((n_groups,), torch.inf, dtype=steps.dtype).scatter_reduce(0, inverse, lo, "amin")  # (G,)
    flat = (g_hi <= g_lo)[inverse][:, None]  # (N, 1) one value (or no step) in the whole group
    normed = torch.where(flat, 0.0, (steps - mean) / (std + inputs.eps)) * smask  # (N, T)
    to_go = normed.flip(1).cumsum(1).flip(1)  # (N, T)
    return (to_go * inputs.response_mask.double()).to(inputs.token_rewards.dtype)


ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
    "gae": gae_advantages,
}
"""Estimators by config name (`algorithm.estimator`)."""

GROUP_ESTIMATORS: frozenset[str] = frozenset({"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"})
"""Estimators whose baseline comes from the group: they need group_size >= 2."""


def get_estimator(name: str) -> Estimator:
    """Look an estimator up by name; unknown names list the valid ones."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        valid = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
        raise ValueError(f"unknown advantage estimator {name!r}; valid names: {valid}") from None


def compute_advantages(name: str, inputs: AdvantageInputs) -> AdvantageOutputs:
    """Run estimator `name` (`with_process_rewards` of the registry's function)."""
    return with_process_rewards(get_estimator(name), inputs)


def with_process_rewards(estimator: Estimator, inputs: AdvantageInputs) -> AdvantageOutputs:
    """Run `estimator` with the weighted process rewards when step rewards are given.

    `gae`: the weighted step rewards join the token rewards before GAE, so the critic's targets are plain
    discounted returns. The critic-free estimators get the group-normalised step return-to-go added to
    their advantages (and returns) after the outcome estimator.
    """
    if inputs.process_reward_weight == 0.0 or inputs.step_rewards is None:
        return estimator(inputs)
    if estimator is gae_advantages:
        step = inputs.step_rewards if inputs.step_mask is None else inputs.step_rewards * inputs.step_mask  # (N, T)
        rewards = inputs.token_rewards + inputs.process_reward_weight * step  # (N, T)
        return estimator(dataclasses.replace(inputs, token_rewards=rewards))
    out = estimator(inputs)
    extra = inputs.process_reward_weight * process_reward_advantages(inputs)  # (N, T)
    return AdvantageOutputs(out.advantages + extra, out.returns + extra)
