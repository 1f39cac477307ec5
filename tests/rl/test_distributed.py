"""One training job across 2 gloo processes equals one process over the same prompts, and writes once."""

from __future__ import annotations

import copy
import json
import multiprocessing
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.rl._learn_fixtures import char_tokenizer, parity_rubric, tiny_components, tiny_llama
from worker.rl.algorithms.advantages import ADVANTAGE_ESTIMATORS, with_process_rewards
from worker.rl.cli import app
from worker.rl.generation.hf import HFGenerator
from worker.rl.training.build import TrainComponents, make_optimizer
from worker.rl.training.collect import rank_seed, rank_share
from worker.rl.training.config import (
    AlgorithmConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    RolloutConfig,
    TrainConfig,
    config_from_dict,
)
from worker.rl.training.distributed import RankFailed
from worker.rl.training.metrics import LossStats
from worker.rl.training.trainer import train
from worker.rl.training.update import advantage_inputs, reward_batch, update_policy
from worker.rl.trajectories import read_jsonl
from worker.rl.types import Trajectory

REPO = Path(__file__).resolve().parents[2]


def tiny_run() -> TrainComponents:
    """Picklable factory: every rank builds the same tiny random Llama, HF engine and parity rubric."""
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=5)
    return tiny_components(tok, model, HFGenerator(model, tok), parity_rubric(), n_tasks=8)


def tiny_run_own_engine() -> TrainComponents:
    """Like `tiny_run`, with the engine on its own copy of the weights (what FSDP needs)."""
    comps = tiny_run()
    comps.generator = HFGenerator(copy.deepcopy(comps.model), comps.tokenizer)
    return comps


def failing_on_rank_1() -> TrainComponents:
    """Picklable factory whose rank 1 fails while building."""
    if torch.distributed.get_rank() == 1:
        raise RuntimeError("rank 1 could not load its model")
    return tiny_run()


def _config(nproc: int, estimator: str = "reinforce_pp", strategy: str = "ddp") -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(compute_dtype="float32"),  # bf16 autocast would round the two sums differently
        rollout=RolloutConfig(
            prompts_per_step=4, group_size=2, max_turns=1, max_new_tokens_per_turn=6, max_total_tokens=1000
        ),
        # one minibatch holding all 8 episodes: the 2-rank update is then exactly the 1-process one
        algorithm=AlgorithmConfig(estimator=estimator, minibatch_size=8, drop_flat_rows=False),  # type: ignore[arg-type]
        optim=OptimConfig(lr=1e-3, total_steps=2, warmup_steps=0),
        eval=EvalConfig(num_tasks=0),
        logging=LoggingConfig(save_every_steps=0),
        parallel=ParallelConfig(nproc=nproc, backend="gloo", strategy=strategy),  # type: ignore[arg-type]
        seed=11,
    )


def _single_process_update(config: TrainConfig, trajs: list[Trajectory]) -> tuple[LossStats, dict[str, torch.Tensor]]:
    """The 1-process phases 2-5 over `trajs` from the same initial weights: (loss stats, updated weights)."""
    comps = tiny_run()
    acc = Accelerator(cpu=True)
    model = comps.model
    opt = make_optimizer(model, config.optim)
    batch = reward_batch(trajs, comps.tokenizer, acc.device)
    estimator = ADVANTAGE_ESTIMATORS[config.algorithm.estimator]
    adv = with_process_rewards(estimator, advantage_inputs(batch, config, None))
    batch = batch.with_(advantages=adv.advantages, returns=adv.returns)
    loss = update_policy(model, batch, config, opt, acc, 1)
    assert loss.updates == 1
    return loss, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_matches_one_process(
    config: TrainConfig, trajs: list[Trajectory], metrics: dict[str, float], checkpoint: Path
) -> None:
    # REINFORCE++ whitens advantages over the whole batch: rank-local statistics would change the gradient
    loss, weights = _single_process_update(config, trajs)
    assert metrics["train/optimizer_steps"] == 1
    assert metrics["loss/grad_norm"] == pytest.approx(loss.grad_norm, rel=1e-5)  # the summed gradient's norm
    for key in ("policy", "total", "entropy", "ratio_mean", "clip_frac"):
        assert metrics[f"loss/{key}"] == pytest.approx(getattr(loss, key), rel=1e-5, abs=1e-7), key
    saved = load_file(str(checkpoint / "model.safetensors"))
    initial = tiny_run().model.state_dict()
    lr = config.optim.lr
    close = total = moved = 0
    for name, value in weights.items():
        # AdamW's first step is ~lr x sign(gradient): an entry whose true gradient is ~0 may take a float-noise
        # sign, so the bound is lr / 10 per entry, and nearly every entry must agree to 1e-6
        torch.testing.assert_close(saved[name], value, rtol=0, atol=lr / 10)
        close += int(((saved[name] - value).abs() <= 1e-6).sum())
        total += value.numel()
        moved += int((initial[name] != value).sum())
    assert close >= 0.98 * total
    assert moved > 0.5 * total  # the step moved the weights (not a comparison of two untouched copies)


def test_two_gloo_ranks_match_one_process_and_write_once(tmp_path: Path) -> None:
    config = _config(2)
    seen: list[tuple[int, int]] = []
    result = train(
        config,
        run_dir=tmp_path,
        components_factory=tiny_run,
        on_step=lambda step, _m, trajs: seen.append((step, len(trajs))),
        should_stop=lambda: True,  # rank 0's cancel after step 1 of 2 stops rank 1 too (else the join fails)
    )
    assert (result.status, result.steps_done) == ("cancelled", 1)
    # rank 0 alone wrote: one checkpoint, one metrics line, one trajectory file holding both ranks' episodes
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00001"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1]
    assert [p.name for p in (tmp_path / "trajectories").iterdir()] == ["step_00001.jsonl"]
    assert seen == [(1, 8)]  # the callback ran once, on rank 0, with every rank's episodes
    trajs = list(read_jsonl(tmp_path / "trajectories" / "step_00001.jsonl"))
    assert len(trajs) == 8
    assert len({t.group_id for t in trajs}) == 4  # whole groups, never split, ids unique
    assert {t.group_id.split("-")[1] for t in trajs} == {"r0", "r1"}

    _assert_matches_one_process(config, trajs, json.loads(lines[0]), tmp_path / "checkpoints" / "step_00001")


def test_a_failing_rank_stops_the_job_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # launched from a daemonic process, as a Celery prefork pool process running the job is
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)  # type: ignore[attr-defined]
    with pytest.raises(RankFailed, match="rank 1 could not load its model"):
        train(_config(2), run_dir=tmp_path, components_factory=failing_on_rank_1)
    assert not (tmp_path / "checkpoints").exists()


def test_ranks_share_whole_groups_with_their_own_seeds() -> None:
    tasks = tiny_run().train_tasks[:4]
    shares = [rank_share(tasks, r, 2) for r in range(2)]
    assert shares[0] + shares[1] == tasks  # contiguous, disjoint, rank order gives the step's prompts back
    assert rank_seed(11, 0) == 11  # one process samples as before
    assert rank_seed(11, 1) != rank_seed(11, 0)
    with pytest.raises(ValueError, match="3 tasks cannot be shared equally by 2 ranks"):
        rank_share(tasks[:3], 0, 2)


def test_parallel_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"must be a multiple of parallel\.nproc=3"):
        _config(3)
    with pytest.raises(ValueError, match=r"parallel\.strategy must be one of ddp, fsdp"):
        config_from_dict({"parallel": {"strategy": "zero3"}})
    with pytest.raises(ValueError, match=r"fsdp' does not shard a critic"):
        config_from_dict(
            {
                "parallel": {"nproc": 2, "strategy": "fsdp"},
                "rollout": {"prompts_per_step": 2},
                "algorithm": {"estimator": "gae", "vf_coef": 0.5},
            }
        )


def test_cli_nproc_2_builds_every_rank_from_the_config(tmp_path: Path) -> None:
    """`studio train CONFIG --nproc 2`: the spawned rank builds its components from the config file."""
    tok = char_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    run = tmp_path / "run"
    sets = [
        f'model.name_or_path="{model_dir}"',
        'model.device="cpu"',
        'engine.backend="hf"',
        "optim.total_steps=1",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.max_turns=1",
        "rollout.max_new_tokens_per_turn=8",
        "eval.num_tasks=0",
        "algorithm.minibatch_size=4",
    ]
    args = ["train", str(REPO / "configs" / "quickstart.toml"), "--output-dir", str(run), "--nproc", "2"]
    result = CliRunner().invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.resolved.json").read_text())["parallel"]["nproc"] == 2
    records = (run / "trajectories" / "step_00001.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["group_id"].split("-")[1] for r in records) == ["r0", "r0", "r1", "r1"]
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    bad = CliRunner().invoke(app, ["train", str(REPO / "configs" / "quickstart.toml"), "--nproc", "3"])
    assert bad.exit_code == 2
    assert "multiple of parallel.nproc=3" in bad.output


@pytest.mark.slow
def test_fsdp_two_gloo_ranks_match_one_process_and_resume(tmp_path: Path) -> None:
    """FSDP-sharded decoder layers (gloo on CPU): the same step as one process, a whole-weights checkpoint,
    and a resume that loads it back into the shards."""
    config = _config(2, strategy="fsdp")
    seen: list[list[Trajectory]] = []
    first = train(
        config,
        run_dir=tmp_path,
        components_factory=tiny_run_own_engine,
        on_step=lambda _s, _m, trajs: seen.append(trajs),
        should_stop=lambda: True,
    )
    assert (first.status, first.steps_done) == ("cancelled", 1)
    metrics = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    _assert_matches_one_process(config, seen[0], metrics, tmp_path / "checkpoints" / "step_00001")
    with pytest.raises(ValueError, match="the rollout engine needs its own copy"):
        train(config, run_dir=tmp_path / "shared", components_factory=tiny_run)
    resumed = train(config, run_dir=tmp_path, resume_from=tmp_path, components_factory=tiny_run_own_engine)
    assert (resumed.status, resumed.steps_done) == ("completed", 2)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00001", "step_00002"]
