"""The database's clock as SQL expressions: `db_now()` and `db_seconds_ago(s)`.

Heartbeats, claims and staleness are judged on one clock, the database's, so a
worker or API host whose clock is off cannot make a live run look dead (or a dead
one live). Values are naive UTC in the same text form SQLAlchemy writes on SQLite
(`YYYY-MM-DD HH:MM:SS.ffffff`), so they compare correctly with Python-written rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, Float, cast, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[Any]):
    """Now, naive UTC, on the database server."""

    type = DateTime()
    inherit_cache = True
    name = "db_now"


class db_seconds_ago(FunctionElement[Any]):
    """`db_now()` minus a number of seconds (a bound float)."""

    type = DateTime()
    inherit_cache = True
    name = "db_seconds_ago"


@compiles(db_now, "sqlite")
def _now_sqlite(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


@compiles(db_now)
def _now_default(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"


@compiles(db_seconds_ago, "sqlite")
def _ago_sqlite(element: db_seconds_ago, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({seconds}) || ' seconds') || '000')"


@compiles(db_seconds_ago)
def _ago_default(element: db_seconds_ago, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"((CURRENT_TIMESTAMP AT TIME ZONE 'UTC') - make_interval(secs => {seconds}))"


def seconds_ago(seconds: float) -> db_seconds_ago:
    """`db_now() - seconds`, with the number bound as a float (PostgreSQL's `make_interval` needs one)."""
    return db_seconds_ago(cast(literal(float(seconds)), Float))
