"""Who may call the API: when a token is required, the legacy admin token, Host and Origin rules.

A token is required whenever the studio is reachable from anything but
loopback (by setting or by the socket a request actually arrived on), when
`STUDIO_REQUIRE_AUTH=1`, or when the legacy `STUDIO_API_TOKEN` is set. On
loopback without those, requests are the zero-setup local admin, but Host
headers must name loopback (DNS rebinding) and state-changing requests must
prove they are not a cross-site form (CSRF).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from backend.core.config import Settings
from backend.core.errors import InsecureConfigError
from backend.hosts import LOOPBACK_HOSTS, is_loopback_address, split_host

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_ADDRESS_HEADER = "x-studio-login-address"
"""The browser's address the studio's UI forwards with a sign-in (trusted from loopback peers only)."""
CLIENT_HEADER = "x-studio-client"
"""A custom header a cross-site HTML form cannot send (and fetch cannot without a CORS preflight)."""


def check_startup_security(settings: Settings, *, has_users: bool = False) -> None:
    """Refuse to serve a public interface that nobody could authenticate to."""
    if settings.is_api_public and not settings.api_token and not has_users:
        raise InsecureConfigError(
            f"the API binds to {settings.api_host} (beyond loopback) but there is no account: create one with "
            "`studio users add NAME --role admin` (or set STUDIO_API_TOKEN to a long random token), "
            "or bind to 127.0.0.1"
        )


def auth_required(settings: Settings, *, public: bool) -> bool:
    """`public`: the request arrived over, or the server listens on, a non-loopback interface."""
    return public or settings.is_api_public or settings.require_auth or bool(settings.api_token)


def legacy_token_matches(settings: Settings, supplied: str) -> bool:
    """Constant-time check of the old single `STUDIO_API_TOKEN` (an admin token)."""
    return bool(settings.api_token) and hmac.compare_digest(supplied.encode(), settings.api_token.encode())


def host_allowed(host_header: str, settings: Settings) -> bool:
    """Loopback names (127.0.0.1, localhost, [::1]) with any port, or a name listed in `allowed_hosts`."""
    host, _port = split_host(host_header)
    return host in LOOPBACK_HOSTS or is_loopback_address(host) or host in settings.extra_allowed_hosts


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) so only this user can enter it: 0700, tightened if it already exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def ensure_private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 if missing (SQLite then keeps that mode for its -wal/-shm files)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path
