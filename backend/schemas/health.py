"""Health schema: one ok flag per component so the UI can show what is down."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DatabaseHealth(BaseModel):
    ok: bool
    dialect: str = ""
    revision: str | None = None
    head: str | None = None
    error: str | None = None


class BrokerHealth(BaseModel):
    ok: bool
    url: str = Field(default="", description="The broker URL with any password masked.")
    error: str | None = None


class WorkersHealth(BaseModel):
    ok: bool
    hostnames: list[str] = Field(default_factory=list)
    error: str | None = None


class HealthPublic(BaseModel):
    ok: bool
    db: DatabaseHealth
    broker: BrokerHealth
    workers: WorkersHealth
    versions: dict[str, str]
    stale_runs: int = Field(
        default=0,
        description="Active runs whose worker stopped sending heartbeats; a worker's sweeper resumes or fails them.",
    )
