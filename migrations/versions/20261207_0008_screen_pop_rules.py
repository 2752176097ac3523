"""CTI screen-pop rules

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.core.db

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('screen_pop_rules',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('called', sa.String(length=32), nullable=True),
    sa.Column('ivr_path', sa.String(length=200), nullable=True),
    sa.Column('business_code', sa.String(length=64), nullable=True),
    sa.Column('caller_tags', JSON, nullable=False),
    sa.Column('category_ids', JSON, nullable=False),
    sa.Column('tags', JSON, nullable=False),
    sa.Column('pinned_item_ids', JSON, nullable=False),
    sa.Column('created_by', sa.String(length=80), nullable=True),
    sa.Column('row_version', sa.Integer(), nullable=False),
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('created_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_screen_pop_rules'))
    )
    op.create_index('ix_screen_pop_rules_enabled_priority', 'screen_pop_rules', ['enabled', 'priority'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_screen_pop_rules_enabled_priority', table_name='screen_pop_rules')
    op.drop_table('screen_pop_rules')
