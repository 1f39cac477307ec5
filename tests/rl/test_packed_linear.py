"""The HF engine's packed linear layers (`generation.packed`) against plain `F.linear`, on tiny models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from tests.rl._learn_fixtures import char_tokenizer
from tests.rl.test_hf_generator import build_tiny_llama
from tests.rl.test_hf_prefix_cache import first_prompts, run_turns
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.kv_cache import weights_key
from worker.rl.generation.packed import PackedLinears, packing_unsupported


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


def plain_forwards(model: nn.Module) -> bool:
    """True when no linear layer of `model` still runs a swapped-in forward."""
    return not any("forward" in m.__dict__ for m in model.modules())


def test_packing_is_on_for_a_float32_cpu_model(tokenizer: PreTrainedTokenizerFast) -> None:
    model = build_tiny_llama(len(tokenizer))
    assert packing_unsupported(model, torch.device("cpu")) is None
    assert HFGenerator(model, tokenizer).packed is not None
    assert HFGenerator(model, tokenizer, packed_linear=False).packed is None


def test_packing_is_off_where_it_cannot_run(tokenizer: PreTrainedTokenizerFast) -> None:
    model64 = build_tiny_llama(len(tokenizer)).double()
    assert "float64" in str(packing_unsupported(model64, torch.device("cpu")))
    assert HFGenerator(model64, tokenizer).packed is None
    assert "cuda" in str(packing_unsupported(build_tiny_llama(len(tokenizer)), torch.device("cuda")))
    assert "no plain nn.Linear" in str(packing_unsupported(nn.Sequential(nn.ReLU()), torch.device("cpu")))


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_same_tokens_and_logprobs_within_1e4_of_plain_linear(
    tokenizer: PreTrainedTokenizerFast, prefix_cache: bool
) -> None:
    model = build_tiny_llama(len(tokenizer), seed=5)
    packed = HFGenerator(model, tokenizer, prefix_cache=prefix_cache)
    plain = HFGenerator(model, tokenizer, prefix_cache=prefix_cache, packed_linear=False)
    assert packed.packed is not None
    for a, b in run_turns(packed, plain, SamplingParams(max_new_tokens=12, temperature=1.0)):
        assert [x.token_ids for x in a] == [y.token_ids for y in b]  # this fixed seed is stable in float32
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4, rtol=0)
        assert plain_forwards(model)  # the model is back to plain F.linear between calls


def test_forwards_restored_after_a_failed_call(
    tokenizer: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_tiny_llama(len(tokenizer))
    gen = HFGenerator(model, tokenizer)

    def boom(*_args: object, **_kwargs: object) -> None:
        assert not plain_forwards(model)  # the packs are in use mid-call
        raise KeyboardInterrupt  # a cancel arriving mid-call

    monkeypatch.setattr(gen, "_append", boom)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(first_prompts(), SamplingParams(max_new_tokens=4, temperature=0.0))
    assert plain_forwards(model)


def test_packs_follow_the_weights_and_are_freed(tokenizer: PreTrainedTokenizerFast) -> None:
    """An optimizer step on the served (shared) model repacks; stale packs would give the old model's tokens."""
    model = build_tiny_llama(len(tokenizer), seed=2)
    gen = HFGenerator(model, tokenizer)
    assert gen.packed is not None
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    before = gen.generate(first_prompts(), params)
    first_key, n_packs = gen.packed.key, len(gen.packed.packs)
    assert first_key == weights_key(model)
    assert n_packs == sum(type(m) is nn.Linear for m in model.modules())
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    for _ in range(3):
        model(input_ids=torch.tensor([first_prompts()[0]])).logits[0, -1, 7].neg().backward()
        opt.step()
        opt.zero_grad()
    after = gen.generate(first_prompts(), params)
    assert gen.packed.key == weights_key(model) != first_key
    expected = HFGenerator(model, tokenizer, packed_linear=False).generate(first_prompts(), params)
    assert [a.token_ids for a in after] == [e.token_ids for e in expected]
    assert [a.token_ids for a in after] != [b.token_ids for b in before]  # the step did change what it samples
    for a, e in zip(after, expected, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(e.logprobs), atol=1e-4, rtol=0)
    gen.release()
    assert gen.packed.packs == []
    assert gen.packed.key is None
    gen.generate(first_prompts(), params)  # packs again after a release
    assert len(gen.packed.packs) == n_packs
    gen.load_weights(model.state_dict().items())
    assert gen.packed.packs == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_forward_matches_linear_with_bias_and_any_leading_shape(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 8, bias=False)).to(dtype)
    if packing_unsupported(net, torch.device("cpu")):
        pytest.skip(str(packing_unsupported(net, torch.device("cpu"))))
    xs = [torch.randn(5, 24), torch.randn(3, 7, 24), torch.randn(7, 3, 24).transpose(0, 1)]  # last: non-contiguous
    with torch.inference_mode():
        want = [net(x.to(dtype)) for x in xs]
        packs = PackedLinears(net)
        with packs.serving(weights_key(net)):
            got = [net(x.to(dtype)) for x in xs]
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)
    assert plain_forwards(net)
