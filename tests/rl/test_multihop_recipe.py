"""`configs/multihop_cpu.toml`: it validates, is registered as a preset, and its data obeys the train/test protocol."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from worker.rl.data.protocol import EVAL_FILES, TRAIN_FILES, load_sets, protocol_violations
from worker.rl.data.splits import question_key
from worker.rl.envs.base import EnvConfig, ToolEnv
from worker.rl.envs.from_spec import env_from_spec
from worker.rl.evaluation.job import EvalRequest
from worker.rl.training.build import load_task_data, spec_from_config
from worker.rl.training.config import load_config
from worker.rl.training.presets import resolve_run_config
from worker.rl.types import Passage

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "multihop_cpu.toml"


def test_recipe_validates_and_is_the_registered_preset() -> None:
    cfg = load_config(RECIPE)
    assert cfg == resolve_run_config("multihop_cpu", {})
    assert (cfg.model.name_or_path, cfg.algorithm.estimator) == ("smollm2-135m", "grpo")
    assert cfg.rollout.max_turns >= 3, "2-hop questions need search, search, answer"
    assert (cfg.task.source, cfg.task.force_first_search, cfg.task.answer_on_last_turn) == ("protocol", True, True)
    assert cfg.task.f1_reward_weight > 0
    assert cfg.task.retrieval_reward_weight > 0, "the queries' signal while F1 is rare (docs/table3, variant B)"
    assert cfg.algorithm.drop_flat_rows
    assert not (REPO / "configs" / "hotpotqa_cpu.toml").exists(), "the recipe replaces hotpotqa_cpu"
    rubric = {r.name: r.weight for r in spec_from_config(cfg).rubric}
    assert (rubric["exact_match"], rubric["f1"], rubric["format"]) == (1.0, 1.0, 0.0)
    assert rubric["retrieval_recall"] == cfg.task.retrieval_reward_weight
    shaped = spec_from_config(resolve_run_config("multihop_cpu", {"task": {"retrieval_reward_weight": 0.3}}))
    assert {r.name: r.weight for r in shaped.rubric}["retrieval_recall"] == 0.3
    with pytest.raises(ValueError, match=r"task\.retrieval_reward_weight must be >= 0"):
        resolve_run_config("multihop_cpu", {"task": {"retrieval_reward_weight": -1.0}})
    with pytest.raises(ValueError, match=r"task\.data_dir goes with"):
        resolve_run_config("multihop_cpu", {"task": {"data_dir": None}})


def test_answer_prefill_on_the_last_turn_only() -> None:
    env = ToolEnv(
        tools=[], config=EnvConfig(max_turns=3, first_turn_prefill="<tool_call>", answer_prefill_on_last_turn=True)
    )
    assert [env.prefill(i) for i in range(3)] == ["<tool_call>", "", "<answer>"]


def test_forced_searches_open_the_leading_turns_and_the_last_turn_still_answers() -> None:
    config = EnvConfig(
        max_turns=3, first_turn_prefill="<tool_call>", first_turn_prefill_turns=2, answer_prefill_on_last_turn=True
    )
    assert [ToolEnv(tools=[], config=config).prefill(i) for i in range(3)] == ["<tool_call>", "<tool_call>", "<answer>"]
    every = EnvConfig(max_turns=2, first_turn_prefill="<tool_call>", first_turn_prefill_turns=2)
    assert [ToolEnv(tools=[], config=every).prefill(i) for i in range(2)] == ["<tool_call>", "<tool_call>"]
    with pytest.raises(ValueError, match="first_turn_prefill_turns must be >= 1"):
        EnvConfig(first_turn_prefill_turns=0)


def test_forced_search_turns_reach_train_and_eval_and_bad_values_are_named() -> None:
    cfg = load_config(RECIPE)
    spec = spec_from_config(cfg)
    assert spec.prefill.force_first_call == "search"
    assert spec.prefill.prefill_turns == cfg.task.forced_search_turns
    env = env_from_spec(spec, retriever=_NoSearch())
    assert env.config.first_turn_prefill_turns == cfg.task.forced_search_turns
    assert env.tool_schemas == [], "the prompt teaches the call; a schema block is copied into calls"
    with pytest.raises(ValueError, match=r"needs task\.force_first_search"):
        resolve_run_config("multihop_cpu", {"task": {"force_first_search": False, "forced_search_turns": 2}})
    with pytest.raises(ValueError, match=r"exceeds rollout\.max_turns"):
        resolve_run_config("multihop_cpu", {"task": {"forced_search_turns": 4}})
    for bad in (0, -1):  # one rule (`vocab.check_forced_searches`) for the config, the request and the API
        with pytest.raises(ValueError, match=r"task\.forced_search_turns must be an integer >= 1"):
            resolve_run_config("multihop_cpu", {"task": {"forced_search_turns": bad}})
    with pytest.raises(ValueError, match=r"prefill\.prefill_turns must be an integer from 1"):
        dataclasses.replace(spec, prefill=dataclasses.replace(spec.prefill, prefill_turns=9))
    request = EvalRequest(datasets=("hotpotqa",), methods=("base-tool-call",), force_first_search=True)
    assert request.forced_search_turns == 1
    with pytest.raises(ValueError, match="forced_search_turns=4 exceeds max_turns=3"):
        dataclasses.replace(request, forced_search_turns=4)
    with pytest.raises(ValueError, match="forced_search_turns must be an integer >= 1; got 0"):
        dataclasses.replace(request, forced_search_turns=0)
    with pytest.raises(ValueError, match="needs force_first_search"):
        dataclasses.replace(request, forced_search_turns=2, force_first_search=False)


class _NoSearch:
    def search(self, query: str, top_k: int) -> list[Passage]:
        return []


def test_recipe_data_obeys_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every training and validation task the recipe reads is absent (id and normalised question) from the
    evaluation sets; the validation split is carved from the pool; the corpus pools every paragraph once."""
    cfg = load_config(RECIPE)
    data_dir = REPO / cfg.task.data_dir  # type: ignore[operator]
    if not (data_dir / "SOURCES.md").is_file():
        pytest.skip(f"no shared benchmark samples at {data_dir}")
    monkeypatch.chdir(REPO)  # task.data_dir is relative to the repository root
    data = load_task_data(cfg.task)
    evaluation = load_sets(data_dir, EVAL_FILES)
    assert protocol_violations([*data.train, *data.eval], evaluation) == []
    eval_questions = {question_key(t.question) for t in evaluation}
    assert not eval_questions & {question_key(t.question) for t in data.train}
    assert len(data.eval) == cfg.task.eval_size
    assert not {t.id for t in data.train} & {t.id for t in data.eval}, "validation is disjoint from train"
    pool_ids = {t.id for t in data.train}
    for name in ("hotpotqa", "2wiki"):  # the pool draws on both training datasets
        files = [(d, f) for d, f in TRAIN_FILES if d == name]
        assert pool_ids & {t.id for t in load_sets(data_dir, files)}, f"no {name} task in the training split"
    keys = [(p.title, p.text) for p in data.passages]
    assert len(keys) == len(set(keys)), "the pooled corpus holds each (title, text) once"
