"""Hand-checked table tests for the QA answer metrics (HotpotQA/SQuAD normalisation)."""

from __future__ import annotations

import pytest

from worker.rl.rewards.qa_metrics import (
    QAScores,
    cover_exact_match_score,
    exact_match_score,
    f1_score,
    normalize_answer,
    score_prediction,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  a   cat, an apple!  ", "cat apple"),
        ("Theatre", "theatre"),  # "the" inside a word stays
        ("U.S.A.", "usa"),
        ("Zürich", "zürich"),  # unicode letters survive, only ASCII punctuation goes
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("pred", "golds", "em", "cover", "f1"),
    [
        ("Paris", ["paris"], 1.0, 1.0, 1.0),
        ("the Paris.", ["Paris"], 1.0, 1.0, 1.0),
        ("in Paris, France", ["Paris"], 0.0, 1.0, 0.5),  # P=1/3 R=1 -> 0.5
        ("Paris", ["Paris, France"], 0.0, 0.0, 2 / 3),  # P=1 R=1/2 -> 2/3
        ("NYC", ["New York City", "NYC"], 1.0, 1.0, 1.0),  # best alias
        ("yes", ["no"], 0.0, 0.0, 0.0),
        ("yes it is", ["yes"], 0.0, 1.0, 0.0),  # official HotpotQA yes/no rule for F1
        ("no", ["no"], 1.0, 1.0, 1.0),
        ("", ["Paris"], 0.0, 0.0, 0.0),
        ("   ", ["Paris"], 0.0, 0.0, 0.0),
        ("the", ["Paris"], 0.0, 0.0, 0.0),  # normalises to empty
        ("Zürich", ["zürich"], 1.0, 1.0, 1.0),
        ("Zurich", ["Zürich"], 0.0, 0.0, 0.0),
        ("Berlin", [], 0.0, 0.0, 0.0),
    ],
)
def test_metric_table(pred: str, golds: list[str], em: float, cover: float, f1: float) -> None:
    assert exact_match_score(pred, golds) == em
    assert cover_exact_match_score(pred, golds) == cover
    assert f1_score(pred, golds) == pytest.approx(f1)


def test_bare_string_gold_is_one_answer() -> None:
    assert exact_match_score("paris", "Paris") == 1.0
    assert f1_score("p", "Paris") == 0.0  # not matched character by character


def test_score_prediction_bundles_metrics() -> None:
    scores = score_prediction("in Paris, France", ("Paris",))
    assert scores == QAScores(em=0.0, cover_em=1.0, f1=pytest.approx(0.5))
    assert scores.to_dict()["cover_em"] == 1.0
    assert score_prediction(None, ("Paris",)) == QAScores(0.0, 0.0, 0.0)
