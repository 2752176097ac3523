"""channel events: views, their daily rollup, feedback

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-07 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.db import UTCDateTime

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'channel_views',
        sa.Column('at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('item_id', BigId, nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=80), nullable=True),
        sa.Column('address', sa.String(length=64), nullable=True),
        sa.Column('query', sa.String(length=200), nullable=True),
        sa.Column('search_id', sa.String(length=32), nullable=True),
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_views')),
    )
    op.create_index('ix_channel_views_channel_at_item', 'channel_views', ['channel', 'at', 'item_id'])
    op.create_table(
        'channel_view_days',
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('item_id', BigId, nullable=False),
        sa.Column('views', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('channel', 'day', 'item_id', name=op.f('pk_channel_view_days')),
    )
    op.create_table(
        'channel_feedback',
        sa.Column('item_id', BigId, nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('voter', sa.String(length=120), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('helpful', sa.Boolean(), nullable=False),
        sa.Column('comment', sa.String(length=500), nullable=True),
        sa.Column('search_id', sa.String(length=32), nullable=True),
        sa.Column('at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_feedback')),
    )
    op.create_index('uq_channel_feedback_vote', 'channel_feedback', ['item_id', 'channel', 'voter'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_channel_feedback_vote', table_name='channel_feedback')
    op.drop_table('channel_feedback')
    op.drop_table('channel_view_days')
    op.drop_index('ix_channel_views_channel_at_item', table_name='channel_views')
    op.drop_table('channel_views')
