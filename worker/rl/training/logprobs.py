"""Per-token log-probabilities of chosen tokens without full-vocabulary logits.

The decoder body runs once (`hidden_states`, shared with the critic); the lm_head is applied only to the
states that predict a target token, in row chunks, so memory never holds (B, T, V) logits (that is what
took SmolLM2 training to 11-14 GB RSS).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from worker.rl.training.packing import (
    pack_rows,
    packed_hidden_states,
    supports_packing,
    unpack,
    use_shared_prefix_attention,
)


def _unwrap(model: Any) -> Any:
    """Strip DDP/accelerate (`.module`) and peft (`get_base_model`) wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder_and_head(model: Any) -> tuple[nn.Module, nn.Module]:
    """The decoder body (returns hidden states) and the lm_head of an HF causal LM."""
    base = _unwrap(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else getattr(base, "lm_head", None)
    if decoder is None or head is None:
        raise ValueError(f"{type(base).__name__} is not a causal LM with a decoder body and an lm_head")
    return decoder, head


def enable_shared_prefix(model: Any) -> bool:
    """Route the model's sdpa attention through the shared-prefix path from the start of a run.

    Packed passes switch it anyway (`packing.use_shared_prefix_attention`); doing it up front puts every
    pass of a run, resumed or not, generation included, on the same route. Returns whether it applies.
    """
    decoder, _ = decoder_and_head(model)
    if not supports_packing(decoder):
        return False
    use_shared_prefix_attention(decoder)
    return True


def hidden_states(model: Any, input_ids: Tensor, attention_mask: Tensor, group_ids: Tensor | None = None) -> Tensor:
    """The decoder body's last hidden states, (B, T, H); the one forward pass of an update.

    With `group_ids` (B,), rows of one group that start with the same ids share one pass over that
    prefix (`training.packing`) when the attention implementation allows it and it saves tokens.
    """
    decoder, _ = decoder_and_head(model)
    if group_ids is not None and supports_packing(decoder):
        packed = pack_rows(input_ids, attention_mask, group_ids)
        if packed.length < int(attention_mask.sum().item()):
            return unpack(packed_hidden_states(decoder, packed), packed)  # (B, T, H)
    hidden: Tensor = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    return hidden


def predicting_positions(target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows and columns of the hidden states that predict a target token: the state at t-1 predicts token t."""
    want = target_mask[:, 1:] > 0  # (B, T-1)
    rows, cols = want.nonzero(as_tuple=True)  # (K,), (K,)
    return rows, cols


def logprobs_from_hidden(
    model: Any,
    hidden: Tensor,
    input_ids: Tensor,
    target_mask: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor | None]:
    """`token_logprobs` from precomputed hidden states (B, T, H), so a critic can share the pass."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for log-probabilities (use 1.0 for greedy rollouts)")
    _, head = decoder_and_head(model)
    rows, cols = predicting_positions(target_mask)
    picked = hidden[rows, cols]  # (K, H)
    targets = input_ids[rows, cols + 1]  # (K,)
    lp_parts: list[Tensor] = []
    ent_parts: list[Tensor] = []
    for start in range(0, picked.shape[0], chunk_size):
        logits = head(picked[start : start + chunk_size]).float() / temperature  # (k, V)
        logp = torch.log_softmax(logits, dim=-1)  # (k, V)
        lp_parts.append(logp.gather(1, targets[start : start + chunk_size, None]).squeeze(1))  # (k,)
        if with_entropy:
            ent_parts.append(-(logp.exp() * logp).sum(dim=-1))  # (k,)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=hidden.device)  # (B, T)
    if lp_parts:
        out = out.index_put((rows, cols + 1), torch.cat(lp_parts))  # (B, T)
    if not with_entropy:
        return out, None
    ent = torch.zeros(input_ids.shape, dtype=torch.float32, device=hidden.device)  # (B, T)
    if ent_parts:
        ent = ent.index_put((rows, cols + 1), torch.cat(ent_parts))  # (B, T)
    return out, ent


def token_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    target_mask: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int = 1024,
    group_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """log p(token_t | tokens_<t) where `target_mask` is 1, zeros elsewhere; optional entropy.

    `temperature` divides the logits, matching an engine that sampled at that
    temperature. Position 0 can never be a target (nothing predicts it). `group_ids`: see `hidden_states`.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for log-probabilities (use 1.0 for greedy rollouts)")
    hidden = hidden_states(model, input_ids, attention_mask, group_ids)  # (B, T, H)
    return logprobs_from_hidden(
        model, hidden, input_ids, target_mask, temperature=temperature, with_entropy=with_entropy, chunk_size=chunk_size
    )
