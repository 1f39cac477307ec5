"""`create_app() -> FastAPI`: mounts `/api/v1`, maps domain errors to HTTP, checks schema and token at startup.

Run with `uvicorn backend.main:create_app --factory`. Operation ids are the route
function names (stable, unique), which keeps generated clients readable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from backend.api.router import api_router
from backend.core import db as migration_state
from backend.core.config import Settings, get_settings
from backend.core.db import engine_for
from backend.core.errors import StudioError
from backend.core.security import check_startup_security

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    return route.name


async def _studio_error(_request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StudioError) else 500
    return JSONResponse(status_code=status, content={"detail": str(getattr(exc, "detail", exc))})


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> FastAPI:
    """Build the app; refuses a public bind without a token and a DB behind the migrations head."""
    settings = settings or get_settings()
    check_startup_security(settings)
    if check_schema:
        migration_state.check_schema_current(engine_for(settings.resolved_database_url))

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
    app.add_exception_handler(StudioError, _studio_error)
    app.include_router(api_router, prefix=API_PREFIX)
    return app
