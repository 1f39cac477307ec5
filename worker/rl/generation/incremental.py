"""One chunk of an HF engine call with prefix reuse: plan what to prefill, prefill it once, decode on a slab.

Phases: 1 plan (distinct prompts, each one's longest cached prefix, a prefix all distinct prompts share),
2 prefill only the uncached suffixes into a slab preallocated for the whole call, 3 copy along the batch
for rows with the same prompt, 4 decode (a row that finishes is kept for the next call; it leaves the batch
at the slab's next compaction).
Sampling is the full-prefill path's: the same per-row seeds, so the same tokens and logprobs up to rounding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from worker.rl.generation.base import Completion, SamplingParams
from worker.rl.generation.kv_cache import (
    GQA_SDPA,
    CachedRow,
    SlabCache,
    common_prefix_length,
    decode_mask,
    kv_shape,
    prefill_mask,
)
from worker.rl.generation.sampling import RowState, sample_tokens

if TYPE_CHECKING:
    from worker.rl.generation.hf import HFGenerator

MIN_SHARED_PREFIX = 16
"""A prefix common to all distinct prompts is prefilled on its own only when it saves at least this many tokens."""
PREFILL_BLOCK_TOKENS = 16_384
"""Padded prompt positions per prefill forward (rows are split into blocks to bound activation memory)."""

MAX_PAD_FRACTION = 0.25
"""Rows share a prefill forward while their suffixes are at least this close to the block's longest."""

Match = tuple[CachedRow | None, int]
"""A prompt's source row and how many of its leading tokens come from it."""


class IncrementalChunk:
    """Runs `engine.generate` over at most `max_batch_size` prompts (see the module docstring)."""

    def __init__(
        self, engine: HFGenerator, prompts: Sequence[Sequence[int]], params: SamplingParams, base_seed: int, offset: int
    ) -> None:
        self.engine, self.params = engine, params
        self.model, self.device, self.stats = engine.model, engine.device, engine.stats
        self.prompts = [torch.tensor(list(p), dtype=torch.long) for p in prompts]
        self.generators = [
            torch.Generator(device=self.device).manual_seed(base_seed + offset + i) for i in range(len(prompts))
        ]
        self.dtype = next(self.model.parameters()).dtype
        self.boolean_mask = getattr(self.model.config, "_attn_implementation", "sdpa") in ("sdpa", GQA_SDPA)

    def run(self) -> tuple[list[Completion], list[CachedRow]]:
        """Completions in prompt order, and every row's keys/values (prompt + sampled tokens but the last)."""
        started = time.perf_counter()
        # 1. Plan: distinct prompts and where each one's prefix comes from
        unique: dict[tuple[int, ...], int] = {}
        row_to_unique = [unique.setdefault(tuple(p.tolist()), len(unique)) for p in self.prompts]
        distinct = [torch.tensor(key, dtype=torch.long) for key in unique]
        extra = self._shared_prefix(distinct)
        matches = [self.engine.store.best_match(p, extra) for p in distinct]
        # longest suffix first, so rows of similar suffix length prefill together with little padding
        order = sorted(range(len(distinct)), key=lambda u: matches[u][1] - int(distinct[u].shape[0]))
        slot = {u: i for i, u in enumerate(order)}
        distinct, matches = [distinct[u] for u in order], [matches[u] for u in order]
        row_to_unique = [slot[u] for u in row_to_unique]
        # 2. Prefill the distinct suffixes once, into a slab with room for every row and decode step
        batch = len(self.prompts)
        cache, valid, logits = self._prefill(distinct, matches, self.params.max_new_tokens, batch)  # (U, W), (U, V)
        # 3. Rows with the same prompt share its prefill: copy the cache along the batch, in place (the batch
        # holds the rows in their prompt's prefill order, so that each copy moves a row up)
        pos_to_row = sorted(range(batch), key=row_to_unique.__getitem__)
        source = [row_to_unique[r] for r in pos_to_row]  # (B,), non-decreasing
        if source != list(range(batch)):
            index = torch.tensor(source, device=self.device)  # (B,)
            cache.select_rows(index)
            valid, logits = valid[index], logits[index]  # (B, W), (B, V)
        self.stats.prefill_s += time.perf_counter() - started
        # 4. Decode
        return self._decode(cache, valid, logits, pos_to_row)

    def _shared_prefix(self, distinct: list[Tensor]) -> list[CachedRow]:
        """Prefill once the prefix every distinct prompt starts with, when their cached prefixes stop short of it."""
        if len(distinct) < 2:
            return []
        shared = min(common_prefix_length(distinct[0], p) for p in distinct[1:])
        shared = min(shared, min(int(p.shape[0]) for p in distinct) - 1)
        reused = max(self.engine.store.best_match(p)[1] for p in distinct)
        if shared - reused < MIN_SHARED_PREFIX:
            return []
        prefix = distinct[0][:shared]  # (S,)
        cache, valid, _ = self._prefill([prefix], [self.engine.store.best_match(prefix)], 0, 1)
        return [self._keep(cache, valid, 0, prefix)]

    def _prefill(
        self, prompts: list[Tensor], matches: list[Match], decode_room: int, batch_rows: int
    ) -> tuple[SlabCache, Tensor, Tensor]:
        """Lay the reused prefixes right-aligned at column c0, run the suffixes (left-padded) at [c0, c0 + n).

        Returns the cache (cursor at c0 + n; its slab allocated with `batch_rows` >= U rows, the first U in use),
        the valid-column mask (U, W) and the last logits (U, V).
        """
        reuse = [r for _, r in matches]
        start = max(reuse)
        width = max(int(p.shape[0]) - r for p, r in zip(prompts, reuse, strict=True))
        layers, heads, head_dim = kv_shape(self.model)
        total = start + width + decode_room
        capacity = max(batch_rows, len(prompts))
        slab = torch.zeros((layers, 2, capacity, heads, total, head_dim), dtype=self.dtype, device=self.device)
        valid = torch.zeros((len(prompts), total), dtype=torch.bool, device=self.device)  # (U, W)
        for u, (source, n_reused) in enumerate(matches):
            if source is not None and n_reused > 0:
                slab[:, :, u, :, start - n_reused : start] = source.kv[:, :, :, :n_reused]
                valid[u, start - n_reused : start] = True
            valid[u, start + width - (int(prompts[u].shape[0]) - n_reused) : start + width] = True
            self.stats.reused_tokens += n_reused
            self.stats.prefill_tokens += int(prompts[u].shape[0]) - n_reused
        logits = [
            self._prefill_block(slab, valid, prompts, matches, rows, start + width) for rows in _blocks(prompts, reuse)
        ]
        return SlabCache(slab, start + width, len(prompts)), valid, torch.cat(logits)

    def _prefill_block(
        self, slab: Tensor, valid: Tensor, prompts: list[Tensor], matches: list[Match], rows: range, end: int
    ) -> Tensor:
        """One forward over `rows`' suffixes, left-padded to the block's longest and ending at column `end`."""
        width = max(int(prompts[u].shape[0]) - matches[u][1] for u in rows)
        input_ids = torch.full((len(rows), width), self.engine.pad_id, dtype=torch.long)  # (u, n)
        positions = torch.zeros((len(rows), width), dtype=torch.long)  # (u, n)
        for i, u in enumerate(rows):
            n_reused = matches[u][1]
            suffix = prompts[u][n_reused:]  # (m,)
            pad = width - int(suffix.shape[0])
            input_ids[i, pad:] = suffix
            positions[i, pad:] = torch.arange(n_reused, int(prompts[u].shape[0]))
            positions[i, :pad] = n_reused
        part = SlabCache(slab[:, :, rows.start : rows.stop], end - width)  # a view: writes land in `slab`
        mask = prefill_mask(valid[rows.start : rows.stop], end - width, width, self.dtype, self.boolean_mask)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask,
            position_ids=positions.to(self.device),
            past_key_values=part,
            use_cache=True,
            logits_to_keep=1,
        )
        part.advance(width)
        self.stats.prefill_positions += len(rows) * width
        logits: Tensor = out.logits[:, -1, :]  # (u, V)
        return logits

    def _keep(self, cache: SlabCache, valid: Tensor, pos: int, token_ids: Tensor) -> CachedRow:
        """Copy batch row `pos`'s valid columns out of the slab (holes removed)."""
        cols = valid[pos, : cache.length].nonzero().squeeze(-1)  # (L,)
        if cols.shape[0] != token_ids.shape[0]:
            raise RuntimeError(f"KV row holds {cols.shape[0]} tokens, expected {token_ids.shape[0]} (engine bug)")
        kv = cache.slab[:, :, pos].index_select(3, cols)  # (layers, 2, H, L, D)
        return CachedRow(token_ids=token_ids.clone(), kv=kv)

    def _decode(
        self, cache: SlabCache, valid: Tensor, logits: Tensor, pos_to_row: list[int]
    ) -> tuple[list[Completion], list[CachedRow]]:
        started = time.perf_counter()
        params, engine = self.params, self.engine
        rows = [RowState(index=i) for i in range(len(self.prompts))]
        kept: list[CachedRow | None] = [None] * len(rows)
        next_pos = torch.tensor([int(self.prompts[r].shape[0]) for r in pos_to_row], device=self.device)  # (B,)
        slots: list[int | None] = list(pos_to_row)  # batch position -> row still decoding (None: finished)
        debt = 0  # finished-row decode steps run since the slab was last compacted
        for step in range(params.max_new_tokens):
            # 4a. Sample one token per live row with its own seeded generator
            live_rows = [(pos, r) for pos, r in enumerate(slots) if r is not None]
            live = [pos for pos, _ in live_rows]
            picked, logprobs = sample_tokens(logits[live], params, [self.generators[r] for _, r in live_rows])  # (L,)
            tokens = torch.full((len(slots),), engine.pad_id, dtype=torch.long, device=self.device)  # (A,)
            tokens[live] = picked
            for i, (pos, r) in enumerate(live_rows):
                engine._append(rows[r], int(picked[i]), float(logprobs[i]), params, step)
                if rows[r].finish_reason is not None:  # fed so far: the prompt and every sampled token but this last
                    fed = torch.tensor(rows[r].token_ids[:-1], dtype=torch.long)
                    kept[r] = self._keep(cache, valid, pos, torch.cat([self.prompts[r], fed]))
                    slots[pos] = None
            live = [pos for pos, r in enumerate(slots) if r is not None]
            if not live:
                break
            # 4b. Finished rows stay in the batch (their outputs unused) until carrying them has cost about as
            # much as one compaction: a copy of the live rows' slab is ~1 row-step per live row (attention over
            # the same columns), so compact once the finished-row steps reach the live count.
            debt += len(slots) - len(live)
            if debt and debt >= len(live):
                index = torch.tensor(live, device=self.device)  # (A',)
                cache.select_rows(index)
                tokens, valid, next_pos = tokens[index], valid[index], next_pos[index]  # (A',), (A', W), (A',)
                slots, debt = [slots[p] for p in live], 0
            valid[:, cache.length] = True
            mask = decode_mask(valid, cache.length + 1, self.dtype, self.boolean_mask)  # (A, 1, 1, T+1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache.advance(1)
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :]  # (A, V)
            engine._count_decode(len(live), cache.length)
        self.stats.decode_s += time.perf_counter() - started
        self.stats.sampled_tokens += sum(len(r.token_ids) for r in rows)
        completions = [Completion(tuple(r.token_ids), tuple(r.logprobs), r.finish_reason or "length") for r in rows]
        return completions, [row for row in kept if row is not None]


def _blocks(prompts: list[Tensor], reuse: list[int]) -> list[range]:
    """Consecutive rows (sorted longest suffix first) per prefill forward: a block takes rows while padding stays
    under `MAX_PAD_FRACTION` of its width and its positions under `PREFILL_BLOCK_TOKENS`."""
    lengths = [int(p.shape[0]) - r for p, r in zip(prompts, reuse, strict=True)]
    blocks, first = [], 0
    for u in range(1, len(lengths) + 1):
        full = u == len(lengths) or (u - first + 1) * lengths[first] > PREFILL_BLOCK_TOKENS
        if full or lengths[u] < (1 - MAX_PAD_FRACTION) * lengths[first]:
            blocks.append(range(first, u))
            first = u
    return blocks
