"""Collation of trajectories into padded tensors and seeded minibatching."""

from __future__ import annotations

import functools
import operator

import pytest
import torch

from tests.rl._learn_fixtures import make_trajectory
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.update import _shuffled_rows


def _trajs() -> list:  # type: ignore[type-arg]
    return [
        make_trajectory(
            [5, 6, 7], [[10, 11], [12]], group_id="a", reward=1.0, step_rewards=(0.5, 0.25), tool_tokens=[3, 3]
        ),
        make_trajectory([5, 6], [[20]], group_id="b", reward=0.0, step_rewards=(1.0,)),
        make_trajectory([5], [[30, 31, 32]], group_id="a", reward=2.0),
    ]


def test_collate_shapes_masks_and_rewards() -> None:
    b = collate(_trajs(), pad_token_id=0)
    assert b.input_ids.shape == (3, 8)
    assert b.input_ids[0].tolist() == [5, 6, 7, 10, 11, 3, 3, 12]
    assert b.input_ids[1].tolist() == [5, 6, 20, 0, 0, 0, 0, 0]
    assert b.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert b.loss_mask[0].tolist() == [0, 0, 0, 1, 1, 0, 0, 1]
    assert b.old_logprobs[0, 3].item() == pytest.approx(-0.5)
    assert b.old_logprobs[0, 5] == 0
    assert b.token_rewards[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1.0]
    assert b.token_rewards[2, 3].item() == 2.0
    assert b.token_rewards[2].sum() == 2.0
    assert b.step_rewards[0].tolist() == [0, 0, 0, 0, 0.5, 0, 0, 0.25]
    assert b.step_mask[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 1]
    assert b.step_mask[2].sum() == 0
    assert b.group_ids.tolist() == [0, 1, 0]
    assert b.rewards.tolist() == [1.0, 0.0, 2.0]


def _minibatch_rewards(b: TrainBatch, size: int, seed: int) -> list[list[float]]:
    draw = _shuffled_rows(b.size, size, torch.Generator().manual_seed(seed))
    return [b.select(rows).rewards.tolist() for rows in draw]


def test_minibatches_are_seeded_and_cover_all_rows() -> None:
    b = collate(_trajs() * 3)
    first = _minibatch_rewards(b, 4, 1)
    again = _minibatch_rewards(b, 4, 1)
    assert first == again
    assert [len(x) for x in first] == [4, 4, 1]
    assert sorted(functools.reduce(operator.iadd, first, [])) == sorted(b.rewards.tolist())
    other = _minibatch_rewards(b, 4, 2)
    assert other != first


def test_select_and_with_keep_optional_tensors() -> None:
    b = collate(_trajs())
    b2 = b.with_(advantages=torch.ones(3, 8))
    sub = b2.select(torch.tensor([2]))
    assert sub.advantages is not None
    assert sub.advantages.shape == (1, 8)
    assert sub.ref_logprobs is None
    assert sub.size == 1


def test_collate_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        collate([])
