"""The `/api/v1` router: every routes module, all behind `authorize` (token, role policy, id range)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from backend.api.deps import authorize
from backend.api.routes import (
    auth,
    comparisons,
    datasets,
    environments,
    evaluations,
    health,
    labels,
    reward_models,
    runs,
    tools,
    trajectories,
    users,
)

api_router = APIRouter(dependencies=[Depends(authorize)])
for module in (
    health,
    auth,
    users,
    tools,
    datasets,
    environments,
    runs,
    trajectories,
    labels,
    evaluations,
    comparisons,
    reward_models,
):
    api_router.include_router(module.router)
