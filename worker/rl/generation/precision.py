"""Compute precision: the dtype the matmuls run in, apart from the dtype the weights are kept in.

Weights and AdamW's state stay in `model.dtype` (float32 by default), so small updates are not rounded
away; forward and backward passes run under autocast in the compute dtype, and the rollout engine
samples in it, so the sampling log-probs and the trainer's recomputation come from the same precision.

bfloat16 only pays where the hardware does bf16 math: CUDA GPUs with bf16 support, and x86 CPUs with
AVX512-BF16 or AMX. Measured on a 2-core AMD EPYC with AVX512-BF16 (SmolLM2-135M): matmuls of the decode
shapes 4-12x faster than fp32, a forward+backward pass over 1,600 tokens 2.2x faster. On AVX2-only CPUs
bf16 is emulated and about 4x slower than fp32, so "auto" keeps float32 there.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path
from typing import Any

import torch

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtype names a config may use, and their torch dtypes."""
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether the first `flags` line of a `/proc/cpuinfo` text lists a bf16 dot-product instruction set."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    return False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this x86 CPU advertises bf16 dot-product instructions (Linux `/proc/cpuinfo` flags)."""
    if platform.system() != "Linux":
        return False
    try:
        return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def native_bf16(device: str | torch.device) -> bool:
    """bf16 math runs natively (faster than fp32) on `device`."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_compute_dtype(requested: str, weights: str, device: str | torch.device) -> str:
    """The concrete compute dtype for `requested` ("auto" or a dtype name) with weights in `weights`.

    "auto": bfloat16 where `native_bf16(device)` and the weights are float32 (or already bfloat16),
    else the weights' own dtype. A compute dtype wider than the weights is an error: autocast only narrows.
    """
    if requested != "auto" and requested not in TORCH_DTYPES:
        raise ValueError(f"compute dtype must be 'auto' or one of {', '.join(TORCH_DTYPES)}; got {requested!r}")
    if weights not in TORCH_DTYPES:
        raise ValueError(f"weight dtype must be one of {', '.join(TORCH_DTYPES)}; got {weights!r}")
    kind = torch.device(device).type
    if requested == "auto":
        return "bfloat16" if weights in ("float32", "bfloat16") and native_bf16(device) else weights
    if weights != "float32" and requested != weights:
        raise ValueError(
            f"compute dtype {requested} with {weights} weights: autocast can only narrow float32 weights; "
            f"set model.dtype=float32 or model.compute_dtype={weights}"
        )
    if requested == "float16" and kind == "cpu":
        raise ValueError("compute dtype float16 is for GPUs; on CPU use bfloat16 (with AVX512-BF16/AMX) or float32")
    return requested


def autocast(device: str | torch.device, compute: str, weights: str = "float32") -> Any:
    """A context that runs ops in `compute` over `weights`-dtype parameters (a no-op when they agree)."""
    if compute not in TORCH_DTYPES:
        raise ValueError(f"compute dtype must be one of {', '.join(TORCH_DTYPES)}; got {compute!r}")
    if compute == weights:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=TORCH_DTYPES[compute])
