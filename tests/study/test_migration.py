"""Migration 0016 gives the existing default roles the study, expert and case permissions (and takes them back)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert

from app.core.db import make_engine, utcnow
from app.identity.models import Role
from app.identity.permissions import DEFAULT_ROLES
from tests.conftest import BACKENDS, alembic_config, create_database
from tests.feedback.test_migration import _permissions

NEW = {
    "study:read",
    "study:manage",
    "experts:ask",
    "experts:answer",
    "experts:manage",
    "knowledge:propose_case",
    "knowledge:approve_case",
}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_existing_default_roles_get_the_new_permissions(kind: str, tmp_path: Path) -> None:
    url, drop = await create_database(kind, tmp_path)
    try:
        cfg = alembic_config(url)
        await asyncio.to_thread(command.upgrade, cfg, "0015")
        engine = make_engine(url)
        before = {name: sorted(set(perms) - NEW) for name, (_, perms) in DEFAULT_ROLES.items()}
        before["质检组"] = ["system:access", "module:knowledge", "knowledge:read"]
        async with engine.begin() as conn:
            await conn.execute(Role.__table__.delete())
            for name, perms in before.items():
                await conn.execute(
                    insert(Role.__table__).values(
                        name=name, description="", permissions=perms, created_at=utcnow(), updated_at=utcnow()
                    )
                )
        await engine.dispose()
        await asyncio.to_thread(command.upgrade, cfg, "head")
        roles = await _permissions(url)
        for name, (_, perms) in DEFAULT_ROLES.items():  # exactly what a new database's roles hold
            assert roles[name] == sorted(perms), name
        assert roles["质检组"] == sorted(before["质检组"])  # an administrator's own role: untouched
        await asyncio.to_thread(command.downgrade, cfg, "0015")
        assert await _permissions(url) == {n: sorted(p) for n, p in before.items()}
    finally:
        await drop()
