"""The HF engine's prefix reuse against its full re-prefill path, on a tiny random Llama built in-process.

Multi-turn calls are simulated the way the rollout makes them: each next prompt is a previous row's prompt
plus its sampled tokens (sometimes cut short) plus appended "observation" ids; some rows stop continuing.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from tests.rl._learn_fixtures import char_tokenizer
from tests.rl.test_hf_generator import build_tiny_llama
from worker.rl.generation.base import CacheHolder, Completion, SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.incremental import _blocks
from worker.rl.generation.kv_cache import (
    SlabCache,
    common_prefix_length,
    grouped_decode_attention,
    supports_slab_cache,
    weights_key,
)

SYSTEM = [2, *range(40, 72)]  # a 33-token "system prompt" every episode starts with


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


@pytest.fixture(scope="module")
def model64(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_tiny_llama(len(tokenizer)).double()


def first_prompts() -> list[list[int]]:
    """Two groups of two identical prompts, and a group of one; different lengths."""
    a, b, c = [*SYSTEM, 73, 74], [*SYSTEM, 75, 76, 77, 78, 79], [*SYSTEM, 80]
    return [a, a, b, b, c]


def next_prompts(prompts: list[list[int]], outs: list[Completion], turn: int) -> list[list[int]]:
    """Continue all rows but the second; cut the fourth row's sample short; append observation ids."""
    nxt = []
    for i, (prompt, out) in enumerate(zip(prompts, outs, strict=True)):
        if i == 1:
            continue
        sampled = list(out.token_ids[:-2] if i == 3 and len(out.token_ids) > 2 else out.token_ids)
        nxt.append([*prompt, *sampled, 5, 6, 10 + i + turn, *([8] * i)])
    return nxt


def run_turns(
    new: HFGenerator, old: HFGenerator, params: SamplingParams, turns: int = 3
) -> list[tuple[list[Completion], list[Completion]]]:
    prompts, pairs = first_prompts(), []
    for turn in range(turns):
        p = replace(params, seed=turn)
        a, b = new.generate(prompts, p), old.generate(prompts, p)
        pairs.append((a, b))
        prompts = next_prompts(prompts, a, turn)
    return pairs


@pytest.mark.parametrize(("temperature", "top_p", "stop"), [(1.0, 1.0, ()), (0.8, 0.9, ("ab",)), (0.0, 1.0, ("a",))])
def test_float64_same_tokens_and_logprobs_as_full_prefill(
    model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, temperature: float, top_p: float, stop: tuple
) -> None:
    new, old = HFGenerator(model64, tokenizer), HFGenerator(model64, tokenizer, prefix_cache=False)
    assert new.prefix_cache
    assert not old.prefix_cache
    params = SamplingParams(max_new_tokens=10, temperature=temperature, top_p=top_p, stop=stop)
    for a, b in run_turns(new, old, params):
        assert [x.token_ids for x in a] == [y.token_ids for y in b]
        assert [x.finish_reason for x in a] == [y.finish_reason for y in b]
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-10, rtol=0)
    # the work it saved: the old path prefilled every prompt token, the new one far fewer
    assert old.stats.prefill_tokens == old.stats.prompt_tokens == new.stats.prompt_tokens
    assert new.stats.prefill_tokens < new.stats.prompt_tokens / 3
    assert new.stats.reused_tokens > 0


def test_float32_sampled_logprobs_within_1e4(tokenizer: PreTrainedTokenizerFast) -> None:
    model = build_tiny_llama(len(tokenizer), seed=5)
    new, old = HFGenerator(model, tokenizer), HFGenerator(model, tokenizer, prefix_cache=False)
    for a, b in run_turns(new, old, SamplingParams(max_new_tokens=12, temperature=1.0)):
        assert [x.token_ids for x in a] == [y.token_ids for y in b]  # this fixed seed is stable in float32
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4, rtol=0)


def test_identical_prompts_prefill_once(model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    gen = HFGenerator(model64, tokenizer)
    prompt = [*SYSTEM, 73]
    outs = gen.generate([prompt] * 4, SamplingParams(max_new_tokens=6, temperature=1.0, seed=3))
    assert gen.stats.prefill_tokens == len(prompt)
    assert gen.stats.prompt_tokens == 4 * len(prompt)
    assert len({o.token_ids for o in outs}) > 1  # shared prefill, still one seeded stream per row


def test_unrelated_prompts_and_prefixes_still_work(
    model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    """The stateless call: any prompts in any order give what a fresh full-prefill engine gives."""
    new, old = HFGenerator(model64, tokenizer), HFGenerator(model64, tokenizer, prefix_cache=False)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=1)
    first = new.generate(first_prompts(), params)
    continued = [*first_prompts()[2], *first[2].token_ids]
    calls = [
        [[3, 4, 5], [9] * 20, [2, 50]],  # unrelated to anything cached
        first_prompts()[:2],  # new prompts again (the cache now holds the unrelated ones)
        [continued, continued[:-3], first_prompts()[2][:5]],  # extends, and strict prefixes of, a kept row
    ]
    for prompts in calls:
        a, b = new.generate(prompts, params), old.generate(prompts, params)
        assert [x.token_ids for x in a] == [y.token_ids for y in b]
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-10, rtol=0)
    assert new.stats.reused_tokens > 0  # the last call did extend the kept row


def test_cache_holds_only_the_last_call_and_is_freed(
    model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    gen = HFGenerator(model64, tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
    sizes = []
    for step in range(4):  # four "steps", each with fresh prompts of the same shape
        prompts = [[*SYSTEM, 73 + step, 74]] * 3
        outs = gen.generate(prompts, params)
        expected = sum(len(p) + len(o.token_ids) - 1 for p, o in zip(prompts, outs, strict=True))
        assert gen.store.num_tokens == expected  # exactly this call's rows, nothing older
        sizes.append(gen.store.nbytes)
    assert max(sizes) <= 1.5 * min(sizes)  # no growth across steps
    assert isinstance(gen, CacheHolder)
    gen.release()
    assert gen.store.num_tokens == 0
    assert gen.store.nbytes == 0


@pytest.mark.parametrize("fused", [True, False])
def test_weight_change_invalidates_the_cache(tokenizer: PreTrainedTokenizerFast, fused: bool) -> None:
    """An optimizer step on the served (shared) model must not reuse keys/values computed before it.

    Regression: fused AdamW (the trainer's optimizer on CPU) leaves parameter version counters alone.
    """
    model = build_tiny_llama(len(tokenizer), seed=2).double()
    gen = HFGenerator(model, tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
    outs = gen.generate(first_prompts(), params)
    prompts = next_prompts(first_prompts(), outs, 0)
    before = weights_key(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused)
    model(input_ids=torch.tensor([SYSTEM])).logits.sum().backward()
    opt.step()
    assert weights_key(model) != before
    assert gen.store.num_tokens > 0
    after = gen.generate(prompts, params)
    expected = HFGenerator(model, tokenizer, prefix_cache=False).generate(prompts, params)
    assert [a.token_ids for a in after] == [e.token_ids for e in expected]
    for a, e in zip(after, expected, strict=True):  # stale keys/values would be off by far more than rounding
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(e.logprobs), atol=1e-10, rtol=0)
    gen.load_weights(model.state_dict().items())
    assert gen.store.num_tokens == 0


def test_failed_call_keeps_nothing(
    model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = HFGenerator(model64, tokenizer)
    gen.generate(first_prompts(), SamplingParams(max_new_tokens=4, temperature=0.0))
    assert gen.store.num_tokens > 0

    def boom(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # a cancel arriving mid-call

    monkeypatch.setattr(gen, "_append", boom)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(first_prompts(), SamplingParams(max_new_tokens=4, temperature=0.0))
    assert gen.store.num_tokens == 0


def test_cache_cap_zero_keeps_nothing_and_changes_nothing(
    model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    capped = HFGenerator(model64, tokenizer, max_cache_tokens=0)
    full = HFGenerator(model64, tokenizer, prefix_cache=False)
    for a, b in run_turns(capped, full, SamplingParams(max_new_tokens=6, temperature=1.0), turns=2):
        assert [x.token_ids for x in a] == [y.token_ids for y in b]
    assert capped.store.num_tokens == 0
    with pytest.raises(ValueError, match="max_cache_tokens must be >= 0"):
        HFGenerator(model64, tokenizer, max_cache_tokens=-1)


def test_chunks_above_max_batch_size(model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    small = HFGenerator(model64, tokenizer, max_batch_size=2)
    full = HFGenerator(model64, tokenizer, prefix_cache=False)
    for a, b in run_turns(small, full, SamplingParams(max_new_tokens=6, temperature=1.0)):
        assert [x.token_ids for x in a] == [y.token_ids for y in b]


def test_slab_writes_in_place_and_returns_views() -> None:
    slab = torch.zeros((2, 2, 3, 2, 10, 4))  # (layers, 2, B, H, W, D)
    cache = SlabCache(slab, length=4)
    keys = torch.ones((3, 2, 2, 4))  # (B, H, n, D)
    k, _ = cache.update(keys, 2 * keys, 0)
    cache.update(keys, keys, 1)
    cache.advance(2)
    assert k.shape == (3, 2, 6, 4)
    assert k.data_ptr() == slab[0, 0].data_ptr()  # a view of the slab, not a copy
    assert slab[0, 1, :, :, 4:6].eq(2).all()
    assert slab[0, 0, :, :, :4].eq(0).all()
    cache.update(keys, keys, 0)
    with pytest.raises(RuntimeError, match="1 of 2 layers"):
        cache.advance(2)


def test_models_without_plain_attention_fall_back(tokenizer: PreTrainedTokenizerFast) -> None:
    def cfg(**kw: object) -> SimpleNamespace:
        base = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32, "_attn_implementation": "sdpa"}
        return SimpleNamespace(config=SimpleNamespace(**{**base, **kw}))

    assert supports_slab_cache(cfg())
    assert not supports_slab_cache(cfg(layer_types=["full_attention", "sliding_attention"]))
    assert not supports_slab_cache(cfg(use_sliding_window=True))
    assert not supports_slab_cache(cfg(_attn_implementation="flash_attention_2"))
    assert not supports_slab_cache(cfg(is_encoder_decoder=True))


def test_common_prefix_length() -> None:
    t = torch.tensor
    assert common_prefix_length(t([1, 2, 3]), t([1, 2, 4, 5])) == 2
    assert common_prefix_length(t([1, 2]), t([1, 2, 3])) == 2
    assert common_prefix_length(t([9]), t([1])) == 0
    assert common_prefix_length(t([], dtype=torch.long), t([1])) == 0


def test_suffixes_of_different_lengths_prefill_without_padding_each_other(
    model64: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    prompts = [[*SYSTEM, 73, 74], [*SYSTEM, *range(8, 38)], [*SYSTEM, 75, 76]]
    gen, old = HFGenerator(model64, tokenizer), HFGenerator(model64, tokenizer, prefix_cache=False)
    params = SamplingParams(max_new_tokens=4, temperature=1.0, seed=2)
    assert [c.token_ids for c in gen.generate(prompts, params)] == [c.token_ids for c in old.generate(prompts, params)]
    assert gen.stats.prefill_tokens == len(SYSTEM) + 2 + 30 + 2  # the shared system prompt once, then each suffix
    assert gen.stats.prefill_positions == gen.stats.prefill_tokens  # short and long suffixes ran in separate blocks


def test_prefill_blocks_group_similar_lengths() -> None:
    prompts = [torch.zeros(n, dtype=torch.long) for n in (100, 90, 20, 18, 3)]
    assert _blocks(prompts, [0] * 5) == [range(0, 2), range(2, 4), range(4, 5)]
    assert _blocks(prompts[:1], [0]) == [range(0, 1)]


@pytest.mark.parametrize(
    "index",
    [[0, 2, 3], [1, 2], [0, 0, 1, 1, 1, 2], [0, 1, 1, 2], [2, 0, 1], [3, 3, 3, 3, 3, 3]],
    ids=["drop", "drop-first", "repeat", "repeat-some", "reorder", "repeat-one"],
)
def test_select_rows_matches_index_select(index: list[int]) -> None:
    torch.manual_seed(0)
    slab = torch.randn((2, 2, 6, 3, 9, 4))  # (layers, 2, B capacity, H, W, D); 4 rows in use
    cache = SlabCache(slab.clone(), length=7, rows=4)
    expected = slab[:, :, :4].index_select(2, torch.tensor(index))[..., :7, :]
    storage = cache.storage.data_ptr()
    cache.select_rows(torch.tensor(index))
    assert cache.slab.shape[2] == len(index)
    torch.testing.assert_close(cache.slab[..., :7, :], expected, atol=0, rtol=0)
    ordered = index == sorted(index)
    in_place = ordered and (all(r >= j for j, r in enumerate(index)) or all(r <= j for j, r in enumerate(index)))
    assert (cache.slab.data_ptr() == storage) == in_place  # no new memory when the rows move one way
    k, _ = cache.layers[0].update(torch.ones((len(index), 3, 1, 4)), torch.ones((len(index), 3, 1, 4)))
    assert k.shape == (len(index), 3, 8, 4)  # the narrowed slab takes the next column for every kept row


@pytest.mark.parametrize("masked", ["bool", "additive", "none"])
def test_grouped_decode_attention_matches_repeated_heads(masked: str) -> None:
    torch.manual_seed(0)
    query = torch.randn((3, 6, 1, 8), dtype=torch.float64)  # (B, Hq, 1, D)
    key, value = torch.randn((2, 3, 2, 11, 8), dtype=torch.float64)  # (B, Hkv, T, D) each
    allowed = torch.rand((3, 1, 1, 11)) > 0.3
    allowed[..., -1] = True  # a query always sees itself
    additive = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    mask = {"bool": allowed, "additive": additive, "none": None}
    repeated = key.repeat_interleave(3, dim=1), value.repeat_interleave(3, dim=1)  # transformers' repeat_kv
    want = F.scaled_dot_product_attention(query, *repeated, attn_mask=mask[masked], scale=0.3).transpose(1, 2)
    got = grouped_decode_attention(query, key, value, mask[masked], 0.3)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    default = grouped_decode_attention(query, key, value, None, None)  # scale 1/sqrt(D), as SDPA's default
    torch.testing.assert_close(default, F.scaled_dot_product_attention(query, *repeated).transpose(1, 2))
