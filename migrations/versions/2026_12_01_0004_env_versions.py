"""Environment versions: immutable `environment_versions` (resolved spec), soft deletes, corpus and settings
on environments, content hashes on datasets, and `runs.environment_version_id`. Every existing environment
gets version 1 built from its row. Frozen history: imports alembic and sqlalchemy only.

Revision ID: 0004_env_versions
Revises: 0001
Create Date: 2026-12-01 21:30:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = '0004_env_versions'
down_revision: str | None = '0003_run_columns'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BUILTIN = {"bm25_search": "search", "search": "search", "calculator": "calculator"}
_REWARDS = {"exact_match", "cover_exact_match", "f1", "format", "called_tool", "tool_error_penalty",
            "retrieval_recall"}


def _tool_entry(row: Any) -> dict[str, Any]:
    schema = row.schema or {}
    if row.kind == "builtin":
        builtin = _BUILTIN.get(row.source, "search")
        return {"name": builtin, "builtin": builtin, "params": dict(row.params or {}), "tool_id": row.id,
                "version": row.version}
    function = schema.get("function", schema)
    return {"name": row.name, "key": f"tool-{row.id}-v{row.version}", "description": row.description or "",
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
            "source": row.source, "function": function.get("name") or row.name, "tool_id": row.id,
            "version": row.version}


def _carried_spec(conn: Any, env: Any) -> dict[str, Any]:
    tools_t = sa.table("tools", sa.column("id"), sa.column("name"), sa.column("description"), sa.column("kind"),
                       sa.column("source"), sa.column("params", sa.JSON), sa.column("schema", sa.JSON),
                       sa.column("version"))
    datasets_t = sa.table("datasets", sa.column("id"), sa.column("kind"), sa.column("location"),
                          sa.column("format"))
    tools = []
    for tool_id in env.tool_ids or []:
        row = conn.execute(sa.select(tools_t).where(tools_t.c.id == tool_id)).first()
        if row is not None:
            tools.append(_tool_entry(row))
    weights = (env.rubric or {}).get("weights") or {"exact_match": 1.0}
    rubric = [{"name": k, "weight": float(v), "builtin": k} for k, v in weights.items() if k in _REWARDS]
    limits = env.limits or {}
    spec: dict[str, Any] = {
        "name": env.name, "tools": tools, "rubric": rubric or [{"name": "exact_match", "builtin": "exact_match"}],
        "answer_tag": (env.rubric or {}).get("answer_tag", "answer"), "environment_id": env.id, "version": 1,
        "limits": {k: limits[k] for k in ("max_turns", "max_new_tokens_per_turn", "max_total_tokens") if k in limits},
    }
    if env.dataset_id is not None:
        d = conn.execute(sa.select(datasets_t).where(datasets_t.c.id == env.dataset_id)).first()
        if d is not None and d.kind in ("file", "hub"):
            spec["data"] = {"source": d.kind, "location": d.location, "format": d.format or "auto"}
        elif d is not None:
            spec["data"] = {"source": "demo", "location": d.location}
    return spec


def upgrade() -> None:
    op.create_table('environment_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'],
                            name=op.f('fk_environment_versions_environment_id_environments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_environment_versions')),
    sa.UniqueConstraint('environment_id', 'version', name='uq_environment_versions_environment_id_version')
    )
    op.create_index(op.f('ix_environment_versions_environment_id'), 'environment_versions', ['environment_id'],
                    unique=False)
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('environments') as batch:
        batch.add_column(sa.Column('corpus_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('settings', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))
        batch.create_foreign_key(op.f('fk_environments_corpus_id_datasets'), 'datasets', ['corpus_id'], ['id'],
                                 ondelete='SET NULL')
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('environment_version_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_runs_environment_version_id_environment_versions'),
                                 'environment_versions', ['environment_version_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('environments') as batch:  # the defaults were only for the existing rows
        batch.alter_column('settings', server_default=None)
        batch.alter_column('version', server_default=None)
    conn = op.get_bind()
    envs_t = sa.table("environments", sa.column("id"), sa.column("name"), sa.column("tool_ids", sa.JSON),
                      sa.column("dataset_id"), sa.column("rubric", sa.JSON), sa.column("limits", sa.JSON))
    versions_t = sa.table("environment_versions", sa.column("environment_id"), sa.column("version"),
                          sa.column("spec", sa.JSON), sa.column("created_at"))
    for env in conn.execute(sa.select(envs_t)).fetchall():
        conn.execute(versions_t.insert().values(environment_id=env.id, version=1, spec=_carried_spec(conn, env),
                                                created_at=sa.func.current_timestamp()))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_constraint(op.f('fk_runs_environment_version_id_environment_versions'), type_='foreignkey')
        batch.drop_column('environment_version_id')
    with op.batch_alter_table('environments') as batch:
        batch.drop_constraint(op.f('fk_environments_corpus_id_datasets'), type_='foreignkey')
        batch.drop_column('deleted_at')
        batch.drop_column('version')
        batch.drop_column('settings')
        batch.drop_column('corpus_id')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('deleted_at')
        batch.drop_column('content_hash')
    op.drop_index(op.f('ix_environment_versions_environment_id'), table_name='environment_versions')
    op.drop_table('environment_versions')
