"""Environment routes: CRUD and a queued validation (the RL core's env checker on a worker)."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, LimitQuery, OffsetQuery, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import datasets as datasets_crud
from backend.crud import runs as runs_crud
from backend.queue import TaskName
from backend.schemas.environment import EnvironmentCreate, EnvironmentPublic, EnvironmentUpdate
from backend.schemas.run import RunPublic

router = APIRouter(prefix="/environments", tags=["environments"])


@router.get("")
def list_environments(session: SessionDep, offset: OffsetQuery = 0, limit: LimitQuery = 100) -> list[EnvironmentPublic]:
    envs = datasets_crud.list_environments(session, offset=offset, limit=limit)
    return [EnvironmentPublic.model_validate(e) for e in envs]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_environment(session: SessionDep, env_in: EnvironmentCreate) -> EnvironmentPublic:
    env = datasets_crud.create_environment(session, env_in=env_in)
    session.commit()
    return EnvironmentPublic.model_validate(env)


@router.get("/{environment_id}")
def get_environment(session: SessionDep, environment_id: int) -> EnvironmentPublic:
    return EnvironmentPublic.model_validate(datasets_crud.get_environment(session, environment_id=environment_id))


@router.patch("/{environment_id}")
def update_environment(session: SessionDep, environment_id: int, env_in: EnvironmentUpdate) -> EnvironmentPublic:
    env = datasets_crud.update_environment(session, environment_id=environment_id, env_in=env_in)
    session.commit()
    return EnvironmentPublic.model_validate(env)


@router.delete("/{environment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_environment(session: SessionDep, environment_id: int) -> None:
    datasets_crud.delete_environment(session, environment_id=environment_id)
    session.commit()


@router.post("/{environment_id}/validate", status_code=status.HTTP_202_ACCEPTED)
def validate_environment(session: SessionDep, enqueue: EnqueueDep, environment_id: int) -> RunPublic:
    """Queue `environments.validate` (cpu); the report lands in the returned run's `result`."""
    env = datasets_crud.get_environment(session, environment_id=environment_id)
    run = runs_crud.create_job_run(
        session, kind="validate", name=f"validate {env.name}", config={"environment_id": env.id}
    )
    run.environment_id = env.id
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.VALIDATE_ENV, run))
