"""The PPO critic: a value head on the policy's last hidden states (shared backbone).

Critic = policy decoder body + `ValueHead`, so one decoder pass gives both log-probs and values and the
value loss also shapes the body (cleanrl's shared-trunk agent; the cheapest critic, no second model).
The value at position t is read from the state that predicts token t, the same alignment as
`token_logprobs`, so it estimates the return of the state in which token t is sampled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from worker.rl.training.logprobs import decoder_and_head, hidden_states, predicting_positions


class ValueHead(nn.Module):
    """Linear(hidden, 1) in float32, initialised near zero so early values do not swamp the returns."""

    def __init__(self, hidden_size: int, *, init_std: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1; got {hidden_size}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0; got {init_std}")
        self.proj = nn.Linear(hidden_size, 1, dtype=torch.float32)
        # a private generator: creating the head leaves the run's global RNG stream untouched
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=gen) * init_std)  # (1, H)
            self.proj.bias.zero_()  # (1,)

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., H) hidden states → (...) values."""
        values: Tensor = self.proj(hidden.float()).squeeze(-1)  # (...)
        return values


def value_head_for(model: Any, *, init_std: float = 1e-3, seed: int = 0) -> ValueHead:
    """A fresh head sized to the model's last hidden state (the lm_head's input), on the model's device."""
    _, lm_head = decoder_and_head(model)
    width = getattr(lm_head, "in_features", None)
    if width is None:
        weight = getattr(lm_head, "weight", None)
        if not isinstance(weight, Tensor):
            raise ValueError(f"cannot size a value head: {type(lm_head).__name__} has no in_features or weight")
        width = int(weight.shape[1])
    device = next(model.parameters()).device
    return ValueHead(int(width), init_std=init_std, seed=seed).to(device)


def values_from_hidden(head: nn.Module, hidden: Tensor, mask: Tensor) -> Tensor:
    """(B, T) values where `mask` is 1 (position t read from the state at t-1), zeros elsewhere."""
    rows, cols = predicting_positions(mask)
    picked = head(hidden[rows, cols])  # (K,)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)  # (B, T)
    return out.index_put((rows, cols + 1), picked.float())  # (B, T)


def token_values(
    model: Any,
    head: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    group_ids: Tensor | None = None,
) -> Tensor:
    """(B, T) critic values on the masked (policy-sampled) positions; one decoder pass (`group_ids`: shared
    prefixes, see `logprobs.hidden_states`)."""
    hidden = hidden_states(model, input_ids, attention_mask, group_ids)  # (B, T, H)
    return values_from_hidden(head, hidden, mask)  # (B, T)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the mask (1 = perfect, <= 0 = no better than a constant).

    0 when fewer than two tokens or (numerically) constant returns leave it undefined.
    """
    m = mask > 0  # (B, T)
    if int(m.sum()) < 2:
        return 0.0
    target = returns[m].double()  # (K,)
    var = target.var(unbiased=False)
    if float(var) <= 1e-12:
        return 0.0
    return float(1.0 - (target - values[m].double()).var(unbiased=False) / var)


def critic_metrics(values: Tensor, returns: Tensor, mask: Tensor) -> dict[str, float]:
    """`critic/...` metrics of the pre-update values against the value targets."""
    m = mask.to(values.dtype)  # (B, T)
    n = m.sum().clamp(min=1.0)
    return {
        "critic/value_mean": float((values * m).sum() / n),
        "critic/return_mean": float((returns * m).sum() / n),
        "critic/explained_variance": explained_variance(values, returns, mask),
    }
