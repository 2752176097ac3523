"""What several benchmarks share: migrating a scratch database and serving the app in process,
signed in as an administrator (the real app, the real lifespan, ASGI transport: no sockets)."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's `app`, whatever the venv's editable install points at

ADMIN_USER = "bench-admin"


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = database_url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


@asynccontextmanager
async def served(settings: Any, http_timeout: float = 600) -> AsyncIterator[tuple[Any, Any, dict[str, str]]]:
    """Migrate, start the app, make an administrator: yields (app, client, admin headers)."""
    import asyncio

    import httpx
    from asgi_lifespan import LifespanManager

    from app.identity.service import ensure_admin
    from app.main import create_app

    await asyncio.to_thread(migrate, settings.database_url)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=120):
        password = secrets.token_urlsafe(18)
        async with app.state.sessionmaker() as s:
            await ensure_admin(s, ADMIN_USER, password)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=http_timeout) as client:
            r = await client.post(
                "/api/v1/auth/token", data={"grant_type": "password", "username": ADMIN_USER, "password": password}
            )
            r.raise_for_status()
            yield app, client, {"Authorization": f"Bearer {r.json()['access_token']}"}
