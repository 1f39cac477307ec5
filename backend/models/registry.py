"""Imports every model module so `Base.metadata` is complete (Alembic and tests use this)."""

from __future__ import annotations

from backend.core.db import Base
from backend.models import comparison, dataset, run, tool, trajectory, user

MODEL_MODULES = (comparison, dataset, run, tool, trajectory, user)
metadata = Base.metadata
