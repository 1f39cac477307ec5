"""Advantage estimators: hand-computed two-group examples and slow loop references."""

from __future__ import annotations

import math

import pytest
import torch

from worker.rl.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    get_estimator,
    process_reward_advantages,
)


def _outcome_inputs(rewards: list[float], groups: list[int], lengths: list[int], t_len: int = 4) -> AdvantageInputs:
    n = len(rewards)
    mask = torch.zeros(n, t_len)
    tok = torch.zeros(n, t_len)
    for i, (r, length) in enumerate(zip(rewards, lengths, strict=True)):
        mask[i, 1 : 1 + length] = 1.0
        tok[i, length] = r
    return AdvantageInputs(tok, mask, torch.tensor(groups), gamma=1.0)


TWO_GROUPS = _outcome_inputs([1.0, 0.0, 0.0, 2.0, 4.0], [0, 0, 0, 7, 7], [2, 3, 1, 3, 2])


def test_grpo_two_groups_by_hand() -> None:
    out = get_estimator("grpo")(TWO_GROUPS).advantages
    # group 0: mean 1/3, unbiased std sqrt(1/3); group 7: mean 3, std sqrt(2)
    s0 = math.sqrt(1 / 3)
    expected = [(2 / 3) / s0, (-1 / 3) / s0, (-1 / 3) / s0, -1 / math.sqrt(2), 1 / math.sqrt(2)]
    for i, e in enumerate(expected):
        on = TWO_GROUPS.response_mask[i] > 0
        assert torch.allclose(out[i][on], torch.full_like(out[i][on], e), atol=1e-5)
        assert torch.all(out[i][~on] == 0)


def test_dr_grpo_and_rloo_by_hand() -> None:
    dr = get_estimator("dr_grpo")(TWO_GROUPS).advantages
    rloo = get_estimator("rloo")(TWO_GROUPS).advantages
    assert dr[0, 1].item() == pytest.approx(2 / 3)
    assert dr[3, 1].item() == pytest.approx(-1.0)
    # rloo: 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5; 2 - 4 = -2
    assert [rloo[i, 1].item() for i in range(5)] == pytest.approx([1.0, -0.5, -0.5, -2.0, 2.0])


def test_reinforce_pp_returns_and_whitening_by_hand() -> None:
    tok = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out = get_estimator("reinforce_pp")(AdvantageInputs(tok, mask, torch.tensor([0, 1]), gamma=0.5))
    assert out.returns.tolist() == [[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]]
    vals = torch.tensor([0.25, 0.5, 1.0, 1.0, 2.0])
    white = (vals - vals.mean()) / (vals.std(unbiased=False) + 1e-6)
    assert out.advantages[mask > 0].tolist() == pytest.approx(white.tolist(), abs=1e-5)
    assert out.advantages[1, 2].item() == 0.0


def test_reinforce_pp_baseline_by_hand() -> None:
    out = get_estimator("reinforce_pp_baseline")(TWO_GROUPS)
    centred = torch.tensor([2 / 3] * 2 + [-1 / 3] * 3 + [-1 / 3] + [-1.0] * 3 + [1.0] * 2)
    white = (centred - centred.mean()) / (centred.std(unbiased=False) + 1e-6)
    assert out.advantages[TWO_GROUPS.response_mask > 0].tolist() == pytest.approx(white.tolist(), abs=1e-5)


def test_gae_by_hand_and_needs_values() -> None:
    tok = torch.tensor([[0.0, 1.0]])
    mask = torch.ones(1, 2)
    values = torch.tensor([[0.5, 0.25]])
    out = get_estimator("gae")(AdvantageInputs(tok, mask, torch.tensor([0]), values=values, gamma=0.9, lam=0.8))
    d1 = 1.0 - 0.25
    d0 = 0.0 + 0.9 * 0.25 - 0.5
    raw = torch.tensor([d0 + 0.9 * 0.8 * d1, d1])
    assert out.returns[0].tolist() == pytest.approx((raw + values[0]).tolist())
    with pytest.raises(ValueError, match="vf_coef"):
        get_estimator("gae")(AdvantageInputs(tok, mask, torch.tensor([0])))


def test_unknown_estimator_lists_names() -> None:
    with pytest.raises(ValueError, match=r"grpo.*rloo"):
        get_estimator("ppo2")


def test_singleton_group_gets_zero() -> None:
    inputs = _outcome_inputs([3.0], [0], [2])
    for name in ("grpo", "dr_grpo", "rloo"):
        assert torch.all(ADVANTAGE_ESTIMATORS[name](inputs).advantages == 0)


def test_process_rewards_normalised_within_group_and_summed_to_go() -> None:
    tok = torch.zeros(2, 4)
    mask = torch.ones(2, 4)
    step_r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    step_m = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    inputs = AdvantageInputs(
        tok, mask, torch.tensor([0, 0]), step_rewards=step_r, step_mask=step_m, process_reward_weight=0.5
    )
    # steps in group: [1, 0, 3] -> mean 4/3, std sqrt(7/3)
    z = [(v - 4 / 3) / (math.sqrt(7 / 3) + 1e-6) for v in (1.0, 0.0, 3.0)]
    to_go = process_reward_advantages(inputs)
    assert to_go[0].tolist() == pytest.approx([z[0] + z[1], z[1], z[1], 0.0], abs=1e-5)
    assert to_go[1].tolist() == pytest.approx([z[2]] * 3 + [0.0], abs=1e-5)
    total = compute_advantages("dr_grpo", inputs).advantages
    assert torch.allclose(total, 0.5 * to_go, atol=1e-6)


# ---- slow loop references --------------------------------------------------------------------------


def _loop_group_stats(scores: list[float], groups: list[int]) -> dict[int, list[float]]:
    members: dict[int, list[float]] = {}
    for s, g in zip(scores, groups, strict=True):
        members.setdefault(g, []).append(s)
    return members


def _loop_outcome(name: str, scores: list[float], groups: list[int]) -> list[float]:
    members = _loop_group_stats(scores, groups)
    out = []
    for s, g in zip(scores, groups, strict=True):
        m = members[g]
        mean = sum(m) / len(m)
        std = math.sqrt(sum((x - mean) ** 2 for x in m) / max(len(m) - 1, 1))
        if name == "grpo":
            out.append((s - mean) / (std + 1e-6))
        elif name == "dr_grpo":
            out.append(s - mean)
        else:
            out.append(0.0 if len(m) == 1 else s - (sum(m) - s) / (len(m) - 1))
    return out


def _random_inputs(seed: int, **kw: float) -> AdvantageInputs:
    g = torch.Generator().manual_seed(seed)
    n, t_len = 7, 9
    lengths = torch.randint(1, t_len, (n,), generator=g)
    mask = torch.zeros(n, t_len)
    tok = torch.zeros(n, t_len)
    for i in range(n):
        start = int(torch.randint(0, t_len - int(lengths[i]) + 1, (1,), generator=g))
        mask[i, start : start + int(lengths[i])] = 1.0
        tok[i, start + int(lengths[i]) - 1] = float(torch.randint(0, 3, (1,), generator=g))
    tok = tok + 0.1 * torch.randn(n, t_len, generator=g) * mask
    groups = torch.randint(0, 3, (n,), generator=g)
    values = torch.randn(n, t_len, generator=g)
    return AdvantageInputs(tok, mask, groups, values=values, **kw)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_group_estimators_match_loop(seed: int, name: str) -> None:
    inputs = _random_inputs(seed)
    scores = (inputs.token_rewards * inputs.response_mask).sum(1).tolist()
    ref = _loop_outcome(name, scores, inputs.group_ids.tolist())
    out = ADVANTAGE_ESTIMATORS[name](inputs).advantages
    for i in range(len(ref)):
        assert (out[i] * inputs.response_mask[i]).tolist() == pytest.approx(
            (ref[i] * inputs.response_mask[i]).tolist(), abs=1e-4
        )


def _loop_whiten(rows: list[list[float]], mask: list[list[float]]) -> list[list[float]]:
    vals = [v for r, m in zip(rows, mask, strict=True) for v, k in zip(r, m, strict=True) if k]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return [
        [(v - mean) / (std + 1e-6) if k else 0.0 for v, k in zip(r, m, strict=True)]
        for r, m in zip(rows, mask, strict=True)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_reinforce_pp_and_gae_match_loop(seed: int) -> None:
    inputs = _random_inputs(seed, gamma=0.9, lam=0.7)
    rewards, mask, values = inputs.token_rewards.tolist(), inputs.response_mask.tolist(), inputs.values.tolist()
    rets, gaes = [], []
    for r, m, v in zip(rewards, mask, values, strict=True):
        idx = [t for t in range(len(m)) if m[t]]
        g_ret, a_run, next_v = 0.0, 0.0, 0.0
        row_ret, row_adv = [0.0] * len(m), [0.0] * len(m)
        for t in reversed(idx):
            g_ret = r[t] + 0.9 * g_ret
            row_ret[t] = g_ret
            a_run = r[t] + 0.9 * next_v - v[t] + 0.9 * 0.7 * a_run
            next_v = v[t]
            row_adv[t] = a_run
        rets.append(row_ret)
        gaes.append(row_adv)
    rpp = ADVANTAGE_ESTIMATORS["reinforce_pp"](inputs)
    assert torch.allclose(rpp.returns, torch.tensor(rets), atol=1e-4)
    assert torch.allclose(rpp.advantages, torch.tensor(_loop_whiten(rets, mask)), atol=1e-4)
    gae = ADVANTAGE_ESTIMATORS["gae"](inputs)
    assert torch.allclose(gae.advantages, torch.tensor(_loop_whiten(gaes, mask)), atol=1e-4)
