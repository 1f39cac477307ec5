"""Label crud: score, pairwise and step labels with snapshots, the labeling queues, agreement, import/export.

A label copies what it judged (trajectory data, reward, run/step/group/task) when it is made,
so deleting or re-running a run never loses it; the JSONL lines of export and import are the
same records (`LABEL_FORMAT`, see docs/labels-format.md) and also feed reward-model training.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, load_only

from backend.core.errors import InvalidInputError, NotFoundError
from backend.crud.trajectories import SUMMARY_COLUMNS, get_trajectory
from backend.models.run import Run
from backend.models.trajectory import Label, Trajectory
from backend.schemas.trajectory import LABEL_FORMAT, LabelCreate, StepMark

RM_TRAIN_KIND = "rm_train"
"""Run kind of reward-model training; its `result["scores"]` maps trajectory id → the model's score."""


# ------------------------------------------------------------------ create


def _assistant_turns(data: dict[str, Any]) -> int:
    return sum(1 for t in data.get("turns") or () if t.get("role") == "assistant")


def add_label(session: Session, *, trajectory_id: int, label_in: LabelCreate) -> Label:
    """Store a label with a snapshot of the judged trajectory (and of trajectory B for a pairwise one)."""
    trajectory = get_trajectory(session, trajectory_id=trajectory_id)
    snapshot: dict[str, Any] = {"trajectory": trajectory.data, "reward": trajectory.reward}
    if label_in.kind == "pairwise":
        assert label_in.other_trajectory_id is not None  # checked by the schema
        other = get_trajectory(session, trajectory_id=label_in.other_trajectory_id)
        same_group = (other.run_id, other.step, other.group_id) == (
            trajectory.run_id,
            trajectory.step,
            trajectory.group_id,
        )
        if other.id == trajectory.id or not same_group:
            raise InvalidInputError(
                "other_trajectory_id",
                f"trajectory {other.id} is not another member of trajectory {trajectory.id}'s group "
                f"(run {trajectory.run_id}, step {trajectory.step}, group {trajectory.group_id!r}); "
                "compare two members of one group (see sibling_ids)",
            )
        snapshot.update(other_trajectory=other.data, other_reward=other.reward)
    if label_in.step_marks:
        turns = _assistant_turns(trajectory.data)
        bad = [m.turn for m in label_in.step_marks if m.turn >= turns]
        if bad:
            raise InvalidInputError(
                "step_marks",
                f"turn(s) {bad} out of range: the trajectory has {turns} assistant turn(s), numbered from 0",
            )
    values = label_in.model_dump(exclude={"step_marks"})
    label = Label(
        **values,
        trajectory_id=trajectory.id,
        step_marks=[m.model_dump() for m in label_in.step_marks],
        run_id=trajectory.run_id,
        step=trajectory.step,
        group_id=trajectory.group_id,
        task_id=trajectory.task_id,
        snapshot=snapshot,
    )
    session.add(label)
    session.flush()
    return label


def list_labels(session: Session, *, trajectory_id: int) -> list[Label]:
    """Labels naming the trajectory (as A or as B), newest first."""
    query = select(Label).where(or_(Label.trajectory_id == trajectory_id, Label.other_trajectory_id == trajectory_id))
    return list(session.scalars(query.order_by(Label.id.desc())))


# ------------------------------------------------------------------ queues


def _require_run(session: Session, run_id: int) -> None:
    if session.get(Run, run_id) is None:
        raise NotFoundError("run", run_id)


def current_rm_scores(session: Session, *, run_id: int) -> dict[int, float]:
    """Scores of the run's trajectories by the newest succeeded reward model trained on its labels (or {})."""
    query = select(Run).where(Run.kind == RM_TRAIN_KIND, Run.status == "succeeded").order_by(Run.id.desc())
    for rm_run in session.scalars(query):
        if run_id in (rm_run.requested_config or {}).get("label_run_ids", []):
            scores = (rm_run.result or {}).get("scores") or {}
            return {int(k): float(v) for k, v in scores.items()}
    return {}


def reward_model_scores(session: Session, *, trajectory: Trajectory) -> dict[str, float]:
    """`reward_model:<id>` → score of this trajectory: by reward models trained on its run's labels (their
    `rm_train` result), and by the models a training run rewarded it with (its `reward_breakdown`)."""
    scores: dict[str, float] = {}
    query = select(Run).where(Run.kind == RM_TRAIN_KIND, Run.status == "succeeded").order_by(Run.id.desc())
    for rm_run in session.scalars(query):
        if trajectory.run_id in (rm_run.requested_config or {}).get("label_run_ids", []):
            score = ((rm_run.result or {}).get("scores") or {}).get(str(trajectory.id))
            if score is not None:
                scores[f"reward_model:{rm_run.id}"] = float(score)
    breakdown = trajectory.data.get("reward_breakdown") or {}
    for name, value in breakdown.items():
        if str(name).startswith(("reward_model:", "step_reward_model:")) and isinstance(value, int | float):
            scores[str(name)] = float(value)
    return scores


def _summaries(session: Session, run_id: int) -> list[Trajectory]:
    query = select(Trajectory).options(load_only(*SUMMARY_COLUMNS)).where(Trajectory.run_id == run_id)
    return list(session.scalars(query.order_by(Trajectory.id)))


def _groups(rows: Iterable[Trajectory]) -> dict[tuple[int, str], list[Trajectory]]:
    groups: dict[tuple[int, str], list[Trajectory]] = defaultdict(list)
    for row in rows:
        groups[(row.step, row.group_id)].append(row)
    return groups


def _percentile(values: dict[int, float]) -> dict[int, float]:
    """Rank of each value in [0, 1] (ties share the lower rank)."""
    ordered = sorted(values.values())
    n = max(1, len(ordered) - 1)
    return {k: bisect.bisect_left(ordered, v) / n for k, v in values.items()}


def label_queue(session: Session, *, run_id: int, limit: int = 20) -> list[Trajectory]:
    """Trajectories nobody labeled yet, most informative first.

    Order: members of mixed-reward groups (the policy disagreed with itself) first; then, when a reward
    model was trained on this run's labels, the largest disagreement between the automatic reward's and
    the model's rank; then |reward - 0.5| ascending (least confident reward); then oldest first.
    """
    _require_run(session, run_id)
    labeled = set(session.scalars(select(Label.trajectory_id).where(Label.run_id == run_id, Label.kind != "pairwise")))
    rows = _summaries(session, run_id)
    mixed = {key for key, members in _groups(rows).items() if len({m.reward for m in members}) > 1}
    rm = current_rm_scores(session, run_id=run_id)
    scored = {r.id: r.reward for r in rows if r.id in rm}
    auto_rank, rm_rank = _percentile(scored), _percentile({k: rm[k] for k in scored})
    disagreement = {k: abs(auto_rank[k] - rm_rank[k]) for k in scored}

    def key(row: Trajectory) -> tuple[float, ...]:
        return (
            -float((row.step, row.group_id) in mixed),
            -disagreement.get(row.id, 0.0),
            abs(row.reward - 0.5),
            float(row.id),
        )

    return sorted((r for r in rows if r.id not in labeled), key=key)[:limit]


def pair_queue(session: Session, *, run_id: int, limit: int = 20) -> list[tuple[Trajectory, Trajectory, str]]:
    """Unlabeled pairs of same-group members: (a, b, reason), most informative first.

    Order: pairs with different automatic rewards (mixed groups) first; then pairs the current reward
    model orders against the automatic reward; then the pairs it is least sure about
    (|sigmoid(score_a - score_b) - 0.5| ascending); without a model, pairs of rewards nearest 0.5.
    """
    _require_run(session, run_id)
    pairs = select(Label.trajectory_id, Label.other_trajectory_id).where(
        Label.run_id == run_id, Label.kind == "pairwise"
    )
    done = {frozenset(p) for p in session.execute(pairs)}
    rm = current_rm_scores(session, run_id=run_id)
    candidates: list[tuple[tuple[float, ...], Trajectory, Trajectory, str]] = []
    for members in _groups(_summaries(session, run_id)).values():
        for a, b in itertools.combinations(members, 2):
            if frozenset((a.id, b.id)) in done:
                continue
            mixed = a.reward != b.reward
            has_rm = a.id in rm and b.id in rm
            diff = rm[a.id] - rm[b.id] if has_rm else 0.0
            disagrees = has_rm and mixed and (diff > 0) != (a.reward > b.reward)
            certainty = abs(1 / (1 + math.exp(-diff)) - 0.5) if has_rm else abs((a.reward + b.reward) / 2 - 0.5)
            reason = "mixed rewards" if mixed else "uncertain"
            reason = "reward model disagrees" if disagrees else reason
            candidates.append(((-float(mixed), -float(disagrees), certainty, float(a.id), float(b.id)), a, b, reason))
    candidates.sort(key=lambda c: c[0])
    return [(a, b, reason) for _, a, b, reason in candidates[:limit]]


# ------------------------------------------------------------------ progress and agreement


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' categorical judgements, one (rater 1, rater 2) tuple per item.

    kappa = (p_o - p_e) / (1 - p_e); None without items, 1.0 when both raters always use one same category.
    """
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(1 for x, y in pairs if x == y) / n
    first, second = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    expected = sum(first[c] * second[c] for c in first.keys() | second.keys()) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def _first_two_raters(judgements: dict[Any, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Per item, the judgements of the first two different labelers (in label order)."""
    out = []
    for entries in judgements.values():
        first = entries[0]
        second = next((e for e in entries[1:] if e[0] != first[0]), None)
        if second is not None:
            out.append((first[1], second[1]))
    return out


FLIP = {"a": "b", "b": "a", "tie": "tie"}


def agreement(labels: Sequence[Label]) -> dict[str, tuple[float | None, int, float | None]]:
    """{'pairwise'|'step': (kappa, items, raw agreement)} over items judged by two different labelers."""
    pairwise: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    steps: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    for label in labels:
        if label.kind == "pairwise" and label.trajectory_id and label.other_trajectory_id and label.choice:
            a, b = label.trajectory_id, label.other_trajectory_id
            choice = label.choice if a < b else FLIP[label.choice]  # one orientation per pair
            pairwise[(min(a, b), max(a, b))].append((label.labeler, choice))
        for mark in label.step_marks or ():
            steps[(label.trajectory_id, int(mark["turn"]))].append((label.labeler, "good" if mark["good"] else "bad"))
    out = {}
    for name, judgements in (("pairwise", pairwise), ("step", steps)):
        rated = _first_two_raters(judgements)
        raw = sum(1 for x, y in rated if x == y) / len(rated) if rated else None
        out[name] = (cohen_kappa(rated), len(rated), raw)
    return out


def label_stats(session: Session, *, run_id: int) -> dict[str, Any]:
    """Progress (labeled/total trajectories), counts by kind and labeler, and Cohen's kappa per judgement."""
    _require_run(session, run_id)
    labels = list(session.scalars(select(Label).where(Label.run_id == run_id).order_by(Label.id)))
    total = session.scalar(select(func.count(Trajectory.id)).where(Trajectory.run_id == run_id)) or 0
    labeled = {i for x in labels for i in (x.trajectory_id, x.other_trajectory_id) if i is not None}
    kappas = agreement(labels)
    return {
        "run_id": run_id,
        "trajectories": total,
        "labeled_trajectories": len(labeled),
        "labels_by_kind": dict(Counter(x.kind for x in labels)),
        "labels_by_labeler": dict(Counter(x.labeler for x in labels)),
        **{f"{k}_kappa": {"kappa": v[0], "items": v[1], "agreement": v[2]} for k, v in kappas.items()},
    }


# ------------------------------------------------------------------ export / import (one record format)


def label_record(label: Label) -> dict[str, Any]:
    """One JSONL line of `LABEL_FORMAT`: the label and the snapshot of what it judged."""
    snap = label.snapshot or {}
    return {
        "format": LABEL_FORMAT,
        "label_id": label.id,
        "kind": label.kind,
        "trajectory_id": label.trajectory_id,
        "other_trajectory_id": label.other_trajectory_id,
        "score": label.score,
        "choice": label.choice,
        "step_scores": list(label.step_scores or []),
        "step_marks": list(label.step_marks or []),
        "note": label.note,
        "labeler": label.labeler,
        "labeled_at": label.created_at.isoformat(),
        "run_id": label.run_id,
        "step": label.step,
        "group_id": label.group_id,
        "task_id": label.task_id,
        "reward": snap.get("reward"),
        "other_reward": snap.get("other_reward"),
        "trajectory": snap.get("trajectory") or {},
        "other_trajectory": snap.get("other_trajectory"),
    }


def iter_label_records(session: Session, *, run_ids: Sequence[int], batch_size: int = 200) -> Iterator[dict[str, Any]]:
    """Every label of the runs as `label_record`s, oldest first (streamed)."""
    query = (
        select(Label).where(Label.run_id.in_(list(run_ids))).order_by(Label.id).execution_options(yield_per=batch_size)
    )
    for label in session.scalars(query):
        yield label_record(label)


def iter_label_export(session: Session, *, run_id: int) -> Iterator[dict[str, Any]]:
    """The run's labels for `GET /runs/{id}/labels/export` (404 when neither run nor labels exist)."""
    if session.get(Run, run_id) is None and session.scalar(select(Label.id).where(Label.run_id == run_id)) is None:
        raise NotFoundError("run", run_id)
    return iter_label_records(session, run_ids=[run_id])


def _parse_record(line_no: int, record: Any) -> tuple[LabelCreate, dict[str, Any]]:
    if not isinstance(record, dict) or record.get("format") != LABEL_FORMAT:
        raise InvalidInputError(f"line {line_no}", f'expected a JSON object with "format": "{LABEL_FORMAT}"')
    if not isinstance(record.get("trajectory"), dict) or not record.get("trajectory"):
        raise InvalidInputError(f"line {line_no}", "`trajectory` (the snapshot of what was labeled) is missing")
    fields = {
        k: record.get(k)
        for k in ("kind", "score", "choice", "other_trajectory_id", "note", "labeler")
        if record.get(k) is not None
    }
    if record.get("kind") == "pairwise":
        if not isinstance(record.get("other_trajectory"), dict) or not record.get("other_trajectory"):
            raise InvalidInputError(f"line {line_no}", "a pairwise label needs `other_trajectory` (B's snapshot)")
        fields.setdefault("other_trajectory_id", 0)  # B may be gone; its snapshot is what counts
    try:
        marks = [StepMark.model_validate(m).model_dump() for m in record.get("step_marks") or ()]
        label_in = LabelCreate.model_validate(
            fields | {"step_marks": marks, "step_scores": record.get("step_scores") or []}
        )
    except ValueError as exc:
        raise InvalidInputError(f"line {line_no}", str(exc).replace("\n", " ")) from None
    return label_in, record


def _same_trajectory(session: Session, ident: Any, record: dict[str, Any]) -> bool:
    """Whether trajectory `ident` here is the one the record judged (same id, run and group), so it can link."""
    if not isinstance(ident, int):
        return False
    row = session.get(Trajectory, ident)
    return row is not None and (row.run_id, row.group_id) == (record.get("run_id"), record.get("group_id"))


def import_labels(session: Session, *, records: Sequence[Any]) -> tuple[int, int]:
    """Add exported label records; all or nothing (the first bad line raises, naming it). → (imported, linked)."""
    parsed = [_parse_record(i, r) for i, r in enumerate(records, start=1)]
    linked = 0
    for label_in, record in parsed:
        ids = (record.get("trajectory_id"), record.get("other_trajectory_id"))
        present = [_same_trajectory(session, i, record) for i in ids]
        linked += int(present[0])
        snapshot = {
            k: record.get(v)
            for k, v in (
                ("trajectory", "trajectory"),
                ("reward", "reward"),
                ("other_trajectory", "other_trajectory"),
                ("other_reward", "other_reward"),
            )
        }
        created = record.get("labeled_at")
        when = {"created_at": datetime.fromisoformat(created)} if isinstance(created, str) else {}
        session.add(
            Label(
                **label_in.model_dump(exclude={"step_marks", "other_trajectory_id"}),
                step_marks=[m.model_dump() for m in label_in.step_marks],
                trajectory_id=ids[0] if present[0] else None,
                other_trajectory_id=ids[1] if present[1] else None,
                run_id=record.get("run_id"),
                step=record.get("step"),
                group_id=str(record.get("group_id") or ""),
                task_id=str(record.get("task_id") or ""),
                snapshot=snapshot,
                **when,
            )
        )
    session.flush()
    return len(parsed), linked
