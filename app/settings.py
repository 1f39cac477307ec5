"""UI process settings from `STUDIO_*` environment variables (and `.env`).

The app may not import `backend.core` (it speaks HTTP only), so it reads the
few settings it needs itself, with the same names and defaults as the backend.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.hosts import LOOPBACK_HOSTS


class UISettings(BaseSettings):
    """Where the UI listens and how it reaches the API. Each field is the env var `STUDIO_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_file=".env", extra="ignore")

    api_url: str = Field(default="", description="The API's base URL; empty = http://api_host:api_port.")
    api_host: str = Field(default="127.0.0.1", description="Interface the API binds to.")
    api_port: int = Field(default=8000, ge=1, le=65535)
    ui_host: str = Field(default="127.0.0.1", description="Interface the Gradio UI binds to.")
    ui_port: int = Field(default=7860, ge=1, le=65535)
    api_token: str = Field(
        default="",
        description="The API's legacy admin token. The UI never sends it itself; when it is set, users sign in.",
    )
    require_auth: bool = Field(default=False, description="Ask every browser to sign in, even on loopback.")
    allowed_hosts: str = Field(default="", description="Comma-separated extra Host names the UI answers to.")
    poll_interval_s: float = Field(default=2.0, gt=0, le=60, description="How often live views refresh.")
    request_timeout_s: float = Field(default=15.0, gt=0, description="Per-request HTTP timeout.")

    @property
    def extra_allowed_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def login_required(self) -> bool:
        """Sign-in is needed whenever the UI or the API is reachable beyond loopback, or the settings ask."""
        beyond = any(h not in LOOPBACK_HOSTS for h in (self.ui_host, self.api_host))
        return beyond or self.require_auth or bool(self.api_token)

    @property
    def resolved_api_url(self) -> str:
        """`api_url` when set, else built from host and port; always without a trailing slash."""
        if self.api_url:
            return self.api_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"
