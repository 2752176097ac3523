"""Rows written behind the response, in batches: the search log and the channel events.

A row per request would cost every read an INSERT and a COMMIT, and with SQLite every API
process would queue on its one write lock (measured on the search log: searches per second fell
by a third and p99 rose past a second under 16 clients). Instead each process keeps the rows of
the last moments in memory and writes them in one transaction every `interval` seconds, when
someone needs them now (before a list, a click), and at shutdown. The price: a process killed
without a shutdown loses the rows of its last `interval`. These rows are analytics, not content.

What a batch does with its rows is the writer's `write` function: a plain INSERT, or upserts
(`upsert` below) for rows that replace or add to existing ones. It runs inside the flush's
transaction, so a batch is written whole or not at all, and a failed batch waits for the next
flush, in order, with nothing half-written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import ColumnElement

log = logging.getLogger(__name__)

Row = dict[str, Any]
Write = Callable[[AsyncSession, list[Row]], Awaitable[Any]]


class BatchWriter:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        write: Write,
        *,
        name: str,
        interval: float = 0.5,
        max_pending: int = 100_000,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.write = write
        self.name = name
        self.interval = interval
        self.max_pending = max_pending  # beyond this (the database down for long) the oldest rows go
        self.dropped = 0
        self._pending: list[Row] = []
        self._flushing = asyncio.Lock()

    def append(self, row: Row) -> None:
        """Queue one row (no I/O: this is what the request path pays)."""
        self._pending.append(row)
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            del self._pending[:excess]
            self.dropped += excess
            log.warning("%s: %s rows dropped while the database did not take them", self.name, excess)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write every queued row in one transaction; on failure they stay queued."""
        async with self._flushing:
            rows, self._pending = self._pending, []
            if not rows:
                return 0
            try:
                async with self.sessionmaker() as session:
                    await self.write(session, rows)
                    await session.commit()
            except Exception:
                log.exception("%s: %s rows not written; retrying", self.name, len(rows))
                self._pending[:0] = rows
                return 0
            return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every `interval` until `stop`, then once more."""
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            await self.flush()


def upsert(
    session: AsyncSession,
    table: Table,
    keys: Sequence[str],
    update: Callable[[Any], dict[str, ColumnElement[Any] | Any]],
) -> Any:
    """`INSERT ... ON CONFLICT (keys) DO UPDATE SET update(excluded)` for the session's database
    (SQLite and PostgreSQL spell it alike, from different modules). Execute it with a list of rows;
    the rows of one call must not repeat a key (PostgreSQL refuses to update a row twice)."""
    dialect = session.get_bind().dialect.name
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=update(stmt.excluded))
