"""One Alembic history: upgrade to head, down to base, and up again, on every database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from app.core.db import make_engine
from app.models import Base
from tests.conftest import BACKENDS, alembic_config, create_database


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_upgrade_downgrade_upgrade(kind: str, tmp_path: Path) -> None:
    url, drop = await create_database(kind, tmp_path)
    try:
        cfg = alembic_config(url)
        await asyncio.to_thread(command.upgrade, cfg, "head")
        assert await _tables(url) == set(Base.metadata.tables)
        await asyncio.to_thread(command.downgrade, cfg, "base")
        assert await _tables(url) == set()
        await asyncio.to_thread(command.upgrade, cfg, "head")
        assert await _tables(url) == set(Base.metadata.tables)
    finally:
        await drop()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_models_and_migrations_agree(kind: str, tmp_path: Path) -> None:
    """A model change without its migration fails here (autogenerate finds nothing to do)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url, drop = await create_database(kind, tmp_path)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        engine = make_engine(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": False}), Base.metadata)
            )
        await engine.dispose()
        assert diff == []
    finally:
        await drop()
