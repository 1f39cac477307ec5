"""Comparisons: checkpoints and baselines evaluated over the same examples, stored to reopen.

One table; its members are the eval runs it launched (JSON), whose evaluations hold the scores.
Frozen history: imports alembic and sqlalchemy only.

Revision ID: 0006_comparisons
Revises: 0005_label_kinds
Create Date: 2026-12-02 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006_comparisons'
down_revision: str | None = '0005_label_kinds'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'comparisons',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('members', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_comparisons')),
    )


def downgrade() -> None:
    op.drop_table('comparisons')
