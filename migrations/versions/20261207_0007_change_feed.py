"""the change feed: what each channel shows, the ordered events, the sequence counter

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'channel_feed',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', BigId, nullable=False),
        sa.Column('floor', BigId, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_feed')),
    )
    op.execute("INSERT INTO channel_feed (id, seq, floor) VALUES (1, 0, 0)")
    op.create_table(
        'channel_item_states',
        sa.Column('item_id', BigId, nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('visibility', sa.String(length=16), nullable=False),
        sa.Column('readers', Json, nullable=False),
        sa.Column('source', sa.String(length=64), nullable=True),
        sa.Column('external_id', sa.String(length=128), nullable=True),
        sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
        sa.Column('shown_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('item_id', 'channel', name=op.f('pk_channel_item_states')),
    )
    op.create_index(op.f('ix_channel_item_states_valid_to'), 'channel_item_states', ['valid_to'], unique=False)
    op.create_table(
        'channel_changes',
        sa.Column('seq', BigId, autoincrement=False, nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('item_id', BigId, nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('source', sa.String(length=64), nullable=True),
        sa.Column('external_id', sa.String(length=128), nullable=True),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('visibility', sa.String(length=16), nullable=False),
        sa.Column('readers', Json, nullable=False),
        sa.Column('readers_after', Json, nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('seq', name=op.f('pk_channel_changes')),
    )
    op.create_index('ix_channel_changes_channel_seq', 'channel_changes', ['channel', 'seq'], unique=False)
    op.create_index(op.f('ix_channel_changes_at'), 'channel_changes', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_channel_changes_at'), table_name='channel_changes')
    op.drop_index('ix_channel_changes_channel_seq', table_name='channel_changes')
    op.drop_table('channel_changes')
    op.drop_index(op.f('ix_channel_item_states_valid_to'), table_name='channel_item_states')
    op.drop_table('channel_item_states')
    op.drop_table('channel_feed')
