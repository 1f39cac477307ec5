"""The trainer's phases (issue #11) change no number: two steps equal the pre-split loop, run live here.

`_reference_train` is the loop as it was before the phases became separate calls (one `prepare_batch`
doing collation, the reference and critic passes and the advantages by estimator name); both runs start
from identical tiny models and seeds, and every logged metric (timings aside) and every weight must match.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from torch import Tensor, nn

from tests.rl._learn_fixtures import char_tokenizer, parity_rubric, tiny_components, tiny_llama
from worker.rl.algorithms.advantages import AdvantageInputs, compute_advantages
from worker.rl.algorithms.losses import aggregate, kl_penalty
from worker.rl.generation.hf import HFGenerator
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.build import (
    TaskSampler,
    TrainComponents,
    make_optimizer,
    make_scheduler,
    with_resolved_precision,
)
from worker.rl.training.collect import collect_step
from worker.rl.training.config import AlgorithmConfig, EvalConfig, OptimConfig, RolloutConfig, TrainConfig
from worker.rl.training.critic import critic_metrics, token_values, value_head_for
from worker.rl.training.logprobs import enable_shared_prefix, token_logprobs
from worker.rl.training.metrics import step_metrics
from worker.rl.training.trainer import seed_everything, sync_weights, train
from worker.rl.training.update import _per_token_no_grad, attach_value_head, pad_id, update_policy


def _old_prepare_batch(
    trajs: list[Any], comps: TrainComponents, config: TrainConfig, device: Any, value_head: nn.Module | None
) -> tuple[TrainBatch, Tensor | None]:
    """`update.prepare_batch` before the split, verbatim in substance."""
    alg = config.algorithm
    batch = collate(trajs, pad_id(comps.tokenizer)).to(device)
    rewards = batch.token_rewards
    if comps.ref_model is not None and alg.kl_coef > 0:
        ref = comps.ref_model
        ref_lp = _per_token_no_grad(
            batch,
            config,
            lambda mb: token_logprobs(
                ref,
                mb.input_ids,
                mb.attention_mask,
                mb.loss_mask,
                temperature=config.rollout.temperature,
                group_ids=mb.group_ids if alg.share_prefix else None,
            )[0],
        )
        batch = batch.with_(ref_logprobs=ref_lp)
        if alg.kl_in_reward:
            rewards = rewards - alg.kl_coef * kl_penalty(batch.old_logprobs, ref_lp, alg.kl_estimator) * batch.loss_mask
    old_values = None
    if value_head is not None:
        head = value_head
        old_values = _per_token_no_grad(
            batch,
            config,
            lambda mb: token_values(
                comps.model,
                head,
                mb.input_ids,
                mb.attention_mask,
                mb.loss_mask,
                mb.group_ids if alg.share_prefix else None,
            ),
        )
    inputs = AdvantageInputs(
        token_rewards=rewards.cpu(),
        response_mask=batch.loss_mask.cpu(),
        group_ids=batch.group_ids.cpu(),
        values=None if old_values is None else old_values.cpu(),
        gamma=alg.gamma,
        lam=alg.lam,
        step_rewards=batch.step_rewards.cpu(),
        step_mask=batch.step_mask.cpu(),
        process_reward_weight=alg.process_reward_weight,
    )
    adv = compute_advantages(alg.estimator, inputs)
    return batch.with_(advantages=adv.advantages.to(device), returns=adv.returns.to(device)), old_values


def _reference_train(config: TrainConfig, comps: TrainComponents) -> list[dict[str, float]]:
    """The pre-split loop (no eval, no checkpoints): setup, then collect → prepare_batch → update → sync → log."""
    config = with_resolved_precision(config)
    seed_everything(config.seed)
    if config.algorithm.share_prefix:
        for net in (comps.model, comps.ref_model):
            if net is not None:
                enable_shared_prefix(net)
    acc = Accelerator(cpu=True)
    model = comps.model
    opt = make_optimizer(model, config.optim)
    head = None
    if config.algorithm.uses_critic:
        head = value_head_for(model, seed=config.seed)
        attach_value_head(opt, head, config)
        model, head, opt = acc.prepare(model, head, opt)
    else:
        model, opt = acc.prepare(model, opt)
    sched = make_scheduler(opt, config.optim)
    sampler = TaskSampler(len(comps.train_tasks), config.seed)
    model.eval()
    out = []
    for step in range(1, config.optim.total_steps + 1):
        rollout = collect_step(comps, config, sampler, step)
        batch, old_values = _old_prepare_batch(rollout.trajectories, comps, config, acc.device, head)
        loss = update_policy(model, batch, config, opt, acc, step, value_head=head, old_values=old_values)
        sched.step()
        sync_weights(comps.generator, model)
        metrics = step_metrics(rollout.trajectories, rollout.stats, loss, step_s=time.perf_counter())
        assert batch.advantages is not None
        metrics["reward/advantage_abs_mean"] = float(aggregate(batch.advantages.abs(), batch.loss_mask).item())
        if old_values is not None and batch.returns is not None:
            metrics.update(critic_metrics(old_values, batch.returns, batch.loss_mask))
        out.append(metrics)
    return out


def _components(with_reference: bool) -> TrainComponents:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=11)
    comps = tiny_components(tok, model, HFGenerator(model, tok), parity_rubric())
    if with_reference:
        comps = dataclasses.replace(comps, ref_model=copy.deepcopy(model).requires_grad_(False))
    return comps


def _config(**alg: Any) -> TrainConfig:
    return TrainConfig(
        rollout=RolloutConfig(prompts_per_step=2, group_size=3, max_turns=1, max_new_tokens_per_turn=8),
        algorithm=AlgorithmConfig(minibatch_size=3, ppo_epochs=2, **alg),
        optim=OptimConfig(lr=1e-2, total_steps=2),
        eval=EvalConfig(num_tasks=0),
        seed=5,
    )


def _strip(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


@pytest.mark.parametrize(
    "alg",
    [
        {"estimator": "grpo", "kl_coef": 0.1, "kl_estimator": "k3", "entropy_coef": 0.01},
        {"estimator": "rloo", "kl_coef": 0.2, "kl_estimator": "k1", "kl_in_reward": True},
        {"estimator": "gae", "vf_coef": 0.5, "value_head_lr": 1e-3, "gamma": 0.9, "lam": 0.8},
    ],
    ids=["grpo-kl-loss", "rloo-kl-reward", "gae-critic"],
)
def test_two_steps_equal_the_pre_split_loop(tmp_path: Path, alg: dict[str, Any]) -> None:
    config = _config(**alg)
    with_reference = config.uses_reference
    ours_comps = _components(with_reference)
    ours: list[dict[str, float]] = []
    train(config, run_dir=tmp_path, components=ours_comps, on_step=lambda s, m, t: ours.append(m))
    ref_comps = _components(with_reference)
    theirs = _reference_train(config, ref_comps)
    assert len(ours) == len(theirs) == 2
    assert theirs[1]["loss/grad_norm"] > 0  # the run did update
    for mine, reference in zip(ours, theirs, strict=True):
        assert _strip(mine) == _strip(reference)
    trained, reference_weights = ours_comps.model.state_dict(), ref_comps.model.state_dict()
    untouched = tiny_llama(vocab_size=len(char_tokenizer()), seed=11).lm_head.weight
    assert not torch.equal(trained["lm_head.weight"], untouched)
    for key, value in trained.items():
        assert torch.equal(value, reference_weights[key]), key
