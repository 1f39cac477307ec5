"""Reward-model routes: train one from runs' labels (`rm_train` on the gpu queue), list, read metrics/provenance."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import reward_models as rm_crud
from backend.queue import TaskName
from backend.schemas.reward_model import RewardModelCreate, RewardModelPublic

router = APIRouter(prefix="/reward-models", tags=["reward-models"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_reward_model(session: SessionDep, enqueue: EnqueueDep, rm_in: RewardModelCreate) -> RewardModelPublic:
    """Queue reward-model training on the labels of `label_run_ids` (422 when too few labels, saying how many)."""
    run = rm_crud.create_reward_model(session, rm_in=rm_in)
    session.commit()
    return rm_crud.to_public(enqueue_committed(session, enqueue, TaskName.RM_TRAIN, run))


@router.get("")
def list_reward_models(session: SessionDep) -> list[RewardModelPublic]:
    """Every reward model, newest first, with held-out accuracy and calibration once trained."""
    return [rm_crud.to_public(run) for run in rm_crud.list_reward_models(session)]


@router.get("/{reward_model_id}")
def get_reward_model(session: SessionDep, reward_model_id: int) -> RewardModelPublic:
    return rm_crud.to_public(rm_crud.get_reward_model(session, reward_model_id=reward_model_id))
