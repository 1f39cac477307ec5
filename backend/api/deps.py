"""Request dependencies as `Annotated` aliases: settings, a DB session, the enqueue function, auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Protocol

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from backend import queue
from backend.core.config import Settings
from backend.core.db import engine_for
from backend.core.security import is_authorized


class Enqueue(Protocol):
    """`queue.enqueue`'s shape: send `task(run_id)` under `task_id`, return the task id."""

    def __call__(self, task: queue.TaskName, run_id: int, *, task_id: str | None = None) -> str: ...


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One session per request; routes commit explicitly, anything uncommitted is rolled back."""
    session = sessionmaker(bind=engine_for(settings.resolved_database_url), expire_on_commit=False)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_enqueue() -> Enqueue:
    """The task sender (tests override this dependency to record calls without a broker)."""
    return queue.enqueue


EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]


def require_token(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    if not is_authorized(settings, authorization):
        raise HTTPException(
            status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
