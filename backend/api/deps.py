"""Request dependencies as `Annotated` aliases: settings, a DB session, the enqueue function, the caller.

`authorize` is applied to the whole `/api/v1` router: it resolves the bearer
token to a `Principal`, checks the route against the one policy table
(`backend.api.policy`) and refuses integers outside the 64-bit range in the
path or query (a 422 naming the parameter, instead of a database overflow).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session, sessionmaker

from backend import queue
from backend.api.guard import PUBLIC_SCOPE_KEY
from backend.api.policy import policy_for
from backend.core.config import Settings
from backend.core.db import engine_for
from backend.core.security import auth_required, legacy_token_matches
from backend.crud import users as users_crud
from backend.schemas.user import ROLE_RANK, Principal


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


INT64_MAX = 2**63 - 1
MAX_PAGE = 500
OffsetQuery = Annotated[int, Query(ge=0, le=INT64_MAX, description="Items to skip.")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Items to return (at most {MAX_PAGE}).")]
_INTEGER = re.compile(r"^[+-]?\d+$")
LOCAL_ADMIN = Principal(name="local", role="admin", authenticated=False)
"""The zero-setup caller on loopback when no token is required."""


def _check_int64(request: Request) -> None:
    """422 for any path or query integer beyond the signed 64-bit range the database stores."""
    errors = []
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if isinstance(value, str) and _INTEGER.match(value.strip()) and abs(int(value)) > INT64_MAX:
                errors.append(
                    {
                        "type": "less_than_equal",
                        "loc": [where, name],
                        "input": value,
                        "msg": f"Input should be between -{INT64_MAX} and {INT64_MAX}",
                    }
                )
    if errors:
        raise RequestValidationError(errors)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def resolve_principal(request: Request, settings: Settings, session: Session) -> Principal:
    """The caller: a user token, a login-session token, the legacy admin token, or the local admin."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, supplied = authorization.partition(" ")
        supplied = supplied.strip()
        if scheme.lower() != "bearer" or not supplied:
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        if legacy_token_matches(settings, supplied):
            return Principal(name="admin", role="admin", authenticated=True)
        user = users_crud.user_for_token(session, token=supplied)
        if user is None:
            raise _unauthorized("unknown, expired or disabled token; sign in again or ask an admin")
        return Principal(name=user.name, role=user.role, authenticated=True)  # type: ignore[arg-type]
    if auth_required(settings, public=bool(request.scope.get(PUBLIC_SCOPE_KEY))):
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>' (see `studio users add`)")
    return LOCAL_ADMIN


def authorize(request: Request, settings: SettingsDep, session: SessionDep) -> Principal:
    """Router-wide: who is calling, and may they call this route (401 / 403 otherwise)."""
    _check_int64(request)
    route = request.scope.get("route")
    path_format = getattr(route, "path_format", request.url.path)
    known, least_role = policy_for(request.method, path_format)
    if not known:
        raise HTTPException(status_code=403, detail=f"{request.method} {path_format} has no access policy")
    principal = LOCAL_ADMIN if least_role is None else resolve_principal(request, settings, session)
    if least_role is not None and ROLE_RANK[principal.role] < ROLE_RANK[least_role]:
        raise HTTPException(
            status_code=403,
            detail=f"{principal.name} ({principal.role}) may not {request.method} {path_format}: needs {least_role}",
        )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authorize)]
"""The caller (`authorize` runs once per request; FastAPI caches it)."""
