"""Shared-prefix packing: one decoder pass over a GRPO group computes its common prompt once.

The members of a group start with the same ids (system prompt, tool schemas, question, prefill) and
differ after it. Packing lays out, per group, the shared prefix once followed by each member's own
suffix in one row, with position ids that restart at the prefix length for every suffix. Attention
is computed segment by segment (`shared_prefix_attention`, registered with transformers as
`ATTENTION_NAME`): a prefix attends to itself causally, a suffix to the whole prefix and to itself
causally, so no compute goes to pairs that may not attend and each token's hidden state is exactly the
one a separate pass over its row would give (up to float summation order). `unpack` gathers them back
to the right-padded (B, T, H) layout, so log-probs, entropy and critic values are computed as usual and
gradients flow back through the gather into the shared prefix.

On the reference HotpotQA config a ~410-token prompt is shared by 4 members of ~770 tokens, so a
group's pass covers ~40% fewer tokens. Used with decoders on transformers' sdpa attention (the default
of Llama, Qwen2, SmolLM2, Mistral, ...); others take padded rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "studio_shared_prefix"
"""The attention implementation a packed pass switches an sdpa decoder to (plain sdpa without a layout)."""


@dataclass(frozen=True)
class Cluster:
    """One group's segments in the packed row: its shared prefix, then each member's suffix."""

    prefix: tuple[int, int]
    """(start, length) of the shared prefix."""
    suffixes: tuple[tuple[int, int], ...]
    """(start, length) of each member's own tokens (length 0 when the row is the prefix itself)."""


@dataclass(frozen=True)
class PackedRows:
    """Rows laid out for one shared-prefix pass."""

    input_ids: Tensor
    """(1, L) the packed ids."""
    position_ids: Tensor
    """(1, L) each token's position in its own row."""
    index: Tensor
    """(B, T) long, the packed position of row b's token t (0 on padding)."""
    layout: tuple[Cluster, ...]
    """The segments, in packed order."""

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every row starts with."""
    if not rows:
        return 0
    shortest = min(len(r) for r in rows)
    for i in range(shortest):
        token = rows[0][i]
        if any(r[i] != token for r in rows[1:]):
            return i
    return shortest


def packed_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens of one packed group: the shared prefix once plus each row's suffix."""
    prefix = common_prefix_length(rows)
    return prefix + sum(len(r) - prefix for r in rows)


def pack_rows(input_ids: Tensor, attention_mask: Tensor, group_ids: Tensor) -> PackedRows:
    """Pack right-padded rows (B, T), sharing the common prefix of rows with the same group id."""
    lengths = attention_mask.sum(dim=1).tolist()
    ids = [input_ids[b, : int(n)].tolist() for b, n in enumerate(lengths)]
    members: dict[int, list[int]] = {}
    for b, g in enumerate(group_ids.tolist()):
        members.setdefault(int(g), []).append(b)
    tokens: list[int] = []
    positions: list[int] = []
    layout: list[Cluster] = []
    index = torch.zeros(input_ids.shape, dtype=torch.long)  # (B, T)
    for rows in members.values():
        prefix = common_prefix_length([ids[b] for b in rows])
        start = len(tokens)
        tokens += ids[rows[0]][:prefix]
        positions += range(prefix)
        suffixes: list[tuple[int, int]] = []
        for b in rows:
            index[b, :prefix] = torch.arange(start, start + prefix)
            own = ids[b][prefix:]
            begin = len(tokens)
            tokens += own
            positions += range(prefix, prefix + len(own))
            index[b, prefix : prefix + len(own)] = torch.arange(begin, begin + len(own))
            suffixes.append((begin, len(own)))
        layout.append(Cluster(prefix=(start, prefix), suffixes=tuple(suffixes)))
    device = input_ids.device
    return PackedRows(
        input_ids=torch.tensor([tokens], dtype=torch.long, device=device),
        position_ids=torch.tensor([positions], dtype=torch.long, device=device),
        index=index.to(device),
        layout=tuple(layout),
    )


def shared_prefix_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    packed_layout: tuple[Cluster, ...] | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Attention over a packed row, segment by segment; plain sdpa when no layout is passed.

    `query` (1, Hq, L, D), `key`/`value` (1, Hkv, L, D). Returns (1, L, Hq, D) like transformers' sdpa.
    """
    if packed_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    repeats = query.shape[1] // key.shape[1]  # grouped-query attention: each KV head serves `repeats` heads
    if repeats > 1:
        key = key.repeat_interleave(repeats, dim=1)
        value = value.repeat_interleave(repeats, dim=1)
    pieces: list[Tensor] = []
    for cluster in packed_layout:
        p0, plen = cluster.prefix
        if plen:
            q, k, v = (t[:, :, p0 : p0 + plen] for t in (query, key, value))
            pieces.append(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling))
        for s0, slen in cluster.suffixes:
            if not slen:
                continue
            k = torch.cat([key[:, :, p0 : p0 + plen], key[:, :, s0 : s0 + slen]], dim=2)  # (1, H, P+S, D)
            v = torch.cat([value[:, :, p0 : p0 + plen], value[:, :, s0 : s0 + slen]], dim=2)  # (1, H, P+S, D)
            sees = torch.ones(slen, plen + slen, dtype=torch.bool, device=query.device)  # (S, P+S)
            sees[:, plen:] = torch.ones(slen, slen, dtype=torch.bool, device=query.device).tril()
            q = query[:, :, s0 : s0 + slen]
            pieces.append(F.scaled_dot_product_attention(q, k, v, attn_mask=sees, dropout_p=dropout, scale=scaling))
    out = torch.cat(pieces, dim=2)  # (1, Hq, L, D)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # padded calls keep sdpa's masks


def supports_packing(decoder: Any) -> bool:
    """Whether the decoder's attention is sdpa (which `shared_prefix_attention` reproduces) or already ours."""
    config = getattr(decoder, "config", None)
    return getattr(config, "_attn_implementation", None) in ("sdpa", ATTENTION_NAME)


def use_shared_prefix_attention(decoder: Any) -> None:
    """Route the decoder's attention through `shared_prefix_attention` from now on (idempotent).

    Permanent on purpose: gradient checkpointing recomputes a packed forward during backward, which must
    take the same route. Calls without a `packed_layout` (generation, padded passes) still get plain sdpa
    with sdpa's masks. Nothing is saved with the model (transformers does not serialise the choice).
    """
    decoder.config._attn_implementation = ATTENTION_NAME


def packed_hidden_states(decoder: Any, packed: PackedRows) -> Tensor:
    """The decoder's last hidden states over a packed row, (1, L, H)."""
    use_shared_prefix_attention(decoder)
    out = decoder(input_ids=packed.input_ids, position_ids=packed.position_ids, packed_layout=packed.layout)
    hidden: Tensor = out.last_hidden_state  # (1, L, H)
    return hidden


def unpack(hidden: Tensor, packed: PackedRows) -> Tensor:
    """Packed hidden states (1, L, H) back to the rows' right-padded layout (B, T, H)."""
    # index_select, not hidden[0][index]: its backward (index_add) sums the rows that share a prefix token in a
    # fixed order on CPU; advanced indexing's (index_put with accumulate) does not, and resumes would drift
    flat = torch.index_select(hidden[0], 0, packed.index.reshape(-1))  # (B*T, H)
    return flat.view(*packed.index.shape, hidden.shape[-1])  # (B, T, H)
