"""Migrations: upgrade/downgrade/upgrade round-trips, an empty autogenerate diff, frozen-history imports."""

from __future__ import annotations

import ast
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from backend.core.db import alembic_config
from backend.models.registry import metadata

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
TABLES = {
    "tools",
    "tool_versions",
    "datasets",
    "environments",
    "runs",
    "metrics",
    "trajectories",
    "labels",
    "checkpoints",
    "evaluations",
    "trajectory_data",
    "comparisons",
}
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _round_trip(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    command.downgrade(config, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    command.upgrade(config, "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_round_trip_and_empty_diff(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"studio_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.integration
def test_postgres_round_trip_and_empty_diff(pg_database: str) -> None:
    _round_trip(pg_database)


def test_revisions_are_date_prefixed_and_one_chain() -> None:
    files = sorted(p.name for p in VERSIONS.glob("*.py"))
    assert files
    assert all(name[:11].replace("_", "").isdigit() for name in files), files
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1, f"migrations branch: heads {script.get_heads()}"
    assert len(list(script.walk_revisions())) == len(files)


def test_revisions_are_date_prefixed_with_one_initial_revision() -> None:
    files = sorted(p.name for p in VERSIONS.glob("*.py"))
    assert all(name[:11].replace("_", "").isdigit() for name in files)
    initial = [name for name in files if "down_revision: str | None = None" in (VERSIONS / name).read_text()]
    assert initial == ["2026_11_25_0001_initial_schema.py"]


def test_env_versions_revision_carries_existing_environments_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'carry.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tools (id, name, description, kind, source, params, schema, version, "
                "created_at, updated_at) VALUES (1, 'double', 'Double x.', 'python', 'def double(x): ...', "
                "'{}', :schema, 2, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"schema": '{"name": "double", "parameters": {"type": "object", "properties": {}}}'},
        )
        conn.execute(
            text(
                "INSERT INTO environments (id, name, tool_ids, rubric, limits, created_at) VALUES "
                "(1, 'old', '[1]', '{\"weights\": {\"f1\": 0.5}}', '{\"max_turns\": 2}', "
                "CURRENT_TIMESTAMP)"
            )
        )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        version, spec = conn.execute(text("SELECT version, spec FROM environment_versions")).one()
        env_version = conn.execute(text("SELECT version FROM environments")).scalar_one()
    engine.dispose()
    carried = json.loads(spec)
    assert (version, env_version) == (1, 1)
    assert carried["tools"][0]["key"] == "tool-1-v2"
    assert carried["tools"][0]["source"] == "def double(x): ..."
    assert carried["rubric"] == [{"name": "f1", "weight": 0.5, "builtin": "f1"}]
    assert carried["limits"] == {"max_turns": 2}


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*.py")), ids=lambda p: p.name)
def test_revisions_import_only_alembic_and_sqlalchemy(path: Path) -> None:
    allowed = {"alembic", "sqlalchemy", "collections", "typing", "__future__"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= allowed, f"{path.name} imports {roots - allowed}: revisions must not import live code"


def test_label_kinds_revision_carries_existing_labels_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    engine = create_engine(url)
    now = "2026-12-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (id, name, kind, status, config, progress, current_step, resumable, cancel_requested,"
                f" created_at) VALUES (7, '', 'train', 'succeeded', '{{}}', 1, 3, 0, 0, '{now}')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO trajectories (id, run_id, step, group_id, task_id, reward, has_parse_error,"
                " has_tool_error, truncated, finish_reason, num_turns, num_tool_calls, created_at)"
                f" VALUES (11, 7, 3, 's3-0', 'q1', 0.5, 0, 0, 0, 'answer', 2, 1, '{now}')"
            )
        )
        conn.execute(text("INSERT INTO trajectory_data (trajectory_id, data) VALUES (11, '{\"token_ids\": [1, 2]}')"))
        conn.execute(
            text(
                "INSERT INTO labels (id, trajectory_id, score, step_scores, note, labeler, created_at)"
                f" VALUES (1, 11, 0.75, '[]', 'ok', 'ann', '{now}')"
            )
        )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT kind, score, run_id, step, group_id, task_id, snapshot FROM labels")).one()
    assert row[:6] == ("score", 0.75, 7, 3, "s3-0", "q1")
    assert '"token_ids": [1, 2]' in row[6]
    with engine.begin() as conn:  # deleting the run keeps the label (FKs are SET NULL now)
        conn.execute(text("PRAGMA foreign_keys=ON"))
        conn.execute(text("DELETE FROM runs WHERE id = 7"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT trajectory_id, score FROM labels")).one() == (None, 0.75)
    engine.dispose()
