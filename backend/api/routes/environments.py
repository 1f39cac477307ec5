"""Environment routes: CRUD (every edit a new immutable version), versions, export/import, the rendered
prompt, and a queued check (the RL core's env checker on a worker, user tools called sandboxed)."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, LimitQuery, OffsetQuery, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import datasets as datasets_crud
from backend.crud import environments as versions_crud
from backend.crud import runs as runs_crud
from backend.queue import TaskName
from backend.schemas.common import JSONDict
from backend.schemas.environment import (
    EnvironmentCreate,
    EnvironmentImport,
    EnvironmentPublic,
    EnvironmentUpdate,
    EnvironmentVersionPublic,
    PromptPreview,
)
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


@router.post("/import", status_code=status.HTTP_201_CREATED)
def import_environment(session: SessionDep, env_in: EnvironmentImport) -> EnvironmentPublic:
    """Create an environment from an exported file (its version 1 is the file's spec)."""
    name = env_in.name or str(env_in.spec.get("name") or "imported")
    env = datasets_crud.import_environment(session, name=name, spec=dict(env_in.spec))
    session.commit()
    return EnvironmentPublic.model_validate(env)


@router.get("/{environment_id}/versions")
def list_versions(session: SessionDep, environment_id: int) -> list[EnvironmentVersionPublic]:
    datasets_crud.get_environment(session, environment_id=environment_id)
    rows = versions_crud.list_versions(session, environment_id=environment_id)
    return [EnvironmentVersionPublic.model_validate(v) for v in rows]


@router.get("/{environment_id}/versions/{version}")
def get_version(session: SessionDep, environment_id: int, version: int) -> EnvironmentVersionPublic:
    row = versions_crud.get_version(session, environment_id=environment_id, version=version)
    return EnvironmentVersionPublic.model_validate(row)


@router.get("/{environment_id}/export")
def export_environment(session: SessionDep, environment_id: int, version: int | None = None) -> JSONDict:
    """One self-contained file (JSON; the spec with tool and reward sources inlined), importable anywhere."""
    if version is None:
        row = versions_crud.current_version(session, environment_id=environment_id)
    else:
        row = versions_crud.get_version(session, environment_id=environment_id, version=version)
    return {"format": "agent-studio-environment/1", "environment": dict(row.spec)}


@router.get("/{environment_id}/prompt")
def render_prompt(session: SessionDep, environment_id: int, version: int | None = None) -> PromptPreview:
    """The system prompt, first user turn, tool schemas and turn-1 prefill the model sees (a sample question).

    Characters only: the token count needs the model's tokenizer and comes from the check job's report.
    """
    if version is None:
        row = versions_crud.current_version(session, environment_id=environment_id)
    else:
        row = versions_crud.get_version(session, environment_id=environment_id, version=version)
    spec = dict(row.spec)
    preview: PromptPreview = versions_crud.prompt_preview(spec, environment_id=environment_id, version=row.version)
    return preview


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
    """Queue `environments.validate` (cpu) on the current version; the report lands in the run's `result`."""
    env = datasets_crud.get_environment(session, environment_id=environment_id)
    version = versions_crud.current_version(session, environment_id=environment_id)
    run = runs_crud.create_job_run(
        session, kind="validate", name=f"check {env.name} v{version.version}", config={"environment_id": env.id}
    )
    run.environment_id = env.id
    run.environment_version_id = version.id
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.VALIDATE_ENV, run))
