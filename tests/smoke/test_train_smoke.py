"""End-to-end `python -m worker.rl.cli train` runs: a tiny local model (fast) and the real SmolLM2 (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.rl._learn_fixtures import char_tokenizer, tiny_llama
from worker.rl.cli import app

REPO = Path(__file__).resolve().parents[2]
TINY_SETS = [
    "optim.total_steps=2",
    "rollout.prompts_per_step=1",
    "rollout.group_size=2",
    "rollout.max_turns=2",
    "rollout.max_new_tokens_per_turn=16",
    "rollout.max_total_tokens=3000",
    "eval.num_tasks=2",
    "algorithm.minibatch_size=2",
    'engine.backend="hf"',
    'model.device="cpu"',
]


def _sets(extra: list[str]) -> list[str]:
    return [arg for s in [*TINY_SETS, *extra] for arg in ("--set", s)]


def test_train_cli_two_steps_tiny_local_model(tmp_path: Path) -> None:
    tok = char_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    run = tmp_path / "run"
    args = ["train", str(REPO / "configs" / "quickstart.toml"), "--output-dir", str(run)]
    result = CliRunner().invoke(app, [*args, *_sets([f'model.name_or_path="{model_dir}"'])])
    assert result.exit_code == 0, result.output
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert (run / "checkpoints" / "step_00002" / "model.safetensors").is_file()
    check = CliRunner().invoke(app, ["trajectories", "check", str(run / "trajectories" / "step_00001.jsonl")])
    assert check.exit_code == 0, check.output
    assert "2 records, 0 problems" in check.output


def test_rollout_cli_is_the_trainers_phase_1(tmp_path: Path) -> None:
    """`rollout` and `train` share collect_step: same seed, same step-1 trajectories, same files and metric names."""
    tok = char_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    sets = _sets([f'model.name_or_path="{model_dir}"', "optim.total_steps=1", "eval.num_tasks=0"])
    config = str(REPO / "configs" / "quickstart.toml")
    train_dir, rollout_dir = tmp_path / "train", tmp_path / "rollout"
    trained = CliRunner().invoke(app, ["train", config, "--output-dir", str(train_dir), *sets])
    assert trained.exit_code == 0, trained.output
    rolled = CliRunner().invoke(app, ["rollout", config, "--output-dir", str(rollout_dir), *sets])
    assert rolled.exit_code == 0, rolled.output

    def records(run: Path) -> list[dict]:
        lines = (run / "trajectories" / "step_00001.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines]

    assert [r["token_ids"] for r in records(rollout_dir)] == [r["token_ids"] for r in records(train_dir)]
    assert [r["group_id"] for r in records(rollout_dir)] == [r["group_id"] for r in records(train_dir)]
    train_metrics = json.loads((train_dir / "metrics.jsonl").read_text().splitlines()[-1])
    rollout_metrics = json.loads((rollout_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {k for k in rollout_metrics if not k.startswith(("perf/", "loss/", "optim/", "train/"))} <= set(
        train_metrics
    )
    assert "perf/rollout_s" in rollout_metrics
    resolved = [json.loads((d / "config.resolved.json").read_text()) for d in (train_dir, rollout_dir)]
    assert resolved[0]["model"]["compute_dtype"] == resolved[1]["model"]["compute_dtype"] != "auto"


def test_bad_config_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rollout]\ngroup_sise = 4\n")
    result = CliRunner().invoke(app, ["train", str(bad)])
    assert result.exit_code == 2
    assert "group_sise" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(
        app, ["train", str(REPO / "configs" / "quickstart.toml"), "--set", "rollout.group_size=1"]
    )
    assert result.exit_code == 2
    assert "reinforce_pp" in result.output


def test_trajectories_check_flags_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"task_id": "x", "group_id": "g", "token_ids": [1, 2], "loss_mask": [0], "logprobs": [null]}\n')
    result = CliRunner().invoke(app, ["trajectories", "check", str(bad)])
    assert result.exit_code == 1


@pytest.mark.slow
def test_train_quickstart_real_smollm2(tmp_path: Path) -> None:
    """Two real steps on SmolLM2-135M (several minutes on a loaded 2-core CPU)."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "worker.rl.cli", "train", "configs/quickstart.toml", "--output-dir", str(run)]
    proc = subprocess.run([*cmd, *_sets([])], cwd=REPO, capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]
    assert lines[1]["rollout/response_length"] > 0
    assert (run / "checkpoints" / "step_00002").is_dir()


def test_train_cli_in_an_environment_file_two_steps(tmp_path: Path) -> None:
    """`studio train configs/unit_conversion.toml`: the env file's user reward runs (in-process for the CLI)."""
    tok = char_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    run = tmp_path / "run"
    args = ["train", str(REPO / "configs" / "unit_conversion.toml"), "--output-dir", str(run)]
    env_file = REPO / "configs" / "envs" / "unit_conversion.toml"
    extra = [f'model.name_or_path="{model_dir}"', f'task.environment="{env_file}"']
    result = CliRunner().invoke(app, [*args, *_sets(extra)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "reward/within_1pct" in rows[1]
    first = json.loads((run / "trajectories" / "step_00001.jsonl").read_text().splitlines()[0])
    assert first["token_ids"]
    assert '{"name": "convert", "arguments": {"query": "' in "".join(t["text"] for t in first["turns"])
