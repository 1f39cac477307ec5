"""The transformers rollout engine: our own batched KV-cache sampling loop (not `model.generate`).

Logprob convention, shared with the trainer's recomputation and with the vLLM engine (its
"processed_logprobs", which it serves only without top-p/top-k, see `generation.vllm`): the full
distribution, `logprobs[i] = log_softmax(logits / temperature)[token_i]`, taken BEFORE top-p/top-k
filtering (as verl/TRL recompute old log-probs); with temperature 0 (greedy) `log_softmax(logits)`.
EOS tokens and the tokens that complete a stop string stay in the output, with their logprobs.

Prefix reuse (issue #13; on by default, `prefix_cache=False` restores the full re-prefill of every prompt):
identical prompts in a call are prefilled once and their cache is copied along the batch, a prefix that all
of a call's distinct prompts share (the system prompt) is prefilled once, and each row's keys/values are kept
after the call, so the next call's prompt that extends a row (the same episode's next turn) prefills only the
appended tokens. Lifetime, which relaxes DESIGN.md's stateless `Generator`: the call stays stateless in meaning
(prompts are matched by their exact token prefix, never by identity), but the engine holds the rows of the
LAST call only: a row not continued by the next call is freed then; everything is freed by `release()`, by
`load_weights`, when the served parameters change (optimizer step on a shared model), and when a call fails.

Packed linear layers (on by default on CPU, `packed_linear=False` turns them off): during a call every
`nn.Linear` of the served model runs oneDNN over its weight packed once per set of weights
(`generation.packed`); the packs live and die with the kept rows above (same key, same `release()`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from worker.rl.generation.base import Completion, EngineStats, SamplingParams
from worker.rl.generation.incremental import IncrementalChunk
from worker.rl.generation.kv_cache import CachedRow, PrefixStore, slab_attention, supports_slab_cache, weights_key
from worker.rl.generation.packed import PackedLinears, packing_unsupported
from worker.rl.generation.sampling import RowState, sample_tokens

logger = logging.getLogger(__name__)

CHAT_END_TOKEN = "<|im_end|>"
_STOP_TAIL_MARGIN = 8
"""Extra tokens decoded beyond the longest stop string (in chars) when checking for a stop."""


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Tokenizer EOS, `<|im_end|>` when the vocab has it, and the generation config's EOS ids."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids(CHAT_END_TOKEN)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, list) else [gen_eos]))
    return frozenset(ids)


class HFGenerator:
    """Batched sampling with a KV cache on any transformers causal LM (CPU or GPU).

    Implements `Generator`, `WeightSyncable` and `CacheHolder`. Finished rows are dropped from the batch (and
    its KV cache) so the remaining rows decode faster; on the prefix-cache path they ride along unused until
    carrying them has cost about one copy of the slab, then leave together. With `prefix_cache` (the default,
    where the model's attention allows it) prompts reuse cached prefixes as the module docstring describes;
    `max_cache_tokens` bounds the tokens kept between calls (SmolLM2-135M: 46 KB a token in float32).
    """

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        max_batch_size: int = 64,
        ignore_eos: bool = False,
        prefix_cache: bool = True,
        max_cache_tokens: int = 65_536,
        packed_linear: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.ignore_eos = ignore_eos
        """Benchmarks only: never stop on EOS, so every row runs to max_new_tokens."""
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.prefix_cache = prefix_cache and supports_slab_cache(model)
        if prefix_cache and not self.prefix_cache:
            logger.info("%s: attention is not plain full attention; prefix cache off", type(model).__name__)
        self.store = PrefixStore(max_cache_tokens)
        self.stats = EngineStats()
        unsupported = packing_unsupported(model, self.device) if packed_linear else None
        if unsupported:
            logger.info("%s: linear layers run unpacked: %s", type(model).__name__, unsupported)
        self.packed = PackedLinears(model) if packed_linear and unsupported is None else None
        """The linear layers' oneDNN packs (`generation.packed`); None where they run as they are."""

    def shares_model_with(self, model: Any) -> bool:
        """True when `model` is the very object served here (weight sync is then a no-op)."""
        return model is self.model

    def release(self) -> None:
        """Free every kept KV row and the packed weights now (e.g. when a rollout ends, before the update needs
        the memory)."""
        self.store.clear()
        if self.packed is not None:
            self.packed.release()

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Copy new weights in by parameter/buffer name; tensors that already alias ours are skipped."""
        self.release()
        own = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in own:
                    raise KeyError(f"load_weights: {name!r} is not a parameter of the served model")
                target = own[name]
                if target.data_ptr() != tensor.data_ptr():
                    target.copy_(tensor.to(device=target.device, dtype=target.dtype))

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        base_seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        was_training = self.model.training
        self.model.eval()
        self.stats.calls += 1
        self.stats.rows += len(prompts)
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        try:
            with torch.inference_mode():
                key = weights_key(self.model)
                linears = self.packed.serving(key) if self.packed is not None else contextlib.nullcontext()
                with linears:
                    return self._generate(prompts, params, base_seed, key)
        except BaseException:
            self.store.clear()  # a failed or cancelled call keeps nothing
            raise
        finally:
            self.model.train(was_training)

    def _generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, base_seed: int, key: tuple[int, ...]
    ) -> list[Completion]:
        out: list[Completion] = []
        if not self.prefix_cache:
            for start in range(0, len(prompts), self.max_batch_size):
                chunk = prompts[start : start + self.max_batch_size]
                out.extend(self._generate_chunk(chunk, params, base_seed, start))
            return out
        if self.store.weights_key != key:
            self.store.clear()
        kept: list[CachedRow] = []
        with slab_attention(self.model, self.device):
            for start in range(0, len(prompts), self.max_batch_size):
                chunk = prompts[start : start + self.max_batch_size]
                completions, rows = IncrementalChunk(self, chunk, params, base_seed, start).run()
                out.extend(completions)
                kept.extend(rows)
        self.store.replace(kept, key)
        return out

    def _prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[Tensor, Any, Tensor]:
        """Left-pad and run the prompts; returns last logits (B, V), the KV cache, attention mask (B, T)."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            attention[i, width - len(p) :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        self.stats.prefill_tokens += sum(len(p) for p in prompts)
        self.stats.prefill_positions += input_ids.numel()
        return out.logits[:, -1, :], out.past_key_values, attention

    def _generate_chunk(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, base_seed: int, offset: int
    ) -> list[Completion]:
        """The full re-prefill path (`prefix_cache=False`): every prompt prefilled whole, a growing DynamicCache."""
        rows = [RowState(index=i) for i in range(len(prompts))]
        generators = [torch.Generator(device=self.device).manual_seed(base_seed + offset + i) for i in range(len(rows))]
        started = time.perf_counter()
        logits, cache, attention = self._prefill(prompts)  # (B, V), cache, (B, T)
        decode_started = time.perf_counter()
        self.stats.prefill_s += decode_started - started
        active = list(range(len(rows)))  # row indices still decoding, in batch order
        for step in range(params.max_new_tokens):
            # 1. Sample one token for every active row.
            tokens, logprobs = sample_tokens(logits, params, [generators[r] for r in active])  # (A,), (A,)
            # 2. Record it and decide which rows are done.
            keep: list[int] = []
            for pos, r in enumerate(active):
                self._append(rows[r], int(tokens[pos]), float(logprobs[pos]), params, step)
                if rows[r].finish_reason is None:
                    keep.append(pos)
            if not keep:
                break
            # 3. Drop finished rows from the batch and the cache, then decode one step.
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)  # (A',)
                cache.batch_select_indices(index)
                tokens, attention = tokens[index], attention[index]  # (A',), (A', T)
                active = [active[p] for p in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=-1)  # (A, T+1)
            positions = attention.sum(-1, keepdim=True) - 1  # (A, 1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            logits, cache = out.logits[:, -1, :], out.past_key_values  # (A, V)
            self._count_decode(len(active), attention.shape[1])
        self.stats.decode_s += time.perf_counter() - decode_started
        self.stats.sampled_tokens += sum(len(r.token_ids) for r in rows)
        return [Completion(tuple(r.token_ids), tuple(r.logprobs), r.finish_reason or "length") for r in rows]

    def _count_decode(self, rows: int, columns: int) -> None:
        self.stats.decode_steps += 1
        self.stats.decode_tokens += rows
        self.stats.decode_kv_tokens += rows * columns

    def _append(self, row: RowState, token: int, logprob: float, params: SamplingParams, step: int) -> None:
        row.token_ids.append(token)
        row.logprobs.append(logprob)
        if (not self.ignore_eos and token in self.eos_ids) or self._hits_stop(row.token_ids, params.stop):
            row.finish_reason = "stop"
        elif step + 1 >= params.max_new_tokens:
            row.finish_reason = "length"

    def _hits_stop(self, token_ids: list[int], stop: tuple[str, ...]) -> bool:
        """Whether the decoded tail contains a stop string (it can only have just appeared)."""
        if not stop:
            return False
        tail = token_ids[-(max(len(s) for s in stop) + _STOP_TAIL_MARGIN) :]
        text = self.tokenizer.decode(tail, skip_special_tokens=False)
        return any(s in text for s in stop)
