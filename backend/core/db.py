"""Database engine, sessions, the declarative `Base` (stable naming convention) and the migration check.

The engine is created lazily from settings (and cached per URL) so tests can
point `STUDIO_DATABASE_URL` at a temp file before the first session opens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from backend.core.config import get_settings
from backend.core.errors import SchemaOutdatedError
from backend.core.security import ensure_private_dir, ensure_private_file

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; constraint names follow `NAMING_CONVENTION` so migrations stay stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """Timezone-aware now; stored naive-UTC on SQLite, timestamptz-free on PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL. SQLite gets WAL + busy timeout (API and workers share the file), in a 0700 dir
    as a 0600 file, so other local users can neither read nor lock it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        if path and path != ":memory:" and "?" not in path:
            ensure_private_dir(Path(path).parent)
            ensure_private_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def get_engine() -> Engine:
    """The engine for the current settings' database URL."""
    return engine_for(get_settings().resolved_database_url)


def session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (worker side)."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


# Migration state: where the database stands against the code's Alembic head.
REPO_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str | None = None) -> Config:
    """Config for the repo's `alembic.ini` (optionally pinned to a URL)."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema_current(engine: Engine) -> None:
    """Raise `SchemaOutdatedError` with the fix when the DB is not at head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutdatedError(
            f"database schema is at {current or 'empty (no revision)'}, code expects {head}: run `studio db upgrade`"
        )
