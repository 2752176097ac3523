"""Channel events: what each channel's readers open (views) and whether it helped (feedback).

Both are written behind the response by one batching writer per process (`ChannelEvents`, the
search log's `BatchWriter`, app/core/batching.py): a read only appends a dict to a list. A flush
writes, in one transaction, the raw views, adds them to the daily rollup `channel_view_days`
(upsert: views = views + n) and upserts the votes (a later vote of the same voter replaces the
earlier one). `hot` sums the rollup, at most `days` rows per item, never the raw views.

Who a vote belongs to (one vote per voter, item and channel counts):
- a user: the user;
- a channel client: the client, or — when it passes `X-Visitor-Id` on behalf of its end user (a
  WeChat or APP back end serving many people) — that visitor within the client;
- an anonymous caller: the `X-Visitor-Id` the front end sends (a random id it keeps in a cookie
  or local storage), else its address.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Select, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.access import Caller, ChannelCaller
from app.channels.models import ChannelFeedback, ChannelView, ChannelViewDay
from app.channels.ratelimit import RateLimit
from app.channels.service import shown, shown_item
from app.core.batching import BatchWriter, Row, upsert
from app.core.db import utcnow
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.schemas import Id, Schema
from app.knowledge.models import Item, ItemVersion

VIEW, VOTE = "view", "vote"
MAX_QUERY = 200
MAX_COMMENT = 500
VISITOR_ID = r"^[A-Za-z0-9_-]{8,64}$"
SEARCH_ID = r"^[0-9A-Za-z]{1,32}$"
CANDIDATES = 200  # the ranked items `hot` filters by what the caller sees
HOT_TTL = 30.0


# ---------------------------------------------------------------- the writer


async def write_events(session: AsyncSession, rows: list[Row]) -> None:
    views = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == VIEW]
    votes: dict[tuple[int, str, str], Row] = {}
    for r in rows:  # in arrival order: the last vote of a voter in the batch is the one
        if r["kind"] == VOTE:
            votes[(r["item_id"], r["channel"], r["voter"])] = {k: v for k, v in r.items() if k != "kind"}
    if views:
        await session.execute(insert(ChannelView), views)
        days = Counter((v["channel"], v["at"].date(), v["item_id"]) for v in views)
        table = ChannelViewDay.__table__
        await session.execute(
            upsert(session, table, ("channel", "day", "item_id"), lambda new: {"views": table.c.views + new.views}),
            [{"channel": c, "day": d, "item_id": i, "views": n} for (c, d, i), n in days.items()],
        )
    if votes:
        await session.execute(
            upsert(
                session,
                ChannelFeedback.__table__,
                ("item_id", "channel", "voter"),
                lambda new: {
                    "version": new.version,
                    "helpful": new.helpful,
                    "comment": new.comment,
                    "search_id": new.search_id,
                    "at": new.at,
                },
            ),
            list(votes.values()),
        )


class ChannelEvents(BatchWriter):
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        interval: float = 0.5,
        max_pending: int = 100_000,
        hot_ttl: float = HOT_TTL,
    ) -> None:
        super().__init__(sessionmaker, write_events, name="channel events", interval=interval, max_pending=max_pending)
        self.hot_ttl = hot_ttl
        self._ranking: dict[tuple[str, int], tuple[float, list[tuple[int, int]]]] = {}
        self._ranking_locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def ranking(self, session: AsyncSession, channel: str, days: int) -> list[tuple[int, int]]:
        """The channel's most viewed items over `days` (before any visibility filter), computed at
        most once per `hot_ttl` per process; concurrent callers wait for the one computation."""
        key = (channel, days)
        hit = self._ranking.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.hot_ttl:
            return hit[1]
        async with self._ranking_locks.setdefault(key, asyncio.Lock()):
            hit = self._ranking.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.hot_ttl:
                return hit[1]
            ranked = await most_viewed(session, channel, days, CANDIDATES)
            self._ranking[key] = (time.monotonic(), ranked)
            return ranked

    def forget_rankings(self) -> None:
        self._ranking.clear()

    def view(
        self,
        *,
        channel: str,
        item_id: int,
        version: int,
        actor: str | None,
        address: str | None,
        query: str | None,
        search_id: str | None,
    ) -> None:
        self.append(
            {
                "kind": VIEW,
                "at": utcnow(),
                "channel": channel,
                "item_id": item_id,
                "version": version,
                "actor": actor,
                "address": address,
                "query": query,
                "search_id": search_id,
            }
        )

    def vote(
        self,
        *,
        channel: str,
        item_id: int,
        version: int,
        voter: str,
        helpful: bool,
        comment: str | None,
        search_id: str | None,
    ) -> None:
        self.append(
            {
                "kind": VOTE,
                "at": utcnow(),
                "channel": channel,
                "item_id": item_id,
                "version": version,
                "voter": voter,
                "helpful": helpful,
                "comment": comment,
                "search_id": search_id,
            }
        )


def events_of(request: Request) -> ChannelEvents:
    return request.app.state.channel_events


def record_view(
    request: Request,
    caller: ChannelCaller,
    item_id: int,
    version: int,
    query: str | None = None,
    search_id: str | None = None,
) -> None:
    """Count a read of `item_id` (version number `version`) on the caller's channel. No I/O: the
    row is written with the next batch. `query`: the question that led there (kept to 200 chars)."""
    query = (query or "").strip()[:MAX_QUERY] or None
    events_of(request).view(
        channel=caller.channel,
        item_id=item_id,
        version=version,
        actor=None if caller.is_anonymous else caller.principal.actor,
        address=caller.address[:64] if caller.is_anonymous else None,
        query=query,
        search_id=(search_id or "")[:32] or None,
    )


def voter_of(caller: ChannelCaller, visitor_id: str | None) -> str:
    principal = caller.principal
    if principal.kind == "user":
        return principal.actor
    if caller.is_anonymous:
        return f"visitor:{visitor_id}" if visitor_id else f"ip:{caller.address[:64]}"
    return f"{principal.actor}/visitor:{visitor_id}" if visitor_id else principal.actor


# ---------------------------------------------------------------- reading


class HotItemOut(BaseModel):
    item_id: int
    version: int
    title: str
    question: str
    views: int


class HotOut(BaseModel):
    channel: str
    days: int
    items: list[HotItemOut]


def _views_per_item(channel: str, days: int) -> Select[tuple[int, int]]:
    since = utcnow().date() - timedelta(days=days - 1)
    return (
        select(ChannelViewDay.item_id, func.sum(ChannelViewDay.views).label("views"))
        .where(ChannelViewDay.channel == channel, ChannelViewDay.day >= since)
        .group_by(ChannelViewDay.item_id)
    )


async def most_viewed(session: AsyncSession, channel: str, days: int, limit: int) -> list[tuple[int, int]]:
    """(item id, views) over the last `days` UTC days (today included), most viewed first, ties by id."""
    per_item = _views_per_item(channel, days).subquery()
    stmt = select(per_item.c.item_id, per_item.c.views).order_by(per_item.c.views.desc(), per_item.c.item_id)
    return [(int(i), int(v)) for i, v in (await session.execute(stmt.limit(limit))).all()]


async def hot(
    session: AsyncSession, caller: ChannelCaller, days: int, limit: int, events: ChannelEvents | None = None
) -> list[HotItemOut]:
    """The items the caller sees on the channel now, most viewed over the last `days` UTC days
    (today included) first; ties by item id.

    With `events`, the ranking of the channel's top `CANDIDATES` comes from its cache (summing
    the rollup of a busy channel costs 0.2-5 s, see bench/channel_hot.py) and only those are
    filtered by what the caller sees now; a caller who sees fewer than `limit` of them (a narrow
    ACL) gets the full query."""
    if events is not None:
        ranked = await events.ranking(session, caller.channel, days)
        if ranked:
            views = dict(ranked)
            rows = (
                await session.execute(
                    select(Item.id, ItemVersion.number, ItemVersion.title, ItemVersion.question)
                    .join(ItemVersion, ItemVersion.id == Item.published_version_id)
                    .where(shown(caller), Item.id.in_(list(views)))
                )
            ).all()
            out = sorted(
                (HotItemOut(item_id=i, version=n, title=t, question=q, views=views[i]) for i, n, t, q in rows),
                key=lambda h: (-h.views, h.item_id),
            )
            if len(out) >= limit or len(ranked) < CANDIDATES:
                return out[:limit]
        else:
            return []
    return await _hot_query(session, caller, days, limit)


async def _hot_query(session: AsyncSession, caller: ChannelCaller, days: int, limit: int) -> list[HotItemOut]:
    per_item = _views_per_item(caller.channel, days).subquery()
    stmt = (
        select(Item.id, ItemVersion.number, ItemVersion.title, ItemVersion.question, per_item.c.views)
        .select_from(per_item)
        .join(Item, Item.id == per_item.c.item_id)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .where(shown(caller))
        .order_by(per_item.c.views.desc(), Item.id)
        .limit(limit)
    )
    return [
        HotItemOut(item_id=i, version=n, title=t, question=q, views=int(v))
        for i, n, t, q, v in (await session.execute(stmt)).all()
    ]


class ChannelHelpfulness(BaseModel):
    channel: str
    helpful: int
    not_helpful: int
    comments: int


class Helpfulness(BaseModel):
    item_id: int
    helpful: int
    not_helpful: int
    comments: int
    channels: list[ChannelHelpfulness]


async def helpfulness(session: AsyncSession, item_id: int) -> Helpfulness:
    """The counted votes on an item (each voter's latest), per channel and in all. Votes reach the
    table with their batch: flush the writer first for this process's latest ones."""
    rows = (
        await session.execute(
            select(
                ChannelFeedback.channel,
                func.sum(case((ChannelFeedback.helpful, 1), else_=0)),
                func.sum(case((ChannelFeedback.helpful, 0), else_=1)),
                func.count(ChannelFeedback.comment),
            )
            .where(ChannelFeedback.item_id == item_id)
            .group_by(ChannelFeedback.channel)
            .order_by(ChannelFeedback.channel)
        )
    ).all()
    channels = [
        ChannelHelpfulness(channel=c, helpful=int(h), not_helpful=int(n), comments=int(k)) for c, h, n, k in rows
    ]
    return Helpfulness(
        item_id=item_id,
        helpful=sum(c.helpful for c in channels),
        not_helpful=sum(c.not_helpful for c in channels),
        comments=sum(c.comments for c in channels),
        channels=channels,
    )


# ---------------------------------------------------------------- routes

router = APIRouter(prefix="/channels/{channel}", tags=["channels"], responses=PROBLEMS, dependencies=[RateLimit])


@router.get("/hot", response_model=HotOut)
async def hot_items(
    request: Request,
    session: DbSession,
    caller: Caller,
    response: Response,
    days: Annotated[int, Query(ge=1, le=90, description="the last N days (UTC, today included)")] = 7,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> HotOut:
    """The most viewed items on the channel over the last `days`, among those the caller sees there
    now. The counts are up to about half a minute old (views are written in batches, the ranking
    is cached per process for `hot_ttl` = 30 s)."""
    items = await hot(session, caller, days, limit, events_of(request))
    response.headers["Cache-Control"] = f"{'public' if caller.is_anonymous else 'private'}, max-age=60"
    return HotOut(channel=caller.channel, days=days, items=items)


class FeedbackIn(Schema):
    helpful: bool
    comment: str | None = Field(None, max_length=MAX_COMMENT, description="trimmed; empty = none")
    search_id: str | None = Field(None, pattern=SEARCH_ID, description="the search that led to the item")

    @field_validator("comment")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class FeedbackOut(BaseModel):
    item_id: int
    version: int
    helpful: bool


@router.post("/items/{item_id}/feedback", status_code=status.HTTP_202_ACCEPTED, response_model=FeedbackOut)
async def feedback(
    request: Request,
    session: DbSession,
    caller: Caller,
    item_id: Id,
    body: FeedbackIn,
    visitor_id: Annotated[
        str | None,
        Header(
            alias="X-Visitor-Id",
            pattern=VISITOR_ID,
            description="anonymous callers (and clients for their end users): a stable random id of the visitor, "
            "8-64 of A-Z a-z 0-9 _ -; one vote per visitor counts",
        ),
    ] = None,
) -> FeedbackOut:
    """Helpful or not, with an optional comment, on an item the caller sees on the channel. One vote
    per voter counts; voting again replaces the earlier vote. Written with the next batch (202)."""
    _, version = await shown_item(session, caller, item_id)
    events_of(request).vote(
        channel=caller.channel,
        item_id=item_id,
        version=version.number,
        voter=voter_of(caller, visitor_id),
        helpful=body.helpful,
        comment=body.comment,
        search_id=body.search_id,
    )
    return FeedbackOut(item_id=item_id, version=version.number, helpful=body.helpful)
