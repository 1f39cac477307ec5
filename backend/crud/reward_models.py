"""Reward-model crud: a reward model is its `rm_train` run (config: what to train; result: metrics, artifact)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.errors import InvalidInputError, NotFoundError
from backend.crud.labels import RM_TRAIN_KIND
from backend.crud.runs import create_job_run
from backend.models.run import Run
from backend.models.trajectory import Label
from backend.schemas.reward_model import RewardModelCreate, RewardModelPublic


def count_preference_pairs(session: Session, *, run_ids: Sequence[int]) -> tuple[int, int]:
    """(pairs, labels): what `rm_train` will build — non-tie pairwise labels plus score differences in a group."""
    labels = list(session.scalars(select(Label).where(Label.run_id.in_(list(run_ids))).order_by(Label.id)))
    pairs = sum(1 for x in labels if x.kind == "pairwise" and x.choice in ("a", "b"))
    newest: dict[tuple[Any, ...], dict[Any, float]] = defaultdict(dict)
    for x in labels:
        if x.kind == "score" and x.score is not None:
            newest[(x.run_id, x.step, x.group_id)][x.trajectory_id or f"label-{x.id}"] = x.score
    for scores in newest.values():
        values = list(scores.values())
        pairs += sum(1 for i, a in enumerate(values) for b in values[i + 1 :] if a != b)
    return pairs, len(labels)


def create_reward_model(session: Session, *, rm_in: RewardModelCreate) -> Run:
    """A queued `rm_train` run; refuses unknown runs and too few labels (saying how many are needed)."""
    missing = [i for i in rm_in.label_run_ids if session.get(Run, i) is None]
    if missing:
        raise InvalidInputError("label_run_ids", f"run(s) {missing} do not exist; pick runs that have labels")
    pairs, labels = count_preference_pairs(session, run_ids=rm_in.label_run_ids)
    if pairs < rm_in.min_pairs:
        raise InvalidInputError(
            "label_run_ids",
            f"too few labels to train a reward model: {labels} label(s) of runs {rm_in.label_run_ids} give {pairs} "
            f"preference pair(s), at least {rm_in.min_pairs} are needed. Add pairwise labels (A better / B better) "
            "or score labels that differ within a group",
        )
    trainer = {**rm_in.config, "base_model": rm_in.base_model, "min_pairs": rm_in.min_pairs}
    config = {"label_run_ids": list(rm_in.label_run_ids), "reward_model": trainer}
    return create_job_run(session, kind=RM_TRAIN_KIND, name=rm_in.name or f"rm-{rm_in.base_model}", config=config)


def get_reward_model(session: Session, *, reward_model_id: int) -> Run:
    run = session.get(Run, reward_model_id)
    if run is None or run.kind != RM_TRAIN_KIND:
        raise NotFoundError("reward model", reward_model_id)
    return run


def list_reward_models(session: Session) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.kind == RM_TRAIN_KIND).order_by(Run.id.desc())))


def to_public(run: Run) -> RewardModelPublic:
    config, result = run.requested_config or {}, run.result or {}
    metrics = result.get("metrics") or {}
    return RewardModelPublic(
        id=run.id, name=run.name, status=run.status, error=run.error,  # type: ignore[arg-type]
        base_model=str((config.get("reward_model") or {}).get("base_model", "")),
        label_run_ids=list(config.get("label_run_ids") or []), tokenizer=result.get("tokenizer"),
        artifact_dir=result.get("artifact_dir"), heldout_accuracy=metrics.get("heldout_accuracy"),
        heldout_ece=metrics.get("heldout_ece"), train_pairs=metrics.get("train_pairs"),
        heldout_pairs=metrics.get("heldout_pairs"), label_ids=list(result.get("label_ids") or []),
        metrics=metrics, created_at=run.created_at, finished_at=run.finished_at,
    )  # fmt: skip


def check_reward_model_terms(session: Session, *, config: dict[str, Any]) -> None:
    """A run config's `task.reward_models[*].id` must name a succeeded reward model (422 names the bad one)."""
    terms = (config.get("task") or {}).get("reward_models") or []
    for i, term in enumerate(terms):
        ident = term.get("id") if isinstance(term, dict) else None
        if ident is None:
            continue
        run = session.get(Run, ident) if isinstance(ident, int) else None
        if run is None or run.kind != RM_TRAIN_KIND:
            raise InvalidInputError(f"config.task.reward_models[{i}].id", f"reward model {ident} does not exist; "
                                    "see GET /reward-models for the trained ones")  # fmt: skip
        if run.status != "succeeded":
            message = f"reward model {ident} is {run.status}; use one whose training succeeded"
            raise InvalidInputError(f"config.task.reward_models[{i}].id", message)
