"""Reward-model crud: a reward model is its `rm_train` run (config: what to train; result: metrics, artifact)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.errors import InvalidInputError, NotFoundError
from backend.crud import labels as labels_crud
from backend.crud.labels import RM_TRAIN_KIND
from backend.crud.runs import create_job_run
from backend.models.run import Run
from backend.schemas.reward_model import RewardModelCreate, RewardModelPublic
from worker.rl.reward_model import pairs as pairs_core


def count_preference_pairs(
    session: Session, *, run_ids: Sequence[int], kind: str = "trajectory", view: Mapping[str, Any] | None = None
) -> tuple[int, int]:
    """(pairs, labels): exactly the pairs `rm_train` will build, by the core's own builders over the same label
    records (non-tie pairwise choices and score differences within a group for a trajectory model, good/bad
    step-mark pairs for a step scorer; a pair whose two texts read the same under the view is no pair)."""
    try:
        text_view = pairs_core.TextView(**view) if view else pairs_core.TextView()
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            "config.view",
            f"{exc}. Give an object with positive whole numbers for max_question_chars, max_query_chars and "
            "max_answer_chars (any of them; the rest keep their defaults)",
        ) from None
    records = list(labels_crud.iter_label_records(session, run_ids=run_ids))
    build = pairs_core.step_pairs_from_labels if kind == "step" else pairs_core.pairs_from_labels
    return len(build(records, text_view)), len(records)


def create_reward_model(session: Session, *, rm_in: RewardModelCreate) -> Run:
    """A queued `rm_train` run; refuses unknown runs and too few labels (saying how many are needed)."""
    missing = [i for i in rm_in.label_run_ids if session.get(Run, i) is None]
    if missing:
        raise InvalidInputError("label_run_ids", f"run(s) {missing} do not exist; pick runs that have labels")
    view = rm_in.config.get("view")
    pairs, labels = count_preference_pairs(
        session, run_ids=rm_in.label_run_ids, kind=rm_in.kind, view=view if isinstance(view, dict) else None
    )
    if pairs < rm_in.min_pairs:
        how = (
            "Mark steps good and bad (each good step pairs with each bad step of its group)"
            if rm_in.kind == "step"
            else "Add pairwise labels (A better / B better) or score labels that differ within a group, on "
            "trajectories that differ in question, tool calls or answer (identical ones make no pair)"
        )
        raise InvalidInputError(
            "label_run_ids",
            f"too few labels to train a {'step scorer' if rm_in.kind == 'step' else 'reward model'}: {labels} "
            f"label(s) of runs {rm_in.label_run_ids} give {pairs} preference pair(s), at least {rm_in.min_pairs} "
            f"are needed. {how}",
        )
    trainer = {**rm_in.config, "base_model": rm_in.base_model, "min_pairs": rm_in.min_pairs, "kind": rm_in.kind}
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
        id=run.id,
        name=run.name,
        status=run.status,  # type: ignore[arg-type]
        error=run.error,
        base_model=str((config.get("reward_model") or {}).get("base_model", "")),
        kind=str((config.get("reward_model") or {}).get("kind") or "trajectory"),
        label_run_ids=list(config.get("label_run_ids") or []),
        tokenizer=result.get("tokenizer"),
        artifact_dir=result.get("artifact_dir"),
        heldout_accuracy=metrics.get("heldout_accuracy"),
        heldout_ece=metrics.get("heldout_ece"),
        train_pairs=metrics.get("train_pairs"),
        heldout_pairs=metrics.get("heldout_pairs"),
        label_ids=list(result.get("label_ids") or []),
        metrics=metrics,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


def check_reward_model(session: Session, *, ident: Any, step: bool, field: str) -> Run:
    """`ident` names a succeeded reward model of the right kind (a step scorer for `step`); 422 names `field`."""
    run = session.get(Run, ident) if isinstance(ident, int) and not isinstance(ident, bool) else None
    if run is None or run.kind != RM_TRAIN_KIND:
        raise InvalidInputError(
            field,
            f"reward model {ident} does not exist; see GET /reward-models for the "
            "trained ones (or train one from labels: POST /reward-models)",
        )
    if run.status != "succeeded":
        raise InvalidInputError(field, f"reward model {ident} is {run.status}; use one whose training succeeded")
    kind = to_public(run).kind
    if (kind == "step") != step:
        use = "step_reward_model (step = true)" if kind == "step" else "reward_model (step = false)"
        raise InvalidInputError(field, f"reward model {ident} is a {kind} model; use it as {use}")
    return run


def check_reward_model_terms(session: Session, *, config: dict[str, Any]) -> None:
    """A run config's `task.reward_models[*].id` must name a succeeded reward model (422 names the bad one)."""
    terms = (config.get("task") or {}).get("reward_models") or []
    for i, term in enumerate(terms):
        ident = term.get("id") if isinstance(term, dict) else None
        if ident is None:
            continue
        check_reward_model(
            session, ident=ident, step=bool(term.get("step")), field=f"config.task.reward_models[{i}].id"
        )


def check_spec_reward_models(session: Session, *, spec: dict[str, Any]) -> None:
    """An environment spec's `reward_model` / `step_reward_model` rubric terms name existing models (imports)."""
    for i, term in enumerate(spec.get("rubric") or ()):
        if not isinstance(term, dict):
            continue
        for key, step in (("reward_model", False), ("step_reward_model", True)):
            if term.get(key) is not None:
                check_reward_model(session, ident=term[key], step=step, field=f"spec.rubric[{i}].{key}")
