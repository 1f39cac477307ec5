"""Tool routes: CRUD, saved versions, and a sandboxed trial call run on a worker."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, LimitQuery, OffsetQuery, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import runs as runs_crud
from backend.crud import tools as tools_crud
from backend.queue import TaskName
from backend.schemas.run import RunPublic
from backend.schemas.tool import ToolCreate, ToolPublic, ToolTestRequest, ToolUpdate, ToolVersionPublic

router = APIRouter(prefix="/tools", tags=["tools"])


@router.get("")
def list_tools(session: SessionDep, offset: OffsetQuery = 0, limit: LimitQuery = 100) -> list[ToolPublic]:
    return [ToolPublic.model_validate(t) for t in tools_crud.list_tools(session, offset=offset, limit=limit)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_tool(session: SessionDep, tool_in: ToolCreate) -> ToolPublic:
    """Create a tool; its schema is derived from the source with `ast` (the API never runs it)."""
    tool = tools_crud.create_tool(session, tool_in=tool_in)
    session.commit()
    return ToolPublic.model_validate(tool)


@router.get("/{tool_id}")
def get_tool(session: SessionDep, tool_id: int) -> ToolPublic:
    return ToolPublic.model_validate(tools_crud.get_tool(session, tool_id=tool_id))


@router.patch("/{tool_id}")
def update_tool(session: SessionDep, tool_id: int, tool_in: ToolUpdate) -> ToolPublic:
    """Update; a changed source or params saves a new version."""
    tool = tools_crud.update_tool(session, tool_id=tool_id, tool_in=tool_in)
    session.commit()
    return ToolPublic.model_validate(tool)


@router.delete("/{tool_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tool(session: SessionDep, tool_id: int) -> None:
    tools_crud.delete_tool(session, tool_id=tool_id)
    session.commit()


@router.get("/{tool_id}/versions")
def list_tool_versions(
    session: SessionDep, tool_id: int, offset: OffsetQuery = 0, limit: LimitQuery = 100
) -> list[ToolVersionPublic]:
    versions = tools_crud.list_tool_versions(session, tool_id=tool_id, offset=offset, limit=limit)
    return [ToolVersionPublic.model_validate(v) for v in versions]


@router.post("/{tool_id}/test", status_code=status.HTTP_202_ACCEPTED)
def test_tool(session: SessionDep, enqueue: EnqueueDep, tool_id: int, request: ToolTestRequest) -> RunPublic:
    """Queue a sandboxed call on a `cpu` worker; poll `GET /runs/{id}` for result, duration and error."""
    tool = tools_crud.get_tool(session, tool_id=tool_id)
    config = {"tool_id": tool.id, "tool_version": tool.version, "arguments": request.arguments}
    run = runs_crud.create_job_run(session, kind="tool_test", name=f"test {tool.name}", config=config)
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.TOOL_TEST, run))
