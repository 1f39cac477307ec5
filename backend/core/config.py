"""Process settings, read once from `STUDIO_*` environment variables (and `.env`).

Every process of the studio (API, worker, UI launcher) reads the same
`Settings`, so one environment describes a whole deployment. Paths default to
a data dir under the current directory, so a fresh clone runs with no setup.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Studio settings. Each field is the env var `STUDIO_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Where the database, runs, checkpoints and caches live.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file in the data dir.")
    redis_url: str = Field(default="", description="Broker/result backend; empty = embedded redis-server.")
    api_host: str = Field(default="127.0.0.1", description="Interface the API binds to.")
    api_port: int = Field(default=8000, ge=1, le=65535)
    ui_host: str = Field(default="127.0.0.1", description="Interface the Gradio UI binds to.")
    ui_port: int = Field(default=7860, ge=1, le=65535)
    api_url: str = Field(
        default="", description="Where the UI and CLI reach the API; empty = http://api_host:api_port."
    )
    api_token: str = Field(
        default="", description="Legacy admin bearer token (named users: `studio users add`); setting it requires auth."
    )
    require_auth: bool = Field(
        default=False, description="Require a user token even on loopback (shared hosts: other local users)."
    )
    allowed_hosts: str = Field(
        default="", description="Comma-separated extra Host names (besides loopback) the API and UI answer to."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    worker_queues: str = Field(default="cpu,gpu", description="Comma-separated Celery queues a worker consumes.")
    worker_concurrency: int = Field(
        default=0, ge=0, description="Jobs a worker runs at once; 0 = one per visible GPU on a gpu worker, else 1."
    )
    heartbeat_timeout_s: float = Field(
        default=120.0, gt=0, description="A running job silent this long has lost its worker."
    )
    auto_resume_attempts: int = Field(
        default=2, ge=0, description="Times a train run whose worker died is queued again to resume by itself."
    )
    tool_time_limit_s: float = Field(default=10.0, gt=0, description="Wall-clock limit for one user tool call.")
    tool_memory_limit_mb: int = Field(default=512, ge=32, description="Address-space limit for user tool code.")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    @property
    def resolved_api_url(self) -> str:
        if self.api_url:
            return self.api_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def is_api_public(self) -> bool:
        """True when the API listens beyond loopback (a token is then required)."""
        return self.api_host not in LOOPBACK_HOSTS

    @property
    def extra_allowed_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]


def get_settings() -> Settings:
    """Fresh settings from the current environment (tests change env vars)."""
    return Settings()
