from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import Actor, People


@pytest.fixture
async def mgr(people: People) -> Actor:
    """A knowledge manager: holds taxonomy:manage."""
    return await people.make("liu.yang", role="kb_manager")


@pytest.fixture
async def agent(people: People) -> Actor:
    """A call-center agent: reads, never manages taxonomies."""
    return await people.make("zhang.wei", role="agent")


@pytest.fixture
def sm(app: Any) -> async_sessionmaker[AsyncSession]:
    """Open a fresh session per check, so reads see what the API committed."""
    return app.state.sessionmaker
