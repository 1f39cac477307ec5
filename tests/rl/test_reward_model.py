"""Reward models from labels: text views, pairs, the Bradley–Terry fit on a tiny random model, the artifact."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.rl._learn_fixtures import char_tokenizer, tiny_llama
from worker.rl.reward_model.pairs import (
    PreferencePair,
    TextView,
    TooFewLabelsError,
    pairs_from_labels,
    record_text,
    split_pairs,
    text_view,
)
from worker.rl.reward_model.scorer import RewardModelScorer
from worker.rl.reward_model.train import RewardModelConfig, pairwise_metrics, train_reward_model
from worker.rl.training.config import RewardModelTermConfig
from worker.rl.training.reward_models import LoadedRewardModel, apply_reward_models
from worker.rl.types import Trajectory

WORDS = ["Paris", "Berlin", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Dakar"]


def turns(question: str, query: str | None, answer_text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "user", "text": question}]
    if query is not None:
        out.append(
            {
                "role": "assistant",
                "text": "<tool_call>",
                "tool_calls": [{"name": "search", "arguments": {"query": query}}],
            }
        )
        out.append({"role": "tool", "text": "passages"})
    out.append({"role": "assistant", "text": answer_text, "tool_calls": []})
    return out


def snapshot(question: str, query: str | None, answer: str) -> dict[str, Any]:
    return {"turns": turns(question, query, f"<answer>{answer}</answer>"), "final_answer": answer}


def test_text_view_keeps_question_tool_queries_and_answer() -> None:
    view = text_view(
        turns("Long preamble. Where is the Louvre?", "Louvre", "<answer>Paris</answer>"),
        "Paris",
        TextView(max_question_chars=20),
    )
    assert view == "Question: Where is the Louvre?\nTool search: Louvre\nAnswer: Paris"
    assert text_view(turns("Q?", None, "I think Rome"), None).endswith("Answer: (no answer) I think Rome")
    # a prompt that labels its question already is not labeled twice
    assert text_view(turns("Question: Q?", None, "x"), None).startswith("Question: Q?\n")


def test_full_view_is_the_transcript_after_the_system_prompt() -> None:
    convo = [{"role": "system", "text": "You are a tool user."}, *turns("Where is the Louvre?", "Louvre", "Paris.")]
    view = text_view(convo, "Paris", TextView(full=True, max_question_chars=5, max_answer_chars=1))
    assert view == "user: Where is the Louvre?\nassistant: <tool_call>\ntool: passages\nassistant: Paris."
    assert RewardModelConfig.from_dict({"view": {"full": True}}).view.full


def test_pairs_from_pairwise_choices_and_scores_within_groups() -> None:
    a, b, c = snapshot("Q1?", "x", "A"), snapshot("Q1?", None, "B"), snapshot("Q1?", "y", "C")
    records = [
        {
            "label_id": 1,
            "kind": "pairwise",
            "choice": "b",
            "trajectory": a,
            "other_trajectory": b,
            "run_id": 1,
            "step": 1,
            "group_id": "g",
        },
        {
            "label_id": 2,
            "kind": "pairwise",
            "choice": "tie",
            "trajectory": a,
            "other_trajectory": c,
            "run_id": 1,
            "step": 1,
            "group_id": "g",
        },
        {
            "label_id": 3,
            "kind": "score",
            "score": 1.0,
            "trajectory_id": 10,
            "trajectory": a,
            "run_id": 1,
            "step": 1,
            "group_id": "g",
        },
        {
            "label_id": 4,
            "kind": "score",
            "score": 0.0,
            "trajectory_id": 11,
            "trajectory": c,
            "run_id": 1,
            "step": 1,
            "group_id": "g",
        },
        {
            "label_id": 5,
            "kind": "score",
            "score": 0.0,
            "trajectory_id": 12,
            "trajectory": b,
            "run_id": 1,
            "step": 2,
            "group_id": "g",
        },  # another group (step 2): no pair with the others
    ]
    pairs = pairs_from_labels(records)
    assert [(p.chosen.endswith("B"), p.rejected.endswith("A"), p.source, p.label_ids) for p in pairs] == [
        (True, True, "pairwise", (1,)),
        (False, False, "scores", (3, 4)),
    ]
    assert pairs[1].chosen.endswith("Answer: A")
    assert pairs[1].rejected.endswith("Answer: C")


def test_split_holds_out_whole_groups_and_refuses_too_few_pairs() -> None:
    pairs = [PreferencePair(f"c{i}", f"r{i}", f"g{i % 5}", (i,)) for i in range(20)]
    split = split_pairs(pairs, heldout_fraction=0.2, min_pairs=8, seed=0)
    assert {p.group for p in split.train}.isdisjoint({p.group for p in split.heldout})
    assert len(split.train) + len(split.heldout) == 20
    assert split.heldout
    assert split.label_ids == tuple(range(20))
    with pytest.raises(TooFewLabelsError, match=r"3 preference pair\(s\), at least 8 are needed"):
        split_pairs(pairs[:3], heldout_fraction=0.2, min_pairs=8, seed=0)
    with pytest.raises(TooFewLabelsError, match="at least 2 groups"):
        split_pairs([PreferencePair("a", "b", "g")] * 9, heldout_fraction=0.2, min_pairs=8, seed=0)


def test_pairwise_metrics_by_hand() -> None:
    accuracy, ece = pairwise_metrics(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 3.0]))
    assert accuracy == pytest.approx((1 + 0.5 + 0) / 3)
    # confidences: sigmoid(2)=.881, .5, sigmoid(-2)=.119 and their complements; outcomes 1 then 0
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected = 0.0
    by_bin = {8: ([p, p], [1, 0]), 5: ([0.5, 0.5], [1, 0]), 1: ([1 - p, 1 - p], [1, 0])}
    for confs, outs in by_bin.values():
        expected += len(confs) / 6 * abs(sum(confs) / len(confs) - sum(outs) / len(outs))
    assert ece == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama + a char tokenizer saved as a `from_pretrained` dir (no downloads)."""
    tokenizer = char_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer), hidden=32)
    model.config.pad_token_id, model.config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    path = tmp_path_factory.mktemp("tiny-base")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def scripted_records(n_groups: int, seed: int = 0) -> list[dict[str, Any]]:
    """A hidden preference: the answer that quotes the searched title in brackets beats the bare answer."""
    rng = random.Random(seed)
    records = []
    for g in range(n_groups):
        city = rng.choice(WORDS)
        question = f"Which city is {rng.choice(WORDS)} near?"
        good = snapshot(question, city, f"{city} [{city}]")
        bad = snapshot(question, city, city)
        first_is_good = rng.random() < 0.5
        a, b = (good, bad) if first_is_good else (bad, good)
        records.append(
            {
                "label_id": g + 1,
                "kind": "pairwise",
                "choice": "a" if first_is_good else "b",
                "trajectory": a,
                "other_trajectory": b,
                "run_id": 1,
                "step": g // 4,
                "group_id": f"g{g}",
            }
        )
    return records


def test_reward_model_learns_a_separable_preference(tiny_base: Path, tmp_path: Path) -> None:
    """Learning, not plumbing: held-out accuracy well above chance (0.5) on groups never trained on."""
    config = RewardModelConfig(
        base_model=str(tiny_base),
        train_layers=2,
        epochs=4,
        learning_rate=3e-3,
        batch_size=8,
        max_length=128,
        heldout_fraction=0.25,
        min_pairs=8,
        device="cpu",
    )
    out = tmp_path / "rm-1"
    report = train_reward_model(scripted_records(40), config, out, provenance={"label_run_ids": [1]})
    assert report.heldout_pairs >= 8
    assert report.heldout_accuracy >= 0.85, report
    assert 0.0 <= report.heldout_ece <= 0.5
    assert report.trainable_params < report.total_params  # the embeddings stayed frozen
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["label_ids"] == list(range(1, 41))
    assert meta["base_model"] == str(tiny_base)
    assert meta["metrics"]["heldout_accuracy"] == report.heldout_accuracy
    assert meta["provenance"]["label_run_ids"] == [1]
    # the saved artifact scores exactly like the trained model did
    scorer = RewardModelScorer.load(out)
    good, bad = snapshot("Q?", "Rome", "Rome [Rome]"), snapshot("Q?", "Rome", "Rome")
    s_good, s_bad = scorer.score_texts([record_text(good), record_text(bad)])
    assert s_good > s_bad
    with pytest.raises(FileExistsError, match="never overwritten"):
        train_reward_model(scripted_records(16), dataclasses.replace(config, epochs=1), out, provenance={})


def test_missing_artifact_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        RewardModelScorer.load(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown reward model config key"):
        RewardModelConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="invalid epochs"):
        RewardModelConfig(epochs=0)


class FixedScorer:
    """Scores by final-answer length (a stand-in with the scorer's batch method)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score_trajectories(self, trajectories: list[Trajectory]) -> list[float]:
        self.batches.append(len(trajectories))
        return [float(len(t.final_answer or "")) for t in trajectories]


def test_apply_reward_models_batches_weights_and_normalises() -> None:
    trajs = [Trajectory("t", "g", (), (), (), 0, (), reward=r, final_answer=a) for r, a in ((1.0, "ab"), (0.0, "abcd"))]
    plain = LoadedRewardModel(RewardModelTermConfig(id=3, weight=0.5), FixedScorer())  # type: ignore[arg-type]
    out, perf = apply_reward_models(trajs, [plain], env_weight=0.0)
    assert [t.reward for t in out] == [1.0, 2.0]  # env rubric scaled to 0, 0.5 x length
    assert out[1].reward_breakdown["reward_model:3"] == 4.0
    assert perf["perf/reward_model_s"] >= 0
    assert plain.scorer.batches == [2]  # one batch for the whole step
    z = LoadedRewardModel(RewardModelTermConfig(path="/a/rm-9", normalize=True), FixedScorer())  # type: ignore[arg-type]
    out, _ = apply_reward_models(trajs, [z], env_weight=1.0)
    assert [round(t.reward, 4) for t in out] == [0.0, 1.0]  # 1 + (-1), 0 + 1
    assert "reward_model:rm-9" in out[0].reward_breakdown
    assert apply_reward_models(trajs, [], 1.0) == (trajs, {})
