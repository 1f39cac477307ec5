"""Typed run columns instead of `_` keys in `runs.config`, plus what run ownership needs.

`config` becomes `requested_config` (without its `_` keys); `_eval` moves to `eval_spec`,
`_auto_resumes` to `auto_resumes` (a bad value, e.g. a string or a negative number a client
once sent, counts as 0); `_resume` is dropped (nothing reads it). A train/rollout run that
already started had its request overwritten by the resolved config: that config is kept as
both `requested_config` and `resolved_config` (the original request is gone).
New: `owner_token` (the claim's lease id) and `enqueued_at`. Frozen history: alembic + sqlalchemy only.

Revision ID: 0003_run_columns
Revises: 0001
Create Date: 2026-12-01 21:20:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = '0003_run_columns'
down_revision: str | None = '0002_users'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESOLVED_KINDS = ('train', 'rollout')


def _runs(*columns: sa.Column[Any]) -> sa.TableClause:
    return sa.table('runs', sa.column('id', sa.Integer()), sa.column('kind', sa.String()),
                    sa.column('started_at', sa.DateTime()), *columns)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('requested_config', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('resolved_config', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('eval_spec', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('auto_resumes', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('owner_token', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('enqueued_at', sa.DateTime(), nullable=True))
    runs = _runs(sa.column('config', sa.JSON()), sa.column('requested_config', sa.JSON()),
                 sa.column('resolved_config', sa.JSON()), sa.column('eval_spec', sa.JSON()),
                 sa.column('auto_resumes', sa.Integer()))
    conn = op.get_bind()
    rows = conn.execute(sa.select(runs.c.id, runs.c.kind, runs.c.started_at, runs.c.config)).all()
    for row in rows:
        config = dict(row.config) if isinstance(row.config, dict) else {}
        request = {k: v for k, v in config.items() if not str(k).startswith('_')}
        eval_spec = config.get('_eval') if isinstance(config.get('_eval'), dict) else None
        resolved = request if row.kind in RESOLVED_KINDS and row.started_at is not None else None
        conn.execute(sa.update(runs).where(runs.c.id == row.id).values(
            requested_config=request, resolved_config=resolved, eval_spec=eval_spec,
            auto_resumes=_count(config.get('_auto_resumes', 0))))
    with op.batch_alter_table('runs') as batch:
        batch.alter_column('requested_config', existing_type=sa.JSON(), nullable=False)
        batch.alter_column('auto_resumes', existing_type=sa.Integer(), nullable=False)
        batch.drop_column('config')


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('config', sa.JSON(), nullable=True))
    runs = _runs(sa.column('config', sa.JSON()), sa.column('requested_config', sa.JSON()),
                 sa.column('resolved_config', sa.JSON()), sa.column('eval_spec', sa.JSON()),
                 sa.column('auto_resumes', sa.Integer()))
    conn = op.get_bind()
    query = sa.select(runs.c.id, runs.c.requested_config, runs.c.resolved_config, runs.c.eval_spec,
                      runs.c.auto_resumes)
    for row in conn.execute(query).all():
        config = dict(row.resolved_config or row.requested_config or {})
        if row.eval_spec is not None:
            config['_eval'] = row.eval_spec
        if row.auto_resumes:
            config['_auto_resumes'] = row.auto_resumes
        conn.execute(sa.update(runs).where(runs.c.id == row.id).values(config=config))
    with op.batch_alter_table('runs') as batch:
        batch.alter_column('config', existing_type=sa.JSON(), nullable=False)
        for name in ('enqueued_at', 'owner_token', 'auto_resumes', 'eval_spec', 'resolved_config', 'requested_config'):
            batch.drop_column(name)
