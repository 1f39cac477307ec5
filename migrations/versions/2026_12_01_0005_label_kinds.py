"""Label kinds: pairwise choices and per-step marks beside scores, and a snapshot of what was labeled.

Existing labels become `kind='score'` with run/step/group/task and the trajectory's data copied
into `snapshot`; the trajectory foreign keys become SET NULL so deleting a run keeps its labels.
Frozen history: imports alembic and sqlalchemy only.

Revision ID: 0005_label_kinds
Revises: 0001
Create Date: 2026-12-01 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005_label_kinds'
down_revision: str | None = '0004_env_versions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK_TRAJ = 'fk_labels_trajectory_id_trajectories'
FK_OTHER = 'fk_labels_other_trajectory_id_trajectories'


def upgrade() -> None:
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='score'))
        batch_op.add_column(sa.Column('other_trajectory_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('choice', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('step_marks', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('group_id', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('task_id', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('snapshot', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.alter_column('trajectory_id', existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column('score', existing_type=sa.Float(), nullable=True)
        batch_op.drop_constraint(FK_TRAJ, type_='foreignkey')
        batch_op.create_foreign_key(FK_TRAJ, 'trajectories', ['trajectory_id'], ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key(FK_OTHER, 'trajectories', ['other_trajectory_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_labels_other_trajectory_id', ['other_trajectory_id'], unique=False)
        batch_op.create_index('ix_labels_run_id_kind', ['run_id', 'kind'], unique=False)
    _carry_existing_rows_over()
    with op.batch_alter_table('labels', schema=None) as batch_op:
        for column in ('kind', 'step_marks', 'group_id', 'task_id', 'snapshot'):
            batch_op.alter_column(column, server_default=None)


def _carry_existing_rows_over() -> None:
    """Copy run/step/group/task and the trajectory data of each existing label into its own columns."""
    bind = op.get_bind()
    labels = sa.table('labels', sa.column('id', sa.Integer()), sa.column('trajectory_id', sa.Integer()),
                      sa.column('run_id', sa.Integer()), sa.column('step', sa.Integer()),
                      sa.column('group_id', sa.String()), sa.column('task_id', sa.String()),
                      sa.column('snapshot', sa.JSON()))
    trajectories = sa.table('trajectories', sa.column('id', sa.Integer()), sa.column('run_id', sa.Integer()),
                            sa.column('step', sa.Integer()), sa.column('group_id', sa.String()),
                            sa.column('task_id', sa.String()), sa.column('reward', sa.Float()))
    data = sa.table('trajectory_data', sa.column('trajectory_id', sa.Integer()), sa.column('data', sa.JSON()))
    query = (
        sa.select(labels.c.id, trajectories.c.run_id, trajectories.c.step, trajectories.c.group_id,
                  trajectories.c.task_id, trajectories.c.reward, data.c.data)
        .join(trajectories, trajectories.c.id == labels.c.trajectory_id)
        .outerjoin(data, data.c.trajectory_id == trajectories.c.id)
    )
    for row in bind.execute(query).all():
        snapshot = {'trajectory': row.data or {}, 'reward': row.reward}
        bind.execute(
            labels.update().where(labels.c.id == row.id).values(
                run_id=row.run_id, step=row.step, group_id=row.group_id, task_id=row.task_id, snapshot=snapshot
            )
        )


def downgrade() -> None:
    bind = op.get_bind()
    labels = sa.table('labels', sa.column('kind', sa.String()), sa.column('trajectory_id', sa.Integer()))
    # Pairwise/step labels and labels whose trajectory is gone have no place in the old schema.
    bind.execute(labels.delete().where(sa.or_(labels.c.kind != 'score', labels.c.trajectory_id.is_(None))))
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index('ix_labels_run_id_kind')
        batch_op.drop_index('ix_labels_other_trajectory_id')
        batch_op.drop_constraint(FK_OTHER, type_='foreignkey')
        batch_op.drop_constraint(FK_TRAJ, type_='foreignkey')
        batch_op.create_foreign_key(FK_TRAJ, 'trajectories', ['trajectory_id'], ['id'], ondelete='CASCADE')
        batch_op.alter_column('score', existing_type=sa.Float(), nullable=False)
        batch_op.alter_column('trajectory_id', existing_type=sa.Integer(), nullable=False)
        for column in ('snapshot', 'task_id', 'group_id', 'step', 'run_id', 'step_marks', 'choice',
                       'other_trajectory_id', 'kind'):
            batch_op.drop_column(column)
