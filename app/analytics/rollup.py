"""Folding the raw search log and votes into the daily tables (app/analytics/models.py).

A run re-rolls whole days and whole items, never adds to a count, so running it twice, or again
after a crash half-way, gives the same numbers:

- searches: every UTC day from the day of (watermark - LAG) to today is recomputed from the raw
  log (DELETE the day's rows, INSERT ... SELECT ... GROUP BY), one transaction per day; a day a
  late click landed in (a search of an earlier day opened after the watermark) is re-rolled too.
  Today is re-rolled on every run, so the current day's figures are those of the last run.
- votes: a vote is replaced when its voter votes again (one counts), which moves it from one day
  to another; so every item with a vote cast since (watermark - LAG) has all its days recomputed
  from its votes, a batch of items per transaction.

LAG covers rows that reach the database after the moment they carry (the batch writers hold them
for `interval` seconds, longer while the database is down): rows older than that when they arrive
are only counted when their day is re-rolled again. The watermark is the start of the last run.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, case, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.analytics.models import NO_CHANNEL, FeedbackDay, RollupState, SearchDay
from app.channels.models import ChannelFeedback
from app.core.db import utcnow
from app.search.models import SearchLog

LAG = timedelta(minutes=10)
ITEM_BATCH = 500
SEARCHES, VOTES = "search", "feedback"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def _state(session: AsyncSession, source: str) -> RollupState | None:
    return await session.get(RollupState, source)


async def _save_state(sessionmaker: async_sessionmaker[AsyncSession], source: str, watermark: datetime) -> None:
    async with sessionmaker() as s:
        state = await _state(s, source)
        if state is None:
            s.add(RollupState(source=source, watermark=watermark, rolled_at=utcnow()))
        else:
            state.watermark, state.rolled_at = watermark, utcnow()
        await s.commit()


async def roll_search_day(session: AsyncSession, day: date) -> None:
    """Recompute one day of `analytics_search_days` from the search log (in the caller's transaction)."""
    lo, hi = day_start(day), day_start(day + timedelta(days=1))
    channel = func.coalesce(SearchLog.channel, NO_CHANNEL)
    rows = (
        select(
            literal(day, Date),
            channel,
            SearchLog.normalized,
            func.max(SearchLog.query),
            func.count(),
            func.sum(case((SearchLog.zero_result, 1), else_=0)),
            func.count(SearchLog.clicked_item_id),
            func.max(SearchLog.at),
        )
        .where(SearchLog.at >= lo, SearchLog.at < hi, SearchLog.normalized != "")
        .group_by(channel, SearchLog.normalized)
    )
    await session.execute(delete(SearchDay).where(SearchDay.day == day))
    await session.execute(
        insert(SearchDay).from_select(
            ["day", "channel", "normalized", "query", "searches", "zero_results", "clicked", "last_at"], rows
        )
    )


async def roll_searches(sessionmaker: async_sessionmaker[AsyncSession], now: datetime | None = None) -> int:
    """Re-roll the days with new searches or clicks since the last run; returns the days rolled."""
    now = now or utcnow()
    async with sessionmaker() as s:
        state = await _state(s, SEARCHES)
        if state is None:
            first_at = await s.scalar(select(func.min(SearchLog.at)))
        else:
            since = state.watermark - LAG
            late_click = await s.scalar(select(func.min(SearchLog.at)).where(SearchLog.clicked_at >= since))
            first_at = min(since, late_click) if late_click is not None else since
    days = 0
    if first_at is not None:
        day = first_at.date()
        while day <= now.date():
            async with sessionmaker() as s:
                await roll_search_day(s, day)
                await s.commit()
            day += timedelta(days=1)
            days += 1
    await _save_state(sessionmaker, SEARCHES, now)
    return days


async def roll_item_votes(session: AsyncSession, item_ids: list[int]) -> None:
    """Recompute every day of these items in `analytics_feedback_days` from their counted votes."""
    counts: Counter[tuple[date, str, int, str]] = Counter()
    rows = await session.execute(
        select(
            ChannelFeedback.item_id,
            ChannelFeedback.channel,
            ChannelFeedback.at,
            ChannelFeedback.helpful,
            ChannelFeedback.comment.is_not(None),
        ).where(ChannelFeedback.item_id.in_(item_ids))
    )
    for item_id, channel, at, helpful, commented in rows.all():
        key = (at.date(), channel, item_id)
        counts[(*key, "helpful" if helpful else "not_helpful")] += 1
        if commented:
            counts[(*key, "comments")] += 1
    out: dict[tuple[date, str, int], dict[str, Any]] = {}
    for (day, channel, item_id, kind), n in counts.items():
        row = out.setdefault(
            (day, channel, item_id),
            {"day": day, "channel": channel, "item_id": item_id, "helpful": 0, "not_helpful": 0, "comments": 0},
        )
        row[kind] = n
    await session.execute(delete(FeedbackDay).where(FeedbackDay.item_id.in_(item_ids)))
    if out:
        await session.execute(insert(FeedbackDay), list(out.values()))


async def roll_votes(sessionmaker: async_sessionmaker[AsyncSession], now: datetime | None = None) -> int:
    """Re-roll the items with votes cast since the last run; returns the items rolled."""
    now = now or utcnow()
    async with sessionmaker() as s:
        state = await _state(s, VOTES)
        stmt = select(ChannelFeedback.item_id).distinct()
        if state is not None:
            stmt = stmt.where(ChannelFeedback.at >= state.watermark - LAG)
        item_ids = sorted((await s.scalars(stmt)).all())
    for i in range(0, len(item_ids), ITEM_BATCH):
        async with sessionmaker() as s:
            await roll_item_votes(s, item_ids[i : i + ITEM_BATCH])
            await s.commit()
    await _save_state(sessionmaker, VOTES, now)
    return len(item_ids)


async def rollup(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    now = utcnow()
    return {"search_days": await roll_searches(sessionmaker, now), "vote_items": await roll_votes(sessionmaker, now)}


async def rolled_at(session: AsyncSession) -> datetime | None:
    """When the rollup last finished (the older of its two sources); None: never."""
    times = (await session.scalars(select(RollupState.rolled_at))).all()
    return min(times) if len(times) == 2 else None
