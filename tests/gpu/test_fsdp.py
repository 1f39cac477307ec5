"""FSDP (`parallel.strategy = "fsdp"`) on CUDA with nccl (marker `gpu`): tiny random Llamas built in-process.

Two ranks need two GPUs (nccl puts one rank on each device); the one-rank check runs the same sharded update
on a single GPU. Needs only torch, transformers, accelerate and pytest plus this repo (`make test-gpu-here`).
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from accelerate import Accelerator
from safetensors.torch import load_file
from torch._C._distributed_c10d import TCPStore

from tests.rl._learn_fixtures import char_tokenizer, make_trajectory, parity_rubric, tiny_components, tiny_llama
from worker.rl.generation.hf import HFGenerator
from worker.rl.training.batch import collate
from worker.rl.training.build import TrainComponents, make_optimizer
from worker.rl.training.config import (
    AlgorithmConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    RolloutConfig,
    TrainConfig,
)
from worker.rl.training.distributed import Ranks, gathered_state, shard_policy
from worker.rl.training.trainer import train
from worker.rl.training.update import update_policy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tiny_run_own_engine() -> TrainComponents:
    """Picklable factory: tiny random Llama, the HF engine on its own copy (the policy is sharded)."""
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=5)
    engine = HFGenerator(copy.deepcopy(model).cuda(), tok)
    return tiny_components(tok, model, engine, parity_rubric(), n_tasks=8)


def _config(nproc: int) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(device="cuda", compute_dtype="float32"),
        rollout=RolloutConfig(prompts_per_step=4, group_size=2, max_turns=1, max_new_tokens_per_turn=6),
        algorithm=AlgorithmConfig(estimator="reinforce_pp", minibatch_size=8, drop_flat_rows=False),
        optim=OptimConfig(lr=1e-3, total_steps=2, warmup_steps=0),
        eval=EvalConfig(num_tasks=0),
        logging=LoggingConfig(save_every_steps=1),
        parallel=ParallelConfig(nproc=nproc, strategy="fsdp"),
        seed=11,
    )


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two nccl ranks need two GPUs (one rank per device)")
def test_fsdp_two_ranks_on_two_gpus_train_checkpoint_and_resume(tmp_path: Path) -> None:
    config = _config(2)
    first = train(config, run_dir=tmp_path, components_factory=tiny_run_own_engine, should_stop=lambda: True)
    assert (first.status, first.steps_done) == ("cancelled", 1)
    saved = load_file(str(tmp_path / "checkpoints" / "step_00001" / "model.safetensors"))
    assert set(saved) >= set(tiny_llama(vocab_size=len(char_tokenizer())).state_dict())  # whole weights
    resumed = train(config, run_dir=tmp_path, resume_from=tmp_path, components_factory=tiny_run_own_engine)
    assert (resumed.status, resumed.steps_done) == ("completed", 2)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_fsdp_sharded_update_on_one_gpu_equals_the_plain_update() -> None:
    """A one-rank nccl group: the sharded layers' update (gathered back whole) equals the unsharded one."""
    config = _config(1)
    store = TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timedelta(seconds=120))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        plain = tiny_llama(vocab_size=64, seed=2).cuda()
        sharded_model = shard_policy(copy.deepcopy(plain), config, Ranks(0, 1, "fsdp"))
        assert type(sharded_model.model.layers[0].self_attn.q_proj.weight).__name__ == "DTensor"
        rng = torch.Generator().manual_seed(4)
        trajs = [
            make_trajectory(
                list(range(3, 9)), [torch.randint(3, 60, (4,), generator=rng).tolist()], group_id=f"g{i // 2}"
            )
            for i in range(8)
        ]
        batch = collate(trajs)
        batch = batch.with_(advantages=torch.randn(batch.size, 1, generator=rng) * batch.loss_mask).to("cuda")
        acc = Accelerator()
        opts = [make_optimizer(m, config.optim) for m in (plain, sharded_model)]
        ref = update_policy(plain, batch, config, opts[0], acc, 1)
        got = update_policy(sharded_model, batch, config, opts[1], acc, 1, ranks=Ranks(0, 1, "fsdp"))
        assert got.policy == pytest.approx(ref.policy, rel=1e-5, abs=1e-7)
        assert got.grad_norm == pytest.approx(ref.grad_norm, rel=1e-4)
        weights, optim = gathered_state(sharded_model, opts[1])
        for name, value in plain.state_dict().items():
            torch.testing.assert_close(weights.state[name].cuda(), value, rtol=0, atol=config.optim.lr / 10)
        assert optim.state["state"], "the optimizer state was gathered"
    finally:
        dist.destroy_process_group()
