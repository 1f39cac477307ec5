"""TrainConfig validation, strict TOML/YAML loading, dotted overrides and the shipped configs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from transformers import LlamaConfig

from worker.rl.training.build import cpu_kv_cache_bytes
from worker.rl.training.config import (
    AdvantageConfig,
    AlgorithmConfig,
    BatchingConfig,
    CriticConfig,
    EngineConfig,
    LossConfig,
    ModelConfig,
    RolloutConfig,
    TrainConfig,
    load_config,
    override,
    save_resolved,
)

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_derived_properties() -> None:
    cfg = TrainConfig(rollout=RolloutConfig(prompts_per_step=3, group_size=5))
    assert cfg.trajectories_per_step == 15
    assert not cfg.uses_reference
    assert TrainConfig(algorithm=AlgorithmConfig(kl_coef=0.001)).uses_reference


def test_group_size_one_needs_non_group_estimator() -> None:
    with pytest.raises(ValueError, match=r"group_size must be >= 2 for grpo; use algorithm.estimator='reinforce_pp'"):
        TrainConfig(rollout=RolloutConfig(group_size=1))
    ok = TrainConfig(rollout=RolloutConfig(group_size=1), algorithm=AlgorithmConfig(estimator="reinforce_pp"))
    assert ok.rollout.group_size == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"estimator": "ppo9"}, "algorithm.estimator"),
        ({"loss_agg": "sum"}, "algorithm.loss_agg"),
        ({"clip_low": 1.5}, "algorithm.clip_low"),
        ({"estimator": "gae"}, "vf_coef"),
        ({"kl_estimator": "k4"}, "algorithm.kl_estimator"),
        ({"kl_estimator": "k1", "kl_coef": 0.1}, "algorithm.kl_estimator"),
        ({"dual_clip_c": 1.0}, "algorithm.dual_clip_c"),
        ({"micro_batch_tokens": -1}, "algorithm.micro_batch_tokens"),
    ],
)
def test_field_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AlgorithmConfig(**kwargs)  # type: ignore[arg-type]


def test_load_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("seed = 3\n[rollout]\ngroup_size = 6\n[optim]\nlr = 1\nbetas = [0.9, 0.95]\n[model.lora]\nr = 4\n")
    cfg = load_config(toml)
    assert (cfg.seed, cfg.rollout.group_size, cfg.optim.lr, cfg.optim.betas) == (3, 6, 1.0, (0.9, 0.95))
    assert cfg.model.lora is not None
    assert cfg.model.lora.r == 4
    yml = tmp_path / "a.yaml"
    yml.write_text("rollout:\n  group_size: 7\ntask:\n  source: demo\n")
    assert load_config(yml).rollout.group_size == 7


def test_unknown_key_names_path_and_lists_valid(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[rollout]\ngroup_sise = 4\n")
    with pytest.raises(ValueError, match=r"'rollout.group_sise'.*group_size"):
        load_config(p)
    p.write_text("[rolout]\n")
    with pytest.raises(ValueError, match=r"'rolout'.*rollout"):
        load_config(p)


def test_type_error_names_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[rollout]\ngroup_size = "four"\n')
    with pytest.raises(ValueError, match=r"rollout.group_size must be of type int"):
        load_config(p)
    p.write_text("[optim]\nbetas = [0.9]\n")
    with pytest.raises(ValueError, match=r"optim.betas must have 2 items"):
        load_config(p)


def test_bad_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match=r"\.toml"):
        load_config(tmp_path / "c.json")


def test_override_and_resolved_roundtrip(tmp_path: Path) -> None:
    cfg = override(TrainConfig(), ["rollout.group_size=8", "task.dataset=hotpotqa", "model.lora.r=4", "seed=9"])
    assert (cfg.rollout.group_size, cfg.task.dataset, cfg.seed) == (8, "hotpotqa", 9)
    assert cfg.model.lora is not None
    assert cfg.model.lora.r == 4
    assert override(cfg, ["model.lora=none"]).model.lora is None
    with pytest.raises(ValueError, match=r"section.key=value"):
        override(cfg, ["rollout.group_size"])
    with pytest.raises(ValueError, match=r"rollout.bogus"):
        override(cfg, ["rollout.bogus=1"])
    path = save_resolved(cfg, tmp_path)
    data = json.loads(path.read_text())
    assert data["rollout"]["group_size"] == 8
    yml = tmp_path / "r.yaml"
    import yaml

    yml.write_text(yaml.safe_dump(data))
    assert load_config(yml) == cfg


@pytest.mark.parametrize("name", ["quickstart.toml", "multihop_cpu.toml", "paper_qwen2.5_3b_grpo.toml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert cfg.rollout.group_size >= 2


def test_paper_config_matches_paper_setting() -> None:
    cfg = load_config(REPO / "configs" / "paper_qwen2.5_3b_grpo.toml")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct"
    assert (cfg.algorithm.estimator, cfg.rollout.group_size, cfg.optim.lr) == ("grpo", 5, 1e-6)
    assert (cfg.algorithm.kl_coef, cfg.algorithm.kl_estimator) == (0.001, "k3")
    assert (cfg.rollout.max_turns, cfg.task.top_k, cfg.engine.backend) == (5, 5, "vllm")


def test_cpu_kv_cache_is_sized_for_one_step() -> None:
    model_config = LlamaConfig(  # SmolLM2-135M's attention shape: 30 layers, 3 KV heads of 64
        hidden_size=576, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=30
    )
    rollout = RolloutConfig(prompts_per_step=4, group_size=4, max_total_tokens=1536)
    cfg = TrainConfig(model=ModelConfig(compute_dtype="float32"), rollout=rollout)
    per_token = 2 * 30 * 3 * 64 * 4  # K and V, fp32
    assert cpu_kv_cache_bytes(cfg, model_config) == 16 * (1536 + cfg.rollout.max_new_tokens_per_turn) * per_token
    bf16 = TrainConfig(model=ModelConfig(compute_dtype="bfloat16"), rollout=rollout)  # vLLM serves (and caches) bf16
    assert cpu_kv_cache_bytes(bf16, model_config) == cpu_kv_cache_bytes(cfg, model_config) // 2
    fixed = TrainConfig(engine=EngineConfig(cpu_kv_cache_gb=1.5))
    assert cpu_kv_cache_bytes(fixed, model_config) == int(1.5 * 1024**3)
    with pytest.raises(ValueError, match=r"engine.cpu_kv_cache_gb must be >= 0"):
        EngineConfig(cpu_kv_cache_gb=-1)


def test_vocabulary_matches_the_registries_and_the_config() -> None:
    from typing import get_args

    from backend.schemas.common import Preset
    from worker.rl import vocab
    from worker.rl.algorithms.advantages import ADVANTAGE_ESTIMATORS, GROUP_ESTIMATORS
    from worker.rl.algorithms.losses import KL_KINDS
    from worker.rl.envs.from_spec import BUILTIN_REWARD_FNS
    from worker.rl.generation.factory import ENGINES

    assert set(vocab.ESTIMATORS) == set(ADVANTAGE_ESTIMATORS)
    assert set(vocab.GROUP_ESTIMATORS) == set(GROUP_ESTIMATORS)
    assert set(vocab.KL_KINDS) == set(KL_KINDS)
    assert set(vocab.ENGINES) == set(ENGINES)
    assert tuple(vocab.PRESETS) == get_args(Preset) == get_args(vocab.Preset)
    assert set(vocab.BUILTIN_REWARDS) == set(BUILTIN_REWARD_FNS)


def test_every_preset_resolves_and_overrides_merge() -> None:
    from worker.rl import vocab
    from worker.rl.training.presets import preset_path, resolve_run_config

    for name in vocab.PRESETS:
        assert preset_path(name).is_file()
        assert isinstance(resolve_run_config(name, {}), TrainConfig)
    cfg = resolve_run_config("quickstart", {"rollout": {"group_size": 2}})
    assert cfg.rollout.group_size == 2
    assert cfg.rollout.max_turns == 2, "the preset's other values stay"
    with pytest.raises(ValueError, match="preset 'nope' is unknown"):
        resolve_run_config("nope", {})


def test_one_set_of_defaults() -> None:
    """The lower layers' own defaults equal the config's (rollout limits, LoRA) and the UI reads the config's."""
    from app.tabs.train import FALLBACK
    from worker.rl.generation.loading import LoraSpec
    from worker.rl.rollout import RolloutLimits
    from worker.rl.training.collect import rollout_limits
    from worker.rl.training.config import LoraConfig

    assert RolloutLimits() == rollout_limits(TrainConfig())
    lora, spec = LoraConfig(), LoraSpec()
    assert (spec.r, spec.alpha, spec.dropout, spec.target_modules) == (
        lora.r,
        lora.alpha,
        lora.dropout,
        lora.target_modules,
    )
    assert FALLBACK["optim.lr"] == TrainConfig().optim.lr
    assert FALLBACK["optim.total_steps"] == TrainConfig().optim.total_steps


def test_sampling_params_from_the_rollout_section() -> None:
    from worker.rl.training.config import RolloutConfig

    r = RolloutConfig(max_new_tokens_per_turn=33, temperature=0.7, top_p=0.9)
    params = r.sampling_params(5)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.seed) == (33, 0.7, 0.9, 5)
    greedy = r.sampling_params(5, greedy=True)
    assert (greedy.max_new_tokens, greedy.temperature, greedy.top_p) == (33, 0.0, 1.0)


def test_config_module_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, worker.rl.training.presets, backend.api.routes.runs, backend.api.routes.evaluations; "
        "bad = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_algorithm_fields_are_split_by_concern_and_each_concern_checks_its_own() -> None:
    """Issue #11: `[algorithm]` stays one flat table, declared by estimator / loss / batching / critic."""
    concerns = (AdvantageConfig, LossConfig, BatchingConfig, CriticConfig)
    names = [f.name for concern in concerns for f in dataclasses.fields(concern)]
    assert len(names) == len(set(names))  # no field in two concerns
    assert names == [f.name for f in dataclasses.fields(AlgorithmConfig)]  # and none outside them
    assert all(isinstance(AlgorithmConfig(), concern) for concern in concerns)
    for concern, bad, match in [
        (AdvantageConfig, {"estimator": "ppo"}, "algorithm.estimator"),
        (LossConfig, {"kl_estimator": "k1", "kl_coef": 0.1}, "kl_in_reward"),
        (BatchingConfig, {"minibatch_size": 0}, "algorithm.minibatch_size"),
        (CriticConfig, {"value_clip": 0.0}, "algorithm.value_clip"),
    ]:
        with pytest.raises(ValueError, match=match):
            concern(**bad)
        with pytest.raises(ValueError, match=match):
            AlgorithmConfig(**bad)
    with pytest.raises(ValueError, match="needs a critic"):  # a check that spans two concerns
        AlgorithmConfig(estimator="gae")
