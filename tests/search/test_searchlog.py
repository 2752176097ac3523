"""The search log written behind the response: batches, retries, and nothing lost at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from app.core.config import Settings
from app.main import create_app
from app.search.models import SearchLog
from app.search.searchlog import SearchLogBuffer


def row(query: str, total: int = 1) -> dict[str, Any]:
    return {
        "actor": "user:7",
        "channel": "agent",
        "query": query,
        "normalized": query,
        "filters": {},
        "total": total,
        "zero_result": total == 0,
        "took_ms": 3.2,
    }


async def count(app: Any) -> int:
    async with app.state.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(SearchLog)) or 0)


async def test_rows_are_written_in_one_batch_with_their_ids(app: Any) -> None:
    buffer = SearchLogBuffer(app.state.sessionmaker)
    ids = [buffer.add(**row(q)) for q in ("宽带上不了网", "寬頻報修", "5G畅享套餐 资费")]
    assert len(set(ids)) == 3 and buffer.pending == 3
    assert await count(app) == 0
    assert await buffer.flush() == 3
    async with app.state.sessionmaker() as s:
        stored = (await s.scalars(select(SearchLog).order_by(SearchLog.id))).all()
    assert [(r.search_id, r.query) for r in stored] == list(
        zip(ids, ["宽带上不了网", "寬頻報修", "5G畅享套餐 资费"], strict=True)
    )
    assert await buffer.flush() == 0  # nothing twice


async def test_rows_wait_while_the_database_refuses_them(app: Any) -> None:
    buffer = SearchLogBuffer(app.state.sessionmaker)
    taken = buffer.add(**row("信用卡挂失"))
    async with app.state.sessionmaker() as s:  # a row with the same search id: the batch fails as a whole
        s.add(SearchLog(search_id=taken, **row("already there")))
        await s.commit()
    buffer.add(**row("电费缴纳"))
    assert await buffer.flush() == 0
    assert buffer.pending == 2 and await count(app) == 1  # kept for the next flush, nothing half-written
    async with app.state.sessionmaker() as s:
        await s.execute(SearchLog.__table__.delete())
        await s.commit()
    assert await buffer.flush() == 2 and buffer.pending == 0
    assert await count(app) == 2


async def test_the_oldest_rows_go_when_too_many_wait() -> None:
    buffer = SearchLogBuffer(None, max_pending=3)  # type: ignore[arg-type]
    for q in "一二三四五":
        buffer.add(**row(q))
    assert buffer.pending == 3 and buffer.dropped == 2
    assert [r["query"] for r in buffer._pending] == ["三", "四", "五"]


async def test_the_background_flush_and_the_shutdown_flush(settings: Settings, app: Any) -> None:
    application = create_app(settings.model_copy(update={"data_dir": settings.data_dir / "own"}))
    async with LifespanManager(application):
        buffer = application.state.search_log
        buffer.add(**row("燃气报装"))
        for _ in range(40):  # written within the interval without anyone asking
            if await count(app) == 1:
                break
            await asyncio.sleep(0.05)
        assert await count(app) == 1
        buffer.interval = 3600  # nothing more happens on its own ...
        await asyncio.sleep(0.6)
        buffer.add(**row("停电查询"))
    assert await count(app) == 2  # ... but shutdown writes what is left
