"""Checks that turn a bad configuration into one clear line before anything starts.

Each check raises `ConfigError` whose message says what is wrong and how to fix
it; the CLI prints that line and exits non-zero instead of a traceback wall.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

from backend.core.config import Settings
from backend.hosts import LOOPBACK_HOSTS


class ConfigError(RuntimeError):
    """A user-fixable configuration problem (message is the whole story)."""


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_port_free(host: str, port: int, what: str, env_var: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {host} is already in use ({what}: {exc.strerror}); "
                f"stop the program using it or set {env_var} to a free port"
            ) from None


def check_database(url: str, timeout_s: float = 5.0) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    connect_args: dict[str, object] = {}
    if url.startswith("postgresql"):
        connect_args["connect_timeout"] = int(timeout_s)
    try:
        engine = create_engine(url, connect_args=connect_args)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"STUDIO_DATABASE_URL {redact(url)!r} is not a valid SQLAlchemy URL ({exc})") from None
    except ImportError as exc:
        raise ConfigError(f"no database driver for {redact(url)!r} ({exc}); install it or fix the URL") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise ConfigError(
            f"cannot reach the database at {redact(url)} ({reason}); "
            "check STUDIO_DATABASE_URL, or unset it to use the SQLite file in the data dir"
        ) from None
    finally:
        engine.dispose()


REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "unix")


def check_redis(url: str, timeout_s: float = 3.0) -> None:
    import redis

    scheme = urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"STUDIO_REDIS_URL {redact(url)!r} must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)}; "
            "or unset it to use the embedded Redis"
        )
    try:
        if scheme in ("redis+socket", "unix"):
            client = redis.Redis(unix_socket_path=urlsplit(url).path, socket_timeout=timeout_s)
        else:
            client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot reach Redis at {redact(url)} ({exc}); check STUDIO_REDIS_URL, "
            "or unset it to use the embedded Redis"
        ) from None


def _has_accounts(url: str) -> bool:
    """True when the database has an enabled user (False when unreachable or not migrated yet)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM users WHERE NOT disabled LIMIT 1")).first() is not None
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def check_access(settings: Settings) -> None:
    """Refuse to serve the API or the UI beyond loopback (or with STUDIO_REQUIRE_AUTH=1) when nobody could sign in."""
    reasons = []
    if settings.is_api_public:
        reasons.append(f"the API binds to {settings.api_host}, beyond loopback")
    if settings.ui_host not in LOOPBACK_HOSTS:
        reasons.append(f"the UI binds to {settings.ui_host}, beyond loopback")
    if settings.require_auth:
        reasons.append("STUDIO_REQUIRE_AUTH=1")
    if reasons and not settings.api_token and not _has_accounts(settings.resolved_database_url):
        raise ConfigError(
            f"{' and '.join(reasons)}, so every request needs a token, but no account exists: run `studio db upgrade` "
            "then `studio users add NAME --role admin --password` (or set STUDIO_API_TOKEN, the legacy admin token); "
            "or bind STUDIO_API_HOST and STUDIO_UI_HOST to 127.0.0.1"
        )
