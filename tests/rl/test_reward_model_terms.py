"""Reward models as rubric terms: step scorers from step marks, process rewards, environment terms, bad input."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.rl.test_reward_model import WORDS, tiny_base, turns  # noqa: F401  (tiny_base is a fixture)
from worker.rl.envs.from_spec import build_rubric
from worker.rl.envs.spec import EnvSpec, SpecError
from worker.rl.reward_model.pairs import TooFewLabelsError, prefix_texts, step_pairs_from_labels
from worker.rl.reward_model.scorer import RewardModelScorer, TokenizerMismatchError
from worker.rl.reward_model.train import RewardModelConfig, train_reward_model
from worker.rl.training.build import check_reward_model_terms
from worker.rl.training.config import RewardModelTermConfig, TaskConfig, config_from_dict
from worker.rl.training.reward_models import (
    LoadedRewardModel,
    apply_reward_models,
    environment_reward_models,
    load_reward_models,
)
from worker.rl.types import ToolCall, Trajectory, Turn


def step_record(label_id: int, group: str, query: str, good: bool, question: str) -> dict[str, Any]:
    data = {"turns": turns(question, query, "<answer>x</answer>"), "final_answer": "x"}
    return {
        "label_id": label_id,
        "kind": "step",
        "step_marks": [{"turn": 0, "good": good}],
        "trajectory": data,
        "trajectory_id": label_id,
        "run_id": 1,
        "step": 0,
        "group_id": group,
    }


def scripted_step_records(n_groups: int, seed: int = 0) -> list[dict[str, Any]]:
    """Hidden step preference: a first search that names the question's city is good, a junk query is bad."""
    rng = random.Random(seed)
    records = []
    for g in range(n_groups):
        city = rng.choice(WORDS)
        question = f"What river runs through {city}?"
        records.append(step_record(2 * g + 1, f"g{g}", city, True, question))
        records.append(step_record(2 * g + 2, f"g{g}", "your query", False, question))
    return records


def test_prefix_texts_and_step_pairs_by_hand() -> None:
    two = turns("Where is Rome?", "Rome", "<answer>Italy</answer>")
    texts = prefix_texts(two, "Italy")
    assert texts == [
        "Question: Where is Rome?\nTool search: Rome\nAnswer: (no answer) <tool_call>",
        "Question: Where is Rome?\nTool search: Rome\nAnswer: Italy",
    ]
    records = scripted_step_records(2)
    # the same trajectory marked twice: the newest mark per (trajectory, turn) counts
    records.append(
        {**records[1], "label_id": 99, "step_marks": [{"turn": 0, "good": False}, {"turn": 5, "good": True}]}
    )
    pairs = step_pairs_from_labels(records)
    assert len(pairs) == 2  # one (good, bad) pair per group; out-of-range turn 5 is ignored
    assert all("Tool search: your query" in p.rejected and p.source == "steps" for p in pairs)
    assert {p.group for p in pairs} == {"1/0/g0", "1/0/g1"}
    assert step_pairs_from_labels([{**r, "kind": "score"} for r in records]) == []


def _step_config(base: Path, **kw: Any) -> RewardModelConfig:
    settings: dict[str, Any] = {
        "train_layers": 2,
        "epochs": 4,
        "learning_rate": 3e-3,
        "batch_size": 8,
        "max_length": 128,
        "heldout_fraction": 0.25,
        "min_pairs": 8,
        "device": "cpu",
    }
    return RewardModelConfig(base_model=str(base), kind="step", **{**settings, **kw})


def test_step_scorer_learns_good_steps_and_scores_each_prefix(tiny_base: Path, tmp_path: Path) -> None:  # noqa: F811
    """Learning, not plumbing: held-out pairwise accuracy on unseen groups well above chance (0.5)."""
    out = tmp_path / "rm-step"
    report = train_reward_model(scripted_step_records(40), _step_config(tiny_base), out, provenance={})
    assert report.heldout_pairs >= 8
    assert report.heldout_accuracy >= 0.85, report
    meta = json.loads((out / "reward_model.json").read_text())
    assert (meta["kind"], meta["input"], meta["pair_sources"]["steps"]) == ("step", "text", 40)
    scorer = RewardModelScorer.load(out)
    assert scorer.kind == "step"
    good = trajectory_of(turns("What river runs through Oslo?", "Oslo", "<answer>x</answer>"))
    bad = trajectory_of(turns("What river runs through Oslo?", "your query", "<answer>x</answer>"))
    rows = scorer.score_prefixes([good, bad])
    assert [len(r) for r in rows] == [2, 2]  # one score per assistant turn
    assert rows[0][0] > rows[1][0]
    # one path: the step term puts those scores into step_rewards
    term = RewardModelTermConfig(path=str(out), step=True, weight=2.0)
    (loaded,) = load_reward_models(TaskConfig(reward_models=(term,)))
    scored, perf = apply_reward_models([good, bad], [loaded])
    assert scored[0].step_rewards == pytest.approx((2.0 * rows[0][0], 2.0 * rows[0][1]))
    assert scored[0].reward == good.reward  # the outcome reward is untouched
    assert perf["perf/step_reward_model_s"] > 0
    assert perf["perf/reward_model_texts"] == 4
    with pytest.raises(ValueError, match="is a step reward model; use it as step_reward_model"):
        load_reward_models(TaskConfig(reward_models=(dataclasses.replace(term, step=False),)))


def test_too_few_step_marks_say_how_many_and_how(tiny_base: Path, tmp_path: Path) -> None:  # noqa: F811
    only_good = [r for r in scripted_step_records(12) if r["step_marks"][0]["good"]]
    with pytest.raises(TooFewLabelsError, match=r"step scorer: 0 preference pair\(s\), at least 8 are needed"):
        train_reward_model(only_good, _step_config(tiny_base), tmp_path / "x", provenance={})


def test_swapped_tokenizer_in_an_artifact_is_refused(tiny_base: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "rm"
    config = dataclasses.replace(_step_config(tiny_base), epochs=1)
    train_reward_model(scripted_step_records(10), config, out, provenance={})
    tok = json.loads((out / "model" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[10:12]
    vocab[first], vocab[second] = vocab[second], vocab[first]  # same size, other ids: ids would be mixed
    (out / "model" / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TokenizerMismatchError, match="token ids would be mixed"):
        RewardModelScorer.load(out)


def trajectory_of(turn_dicts: list[dict[str, Any]]) -> Trajectory:
    """A core trajectory with these turns' text and calls (token fields unused by text scoring)."""
    made = tuple(
        Turn(
            role=t["role"],
            text=t["text"],
            token_start=0,
            token_end=0,
            tool_calls=tuple(ToolCall.from_dict(c) for c in t.get("tool_calls") or ()),
        )
        for t in turn_dicts
    )
    return Trajectory("t", "g", (), (), (), 0, made, reward=0.5, final_answer="x")


class PrefixScorer:
    """Scores each prefix by its position (a stand-in with the scorer's batch methods)."""

    def __init__(self) -> None:
        self.calls = 0

    def score_prefixes(self, trajectories: list[Trajectory]) -> list[list[float]]:
        self.calls += 1
        return [[float(k + 1) for k in range(t.num_turns)] for t in trajectories]


def test_step_terms_add_weighted_and_normalised_process_rewards() -> None:
    a = trajectory_of(turns("Q?", "q", "<answer>x</answer>"))
    a = dataclasses.replace(a, step_rewards=(0.5, 0.0))
    term = RewardModelTermConfig(id=4, step=True, weight=0.5)
    out, perf = apply_reward_models([a], [LoadedRewardModel(term, PrefixScorer())])  # type: ignore[arg-type]
    assert out[0].step_rewards == (1.0, 1.0)  # env's own step rewards + 0.5 x (1, 2)
    assert out[0].reward_breakdown["step_reward_model:4"] == 1.5  # mean raw step score, logged
    assert out[0].reward_breakdown["rubric"] == 0.5  # the automatic reward kept beside the model terms
    assert perf["perf/reward_model_texts"] == 2
    z = RewardModelTermConfig(id=4, step=True, normalize=True)
    out, _ = apply_reward_models([a], [LoadedRewardModel(z, PrefixScorer())])  # type: ignore[arg-type]
    assert [round(s, 4) for s in out[0].step_rewards] == [-0.5, 1.0]  # 0.5 + (-1), 0 + 1


SPEC = {
    "name": "e",
    "rubric": [
        {"name": "em", "builtin": "exact_match"},
        {"name": "rm-3", "reward_model": 3, "weight": 0.5, "normalize": True},
        {"name": "prm-4", "step_reward_model": 4},
    ],
}


def test_environment_rubric_reward_model_terms_go_through_task_reward_models() -> None:
    spec = EnvSpec.from_dict(SPEC)
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    assert [t.name for t in build_rubric(spec, None).terms] == ["em"]  # model terms are batch-scored instead
    terms = environment_reward_models(spec)
    assert [(t.name, t.weight, t.normalize) for t in terms] == [
        ("reward_model:3", 0.5, True),
        ("step_reward_model:4", 1.0, False),
    ]
    config = config_from_dict(
        {"algorithm": {"process_reward_weight": 1.0}, "task": {"reward_models": [dataclasses.asdict(t) for t in terms]}}
    )
    check_reward_model_terms(spec, config)
    with pytest.raises(ValueError, match=r"uses reward_model:3, step_reward_model:4, which the run's task"):
        check_reward_model_terms(spec, config_from_dict({}))


@pytest.mark.parametrize(
    ("term", "needle"),
    [
        ({"name": "x", "reward_model": 3, "builtin": "f1"}, "exactly one of builtin, key, reward_model"),
        ({"name": "x", "builtin": "f1", "normalize": True}, "normalize applies to reward_model"),
        ({"name": "x", "reward_modell": 3}, "unknown key"),
    ],
)
def test_bad_reward_model_terms_name_the_field(term: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        EnvSpec.from_dict({"name": "e", "rubric": [term]})


def test_step_term_without_process_rewards_is_refused() -> None:
    with pytest.raises(ValueError, match="process_reward_weight is 0"):
        config_from_dict({"task": {"reward_models": [{"id": 2, "step": True}]}})


def test_missing_step_artifact_is_a_clear_error(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path, ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        load_reward_models(TaskConfig(reward_models=(RewardModelTermConfig(path=str(tmp_path), step=True),)))
