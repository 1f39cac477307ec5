"""Trajectory routes: filtered pages (no token arrays) and the full record with siblings and labels."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import LimitQuery, OffsetQuery, SessionDep
from backend.crud import labels as labels_crud
from backend.crud import runs as runs_crud
from backend.crud import trajectories as traj_crud
from backend.schemas.trajectory import LabelPublic, TrajectoriesPage, TrajectoryPublic, TrajectorySummary

router = APIRouter(prefix="/trajectories", tags=["trajectories"])


@router.get("")
def list_trajectories(
    session: SessionDep,
    run_id: int | None = None,
    step: int | None = None,
    min_reward: float | None = None,
    max_reward: float | None = None,
    has_parse_error: bool | None = None,
    has_tool_error: bool | None = None,
    truncated: bool | None = None,
    labeled: bool | None = None,
    offset: OffsetQuery = 0,
    limit: LimitQuery = 50,
) -> TrajectoriesPage:
    flt = traj_crud.TrajectoryFilter(
        run_id=run_id,
        step=step,
        min_reward=min_reward,
        max_reward=max_reward,
        has_parse_error=has_parse_error,
        has_tool_error=has_tool_error,
        truncated=truncated,
        labeled=labeled,
    )
    rows, total = traj_crud.list_trajectories(session, flt=flt, offset=offset, limit=limit)
    return TrajectoriesPage(items=[TrajectorySummary.model_validate(t) for t in rows], total=total)


@router.get("/{trajectory_id}")
def get_trajectory(session: SessionDep, trajectory_id: int) -> TrajectoryPublic:
    trajectory = traj_crud.get_trajectory(session, trajectory_id=trajectory_id)
    summary = TrajectorySummary.model_validate(trajectory).model_dump()
    labels = [LabelPublic.model_validate(x) for x in labels_crud.list_labels(session, trajectory_id=trajectory.id)]
    siblings = traj_crud.sibling_ids(session, trajectory=trajectory)
    scores = labels_crud.reward_model_scores(session, trajectory=trajectory)
    automatic = (trajectory.data.get("reward_breakdown") or {}).get("rubric", trajectory.reward)
    run = runs_crud.get_run(session, run_id=trajectory.run_id)
    return TrajectoryPublic(
        **summary,
        data=trajectory.data,
        sibling_ids=siblings,
        labels=labels,
        reward_model_scores=scores,
        automatic_reward=automatic,
        environment_name=run.environment_name,
        environment_version=run.environment_version,
    )
