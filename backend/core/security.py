"""Bearer-token access: required whenever the API listens beyond loopback or a token is set."""

from __future__ import annotations

import hmac

from backend.core.config import Settings
from backend.core.errors import InsecureConfigError


def check_startup_security(settings: Settings) -> None:
    """Refuse to serve a public interface without a token."""
    if settings.is_api_public and not settings.api_token:
        raise InsecureConfigError(
            f"the API binds to {settings.api_host} (beyond loopback) but STUDIO_API_TOKEN is empty: "
            "set a long random token, or bind to 127.0.0.1"
        )


def token_required(settings: Settings) -> bool:
    return settings.is_api_public or bool(settings.api_token)


def is_authorized(settings: Settings, authorization: str | None) -> bool:
    """True when no token is needed, or the header is `Bearer <api_token>` (constant-time compare)."""
    if not token_required(settings):
        return True
    if not authorization or not authorization.startswith("Bearer "):
        return False
    supplied = authorization.removeprefix("Bearer ").strip()
    return hmac.compare_digest(supplied.encode(), settings.api_token.encode())
