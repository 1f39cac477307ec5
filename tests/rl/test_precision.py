"""Compute precision: 'auto' resolution, config errors, and bf16 autocast over float32 weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tests.rl._learn_fixtures import char_tokenizer, make_trajectory, tiny_llama
from worker.rl.generation import precision
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.training.batch import TrainBatch, collate
from worker.rl.training.build import build_components, with_resolved_precision
from worker.rl.training.config import AlgorithmConfig, ModelConfig, OptimConfig, TrainConfig, load_config, override
from worker.rl.training.logprobs import token_logprobs
from worker.rl.training.trainer import sync_weights
from worker.rl.training.update import update_policy

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_math(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_compute_dtype("auto", "float32", "cpu") == expected
    assert precision.resolve_compute_dtype("float32", "float32", "cpu") == "float32"
    assert precision.resolve_compute_dtype("bfloat16", "float32", "cpu") == "bfloat16"  # asked for: slow, but runs
    assert precision.resolve_compute_dtype("auto", "bfloat16", "cpu") == "bfloat16"
    config = TrainConfig(model=ModelConfig(device="cpu"))
    assert with_resolved_precision(config).model.compute_dtype == expected  # what the run stores


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    head = "processor\t: 0\nmodel name\t: AMD EPYC\n"
    assert precision.cpuinfo_has_bf16(head + "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert precision.cpuinfo_has_bf16(head + "flags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert not precision.cpuinfo_has_bf16(head + "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert not precision.cpuinfo_has_bf16(head)  # no flags line (not x86)


def test_bad_precision_settings_say_how_to_fix_them() -> None:
    with pytest.raises(ValueError, match=r"model.compute_dtype must be one of auto, float32, bfloat16, float16"):
        ModelConfig(compute_dtype="fp8")
    with pytest.raises(ValueError, match=r"needs float32 weights .* set model.compute_dtype to 'auto' or 'bfloat16'"):
        ModelConfig(dtype="bfloat16", compute_dtype="float32")
    with pytest.raises(ValueError, match=r"float16 is for GPUs; on CPU use bfloat16"):
        precision.resolve_compute_dtype("float16", "float32", "cpu")
    with pytest.raises(ValueError, match=r"compute dtype must be 'auto' or one of"):
        precision.resolve_compute_dtype("half", "float32", "cpu")
    with pytest.raises(ValueError, match=r"compute dtype must be one of float32, bfloat16, float16"):
        precision.autocast("cpu", "bf16")


class _OutputDtypes:
    """Records the dtype of every nn.Linear output while installed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seen: set[torch.dtype] = set()
        self._hooks = [
            m.register_forward_hook(lambda _m, _i, out: self.seen.add(out.dtype))
            for m in model.modules()
            if isinstance(m, torch.nn.Linear)
        ]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def test_hf_engine_on_a_bf16_copy_samples_in_bf16_close_to_float32() -> None:
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok))
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    prompts = [[5, 6, 7, 8], [9, 10]]
    full = HFGenerator(model, tok).generate(prompts, params)
    copy = tiny_llama(vocab_size=len(tok)).to(torch.bfloat16)  # what training serves (build_components)
    probe = _OutputDtypes(copy)
    half = HFGenerator(copy, tok).generate(prompts, params)
    probe.remove()
    assert probe.seen == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the trained weights stay float32
    # bf16 sampling: same seeds, near-identical log-probs where the samples agree
    for a, b in zip(full, half, strict=True):
        same = [i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x == y]
        assert same, "bf16 sampling diverged at the first token"
        assert max(abs(a.logprobs[i] - b.logprobs[i]) for i in same[:3]) < 0.05


def _batch() -> TrainBatch:
    trajs = [
        make_trajectory([3, 4, 5, 6], [[7, 8, 9], [10, 11]], group_id="g0", reward=1.0, tool_tokens=[12, 13]),
        make_trajectory([3, 4, 5, 6], [[14, 15]], group_id="g0", reward=0.0),
        make_trajectory([3, 4, 20], [[21, 22, 23, 24]], group_id="g1", reward=1.0),
        make_trajectory([3, 4, 20], [[25]], group_id="g1", reward=0.0),
    ]
    batch = collate(trajs, 0)
    return batch.with_(advantages=torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None] * batch.loss_mask)


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_update_runs_forward_in_the_compute_dtype_and_keeps_float32_weights(compute: str) -> None:
    batch = _batch()
    model = tiny_llama()
    with torch.no_grad():
        lp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    batch = batch.with_(old_logprobs=lp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(
        model=ModelConfig(compute_dtype=compute),
        algorithm=AlgorithmConfig(minibatch_size=4),
        optim=OptimConfig(total_steps=1, max_grad_norm=0.0),
    )
    probe = _OutputDtypes(model)
    stats = update_policy(model, batch, cfg, torch.optim.SGD(model.parameters(), lr=0.5), Accelerator(cpu=True), 1)
    probe.remove()
    assert probe.seen == {getattr(torch, compute)}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the first minibatch's ratio is against log-probs taken in float32: exact there, ~1 in bf16
    ratio = stats.metrics()["loss/ratio_mean"]
    assert ratio == pytest.approx(1.0, abs=1e-6 if compute == "float32" else 2e-2)


def test_hf_engine_samples_from_a_compute_dtype_copy_synced_after_each_step(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    sets = [f'model.name_or_path="{model_dir}"', 'model.compute_dtype="bfloat16"', 'engine.backend="hf"']
    comps = build_components(override(load_config(REPO / "configs" / "quickstart.toml"), [*sets, 'model.device="cpu"']))
    served = comps.generator.model  # type: ignore[attr-defined]
    assert served is not comps.model
    assert {p.dtype for p in served.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in comps.model.parameters()} == {torch.float32}
    with torch.no_grad():  # an optimizer step's worth of change
        for p in comps.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    sync_weights(comps.generator, comps.model)
    for name, tensor in comps.model.state_dict().items():
        assert torch.equal(served.state_dict()[name], tensor.to(torch.bfloat16)), name


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_engine_prefix_cache_reaches_the_hf_engine(tmp_path: Path, prefix_cache: bool) -> None:
    tok = char_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    sets = [f'model.name_or_path="{model_dir}"', 'engine.backend="hf"', 'model.device="cpu"']
    sets.append(f"engine.prefix_cache={str(prefix_cache).lower()}")
    comps = build_components(override(load_config(REPO / "configs" / "quickstart.toml"), sets))
    assert comps.generator.prefix_cache is prefix_cache  # type: ignore[attr-defined]
