"""Masked log-probs equal the full-logits log_softmax gather on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from tests.rl._learn_fixtures import tiny_llama
from worker.rl.training.logprobs import token_logprobs


def _reference(model, ids, attn, target, temperature=1.0):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits.float() / temperature  # (B, T, V)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
    picked = logp.gather(2, ids[:, 1:, None]).squeeze(2)  # (B, T-1)
    ent = -(logp.exp() * logp).sum(-1)  # (B, T-1)
    out = torch.zeros(ids.shape)
    out[:, 1:] = picked
    ent_out = torch.zeros(ids.shape)
    ent_out[:, 1:] = ent
    return out * target, ent_out * target


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("tie", [False, True])
def test_matches_full_logits(temperature: float, tie: bool) -> None:
    model = tiny_llama(tie=tie)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 64, (3, 11), generator=g)  # (B, T)
    attn = torch.ones_like(ids)
    attn[1, 8:] = 0  # right padding
    ids[1, 8:] = 0
    target = torch.zeros(ids.shape)
    target[0, 4:9] = 1
    target[1, 2:8] = 1
    target[2, 10] = 1
    with torch.no_grad():
        lp, ent = token_logprobs(model, ids, attn, target, temperature=temperature, with_entropy=True, chunk_size=4)
    ref_lp, ref_ent = _reference(model, ids, attn, target, temperature)
    assert torch.allclose(lp, ref_lp, atol=1e-5)
    assert ent is not None
    assert torch.allclose(ent, ref_ent, atol=1e-5)
    assert lp[0, 0] == 0
    assert lp[0, 9] == 0
    assert lp[0, 5] < 0


def test_gradients_flow_and_peft_wrapped() -> None:
    peft = pytest.importorskip("peft")
    model = tiny_llama()
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ids = torch.randint(3, 64, (2, 6))
    target = torch.ones(ids.shape)
    lp, ent = token_logprobs(wrapped, ids, torch.ones_like(ids), target)
    assert ent is None
    with torch.no_grad():
        full = wrapped(input_ids=ids).logits  # (B, T, V)
    ref = torch.log_softmax(full[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(2)
    assert torch.allclose(lp[:, 1:], ref, atol=1e-5)
    lp.sum().backward()
    lora_grads = [p.grad for n, p in wrapped.named_parameters() if "lora_" in n]
    assert lora_grads
    assert all(g is not None and g.abs().sum() > 0 for g in lora_grads)


def test_rejects_zero_temperature() -> None:
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(tiny_llama(), ids, ids, ids.float(), temperature=0.0)
