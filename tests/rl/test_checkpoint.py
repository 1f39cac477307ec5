"""Checkpoint round trip, RNG restore, pruning, atomicity and HF export."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.rl._learn_fixtures import tiny_llama
from worker.rl.training.checkpoint import (
    export_hf_model,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def _train_one(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    ids = torch.randint(3, 64, (2, 5))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_restores_weights_optimizer_rng_and_sampler(tmp_path: Path, tie: bool) -> None:
    model = tiny_llama(tie=tie).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    _train_one(model, opt)
    sched.step()
    torch.manual_seed(123)
    random.seed(5)
    ckpt = save_checkpoint(
        tmp_path, 1, model=model, optimizer=opt, scheduler=sched, sampler_state={"pos": 7}, config={"seed": 1}
    )
    expected_draw = (torch.rand(3), random.random())
    _train_one(model, opt)
    expected_w = {k: v.clone() for k, v in model.state_dict().items()}

    fresh = tiny_llama(seed=9, tie=tie).train()
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    state = load_checkpoint(ckpt, model=fresh, optimizer=opt2, scheduler=sched2)
    assert (state.step, state.sampler_state, state.config) == (1, {"pos": 7}, {"seed": 1})
    assert sched2.last_epoch == 1
    draw = (torch.rand(3), random.random())
    assert torch.equal(draw[0], expected_draw[0])
    assert draw[1] == expected_draw[1]
    _train_one(fresh, opt2)  # same RNG, same data: the continued runs agree bit for bit
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected_w[k]), k


def test_latest_and_pruning_and_no_partial(tmp_path: Path) -> None:
    model = tiny_llama()
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=model, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00002", "step_00003"]
    (tmp_path / "checkpoints" / "step_00009").mkdir()  # incomplete: no state file
    latest = latest_checkpoint(tmp_path)
    assert latest is not None
    assert latest.name == "step_00003"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "checkpoints" / "step_00009", model=model)


def test_export_loads_with_from_pretrained(tmp_path: Path) -> None:
    model = tiny_llama(tie=True)
    ckpt = save_checkpoint(tmp_path, 4, model=model)
    out = export_hf_model(ckpt, tmp_path / "export")
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(3, 64, (1, 6))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


def test_lora_checkpoint_saves_adapter_only(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(
        tiny_llama(), peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    ckpt = save_checkpoint(tmp_path, 1, model=wrapped)
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    assert not (ckpt / "model.safetensors").exists()
    other = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    load_checkpoint(ckpt, model=other, restore_rng=False)
    lora = {k: v for k, v in wrapped.state_dict().items() if "lora_" in k}
    for k, v in other.state_dict().items():
        if "lora_" in k:
            assert torch.equal(v, lora[k])


def test_trainer_checkpoint_becomes_a_loadable_agent_model(tmp_path: Path) -> None:
    """`studio eval --checkpoint` takes a trainer checkpoint (tokenizer in a subfolder) as it is."""
    from transformers import AutoTokenizer

    from tests.rl._learn_fixtures import char_tokenizer
    from worker.rl.evaluation.job import loadable_checkpoint

    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    ckpt = save_checkpoint(tmp_path / "run", 3, model=model, tokenizer=tok)
    path = loadable_checkpoint(ckpt, tmp_path / "eval")
    assert path == str(tmp_path / "eval" / "agent_model")
    assert AutoTokenizer.from_pretrained(path).encode("abc") == tok.encode("abc")
    loaded = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.randint(3, len(tok), (1, 6))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
    assert loadable_checkpoint(path, tmp_path / "again") == path, "a model folder is used as it is"
    # the same output dir with another checkpoint re-exports instead of serving the first one
    other = tiny_llama(vocab_size=len(tok), seed=1)
    ckpt2 = save_checkpoint(tmp_path / "run2", 5, model=other, tokenizer=tok)
    assert loadable_checkpoint(ckpt2, tmp_path / "eval") == path
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, other(input_ids=ids).logits, atol=1e-6)
