"""KV caches of the HF engine: a preallocated slab for one call, and the prefix store that outlives it.

`SlabCache` holds every layer's keys and values in ONE tensor preallocated for the whole call
(prefill + all decode steps), so a step writes its new column in place and attention reads views of the
columns written so far: no per-step concatenation. Rows may hold different histories; every row writes
at the same column (the shared cursor), shorter rows carry masked holes, and each row's real token
positions go in explicitly as `position_ids` (RoPE sees the true positions, the mask hides the holes).

`PrefixStore` keeps, between `generate` calls, each row's keys/values (holes removed) with the exact
token ids they encode, tied to the weights they were computed with. A new prompt that starts with a
stored row's tokens reuses that prefix and prefills only what was appended (tool result, template).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.modeling_utils import AttentionInterface

GQA_SDPA = "studio_gqa_sdpa"
"""Attention the engine's slab forwards run on CPU (registered with transformers below)."""


def kv_shape(model: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder-only transformers model, from its config."""
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return int(cfg.num_hidden_layers), int(kv_heads), int(head_dim)


def supports_slab_cache(model: Any) -> bool:
    """Whether every layer is plain full attention with a standard KV cache (no sliding window, no recurrence)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(cfg, "use_sliding_window", False):
        return False
    if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return False  # flash-attention kernels take no 4D mask
    return all(hasattr(cfg, name) for name in ("num_hidden_layers", "num_attention_heads", "hidden_size"))


class _SlabLayer(CacheLayerMixin):  # type: ignore[no-untyped-call]
    """One layer's view of the slab: writes the new columns at the cursor, returns columns [0, cursor + n)."""

    def __init__(self, owner: SlabCache, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.owner, self.index = owner, index
        self.is_initialized = True

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        """The slab is allocated up front by its owner; nothing to do lazily."""

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        slab, start = self.owner.slab, self.owner.length  # slab: (layers, 2, B, H, W, D)
        end = start + key_states.shape[-2]
        if key_states.shape[0] != slab.shape[2] or key_states.shape[1] != slab.shape[3] or end > slab.shape[4]:
            raise RuntimeError(
                f"KV slab {tuple(slab.shape)} cannot take keys {tuple(key_states.shape)} at column {start}: the model"
                "'s attention does not match its config; construct HFGenerator(..., prefix_cache=False)"
            )
        slab[self.index, 0, :, :, start:end] = key_states
        slab[self.index, 1, :, :, start:end] = value_states
        self.owner.writes += 1
        return slab[self.index, 0, :, :, :end], slab[self.index, 1, :, :, :end]  # (B, H, end, D) views

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.length

    def get_max_length(self) -> int:
        return int(self.owner.slab.shape[4])


class SlabCache(Cache):
    """All layers' keys/values in one preallocated tensor `slab` (layers, 2, B, H, W, D); `length` columns written.

    The caller advances `length` after each forward (all layers write at the same cursor) and passes a 4D mask,
    so transformers' own mask construction (which assumes one shared history length) is bypassed.
    """

    def __init__(self, slab: Tensor, length: int, rows: int | None = None) -> None:
        super().__init__(layers=[_SlabLayer(self, i) for i in range(slab.shape[0])])
        self.storage = slab
        """The allocated slab; `slab` is its first `rows` batch rows (a view), the rows in use."""
        self.slab = slab if rows is None else slab[:, :, :rows]
        self.length = length
        self.writes = 0
        """Layer updates seen; a forward that wrote fewer than `layers` did not use this cache."""

    def advance(self, columns: int) -> None:
        """Move the cursor past the columns the last forward wrote, checking every layer wrote them."""
        if self.writes != self.slab.shape[0]:
            raise RuntimeError(
                f"{self.writes} of {self.slab.shape[0]} layers wrote to the KV slab: this model manages its cache "
                "differently; construct HFGenerator(..., prefix_cache=False)"
            )
        self.writes = 0
        self.length += columns

    def select_rows(self, index: Tensor) -> None:
        """Make batch row j a copy of row `index[j]` (A',): drops finished rows, or repeats one prefill's rows.

        A non-decreasing `index` that fits the allocated rows is applied in place, copying only the written
        columns (forward when every row moves down, backward when every row moves up, so no source is
        overwritten before it is read) and narrowing the view: no new memory. A fresh tensor of the slab's size
        costs a page fault per 4 KiB on first write, which dominated the copy (SmolLM2-135M, 5 of 8 rows of
        1,100 columns kept, 2 "AMD EPYC" cores: 95 ms into new memory, 13 ms in place). Any other index copies
        into a new slab.
        """
        rows = index.tolist()
        ordered = all(a <= b for a, b in itertools.pairwise(rows))
        fits = bool(rows) and rows[-1] < self.slab.shape[2] and len(rows) <= self.storage.shape[2]
        down, up = all(r >= j for j, r in enumerate(rows)), all(r <= j for j, r in enumerate(rows))
        if not (ordered and fits and (down or up)):
            self.slab = self.storage = self.slab.index_select(2, index)  # (layers, 2, A', H, W, D)
            return
        moves = [(dst, src) for dst, src in enumerate(rows) if dst != src]
        for dst, src in moves if down else reversed(moves):
            self.storage[:, :, dst, :, : self.length] = self.storage[:, :, src, :, : self.length]
        self.slab = self.storage[:, :, : len(rows)]  # (layers, 2, A', H, W, D)


@dataclass(frozen=True, slots=True)
class CachedRow:
    """The keys/values of one row's tokens: `kv[..., i, :]` encodes `token_ids[i]` after `token_ids[:i]`."""

    token_ids: Tensor
    """(L,) int64."""
    kv: Tensor
    """(layers, 2, H, L, D) in the model's dtype."""

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])


def common_prefix_length(a: Tensor, b: Tensor) -> int:
    """Length of the longest common prefix of two 1-D id tensors."""
    m = min(a.shape[0], b.shape[0])
    if m == 0:
        return 0
    diff = (a[:m] != b[:m]).nonzero()  # (k, 1)
    return int(diff[0, 0]) if diff.numel() else m


class PrefixStore:
    """The rows of the last `generate` call, for the next call to extend (see the HF engine's docs for lifetime)."""

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError(f"max_cache_tokens must be >= 0 (0 = keep nothing between calls), got {max_tokens}")
        self.max_tokens = max_tokens
        self.rows: list[CachedRow] = []
        self.weights_key: tuple[int, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return sum(r.num_tokens for r in self.rows)

    @property
    def nbytes(self) -> int:
        return sum(r.kv.element_size() * r.kv.numel() for r in self.rows)

    def clear(self) -> None:
        self.rows, self.weights_key = [], None

    def best_match(self, prompt: Tensor, extra: Sequence[CachedRow] = ()) -> tuple[CachedRow | None, int]:
        """The stored (or `extra`) row sharing the longest prefix with `prompt`, and how many tokens to reuse.

        At most `len(prompt) - 1` tokens are reused: the last prompt token must run to give the next logits.
        """
        best: CachedRow | None = None
        best_len = 0
        for row in (*self.rows, *extra):
            n = common_prefix_length(prompt, row.token_ids)
            if n > best_len:
                best, best_len = row, n
        return best, min(best_len, int(prompt.shape[0]) - 1)

    def replace(self, rows: Sequence[CachedRow], weights_key: tuple[int, ...]) -> None:
        """Keep `rows` (in order, within `max_tokens`) and nothing else."""
        kept: list[CachedRow] = []
        total = 0
        for row in rows:
            if total + row.num_tokens > self.max_tokens:
                continue
            kept.append(row)
            total += row.num_tokens
        self.rows, self.weights_key = kept, weights_key


_optimizer_steps = [0]
"""Optimizer steps taken in this process (any optimizer): fused AdamW updates weights without bumping `_version`."""


def _count_optimizer_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def weights_key(model: Any) -> tuple[int, ...]:
    """Changes whenever a parameter may have changed: any optimizer step in this process, a replaced tensor
    (`to`, new parameters), or an in-place write that bumps its version (`copy_`, `load_state_dict`).

    Writes through `param.data` bypass all three: call the engine's `release()` after those.
    """
    key = [_optimizer_steps[0]]
    for p in model.parameters():
        key += (p.data_ptr(), p._version)
    return tuple(key)


def prefill_mask(valid: Tensor, start: int, width: int, dtype: torch.dtype, boolean: bool) -> Tensor:
    """4D attention mask of a block of `width` queries at columns [start, start + width) over `valid` (B, W).

    A query sees the valid columns at or before its own; every query also sees itself, so padded queries
    never attend to nothing (their outputs are unused, but a fully masked row would make NaNs).
    """
    end = start + width
    cols = torch.arange(end, device=valid.device)  # (K,)
    rows = torch.arange(start, end, device=valid.device)  # (Q,)
    causal = cols[None, :] <= rows[:, None]  # (Q, K)
    allowed = valid[:, None, :end] & causal[None]  # (B, Q, K)
    allowed |= (cols[None, :] == rows[:, None])[None]  # (B, Q, K)
    return _as_mask(allowed[:, None], dtype, boolean)  # (B, 1, Q, K)


def decode_mask(valid: Tensor, end: int, dtype: torch.dtype, boolean: bool) -> Tensor:
    """4D mask of one query per row at column `end - 1` over `valid` (B, W): (B, 1, 1, end)."""
    return _as_mask(valid[:, None, None, :end], dtype, boolean)


def _as_mask(allowed: Tensor, dtype: torch.dtype, boolean: bool) -> Tensor:
    if boolean:
        return allowed
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def gqa_sdpa_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **_kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' SDPA attention minus its copy of the grouped KV heads (it repeats them whenever a mask is
    given): SDPA reads the shared heads itself (`enable_gqa`). Measured at batch 16, 1,200 cached columns, 9 query
    and 3 KV heads on 2 CPU cores: 17 ms a call against 106-142 ms with the repeat. A decode step (one query per
    row) runs `grouped_decode_attention` instead."""
    if query.shape[2] == 1 and dropout == 0.0:
        return grouped_decode_attention(query, key, value, attention_mask, scaling), None
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )  # (B, Hq, Q, D)
    return out.transpose(1, 2).contiguous(), None  # (B, Q, Hq, D)


def grouped_decode_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scaling: float | None
) -> Tensor:
    """Attention of one query per row, (B, Hq, 1, D) over (B, Hkv, T, D) keys/values, as two batched matmuls
    with the query heads of each KV head stacked as rows (query head h reads KV head h // (Hq / Hkv), as
    transformers' `repeat_kv`); softmax in float32 at least. Returns (B, 1, Hq, D).

    Measured on 2 cores of an "AMD EPYC" (avx512_bf16), 30 layers, 9 query / 3 KV heads, 1,000 cached columns at
    batch 5: 1.0 ms a layer against SDPA's 3.4-3.6 ms in bfloat16 (its CPU kernel is slow for a single query),
    1.0 against 1.2 ms in float32. Rounding: float32 as SDPA's; bfloat16 scores are rounded once more than in
    SDPA's kernel (mean output error against float64 0.0040 against SDPA's 0.0023)."""
    batch, q_heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, q_heads // kv_heads, head_dim)  # (B, Hkv, G, D)
    scale = scaling if scaling is not None else head_dim**-0.5
    scores = torch.matmul(grouped, key.transpose(-1, -2))  # (B, Hkv, G, T)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * scale
    if mask is not None:  # (B, 1, 1, T): boolean (True = attend) or additive
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # (B, Hkv, G, D)
    return out.reshape(batch, 1, q_heads, head_dim)


AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention)


@contextlib.contextmanager
def slab_attention(model: Any, device: torch.device) -> Iterator[None]:
    """Run `model`'s SDPA layers through `gqa_sdpa_attention` for the duration (CPU only: on CUDA the fused
    kernels take no mask with grouped heads, so the repeat is the faster path there)."""
    cfg = model.config
    if device.type != "cpu" or cfg._attn_implementation != "sdpa":
        yield
        return
    cfg._attn_implementation = GQA_SDPA
    try:
        yield
    finally:
        cfg._attn_implementation = "sdpa"
