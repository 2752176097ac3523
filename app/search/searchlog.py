"""The search log, written behind the response in batches (app/core/batching.py says why).

A search's id (`search_id`, which the click endpoint takes) is made here, not by the
database, so the response need not wait for the row.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.batching import BatchWriter
from app.core.db import utcnow
from app.search.models import SearchLog


async def _write(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(insert(SearchLog), rows)


class SearchLogBuffer(BatchWriter):
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], interval: float = 0.5, max_pending: int = 100_000
    ) -> None:
        super().__init__(sessionmaker, _write, name="search log", interval=interval, max_pending=max_pending)

    def add(self, **values: Any) -> str:
        """Queue one row; returns its search_id."""
        search_id = uuid.uuid4().hex
        self.append({"search_id": search_id, "at": utcnow(), **values})
        return search_id
