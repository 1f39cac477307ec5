"""One logprob convention for both engines and the trainer: the full softmax at the temperature (issue #10, 3).

vLLM's processed logprobs are renormalised over the top-p/top-k set, so the vLLM engine refuses those
settings (checked without vLLM installed: the check is a pure function and a config rule); the HF engine
samples from the filtered distribution but reports the full-distribution logprob, as the trainer recomputes.
"""

from __future__ import annotations

import pytest
import torch

from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import sample_tokens
from worker.rl.generation.vllm import check_full_distribution
from worker.rl.training.build import check_sampling_logprobs
from worker.rl.training.config import EngineConfig, RolloutConfig, TrainConfig


@pytest.mark.parametrize(("top_p", "top_k"), [(0.9, 0), (1.0, 20), (0.5, 5)])
def test_vllm_engine_rejects_nucleus_sampling(top_p: float, top_k: int) -> None:
    with pytest.raises(ValueError, match=r"top_p=1 and no top_k only .* engine.backend='hf'"):
        check_full_distribution(SamplingParams(max_new_tokens=4, temperature=1.0, top_p=top_p, top_k=top_k))
    check_full_distribution(SamplingParams(max_new_tokens=4, temperature=0.0, top_p=top_p, top_k=top_k))  # greedy
    check_full_distribution(SamplingParams(max_new_tokens=4, temperature=0.7))


def test_config_rejects_vllm_with_top_p_below_one() -> None:
    with pytest.raises(ValueError, match=r"rollout.top_p=0.9 with engine.backend='vllm'"):
        TrainConfig(engine=EngineConfig(backend="vllm"), rollout=RolloutConfig(top_p=0.9))
    TrainConfig(engine=EngineConfig(backend="hf"), rollout=RolloutConfig(top_p=0.9))
    auto = TrainConfig(engine=EngineConfig(backend="auto"), rollout=RolloutConfig(top_p=0.9))
    check_sampling_logprobs(auto, "hf")
    with pytest.raises(ValueError, match=r"rollout.top_p=0.9 with the vLLM engine"):
        check_sampling_logprobs(auto, "vllm")  # 'auto' resolved to vLLM at build time


@pytest.mark.parametrize(("top_p", "top_k"), [(0.6, 0), (1.0, 3), (0.8, 4)])
def test_hf_engine_reports_the_full_distribution_logprob(top_p: float, top_k: int) -> None:
    logits = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) * 3  # (B, V)
    params = SamplingParams(max_new_tokens=1, temperature=0.7, top_p=top_p, top_k=top_k)
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    tokens, chosen = sample_tokens(logits, params, gens)  # (B,), (B,)
    full = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)  # (B,)
    assert torch.allclose(chosen, full)  # not renormalised over the kept tokens
