"""What bounds a rollout on this host: its measured matmul rate and copy bandwidth, and the HF engine's share of each.

Shared by `bench.rollout_throughput` and `bench.grpo_step`. The host figures are measured here, now (the CPU is
shared, so they move from run to run); the engine's work comes from `HFGenerator.stats` and the model's shapes:
prefill is counted in matmul FLOPs (2 x linear parameters per token, plus attention), decode both in FLOPs and in
bytes read (every weight once per step, plus the cached keys/values each row attends over).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.rl.generation.base import EngineStats
from worker.rl.generation.kv_cache import kv_shape

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The vector-math flags of `FLAGS` this CPU advertises."""
    if not Path("/proc/cpuinfo").is_file():
        return []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in FLAGS if f in have]
    return []


def _best_seconds(fn: Any, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_gflops(
    dtype: torch.dtype = torch.float32, m: int = 2048, k: int = 576, n: int = 1536, reps: int = 5
) -> float:
    """Best-of-`reps` GFLOP/s of an (m, k) @ (k, n) matmul (default: a prefill MLP shape of SmolLM2-135M)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)  # (m, k), (k, n)
    return 2 * m * k * n / _best_seconds(lambda: a @ b, reps) / 1e9


def copy_gbs(megabytes: int = 256, reps: int = 5) -> float:
    """Best-of-`reps` memory copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.ones(megabytes * 2**20 // 4)  # (N,)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), reps) / 1e9


@dataclass(frozen=True)
class HostPeak:
    gflops: float
    copy_gbs: float
    dtype: str

    @classmethod
    def measure(cls, dtype: torch.dtype) -> HostPeak:
        return cls(gflops=matmul_gflops(dtype), copy_gbs=copy_gbs(), dtype=str(dtype).removeprefix("torch."))

    def describe(self) -> str:
        flags = ",".join(cpu_flags()) or "none of " + ",".join(FLAGS)
        return (
            f"host: {cpu_model()}; flags {flags}; torch threads {torch.get_num_threads()}; "
            f"measured now: matmul {self.gflops:.1f} GFLOP/s ({self.dtype}), copy {self.copy_gbs:.1f} GB/s"
        )


def linear_params(model: Any) -> int:
    """Parameters every token multiplies through: all but the input embedding (the LM head counts, tied or not)."""
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters() if p.data_ptr() != embed.data_ptr())
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() == embed.data_ptr():
        total += embed.numel()  # tied: the head still runs a full vocab matmul
    return total


def bound_report(model: Any, stats: EngineStats, peak: HostPeak) -> list[str]:
    """Lines: prefilled vs unshared tokens, decode tok/s, and achieved FLOP/s and bytes/s against the host's peak."""
    params = linear_params(model)
    layers, kv_heads, head_dim = kv_shape(model)
    elem = next(model.parameters()).element_size()
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * elem
    q_dim = model.config.num_attention_heads * head_dim
    lines = []
    saved = stats.prompt_tokens / stats.prefill_tokens if stats.prefill_tokens else float("nan")
    lines.append(
        f"  prefill: {stats.prefill_tokens} tokens run ({stats.prefill_positions} with padding) of "
        f"{stats.prompt_tokens} prompt tokens = {saved:.2f}x fewer than without sharing; "
        f"{stats.reused_tokens} served from cache"
    )
    if stats.prefill_s > 0:
        # the LM head runs only on each row's last position (logits_to_keep=1), so count the body per position
        head = model.get_output_embeddings().weight.numel()
        flops = 2 * (params - head) * stats.prefill_positions
        gflops = flops / stats.prefill_s / 1e9
        lines.append(
            f"  prefill: {stats.prefill_s:.1f} s, {stats.prefill_tokens / stats.prefill_s:.0f} tok/s, "
            f"{gflops:.1f} GFLOP/s = {gflops / peak.gflops:.0%} of the measured matmul rate"
        )
    if stats.decode_s > 0:
        flops = 2 * params * stats.decode_tokens + 4 * layers * q_dim * stats.decode_kv_tokens
        moved = stats.decode_steps * params * elem + stats.decode_kv_tokens * kv_bytes_per_token
        gflops, gbs = flops / stats.decode_s / 1e9, moved / stats.decode_s / 1e9
        rate, batch = stats.sampled_tokens / stats.decode_s, stats.decode_tokens / max(stats.decode_steps, 1)
        lines.append(
            f"  decode: {stats.sampled_tokens} tokens in {stats.decode_s:.1f} s = {rate:.1f}"
            f" tok/s over {stats.decode_steps} steps (mean batch {batch:.1f});"
            f" {gflops:.1f} GFLOP/s = {gflops / peak.gflops:.0%} of matmul, {gbs:.1f} GB/s read ="
            f" {gbs / peak.copy_gbs:.0%} of copy bandwidth"
        )
    return lines


def cache_line(stats: EngineStats) -> str:
    """How much of the prompts an engine's prefix cache served: the one figure every engine reports."""
    share = stats.reused_tokens / stats.prompt_tokens if stats.prompt_tokens else 0.0
    return (
        f"prefix cache: {stats.reused_tokens} of {stats.prompt_tokens} prompt tokens served from cache ({share:.0%});"
        f" {stats.prefill_tokens} prefilled over {stats.calls} calls, {stats.rows} rows"
    )
