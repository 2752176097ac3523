"""Anonymous reads of `items/{id}` without the database: the website FAQ's hot path.

An anonymous visitor of a public channel sees what the change feed says that channel shows to
the ACL subject "public": every change to it (publish, new version, unpublish, archive,
visibility, readers, expiry and start of validity) is an event of `channel_changes`, numbered by
the one-row counter `channel_feed`. So a rendered anonymous answer stays right for as long as
no event names its item, and the process keeps it (`PublicCache`), checking the feed's head:

- after every commit of this process that wrote an event (a session `after_commit` hook), so a
  reader right after an edit in the same process sees the edit;
- otherwise at most every `KB_CHANNEL_CACHE_SECONDS` (default 0.2 s), for what other API
  processes wrote. Anonymous content is `public, max-age=60` anyway: shared caches may keep it
  far longer than this.

When the head moved, the items named by the events since are dropped (all entries after a
silent change, `channel_feed.silent`: valid_to moved on an item still shown). The validity
window is checked at every hit, so an answer leaves at `valid_to` to the second, before the
sweep's `expired` event. A miss reads the database as
before (`service.shown_item`), and only anonymous 200s fill the cache.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from cachetools import LRUCache
from fastapi import Request, Response
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.channels.models import ChannelChange, ChannelFeed
from app.core.db import utcnow
from app.core.etag import not_modified

FEED_ROW = 1
MAX_ITEMS = 50_000  # items kept per process, each with its renderings (channel, max_bytes, base URL)
_DROP_LIMIT = 1_000  # more events since the last look: drop everything
_MOVED = "channel_feed_moved"
_generation = 0  # commits of this process that wrote feed events


def feed_moved(session: AsyncSession) -> None:
    """Called by the feed's writers: once this transaction commits, caches look at the feed again."""
    session.sync_session.info[_MOVED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    global _generation
    if session.info.pop(_MOVED, False):
        _generation += 1


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_MOVED, None)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One anonymous answer as sent: body and headers, and when it stops being valid."""

    etag: str
    body: bytes
    cache_control: str
    last_modified: str | None
    version: int
    valid_from: datetime | None
    valid_to: datetime | None

    def valid_now(self) -> bool:
        at = utcnow()
        return (self.valid_from is None or self.valid_from <= at) and (self.valid_to is None or self.valid_to > at)

    def response(self, request: Request) -> Response:
        response = item_response(request, self.etag, self.cache_control, self.last_modified, self.body)
        assert response is not None  # with a body there is always an answer
        return response


def item_response(
    request: Request, etag: str, cache_control: str, last_modified: str | None, body: bytes | None
) -> Response | None:
    """`items/{id}`'s answer: 304 when the client's copy is current, else 200 with `body`; None
    when the copy is stale and `body` is None (the caller renders, then calls again)."""
    response = Response(media_type="application/json")
    headers = response.headers
    headers["Vary"] = "Authorization"
    if last_modified is not None:
        headers["Last-Modified"] = last_modified
    if not_modified(request, response, etag, cache_control):
        response.status_code = 304
        return response
    if body is None:
        return None
    response.body = body
    headers["Content-Length"] = str(len(body))
    return response


Key = tuple[str, int, str]  # channel, max_bytes, base URL


class PublicCache:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], seconds: float) -> None:
        self.sessionmaker, self.seconds = sessionmaker, seconds
        self.items: LRUCache[int, dict[Key, Rendered]] = LRUCache(maxsize=MAX_ITEMS)
        self.head: tuple[int, int] | None = None  # channel_feed's (seq, silent) at the last look
        self.checked = -1e9
        self.generation = -1
        self._lock = asyncio.Lock()
        self.stats = {"hits": 0, "misses": 0, "head_checks": 0, "dropped": 0}

    def _stale(self) -> bool:
        return self.generation != _generation or time.monotonic() - self.checked >= self.seconds

    async def _refresh(self) -> None:
        async with self._lock:
            if not self._stale():
                return
            generation, now = _generation, time.monotonic()  # before the read: a later commit looks again
            async with self.sessionmaker() as s:
                row = (
                    await s.execute(select(ChannelFeed.seq, ChannelFeed.silent).where(ChannelFeed.id == FEED_ROW))
                ).first()
                head = (int(row[0]), int(row[1])) if row is not None else (0, 0)
                if head != self.head:
                    await self._drop_changed(s, head)
                    self.head = head
            self.stats["head_checks"] += 1
            self.checked, self.generation = now, generation

    async def _drop_changed(self, session: AsyncSession, head: tuple[int, int]) -> None:
        """Drop the items named by the events since the last look; everything when that cannot be
        told (first look, a silent change, events purged or more than `_DROP_LIMIT` of them)."""
        seq, silent = head
        if self.head is not None and silent == self.head[1] and seq - self.head[0] <= _DROP_LIMIT:
            rows = (
                await session.execute(
                    select(ChannelChange.seq, ChannelChange.item_id).where(
                        ChannelChange.seq > self.head[0], ChannelChange.seq <= seq
                    )
                )
            ).all()
            if len(rows) == seq - self.head[0]:
                for item_id in {item_id for _, item_id in rows}:
                    if self.items.pop(item_id, None) is not None:
                        self.stats["dropped"] += 1
                return
        self.stats["dropped"] += len(self.items)
        self.items.clear()

    async def get(self, item_id: int, key: Key) -> Rendered | None:
        if self._stale():
            await self._refresh()
        found = self.items.get(item_id)
        hit = found.get(key) if found is not None else None
        if hit is None or not hit.valid_now():
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return hit

    def put(self, item_id: int, key: Key, rendered: Rendered, head: tuple[int, int] | None) -> None:
        """Keep an answer read from the database after the feed was seen at `head`."""
        if head is None or head != self.head:
            return  # looked at the feed again since that read began: the answer may predate the head
        found = self.items.get(item_id)
        if found is None:
            self.items[item_id] = found = {}
        found[key] = rendered
