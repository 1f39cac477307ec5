"""Trajectories → right-padded training tensors (minibatches are drawn in `update._shuffled_rows`).

The ids are exactly what the engine produced (never re-tokenised). The
outcome reward sits on the last sampled token; each assistant turn's step
reward on that turn's last sampled token (see `algorithms.advantages`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from worker.rl.types import Trajectory


@dataclass(frozen=True)
class TrainBatch:
    """One step's (or one minibatch's) tensors; N trajectories, T = longest length."""

    input_ids: Tensor
    """(N, T) long, right-padded with the pad id."""
    attention_mask: Tensor
    """(N, T) long, 1 on real tokens."""
    loss_mask: Tensor
    """(N, T) float, 1 on policy-sampled tokens."""
    old_logprobs: Tensor
    """(N, T) float, the engine's sampling logprobs under the loss mask, 0 elsewhere."""
    token_rewards: Tensor
    """(N, T) float, the outcome reward on the last sampled token."""
    step_rewards: Tensor
    """(N, T) float, each assistant turn's step reward on its last sampled token."""
    step_mask: Tensor
    """(N, T) float, 1 where a step reward sits."""
    group_ids: Tensor
    """(N,) long, dense group index (trajectories of one prompt share it)."""
    rewards: Tensor
    """(N,) float, the rubric total per trajectory."""
    advantages: Tensor | None = None
    """(N, T) float, filled in after the estimator runs."""
    returns: Tensor | None = None
    """(N, T) float, value targets (gae) or the estimator's returns."""
    ref_logprobs: Tensor | None = None
    """(N, T) float, reference-model logprobs when KL is on."""

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def with_(self, **changes: Tensor | None) -> TrainBatch:
        """A copy with some tensors replaced (the batch itself is frozen)."""
        return replace(self, **changes)  # type: ignore[arg-type]  # None is valid for the optional fields

    def _map(self, fn: Callable[[Tensor], Tensor]) -> TrainBatch:
        """A copy with `fn` applied to every tensor that is set."""
        mapped = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainBatch(**{k: None if v is None else fn(v) for k, v in mapped.items()})  # type: ignore[arg-type]

    def to(self, device: torch.device | str) -> TrainBatch:
        """Every tensor moved to `device`."""
        return self._map(lambda v: v.to(device))

    def trimmed(self) -> TrainBatch:
        """A copy cut to this batch's own longest row: the columns after it are padding in every row."""
        length = int(self.attention_mask.sum(dim=1).max().item()) if self.size else 0
        if length == self.input_ids.shape[1]:
            return self
        return self._map(lambda v: v[:, :length] if v.dim() == 2 else v)

    def select(self, index: Tensor) -> TrainBatch:
        """Rows `index` (N',) of every tensor."""
        return self._map(lambda v: v[index])


def _last_sampled(mask: Sequence[int], start: int, end: int) -> int | None:
    for i in range(min(end, len(mask)) - 1, max(start, 0) - 1, -1):
        if mask[i]:
            return i
    return None


def _step_positions(traj: Trajectory) -> list[int | None]:
    """Position of the last sampled token of each assistant turn, in turn order."""
    spans = [(t.token_start, t.token_end) for t in traj.turns if t.role == "assistant"]
    return [_last_sampled(traj.loss_mask, s, e) for s, e in spans]


def collate(trajectories: Sequence[Trajectory], pad_token_id: int = 0) -> TrainBatch:
    """Pad trajectories to a TrainBatch (group ids densified in order of first appearance)."""
    if not trajectories:
        raise ValueError("collate needs at least one trajectory")
    n, t_len = len(trajectories), max(len(t.token_ids) for t in trajectories)
    input_ids = torch.full((n, t_len), pad_token_id, dtype=torch.long)  # (N, T)
    attention = torch.zeros((n, t_len), dtype=torch.long)  # (N, T)
    mask, old_lp, tok_r, step_r, step_m = (torch.zeros((n, t_len)) for _ in range(5))  # (N, T) each
    group_index: dict[str, int] = {}
    groups = torch.zeros(n, dtype=torch.long)  # (N,)
    for i, traj in enumerate(trajectories):
        length = len(traj.token_ids)
        input_ids[i, :length] = torch.tensor(traj.token_ids, dtype=torch.long)
        attention[i, :length] = 1
        mask[i, :length] = torch.tensor(traj.loss_mask, dtype=torch.float32)
        old_lp[i, :length] = torch.tensor([lp or 0.0 for lp in traj.logprobs], dtype=torch.float32)
        last = _last_sampled(traj.loss_mask, 0, length)
        if last is not None:
            tok_r[i, last] = traj.reward
        for pos, reward in zip(_step_positions(traj), traj.step_rewards, strict=False):
            if pos is not None:
                step_r[i, pos] += reward
                step_m[i, pos] = 1.0
        groups[i] = group_index.setdefault(traj.group_id, len(group_index))
    rewards = torch.tensor([t.reward for t in trajectories], dtype=torch.float32)  # (N,)
    return TrainBatch(input_ids, attention, mask, old_lp * mask, tok_r, step_r, step_m, groups, rewards)
