"""search embeddings cache

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-07 17:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('search_embeddings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=120), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_search_embeddings'))
    )
    with op.batch_alter_table('search_embeddings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_search_embeddings_model'), ['model'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('search_embeddings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_embeddings_model'))
    op.drop_table('search_embeddings')
