"""Every advantage estimator against an independent loop reference (issue #10).

The batches come through `collate` from multi-turn trajectories: prompts, assistant turns separated by
tool tokens (loss mask 0), right padding, real-valued rewards (F1-like values plus a format term) and
per-turn step rewards. GRPO is also checked against TRL's own formula (`trl.trainer.utils.nanstd`).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from trl.trainer.utils import nanstd

from tests.rl._learn_fixtures import make_trajectory
from worker.rl.algorithms.advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, compute_advantages
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.update import informative_rows

EPS = 1e-6
GROUP = 3


def _batch(seed: int, *, flat: bool = False) -> TrainBatch:
    """3 groups x 3 members, 1-3 assistant turns with 2 tool tokens between turns, ragged lengths."""
    rng = random.Random(seed)
    trajs = []
    for g in range(3):
        prompt = [rng.randrange(1, 60) for _ in range(rng.randrange(2, 5))]
        shared = round(rng.uniform(0.0, 1.0), 2) + 0.1  # one value for a whole (flat) group
        for _ in range(GROUP):
            turns = [[rng.randrange(1, 60) for _ in range(rng.randrange(1, 5))] for _ in range(rng.randrange(1, 4))]
            reward = shared if flat else round(rng.uniform(0.0, 1.0), 2) + 0.1 * rng.randrange(0, 2)
            steps = tuple(round(rng.uniform(-0.5, 0.5), 2) for _ in turns)
            trajs.append(
                make_trajectory(prompt, turns, group_id=f"g{g}", reward=reward, step_rewards=steps, tool_tokens=[7, 8])
            )
    return collate(trajs)


def _inputs(batch: TrainBatch, seed: int, **kw: float) -> AdvantageInputs:
    values = torch.randn(batch.loss_mask.shape, generator=torch.Generator().manual_seed(seed))  # (N, T)
    return AdvantageInputs(
        token_rewards=batch.token_rewards,
        response_mask=batch.loss_mask,
        group_ids=batch.group_ids,
        values=values,
        step_rewards=batch.step_rewards,
        step_mask=batch.step_mask,
        **kw,
    )


def _rows(t: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in t]


def _sampled(mask: list[float]) -> list[int]:
    return [t for t, m in enumerate(mask) if m > 0]


def _loop_group(scores: list[float], groups: list[int], name: str) -> list[float]:
    out = []
    for s, g in zip(scores, groups, strict=True):
        members = [x for x, h in zip(scores, groups, strict=True) if h == g]
        n = len(members)
        mean = sum(members) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / max(n - 1, 1))
        if name == "grpo":
            out.append((s - mean) / (std + EPS))
        elif name in ("dr_grpo", "reinforce_pp_baseline"):
            out.append(s - mean)
        else:  # rloo
            out.append(s - (sum(members) - s) / (n - 1))
    return out


def _loop_whiten(rows: list[list[float]], mask: list[list[float]]) -> list[list[float]]:
    vals = [v for r, m in zip(rows, mask, strict=True) for t, v in enumerate(r) if m[t] > 0]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return [
        [(v - mean) / (std + EPS) if m[t] > 0 else 0.0 for t, v in enumerate(r)]
        for r, m in zip(rows, mask, strict=True)
    ]


def _loop_returns(rewards: list[float], mask: list[float], gamma: float) -> list[float]:
    out, running = [0.0] * len(mask), 0.0
    for t in reversed(_sampled(mask)):  # the tool tokens between turns are skipped, not discounted
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _loop_gae(rewards: list[float], values: list[float], mask: list[float], gamma: float, lam: float) -> list[float]:
    out, running, next_v = [0.0] * len(mask), 0.0, 0.0
    for t in reversed(_sampled(mask)):
        running = rewards[t] + gamma * next_v - values[t] + gamma * lam * running
        next_v = values[t]
        out[t] = running
    return out


def _loop_process(batch: TrainBatch) -> list[list[float]]:
    """Step rewards normalised over every step of the group, then summed from each token to the end."""
    step_r, step_m, mask = _rows(batch.step_rewards), _rows(batch.step_mask), _rows(batch.loss_mask)
    groups = batch.group_ids.tolist()
    out = []
    for i, g in enumerate(groups):
        pool = [step_r[j][t] for j, h in enumerate(groups) if h == g for t in range(len(mask[j])) if step_m[j][t]]
        mean = sum(pool) / len(pool)
        std = math.sqrt(sum((x - mean) ** 2 for x in pool) / max(len(pool) - 1, 1))
        normed = [(step_r[i][t] - mean) / (std + EPS) if step_m[i][t] else 0.0 for t in range(len(mask[i]))]
        out.append([sum(normed[t:]) * mask[i][t] for t in range(len(mask[i]))])
    return out


def _spread(per_seq: list[float], mask: list[list[float]]) -> torch.Tensor:
    return torch.tensor([[a * m for m in row] for a, row in zip(per_seq, mask, strict=True)])


def test_batches_have_tool_gaps_and_real_rewards() -> None:
    batch = _batch(0)
    mask = _rows(batch.loss_mask)
    gaps = [row for row in mask if (s := _sampled(row)) and len(s) != s[-1] - s[0] + 1]
    assert gaps, "at least one row must have a masked tool-token gap inside its response"
    assert any(r != round(r) for r in batch.rewards.tolist())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_group_estimators_match_loops(seed: int, name: str) -> None:
    batch = _batch(seed)
    inputs = _inputs(batch, seed)
    mask = _rows(batch.loss_mask)
    scores = [
        sum(r * m for r, m in zip(rr, mm, strict=True)) for rr, mm in zip(_rows(batch.token_rewards), mask, strict=True)
    ]
    ref = _spread(_loop_group(scores, batch.group_ids.tolist(), name), mask)  # (N, T)
    if name == "reinforce_pp_baseline":
        ref = torch.tensor(_loop_whiten(_rows(ref), mask))
    out = ADVANTAGE_ESTIMATORS[name](inputs).advantages
    assert torch.allclose(out, ref.float(), atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_grpo_matches_trl_formula(seed: int) -> None:
    """TRL's GRPOTrainer: (r - group mean) / (nanstd + eps) over a (groups, G) view of the rewards."""
    batch = _batch(seed)
    grouped = batch.rewards.double().view(-1, GROUP)  # (G, 3) the batch is group-major
    mean = grouped.mean(dim=1).repeat_interleave(GROUP)  # (N,)
    std = nanstd(grouped, dim=1).repeat_interleave(GROUP)  # (N,)
    trl_adv = (batch.rewards.double() - mean) / (std + EPS)  # (N,)
    out = ADVANTAGE_ESTIMATORS["grpo"](_inputs(batch, seed)).advantages  # (N, T)
    assert torch.allclose(out, (trl_adv[:, None] * batch.loss_mask).float(), atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_token_level_estimators_match_loops(seed: int) -> None:
    batch = _batch(seed)
    inputs = _inputs(batch, seed, gamma=0.9, lam=0.8)
    rewards, mask, values = _rows(batch.token_rewards), _rows(batch.loss_mask), _rows(inputs.values)
    rets = [_loop_returns(r, m, 0.9) for r, m in zip(rewards, mask, strict=True)]
    rpp = ADVANTAGE_ESTIMATORS["reinforce_pp"](inputs)
    assert torch.allclose(rpp.returns, torch.tensor(rets), atol=1e-5)
    assert torch.allclose(rpp.advantages, torch.tensor(_loop_whiten(rets, mask)), atol=1e-5)
    gaes = [_loop_gae(r, v, m, 0.9, 0.8) for r, v, m in zip(rewards, values, mask, strict=True)]
    gae = ADVANTAGE_ESTIMATORS["gae"](inputs)
    assert torch.allclose(gae.advantages, torch.tensor(_loop_whiten(gaes, mask)), atol=1e-5)
    targets = [
        [(a + v) * k for a, v, k in zip(ar, vr, mr, strict=True)] for ar, vr, mr in zip(gaes, values, mask, strict=True)
    ]
    assert torch.allclose(gae.returns, torch.tensor(targets), atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp"])
def test_process_rewards_of_critic_free_estimators_match_loop(seed: int, name: str) -> None:
    batch = _batch(seed)
    base = ADVANTAGE_ESTIMATORS[name](_inputs(batch, seed)).advantages
    out = compute_advantages(name, _inputs(batch, seed, process_reward_weight=0.5)).advantages
    assert torch.allclose(out - base, 0.5 * torch.tensor(_loop_process(batch)), atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_gae_puts_process_rewards_into_the_token_rewards(seed: int) -> None:
    """Issue #10 (7): GAE over outcome + weight x step rewards; value targets are plain GAE returns."""
    batch = _batch(seed)
    inputs = _inputs(batch, seed, gamma=0.95, lam=0.9, process_reward_weight=0.5)
    rewards = [
        [r + 0.5 * s for r, s in zip(rr, sr, strict=True)]
        for rr, sr in zip(_rows(batch.token_rewards), _rows(batch.step_rewards), strict=True)
    ]
    mask, values = _rows(batch.loss_mask), _rows(inputs.values)
    gaes = [_loop_gae(r, v, m, 0.95, 0.9) for r, v, m in zip(rewards, values, mask, strict=True)]
    targets = [
        [(a + v) * k for a, v, k in zip(ar, vr, mr, strict=True)] for ar, vr, mr in zip(gaes, values, mask, strict=True)
    ]
    out = compute_advantages("gae", inputs)
    assert torch.allclose(out.returns, torch.tensor(targets), atol=1e-5)
    assert torch.allclose(out.advantages, torch.tensor(_loop_whiten(gaes, mask)), atol=1e-5)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_flat_groups_get_exactly_zero(name: str) -> None:
    """Issue #10 (2): real-valued rewards equal within each group give advantage 0.0, not ulp residue / eps."""
    for seed in range(40):
        batch = _batch(seed, flat=True)
        out = ADVANTAGE_ESTIMATORS[name](_inputs(batch, seed)).advantages
        assert torch.count_nonzero(out) == 0, (seed, batch.rewards.tolist())
        assert informative_rows(batch.with_(advantages=out)).numel() == 0  # drop_flat_rows / no-signal see it


@pytest.mark.parametrize("group_size", [2, 3, 5, 8, 16])
def test_random_flat_groups_float32_rewards(group_size: int) -> None:
    """The issue's probe: many flat groups of F1 + format values; every advantage must be exactly 0."""
    rng = random.Random(group_size)
    values = [round(rng.uniform(0, 1), 2) + rng.choice([0.0, 0.1, 0.2]) for _ in range(200)]
    rewards = torch.tensor([v for v in values for _ in range(group_size)])  # (N,) float32
    n = rewards.numel()
    mask = torch.ones(n, 1)
    tok = rewards[:, None].clone()  # (N, 1)
    groups = torch.arange(len(values)).repeat_interleave(group_size)  # (N,)
    inputs = AdvantageInputs(tok, mask, groups)
    assert torch.count_nonzero(ADVANTAGE_ESTIMATORS["grpo"](inputs).advantages) == 0


def test_flat_process_rewards_add_nothing() -> None:
    batch = _batch(1)
    flat_steps = batch.step_mask * 0.3  # (N, T) every step of every group rewarded 0.3
    inputs = _inputs(batch.with_(step_rewards=flat_steps), 1, process_reward_weight=1.0)
    base = ADVANTAGE_ESTIMATORS["grpo"](inputs).advantages
    assert torch.equal(compute_advantages("grpo", inputs).advantages, base)
