"""Migration 0012 gives the existing default roles the new permissions (and takes them back)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, text

from app.core.db import make_engine, utcnow
from app.identity.models import Role
from tests.conftest import BACKENDS, alembic_config, create_database


async def _permissions(url: str) -> dict[str, list[str]]:
    engine = make_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name, permissions FROM roles"))).all()
    await engine.dispose()
    return {name: sorted(p if isinstance(p, list) else json.loads(p)) for name, p in rows}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_existing_default_roles_get_the_new_permissions(kind: str, tmp_path: Path) -> None:
    url, drop = await create_database(kind, tmp_path)
    try:
        cfg = alembic_config(url)
        await asyncio.to_thread(command.upgrade, cfg, "0011")
        engine = make_engine(url)
        async with engine.begin() as conn:
            for name, perms in (
                ("agent", ["system:access", "knowledge:read"]),
                ("publisher", ["system:access", "knowledge:publish"]),
                ("质检组", ["system:access", "knowledge:read"]),
            ):
                await conn.execute(
                    insert(Role.__table__).values(
                        name=name, description="", permissions=perms, created_at=utcnow(), updated_at=utcnow()
                    )
                )
        await engine.dispose()
        await asyncio.to_thread(command.upgrade, cfg, "0012")
        roles = await _permissions(url)
        assert roles["agent"] == ["feedback:report", "knowledge:read", "system:access"]
        assert roles["publisher"] == [
            "feedback:manage",
            "feedback:report",
            "knowledge:owners",
            "knowledge:publish",
            "system:access",
        ]
        assert roles["质检组"] == ["knowledge:read", "system:access"]  # an administrator's own role: untouched
        await asyncio.to_thread(command.downgrade, cfg, "0011")
        assert (await _permissions(url))["publisher"] == ["knowledge:publish", "system:access"]
    finally:
        await drop()
