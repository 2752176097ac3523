"""search log ids made by the app (rows are written behind the response)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 18:56:09.070898
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('search_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_id', sa.String(length=32), nullable=True))
    # Rows logged before this revision keep their number as their search id.
    op.execute("UPDATE search_log SET search_id = CAST(id AS VARCHAR(32))")
    with op.batch_alter_table('search_log', schema=None) as batch_op:
        batch_op.alter_column('search_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_search_log_search_id'), ['search_id'])


def downgrade() -> None:
    with op.batch_alter_table('search_log', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_search_log_search_id'), type_='unique')
        batch_op.drop_column('search_id')
