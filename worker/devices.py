"""GPU placement of worker jobs: which GPUs a worker sees, how many jobs it runs, which one each job gets.

A worker consuming the `gpu` queue runs one job per visible GPU (Celery prefork concurrency) and pins
each pool process to its own GPU by setting `CUDA_VISIBLE_DEVICES` in the child before anything there
initialises CUDA; the job then sees exactly one device, `cuda:0`. With `STUDIO_WORKER_GPUS_PER_JOB=N`
the worker runs one job per N GPUs and each pool process sees its own N (`cuda:0..N-1`): a training run
with `parallel.nproc = N` then puts one rank on each (`worker.rl.training.distributed`). Found without
importing torch (the launcher must not load the ML stack): `CUDA_VISIBLE_DEVICES` when set, else `nvidia-smi`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

WORKER_GPUS_ENV = "STUDIO_WORKER_GPUS"
"""Set by the worker's parent for its pool processes: the comma-separated GPU ids they share out."""
GPUS_PER_JOB_ENV = "STUDIO_WORKER_GPUS_PER_JOB"
"""GPUs each pool process (one job at a time) is given; the setting `worker_gpus_per_job`."""


def visible_gpus(environ: Mapping[str, str] | None = None, nvidia_smi: str | None = "auto") -> list[str]:
    """GPU ids this process may use, in order (indices or UUIDs as given); [] on a CPU-only machine."""
    env = os.environ if environ is None else environ
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        ids: list[str] = []
        for item in (part.strip() for part in raw.split(",")):
            if not item or item.startswith("-"):  # CUDA ignores this id and every one after it
                break
            ids.append(item)
        return ids
    tool = shutil.which("nvidia-smi") if nvidia_smi == "auto" else nvidia_smi
    if not tool:
        return []
    try:
        out = subprocess.run(
            [tool, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=15, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def worker_concurrency(configured: int, queues: Sequence[str], gpus: Sequence[str], gpus_per_job: int = 1) -> int:
    """Jobs a worker runs at once: `configured` when > 0; else one per `gpus_per_job` GPUs on a `gpu` worker,
    else 1."""
    if configured > 0:
        return configured
    return max(1, len(gpus) // max(1, gpus_per_job)) if "gpu" in queues else 1


def device_for_process(index: int | None, gpus: Sequence[str], per_job: int = 1) -> str | None:
    """The GPU(s) of pool process `index`, comma-separated: its own block of `per_job` consecutive GPUs
    (0-based; processes beyond the blocks share them round-robin; fewer GPUs than `per_job`: all of them)."""
    if not gpus or index is None:
        return None
    per_job = max(1, min(per_job, len(gpus)))
    start = (index % (len(gpus) // per_job)) * per_job
    return ",".join(gpus[start : start + per_job])


def gpus_per_job(environ: Mapping[str, str]) -> int:
    """`STUDIO_WORKER_GPUS_PER_JOB` as a positive int (1 when unset); a clear error when it is not one."""
    raw = environ.get(GPUS_PER_JOB_ENV, "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{GPUS_PER_JOB_ENV}={raw!r} must be a whole number >= 1 (GPUs each training job takes)")
    return int(raw)


def pin_current_process(index: int | None, environ: dict[str, str] | None = None) -> str | None:
    """In a pool child: restrict it to its GPU (from `STUDIO_WORKER_GPUS`); returns the GPU id or None."""
    env = os.environ if environ is None else environ
    gpus = [g for g in env.get(WORKER_GPUS_ENV, "").split(",") if g]
    device = device_for_process(index, gpus, gpus_per_job(env))
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return device
