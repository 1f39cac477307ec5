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

from backend.hosts import LOOPBACK_HOSTS


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
    worker_gpus_per_job: int = Field(
        default=1,
        ge=1,
        description="GPUs each job of a gpu worker takes (a run with parallel.nproc = N needs N); auto concurrency "
        "becomes visible GPUs // this.",
    )
    heartbeat_timeout_s: float = Field(
        default=120.0, gt=0, description="A running job silent this long has lost its worker."
    )
    auto_resume_attempts: int = Field(
        default=2, ge=0, description="Times a train run whose worker died is queued again to resume by itself."
    )
    sweep_interval_s: float = Field(
        default=30.0, gt=0, description="How often each worker's sweeper handles stale runs and lost queued tasks."
    )
    requeue_after_s: float = Field(
        default=60.0,
        gt=0,
        description="A queued run whose task the broker no longer holds is sent again once it is this old.",
    )
    task_time_limit_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Wall-clock limit of one job; past it the job fails."
    )
    step_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="A job whose step (or eval example) count has not advanced this long is failed as hung.",
    )
    tool_time_limit_s: float = Field(default=10.0, gt=0, description="Wall-clock limit for one user tool call.")
    tool_memory_limit_mb: int = Field(default=512, ge=32, description="Address-space limit for user tool code.")
    bwrap_path: str = Field(
        default="bwrap", description="The bubblewrap binary user code runs under (Debian package `bubblewrap`)."
    )
    allow_unsandboxed_code: bool = Field(
        default=False,
        description="Run user tools and reward functions WITHOUT isolation (a plain limited subprocess that can "
        "read what the worker can) when bubblewrap is unavailable. Only for a single-user machine.",
    )
    login_free_attempts: int = Field(
        default=5, ge=1, description="Failed sign-ins per name and client address before lockouts begin."
    )
    login_lockout_s: float = Field(default=30.0, gt=0, description="The first lockout; it doubles per failure.")
    login_max_lockout_s: float = Field(default=900.0, gt=0, description="The longest lockout.")
    tool_network_allow_private: bool = Field(
        default=False,
        description="Let a tool's allow-listed host resolve to a loopback, private or link-local address (the "
        "proxy refuses them by default, so an allow-list cannot reach the API, Redis or cloud metadata).",
    )
    benchmark_data_dir: Path | None = Field(
        default=None,
        description="Folder of local benchmark files (hotpotqa/dev_sample.json, 2wiki/..., musique/...) that "
        "evaluations read by dataset name; empty = not configured (names then mean hub downloads).",
    )
    heldout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Seeded share of a user dataset held out for evaluation."
    )
    max_upload_mb: int = Field(default=512, ge=1, description="Largest dataset or corpus file an upload may be.")
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Folders a dataset registered by path may live under (JSON list); empty = the data dir only.",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("benchmark_data_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return Path(value).expanduser() if isinstance(value, str | Path) else value

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
    def allowed_data_roots(self) -> list[Path]:
        """`data_roots`, or the data dir alone, resolved."""
        return [p.expanduser().resolve() for p in (self.data_roots or [self.data_dir])]

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "datasets"

    def tool_file_problem(self, path: Path) -> str | None:
        """Why `path` (resolved) may not be mounted into a tool's sandbox, or None when it may.

        It must be a file under the data roots; inside the data dir only the uploads folder counts,
        so the database, run dirs, checkpoints and caches can never be declared as a tool's file.
        """
        roots = self.allowed_data_roots
        if not any(path.is_relative_to(root) for root in roots):
            return f"{path} is outside the data roots ({', '.join(str(r) for r in roots)}); upload it as a dataset"
        data_dir, uploads = self.data_dir.expanduser().resolve(), self.uploads_dir.expanduser().resolve()
        if path.is_relative_to(data_dir) and not path.is_relative_to(uploads):
            return f"{path} is studio state (database, runs, caches), not an uploaded file; upload it as a dataset"
        if not path.is_file():
            return f"{path} is not an existing file; upload it again"
        return None

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
