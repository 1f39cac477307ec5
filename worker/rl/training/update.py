"""Trainer phases 2-5: the reward batch, the no-grad reference and critic passes, the advantage inputs, and
the PPO update.

One decoder pass per micro-batch yields the log-probs and, with a critic (`gae`), the values; the loss is
clipped policy - entropy bonus (+ KL) (+ vf_coef * clipped value loss), optimised for `ppo_epochs`. A
minibatch (one optimizer step) is split into micro-batches whose gradients accumulate
(`algorithm.micro_batch_tokens`), and a group's shared prompt is computed once (`algorithm.share_prefix`).
Across ranks (`training.distributed`) each minibatch is the union of the ranks' local ones: denominators
are summed over the ranks, gradients all-reduced, and every rank takes the same number of optimizer steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from worker.rl.algorithms.advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, with_process_rewards
from worker.rl.algorithms.losses import (
    aggregate,
    aggregate_weight,
    clipped_policy_loss,
    clipped_value_loss,
    kl_penalty,
)
from worker.rl.generation.precision import autocast, resolve_compute_dtype
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.build import TrainComponents
from worker.rl.training.config import TrainConfig
from worker.rl.training.critic import token_values, values_from_hidden
from worker.rl.training.distributed import (
    SINGLE,
    Ranks,
    all_reduce_gradients,
    clip_sharded_grad_norm,
    max_int,
    sum_values,
)
from worker.rl.training.logprobs import hidden_states, logprobs_from_hidden, token_logprobs
from worker.rl.training.metrics import LossStats
from worker.rl.training.packing import packed_length
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


def reward_batch(trajs: list[Trajectory], tokenizer: Any, device: Any) -> TrainBatch:
    """Phase 2: the episodes' rubric totals and per-turn rewards on the padded (N, T) token grid (`collate`)."""
    return collate(trajs, pad_id(tokenizer)).to(device)


def with_reference_logprobs(batch: TrainBatch, ref_model: nn.Module | None, config: TrainConfig) -> TrainBatch:
    """Phase 3a: the frozen reference's (N, T) log-probs of the sampled tokens, when KL is on (else unchanged)."""
    alg = config.algorithm
    if ref_model is None or alg.kl_coef <= 0:
        return batch
    ref_lp = _per_token_no_grad(
        batch,
        config,
        lambda mb: token_logprobs(
            ref_model,
            mb.input_ids,
            mb.attention_mask,
            mb.loss_mask,
            temperature=config.rollout.temperature,
            group_ids=mb.group_ids if alg.share_prefix else None,
        )[0],
    )  # (N, T)
    return batch.with_(ref_logprobs=ref_lp)


def critic_values(batch: TrainBatch, model: nn.Module, value_head: nn.Module, config: TrainConfig) -> Tensor:
    """Phase 3b: the critic's pre-update values (N, T), which feed GAE and the value-loss clipping."""
    groups = config.algorithm.share_prefix
    return _per_token_no_grad(
        batch,
        config,
        lambda mb: token_values(
            model, value_head, mb.input_ids, mb.attention_mask, mb.loss_mask, mb.group_ids if groups else None
        ),
    )  # (N, T)


def shaped_token_rewards(batch: TrainBatch, config: TrainConfig) -> Tensor:
    """(N, T) outcome rewards, less kl_coef x the behaviour policy's per-token KL to the reference when
    `algorithm.kl_in_reward` (and reference log-probs were computed)."""
    alg = config.algorithm
    if not alg.kl_in_reward or batch.ref_logprobs is None:
        return batch.token_rewards
    kl = kl_penalty(batch.old_logprobs, batch.ref_logprobs, alg.kl_estimator)  # (N, T)
    return batch.token_rewards - alg.kl_coef * kl * batch.loss_mask


def advantage_inputs(batch: TrainBatch, config: TrainConfig, values: Tensor | None) -> AdvantageInputs:
    """Phase 4's input: the (KL-shaped) token rewards, masks, groups, critic values and process rewards, on CPU."""
    alg = config.algorithm
    return AdvantageInputs(
        token_rewards=shaped_token_rewards(batch, config).cpu(),
        response_mask=batch.loss_mask.cpu(),
        group_ids=batch.group_ids.cpu(),
        values=None if values is None else values.cpu(),
        gamma=alg.gamma,
        lam=alg.lam,
        step_rewards=batch.step_rewards.cpu(),
        step_mask=batch.step_mask.cpu(),
        process_reward_weight=alg.process_reward_weight,
    )


def prepare_batch(
    trajs: list[Trajectory],
    comps: TrainComponents,
    config: TrainConfig,
    device: Any,
    value_head: nn.Module | None = None,
) -> tuple[TrainBatch, Tensor | None]:
    """Phases 2-4 in one call (tests, benchmarks): the reward batch, the reference and critic passes and the
    advantages. Returns the batch with advantages/returns and the pre-update values (N, T) (None without a
    critic); the trainer calls the same functions one phase at a time.
    """
    batch = reward_batch(trajs, comps.tokenizer, device)
    batch = with_reference_logprobs(batch, comps.ref_model, config)
    old_values = None if value_head is None else critic_values(batch, comps.model, value_head, config)
    estimator = ADVANTAGE_ESTIMATORS[config.algorithm.estimator]
    adv = with_process_rewards(estimator, advantage_inputs(batch, config, old_values))
    return batch.with_(advantages=adv.advantages.to(device), returns=adv.returns.to(device)), old_values


def compute_context(config: TrainConfig, device: Any) -> AbstractContextManager[Any]:
    """Autocast forward passes on `device` to the run's compute dtype (`model.compute_dtype`; float32 weights)."""
    compute = resolve_compute_dtype(config.model.compute_dtype, config.model.dtype, device)
    context: AbstractContextManager[Any] = autocast(device, compute, config.model.dtype)
    return context


def _per_token_no_grad(batch: TrainBatch, config: TrainConfig, fn: Callable[[TrainBatch], Tensor]) -> Tensor:
    """`fn`'s (b, t) per-token values over the batch in micro-batches, as (N, T), 0 past each row."""
    alg = config.algorithm
    out = torch.zeros(batch.loss_mask.shape, dtype=torch.float32, device=batch.loss_mask.device)  # (N, T)
    with torch.no_grad(), compute_context(config, batch.input_ids.device):
        for rows in micro_batches(batch, alg.micro_batch_tokens, share_prefix=alg.share_prefix):
            values = fn(batch.select(rows).trimmed())  # (b, t)
            out[rows.to(out.device), : values.shape[1]] = values.float()
    return out


def _shuffled_rows(n: int, size: int, generator: torch.Generator, groups: Tensor | None = None) -> Iterator[Tensor]:
    """Row indices of shuffled minibatches of at most `size` rows (without `groups`, one `randperm` cut in order).

    With `groups` (N,) the order is group-major: the groups are shuffled and each keeps its rows together,
    so a minibatch of k x group_size rows holds k whole groups (like verl's prompt-counted mini-batches) and
    their shared prompts are computed once (`algorithm.share_prefix`).
    """
    if size < 1:
        raise ValueError(f"minibatch size must be >= 1, got {size}")
    order = torch.randperm(n, generator=generator)  # (N,)
    if groups is not None:
        ids = groups.tolist()
        rank = {g: i for i, g in enumerate(dict.fromkeys(ids[r] for r in order.tolist()))}
        order = torch.tensor(sorted(order.tolist(), key=lambda r: rank[ids[r]]), dtype=torch.long)  # stable
    for start in range(0, n, size):
        yield order[start : start + size]


def _minibatch_loss(
    model: Any, mb: TrainBatch, config: TrainConfig, value_head: nn.Module | None, mb_old_values: Tensor | None
) -> tuple[Tensor, dict[str, float]]:
    """The scalar loss of one minibatch and its detached parts."""
    alg = config.algorithm
    groups = mb.group_ids if alg.share_prefix else None
    hidden = hidden_states(model, mb.input_ids, mb.attention_mask, groups)  # (B, T, H)
    mb_lp, mb_ent = logprobs_from_hidden(
        model, hidden, mb.input_ids, mb.loss_mask, temperature=config.rollout.temperature, with_entropy=True
    )  # (B, T), (B, T)
    assert mb.advantages is not None
    assert mb_ent is not None
    agg, norm = alg.loss_agg_mode, config.norm_tokens
    policy, pstats = clipped_policy_loss(
        mb_lp,
        mb.old_logprobs,
        mb.advantages,
        mb.loss_mask,
        clip_low=alg.clip_low,
        clip_high=alg.clip_high,
        dual_clip_c=alg.dual_clip_c,
        agg=agg,
        norm_tokens=norm,
    )
    kl = torch.zeros(())
    if mb.ref_logprobs is not None:
        kl = aggregate(kl_penalty(mb_lp, mb.ref_logprobs, alg.kl_estimator), mb.loss_mask, agg, norm)
    entropy = aggregate(mb_ent, mb.loss_mask, agg, norm)
    loss = policy - alg.entropy_coef * entropy
    if not alg.kl_in_reward:
        loss = loss + alg.kl_coef * kl
    value = torch.zeros(())
    if value_head is not None and mb_old_values is not None and mb.returns is not None:
        mb_values = values_from_hidden(value_head, hidden, mb.loss_mask)  # (B, T)
        value = clipped_value_loss(
            mb_values, mb_old_values, mb.returns, mb.loss_mask, clip_range=alg.value_clip, agg=agg, norm_tokens=norm
        )
        loss = loss + alg.vf_coef * value
    parts = {
        "policy": policy.item(),
        "kl": kl.item(),
        "entropy": entropy.item(),
        "value": value.item(),
        "total": loss.item(),
        "clip_frac": pstats.clip_fraction,
        "approx_kl": pstats.approx_kl,
        "ratio_mean": pstats.ratio_mean,
        "dual_clip_frac": pstats.dual_clip_fraction,
    }
    return loss, parts


def _mean_stats(sums: dict[str, float], count: int, *, lr: float, extra: dict[str, float]) -> LossStats:
    """Per-update averages (the defaults when no minibatch had a sampled token)."""
    if count == 0:
        return LossStats(lr=lr, extra=extra)
    m = {k: v / count for k, v in sums.items()}
    extra = {**extra, "loss/dual_clip_frac": m.get("dual_clip_frac", 0.0)}
    return LossStats(
        policy=m["policy"],
        kl=m["kl"],
        entropy=m["entropy"],
        clip_frac=m["clip_frac"],
        approx_kl=m["approx_kl"],
        ratio_mean=m["ratio_mean"],
        grad_norm=m["grad_norm"],
        value=m["value"],
        total=m["total"],
        lr=lr,
        updates=count,
        extra=extra,
    )


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


_TOKEN_MEANS = frozenset({"clip_frac", "approx_kl", "ratio_mean", "dual_clip_frac"})
"""Loss parts that are token means whatever the aggregation mode (the clipping diagnostics)."""


def micro_batches(batch: TrainBatch, token_budget: int, *, share_prefix: bool = False) -> list[Tensor]:
    """Row indices of the micro-batches one minibatch is split into for gradient accumulation.

    Padded rows: sorted longest first and packed greedily while rows x the group's longest length stays
    within `token_budget`, so similar lengths share a pass. `share_prefix`: the rows of a GRPO group stay
    together and the cost is the packed length (each group's common prefix once, `training.packing`).
    0 = one pass over every row, in order.
    """
    if token_budget <= 0 or batch.size <= 1:
        return [torch.arange(batch.size)]
    lengths = batch.attention_mask.sum(dim=1)  # (N,)
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    if share_prefix:
        return _packed_micro_batches(batch, order, token_budget)
    groups: list[list[int]] = []
    for row in order:
        if groups and int(lengths[groups[-1][0]]) * (len(groups[-1]) + 1) <= token_budget:
            groups[-1].append(row)  # the group's first row is its longest
        else:
            groups.append([row])
    return [torch.tensor(group, dtype=torch.long) for group in groups]


def _packed_micro_batches(batch: TrainBatch, order: list[int], token_budget: int) -> list[Tensor]:
    """Greedy micro-batches of whole groups (longest rows first) under a packed-token budget."""
    lengths = batch.attention_mask.sum(dim=1).tolist()
    ids = [batch.input_ids[row, : int(lengths[row])].tolist() for row in range(batch.size)]
    by_group: dict[int, list[int]] = {}
    for row in order:
        by_group.setdefault(int(batch.group_ids[row]), []).append(row)
    micro: list[list[int]] = []
    cost_of: dict[int, int] = {}  # packed tokens per group id in the current micro-batch
    for group, rows in by_group.items():
        for row in rows:
            current = micro[-1] if micro else []
            members = [r for r in current if int(batch.group_ids[r]) == group] + [row]
            group_cost = packed_length([ids[r] for r in members])
            if current and sum(cost_of.values()) - cost_of.get(group, 0) + group_cost <= token_budget:
                current.append(row)
            else:
                micro.append([row])
                cost_of = {}
                group_cost = len(ids[row])
            cost_of[group] = group_cost
    return [torch.tensor(rows, dtype=torch.long) for rows in micro]


def _accumulate_gradients(
    model: Any,
    mb: TrainBatch,
    config: TrainConfig,
    acc: Accelerator,
    value_head: nn.Module | None,
    mb_old_values: Tensor | None,
    ranks: Ranks = SINGLE,
) -> dict[str, float]:
    """Backward of one minibatch's loss in length-sorted micro-batches; returns the minibatch's loss parts.

    Each micro-batch's aggregated loss is scaled by its share of the minibatch's denominator (tokens for
    token-mean, sequences for the seq-mean modes, rows x the constant for seq-mean-token-sum-norm), so the
    accumulated gradient is that of the whole minibatch. Across ranks the denominator is the sum of the
    ranks' and the parts are summed over them: the minibatch is the union of the ranks' rows.
    """
    agg, norm = config.algorithm.loss_agg_mode, config.norm_tokens
    total_weight, total_tokens = sum_values(
        [float(aggregate_weight(mb.loss_mask, agg, norm)) if mb.size else 0.0, float(mb.loss_mask.sum().item())],
        ranks,
    )
    split = micro_batches(mb, config.algorithm.micro_batch_tokens, share_prefix=config.algorithm.share_prefix)
    # a micro-batch without sampled tokens adds nothing to the loss or to any denominator
    groups = [rows for rows in split if rows.numel() and mb.loss_mask[rows].sum() > 0]
    parts: dict[str, float] = dict.fromkeys(_PART_KEYS, 0.0)
    for i, rows in enumerate(groups):
        micro = mb.select(rows).trimmed()
        micro_old = None if mb_old_values is None else mb_old_values[rows][:, : micro.input_ids.shape[1]]  # (b, t)
        with compute_context(config, micro.input_ids.device):  # the backward runs outside autocast, as it should
            loss, micro_parts = _minibatch_loss(model, micro, config, value_head, micro_old)
        share = float(aggregate_weight(micro.loss_mask, agg, norm)) / total_weight
        token_share = float(micro.loss_mask.sum().item()) / total_tokens
        sync = i == len(groups) - 1  # multi-device: all-reduce gradients once, after the last micro-batch
        with nullcontext() if sync else acc.no_sync(model):
            acc.backward(loss * share)
        for key, value in micro_parts.items():
            weight = token_share if key in _TOKEN_MEANS else share
            parts[key] = parts.get(key, 0.0) + weight * value
    if ranks.sharded:  # FSDP: every rank runs as many passes over the sharded layers as the busiest one
        for _ in range(max_int(len(groups), ranks) - len(groups)):
            _zero_weight_pass(model, mb, config)
    if ranks.active:
        parts = dict(zip(_PART_KEYS, sum_values([parts[k] for k in _PART_KEYS], ranks), strict=True))
    return parts


_PART_KEYS = ("policy", "kl", "entropy", "value", "total", "clip_frac", "approx_kl", "ratio_mean", "dual_clip_frac")
"""The loss parts `_minibatch_loss` reports (summed over ranks in this order)."""


def _zero_weight_pass(model: Any, mb: TrainBatch, config: TrainConfig) -> None:
    """A forward and backward that changes no gradient: keeps an FSDP rank in step with the others."""
    device = mb.input_ids.device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    with compute_context(config, device):
        hidden = hidden_states(model, ids, torch.ones_like(ids))  # (1, 2, H)
    zero: Tensor = hidden.float().sum() * 0.0
    zero.backward()  # type: ignore[no-untyped-call]


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
    ranks: Ranks = SINGLE,
) -> LossStats:
    """Phase 5: `ppo_epochs` passes of clipped-PPO minibatch updates; returns averaged loss stats.

    Across ranks each rank shuffles its own rows into minibatches of `minibatch_size / world` rows, and
    minibatch k of the update is the union of the ranks' k-th ones (skipped only when it is empty or
    without signal on every rank), so all ranks step the optimizer together on the same summed gradient.
    """
    alg = config.algorithm
    if (value_head is None) != (old_values is None):
        raise ValueError("update_policy needs both value_head and old_values (critic) or neither")
    shuffle = torch.Generator().manual_seed(config.seed * 7919 + step)
    rows_total = batch.size
    if alg.drop_flat_rows and _advantage_only(config, value_head):
        batch = batch.select(informative_rows(batch))  # e.g. every member of a zero-variance GRPO group
    kept, seen = sum_values([batch.size, rows_total], ranks)
    extra = {"train/rows_updated_frac": kept / seen if seen else 0.0}
    local_size = -(-alg.minibatch_size // ranks.world)
    sums: dict[str, float] = {}
    count = 0
    model.train()
    for _ in range(alg.ppo_epochs):
        groups = batch.group_ids.cpu() if alg.share_prefix else None
        plan = list(_shuffled_rows(batch.size, local_size, shuffle, groups))
        for k in range(max_int(len(plan), ranks)):
            rows = plan[k] if k < len(plan) else torch.zeros(0, dtype=torch.long)
            mb = batch.select(rows)
            tokens, signal = sum_values(
                [float(mb.loss_mask.sum().item()), 0.0 if _has_no_signal(mb, config, value_head) else 1.0], ranks
            )
            if tokens == 0:  # nothing sampled (e.g. every episode overflowed the context)
                continue
            if signal == 0:  # a step would only replay AdamW momentum and decay
                continue
            mb_old_values = None if old_values is None else old_values[rows]  # (B, T)
            parts = _accumulate_gradients(model, mb, config, acc, value_head, mb_old_values, ranks)
            all_reduce_gradients([model, value_head], ranks)
            grad_norm = 0.0
            if config.optim.max_grad_norm > 0:
                if ranks.sharded:
                    grad_norm = clip_sharded_grad_norm([model], config.optim.max_grad_norm, ranks)
                else:
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
