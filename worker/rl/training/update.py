"""Trainer phases 2-4: batch preparation (reference KL, critic values, advantages) and the PPO update.

One decoder pass per minibatch yields the log-probs and, with a critic (`gae`), the values; the loss is
clipped policy - entropy bonus (+ KL) (+ vf_coef * clipped value loss), optimised for `ppo_epochs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from worker.rl.algorithms.advantages import AdvantageInputs, compute_advantages
from worker.rl.algorithms.losses import aggregate, clipped_policy_loss, clipped_value_loss, kl_penalty
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.build import TrainComponents
from worker.rl.training.config import TrainConfig
from worker.rl.training.critic import token_values, values_from_hidden
from worker.rl.training.logprobs import hidden_states, logprobs_from_hidden, token_logprobs
from worker.rl.training.metrics import LossStats
from worker.rl.types import Trajectory


def pad_id(tokenizer: Any) -> int:
    """The id that right-pads a batch: the tokenizer's pad id, else its eos id, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def attach_value_head(opt: torch.optim.Optimizer, head: nn.Module, config: TrainConfig) -> None:
    """Optimise the head with the policy, in its own param group (lr = algorithm.value_head_lr or optim.lr)."""
    lr = config.algorithm.value_head_lr or config.optim.lr
    opt.add_param_group({"params": [p for p in head.parameters() if p.requires_grad], "lr": lr})


def prepare_batch(
    trajs: list[Trajectory],
    comps: TrainComponents,
    config: TrainConfig,
    device: Any,
    value_head: nn.Module | None = None,
) -> tuple[TrainBatch, Tensor | None]:
    """Phases 2-3: collate, reference KL (in reward or kept for the loss), critic values, advantages.

    Returns the batch with advantages/returns and the pre-update values (N, T) (None without a critic).
    """
    alg = config.algorithm
    batch = collate(trajs, pad_id(comps.tokenizer)).to(device)
    rewards = batch.token_rewards
    if comps.ref_model is not None and alg.kl_coef > 0:
        with torch.no_grad():
            ref_lp, _ = token_logprobs(
                comps.ref_model, batch.input_ids, batch.attention_mask, batch.loss_mask,
                temperature=config.rollout.temperature,
            )  # fmt: skip
        batch = batch.with_(ref_logprobs=ref_lp)
        if alg.kl_in_reward:  # penalise every sampled token by the behaviour policy's KL to the reference
            rewards = rewards - alg.kl_coef * kl_penalty(batch.old_logprobs, ref_lp, alg.kl_estimator) * batch.loss_mask
    old_values = None
    if value_head is not None:
        with torch.no_grad():
            old_values = token_values(comps.model, value_head, batch.input_ids, batch.attention_mask, batch.loss_mask)
    inputs = AdvantageInputs(
        token_rewards=rewards.cpu(), response_mask=batch.loss_mask.cpu(), group_ids=batch.group_ids.cpu(),
        values=None if old_values is None else old_values.cpu(), gamma=alg.gamma, lam=alg.lam,
        step_rewards=batch.step_rewards.cpu(), step_mask=batch.step_mask.cpu(),
        process_reward_weight=alg.process_reward_weight,
    )  # fmt: skip
    adv = compute_advantages(alg.estimator, inputs)
    return batch.with_(advantages=adv.advantages.to(device), returns=adv.returns.to(device)), old_values


def _shuffled_rows(n: int, size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Row indices of shuffled minibatches: the same draw as `batch.minibatches`, exposed so old values follow."""
    if size < 1:
        raise ValueError(f"minibatch size must be >= 1, got {size}")
    order = torch.randperm(n, generator=generator)  # (N,)
    for start in range(0, n, size):
        yield order[start : start + size]


def _minibatch_loss(
    model: Any, mb: TrainBatch, config: TrainConfig, value_head: nn.Module | None, mb_old_values: Tensor | None
) -> tuple[Tensor, dict[str, float]]:
    """The scalar loss of one minibatch and its detached parts."""
    alg = config.algorithm
    hidden = hidden_states(model, mb.input_ids, mb.attention_mask)  # (B, T, H)
    mb_lp, mb_ent = logprobs_from_hidden(
        model, hidden, mb.input_ids, mb.loss_mask, temperature=config.rollout.temperature, with_entropy=True
    )  # (B, T), (B, T)
    assert mb.advantages is not None
    assert mb_ent is not None
    policy, pstats = clipped_policy_loss(
        mb_lp, mb.old_logprobs, mb.advantages, mb.loss_mask,
        clip_low=alg.clip_low, clip_high=alg.clip_high, agg=alg.loss_agg,
    )  # fmt: skip
    kl = torch.zeros(())
    if mb.ref_logprobs is not None:
        kl = aggregate(kl_penalty(mb_lp, mb.ref_logprobs, alg.kl_estimator), mb.loss_mask, alg.loss_agg)
    entropy = aggregate(mb_ent, mb.loss_mask, alg.loss_agg)
    loss = policy - alg.entropy_coef * entropy
    if not alg.kl_in_reward:
        loss = loss + alg.kl_coef * kl
    value = torch.zeros(())
    if value_head is not None and mb_old_values is not None and mb.returns is not None:
        mb_values = values_from_hidden(value_head, hidden, mb.loss_mask)  # (B, T)
        value = clipped_value_loss(
            mb_values, mb_old_values, mb.returns, mb.loss_mask, clip_range=alg.value_clip, agg=alg.loss_agg
        )
        loss = loss + alg.vf_coef * value
    parts = {"policy": policy.item(), "kl": kl.item(), "entropy": entropy.item(), "value": value.item(),
             "total": loss.item(), "clip_frac": pstats.clip_fraction, "approx_kl": pstats.approx_kl,
             "ratio_mean": pstats.ratio_mean}  # fmt: skip
    return loss, parts


def _mean_stats(sums: dict[str, float], count: int, *, lr: float, extra: dict[str, float]) -> LossStats:
    """Per-update averages (the defaults when no minibatch had a sampled token)."""
    if count == 0:
        return LossStats(lr=lr, extra=extra)
    m = {k: v / count for k, v in sums.items()}
    return LossStats(
        policy=m["policy"], kl=m["kl"], entropy=m["entropy"], clip_frac=m["clip_frac"], approx_kl=m["approx_kl"],
        ratio_mean=m["ratio_mean"], grad_norm=m["grad_norm"], value=m["value"], total=m["total"], lr=lr,
        updates=count, extra=extra,
    )  # fmt: skip


def _advantage_only(config: TrainConfig, value_head: nn.Module | None) -> bool:
    """True when the loss is the policy term alone (no critic, KL loss or entropy bonus): then a row
    whose advantages are all 0 contributes nothing but its tokens to the token-mean denominator."""
    alg = config.algorithm
    return value_head is None and alg.entropy_coef == 0 and not (alg.kl_coef > 0 and not alg.kl_in_reward)


def _has_no_signal(mb: TrainBatch, config: TrainConfig, value_head: nn.Module | None) -> bool:
    """True when every loss term is zero: all advantages 0 (e.g. zero-variance groups), no critic, KL or entropy."""
    return _advantage_only(config, value_head) and informative_rows(mb).numel() == 0


def informative_rows(batch: TrainBatch) -> Tensor:
    """Indices (K,) of the rows with a non-zero advantage on at least one sampled token."""
    assert batch.advantages is not None
    return ((batch.advantages * batch.loss_mask).abs().sum(dim=1) > 0).nonzero().squeeze(1)


def update_policy(
    model: Any,
    batch: TrainBatch,
    config: TrainConfig,
    opt: torch.optim.Optimizer,
    acc: Accelerator,
    step: int,
    *,
    value_head: nn.Module | None = None,
    old_values: Tensor | None = None,
) -> LossStats:
    """Phase 4: `ppo_epochs` passes of clipped-PPO minibatch updates; returns averaged loss stats."""
    alg = config.algorithm
    if (value_head is None) != (old_values is None):
        raise ValueError("update_policy needs both value_head and old_values (critic) or neither")
    shuffle = torch.Generator().manual_seed(config.seed * 7919 + step)
    rows_total = batch.size
    if alg.drop_flat_rows and _advantage_only(config, value_head):
        batch = batch.select(informative_rows(batch))  # e.g. every member of a zero-variance GRPO group
    extra = {"train/rows_updated_frac": batch.size / rows_total if rows_total else 0.0}
    sums: dict[str, float] = {}
    count = 0
    model.train()
    for _ in range(alg.ppo_epochs):
        for rows in _shuffled_rows(batch.size, alg.minibatch_size, shuffle):
            mb = batch.select(rows)
            if mb.loss_mask.sum() == 0:  # nothing sampled (e.g. every episode overflowed the context)
                continue
            if _has_no_signal(mb, config, value_head):  # a step would only replay AdamW momentum and decay
                continue
            mb_old_values = None if old_values is None else old_values[rows]  # (B, T)
            loss, parts = _minibatch_loss(model, mb, config, value_head, mb_old_values)
            acc.backward(loss)
            grad_norm = 0.0
            if config.optim.max_grad_norm > 0:
                grad_norm = float(acc.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm))
                if value_head is not None:  # separately, so the fresh head's large gradients never shrink the policy's
                    acc.clip_grad_norm_(value_head.parameters(), config.optim.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            parts["grad_norm"] = grad_norm
            sums = {k: sums.get(k, 0.0) + v for k, v in parts.items()}
            count += 1
    model.eval()
    return _mean_stats(sums, count, lr=opt.param_groups[0]["lr"], extra=extra)
