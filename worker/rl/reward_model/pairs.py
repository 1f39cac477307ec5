"""Preference pairs from human labels, over a shortened text view of each trajectory (no torch).

A reward model scores *text*, not the policy's tokens, so any tokenizer works. The view keeps
what preferences are usually about and what a 2-core CPU can afford: the question, each tool
query and the final answer (docs/reward-models.md measures what this costs in accuracy).
Pairs come from explicit pairwise labels and from score labels that differ within a group.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.rl.types import Trajectory

LabelRecord = Mapping[str, Any]
"""One label in the export format `agent-studio.label/v1` (docs/labels-format.md)."""


@dataclass(frozen=True)
class TextView:
    """How a trajectory is shortened before scoring."""

    max_question_chars: int = 300
    """Characters kept from the end of the first user message (the question sits at its end)."""
    max_query_chars: int = 120
    """Characters kept per tool call's arguments."""
    max_answer_chars: int = 200
    """Characters kept of the final answer (or of the last assistant text when there is none)."""
    full: bool = False
    """Score the whole transcript instead: every turn but the system prompt, as 'role: text' lines, uncut but
    for the reward model's `max_length` tokens (the max_*_chars limits then do not apply)."""

    def __post_init__(self) -> None:
        for name in ("max_question_chars", "max_query_chars", "max_answer_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"TextView.{name} must be >= 1; got {getattr(self, name)}")


_QUESTION_LABEL = re.compile(r"^\s*question\s*:\s*", re.IGNORECASE)


def text_view(turns: Sequence[Mapping[str, Any]], final_answer: str | None, view: TextView = TextView()) -> str:
    """'Question: …' + one 'Tool <name>: <args>' line per call + 'Answer: …' from a trajectory's turns.

    With `view.full`, the transcript's 'role: text' lines after the system prompt instead.
    """
    if view.full:
        return "\n".join(
            f"{t.get('role')}: {str(t.get('text') or '').strip()}" for t in turns if t.get("role") != "system"
        )
    user = next((str(t.get("text") or "") for t in turns if t.get("role") == "user"), "")
    question = _QUESTION_LABEL.sub("", user.strip()[-view.max_question_chars :])  # prompts that say "Question:" too
    lines = [f"Question: {question}"]
    last_text = ""
    for turn in turns:
        if turn.get("role") != "assistant":
            continue
        last_text = str(turn.get("text") or "")
        for call in turn.get("tool_calls") or ():
            args = call.get("arguments") or {}
            shown = str(args.get("query")) if set(args) == {"query"} else json.dumps(args, sort_keys=True)
            lines.append(f"Tool {call.get('name', '?')}: {shown[: view.max_query_chars]}")
    answer = final_answer if final_answer is not None else f"(no answer) {last_text.strip()}"
    lines.append(f"Answer: {answer.strip()[: view.max_answer_chars]}")
    return "\n".join(lines)


def prefix_texts(
    turns: Sequence[Mapping[str, Any]], final_answer: str | None, view: TextView = TextView()
) -> list[str]:
    """One view per assistant turn k: the turns up to and including k (what a step scorer judges).

    The last assistant turn's view carries the final answer; earlier ones end with that turn's own text.
    """
    ends = [i for i, t in enumerate(turns) if t.get("role") == "assistant"]
    return [
        text_view(turns[: end + 1], final_answer if k == len(ends) - 1 else None, view) for k, end in enumerate(ends)
    ]


def trajectory_text(trajectory: Trajectory, view: TextView = TextView()) -> str:
    """`text_view` of a core `Trajectory` (what the rubric term scores during training)."""
    return text_view([t.to_dict() for t in trajectory.turns], trajectory.final_answer, view)


def record_text(data: Mapping[str, Any], view: TextView = TextView()) -> str:
    """`text_view` of a stored `Trajectory.to_dict()` snapshot."""
    return text_view(data.get("turns") or (), data.get("final_answer"), view)


def trajectory_prefix_texts(trajectory: Trajectory, view: TextView = TextView()) -> list[str]:
    """`prefix_texts` of a core `Trajectory` (what a step-scorer term scores during training)."""
    return prefix_texts([t.to_dict() for t in trajectory.turns], trajectory.final_answer, view)


@dataclass(frozen=True)
class PreferencePair:
    """`chosen` should score above `rejected`; `group` keeps pairs of one group on one side of the split."""

    chosen: str
    rejected: str
    group: str
    label_ids: tuple[int, ...] = ()
    source: str = "pairwise"
    """'pairwise' (an explicit choice), 'scores' (two score labels of one group that differ) or 'steps'
    (a step marked good against one marked bad, in one group)."""


@dataclass(frozen=True)
class PairSet:
    train: tuple[PreferencePair, ...]
    heldout: tuple[PreferencePair, ...]
    label_ids: tuple[int, ...] = field(default_factory=tuple)
    """Every label that produced a pair (the provenance of a model trained on them)."""


class TooFewLabelsError(ValueError):
    """Not enough preference pairs to train and hold some out."""


def _group_key(record: LabelRecord) -> str:
    return f"{record.get('run_id')}/{record.get('step')}/{record.get('group_id')}"


def pairs_from_labels(records: Sequence[LabelRecord], view: TextView = TextView()) -> list[PreferencePair]:
    """Explicit pairwise choices (ties give no pair), plus pairs implied by different scores within a group.

    For score labels the newest label per trajectory counts; the higher-scored member is `chosen`.
    """
    pairs: list[PreferencePair] = []
    newest_score: dict[tuple[str, str], tuple[float, str, int]] = {}
    for rec in records:
        label_id = int(rec.get("label_id") or 0)
        if rec.get("kind") == "pairwise" and rec.get("choice") in ("a", "b") and rec.get("other_trajectory"):
            a, b = record_text(rec["trajectory"], view), record_text(rec["other_trajectory"], view)
            chosen, rejected = (a, b) if rec["choice"] == "a" else (b, a)
            if chosen != rejected:
                pairs.append(PreferencePair(chosen, rejected, _group_key(rec), (label_id,), "pairwise"))
        elif rec.get("kind", "score") == "score" and rec.get("score") is not None:
            ident = str(rec.get("trajectory_id") or hashlib.sha1(record_text(rec["trajectory"]).encode()).hexdigest())
            newest_score[(_group_key(rec), ident)] = (
                float(rec["score"]),
                record_text(rec["trajectory"], view),
                label_id,
            )
    by_group: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for (group, _), value in newest_score.items():
        by_group[group].append(value)
    for group, members in by_group.items():
        for i, (score_i, text_i, id_i) in enumerate(members):
            for score_j, text_j, id_j in members[i + 1 :]:
                if score_i == score_j or text_i == text_j:
                    continue
                hi, lo = ((text_i, id_i), (text_j, id_j)) if score_i > score_j else ((text_j, id_j), (text_i, id_i))
                pairs.append(PreferencePair(hi[0], lo[0], group, (hi[1], lo[1]), "scores"))
    return pairs


def step_pairs_from_labels(records: Sequence[LabelRecord], view: TextView = TextView()) -> list[PreferencePair]:
    """Step marks → pairs for a step scorer: each good-marked turn prefix beats each bad-marked one of its group.

    Good/bad is an absolute judgement, so Bradley–Terry on (good, bad) pairs of one group (the same
    trajectory's turns included) learns a per-step score; the newest marks per trajectory and turn count.
    """
    marks: dict[tuple[str, str, int], tuple[bool, str, int]] = {}
    for rec in records:
        if rec.get("kind") != "step" or not rec.get("step_marks"):
            continue
        data = rec.get("trajectory") or {}
        texts = prefix_texts(data.get("turns") or (), data.get("final_answer"), view)
        ident = str(rec.get("trajectory_id") or hashlib.sha1(record_text(data).encode()).hexdigest())
        for mark in rec["step_marks"]:
            turn = int(mark.get("turn", -1))
            if 0 <= turn < len(texts):
                label_id = int(rec.get("label_id") or 0)
                marks[(_group_key(rec), ident, turn)] = (bool(mark.get("good")), texts[turn], label_id)
    by_group: dict[str, list[tuple[bool, str, int]]] = defaultdict(list)
    for (group, _, _), value in marks.items():
        by_group[group].append(value)
    pairs = []
    for group, members in by_group.items():
        for is_good, text_g, id_g in members:
            if not is_good:
                continue
            for other_good, text_b, id_b in members:
                if not other_good and text_g != text_b:
                    pairs.append(PreferencePair(text_g, text_b, group, tuple(sorted({id_g, id_b})), "steps"))
    return pairs


HOW_TO_GET_PAIRS = {
    "trajectory": "Add pairwise labels (A better / B better) or score labels that differ within a group "
    "(the Label tab's pairwise mode gives one pair per judgement)",
    "step": "Mark steps good and bad (the Label tab's step marks): each good step pairs with each bad step of "
    "its group, so a group needs at least one of each",
}
"""What to label for more pairs, by reward-model kind (the too-few-labels message)."""


def split_pairs(
    pairs: Sequence[PreferencePair], *, heldout_fraction: float, min_pairs: int, seed: int, kind: str = "trajectory"
) -> PairSet:
    """Hold out whole groups (by a seeded hash) so no group is in both halves; refuse too few pairs."""
    if len(pairs) < min_pairs:
        what = "reward model" if kind == "trajectory" else "step scorer"
        raise TooFewLabelsError(
            f"too few labels to train a {what}: {len(pairs)} preference pair(s), at least {min_pairs} "
            f"are needed. {HOW_TO_GET_PAIRS[kind]}"
        )
    groups = sorted({p.group for p in pairs}, key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    target = max(1, round(heldout_fraction * len(pairs)))
    heldout_groups: set[str] = set()
    count = 0
    for group in groups:
        if count >= target or len(heldout_groups) == len(groups) - 1:
            break
        heldout_groups.add(group)
        count += sum(1 for p in pairs if p.group == group)
    train = tuple(p for p in pairs if p.group not in heldout_groups)
    heldout = tuple(p for p in pairs if p.group in heldout_groups)
    if not heldout or not train:
        raise TooFewLabelsError(
            f"the {len(pairs)} preference pairs all come from one group; label pairs from at least 2 groups so "
            "some can be held out to measure accuracy"
        )
    ids = tuple(sorted({i for p in pairs for i in p.label_ids}))
    return PairSet(train=train, heldout=heldout, label_ids=ids)
