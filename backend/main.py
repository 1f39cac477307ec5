"""`create_app() -> FastAPI`: mounts `/api/v1`, maps domain errors to HTTP, checks schema and token at startup.

Run with `uvicorn backend.main:create_app --factory`. Operation ids are the route
function names (stable, unique), which keeps generated clients readable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backend.api.deps import INT64_MAX
from backend.api.guard import StudioGuard
from backend.api.policy import API_PREFIX
from backend.api.router import api_router
from backend.core import db as migration_state
from backend.core.config import Settings, get_settings
from backend.core.db import engine_for
from backend.core.errors import StudioError
from backend.core.login_limits import LoginLimiter
from backend.core.security import check_startup_security
from backend.crud import users as users_crud

logger = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    return route.name


async def _studio_error(_request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StudioError) else 500
    return JSONResponse(status_code=status, content={"detail": str(getattr(exc, "detail", exc))})


def _int64_documented(app: FastAPI) -> None:
    """State in the spec what `authorize` enforces: path and query integers fit in a signed 64-bit int."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            for item in spec.get("paths", {}).values():
                for operation in item.values():
                    for param in operation.get("parameters", []):
                        for schema in [param.get("schema", {}), *param.get("schema", {}).get("anyOf", [])]:
                            if schema.get("type") == "integer":
                                schema.setdefault("maximum", INT64_MAX)
                                schema.setdefault("minimum", -INT64_MAX)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _has_users(settings: Settings) -> bool:
    try:
        with Session(engine_for(settings.resolved_database_url)) as session:
            return users_crud.has_active_users(session)
    except SQLAlchemyError:
        return False


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> FastAPI:
    """Build the app; refuses a public bind nobody can sign in to and a DB behind the migrations head.

    Every request passes `StudioGuard` (body cap, Host and CSRF checks) and then
    `authorize` (token, role policy); see SECURITY.md.
    """
    settings = settings or get_settings()
    if check_schema:
        migration_state.check_schema_current(engine_for(settings.resolved_database_url))
    check_startup_security(settings, has_users=bool(settings.is_api_public and _has_users(settings)))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        logger.info("API ready on %s (db %s)", settings.resolved_api_url, settings.resolved_database_url)
        yield

    app = FastAPI(
        title="Agent Studio API",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.login_limiter = LoginLimiter.from_settings(settings)
    app.add_exception_handler(StudioError, _studio_error)
    app.include_router(api_router, prefix=API_PREFIX)
    app.add_middleware(StudioGuard, settings=settings)
    _int64_documented(app)
    return app
