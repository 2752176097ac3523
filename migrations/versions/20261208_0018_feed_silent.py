"""channel_feed.silent: changes to what a channel shows that make no event

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 00:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('channel_feed', schema=None) as batch_op:
        batch_op.add_column(sa.Column('silent', BigId, server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('channel_feed', schema=None) as batch_op:
        batch_op.drop_column('silent')
