"""Answer-level QA metrics: SQuAD/HotpotQA normalisation, exact match, cover-EM, token F1.

Follows the official HotpotQA evaluation script (normalisation, yes/no/noanswer
rule for F1). `cover_exact_match_score` is the "EM" the Agent-R1 reference code
reports: the normalised gold string is contained in the normalised prediction.
Every metric takes all gold aliases and returns the best score over them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lowercase, strip punctuation, drop articles (a/an/the) and collapse whitespace."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golds: Sequence[str] | str) -> list[str]:
    # A bare string is one gold answer, not a sequence of characters.
    return [golds] if isinstance(golds, str) else [str(g) for g in golds]


def exact_match_score(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold alias, else 0.0."""
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    return float(any(pred == normalize_answer(g) for g in _golds(golds)))


def cover_exact_match_score(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when a normalised gold alias appears inside the normalised prediction.

    A plain substring test, as in the Agent-R1/Search-R1 reward code (so "paris"
    also covers "parisian"): keep it that way to stay comparable with the paper.
    """
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    return float(any((norm := normalize_answer(g)) and norm in pred for g in _golds(golds)))


def _f1_single(pred_norm: str, gold_norm: str) -> float:
    if (pred_norm in _SPECIAL_ANSWERS or gold_norm in _SPECIAL_ANSWERS) and pred_norm != gold_norm:
        return 0.0
    pred_tokens = pred_norm.split()
    gold_tokens = gold_norm.split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-level F1 against the best gold alias (HotpotQA rule for yes/no/noanswer)."""
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    return max((_f1_single(pred, normalize_answer(g)) for g in _golds(golds)), default=0.0)


@dataclass(frozen=True, slots=True)
class QAScores:
    """The three answer metrics of one prediction."""

    em: float
    """Exact match after normalisation (0 or 1)."""
    cover_em: float
    """Gold contained in the prediction after normalisation (0 or 1; Agent-R1's "EM")."""
    f1: float
    """Token F1 in [0, 1], best over the gold aliases."""

    def to_dict(self) -> dict[str, float]:
        return {"em": self.em, "cover_em": self.cover_em, "f1": self.f1}


def score_prediction(pred: str | None, golds: Sequence[str]) -> QAScores:
    """All metrics of one prediction; `None` (no answer given) scores zero everywhere."""
    text = pred or ""
    return QAScores(
        em=exact_match_score(text, golds),
        cover_em=cover_exact_match_score(text, golds),
        f1=f1_score(text, golds),
    )
