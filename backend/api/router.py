"""The `/api/v1` router: every routes module, all behind the bearer-token check."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from backend.api.deps import require_token
from backend.api.routes import (
    datasets,
    environments,
    evaluations,
    health,
    labels,
    reward_models,
    runs,
    tools,
    trajectories,
)

api_router = APIRouter(dependencies=[Depends(require_token)])
for module in (health, tools, datasets, environments, runs, trajectories, labels, evaluations, reward_models):
    api_router.include_router(module.router)
