"""The change feed: what each channel shows, and an ordered log of every change to it.

`reconcile(session, item_ids)` compares what every channel shows of these items NOW (published,
valid now, the channel in the published version's `channels`) with what the feed last said
(`channel_item_states`) and appends the difference to `channel_changes`. It runs in the writer's
transaction (workflow, item PATCH, ACL changes, the search index jobs as a safety net) and is
idempotent: a second call finds nothing to say.

Ordering: sequence numbers come from the one-row counter `channel_feed` (`UPDATE ... RETURNING`),
whose row lock holds the next writer until this one commits; so numbers become visible in commit
order and a reader following `seq > cursor` never skips a transaction that committed late (an
autoincrement id would: a transaction can take id 10 and commit after the one that took 11).
Writers with nothing to say never take the lock.

This module is imported by the knowledge services: it must not import routers or app.knowledge.deps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, delete, exists, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.models import ChannelChange, ChannelFeed, ChannelItemState
from app.channels.publiccache import feed_moved
from app.core.db import utcnow
from app.knowledge import acl
from app.knowledge.models import Item, ItemVersion
from app.search.documents import CHANNELS

KINDS = ("published", "updated", "unpublished", "archived", "expired", "visibility_changed")
GONE = frozenset({"unpublished", "archived", "expired"})  # the item left the channel
FEED_ROW = 1
SWEEP_BATCH = 500
RECONCILE_BATCH = 500


@dataclass(frozen=True, slots=True)
class View:
    """What one channel shows of one item."""

    version: int
    visibility: str
    readers: tuple[str, ...]
    source: str | None
    external_id: str | None
    valid_to: datetime | None


@dataclass(slots=True)
class Event:
    channel: str
    item_id: int
    kind: str
    before: View | None
    after: View | None
    visibility: str

    def row(self, seq: int, at: datetime) -> dict[str, Any]:
        shown = self.after or self.before
        assert shown is not None
        before = set(self.before.readers) if self.before else set()
        after = set(self.after.readers) if self.after else set()
        return {
            "seq": seq,
            "channel": self.channel,
            "item_id": self.item_id,
            "version": shown.version,
            "source": shown.source,
            "external_id": shown.external_id,
            "kind": self.kind,
            "visibility": self.visibility,
            "readers": sorted(before | after),
            "readers_after": sorted(after),
            "at": at,
        }


def _gone_kind(item: Any, now: datetime) -> str:
    """Why an item stopped being shown on a channel."""
    if item is not None and item.status == "archived":
        return "archived"
    if item is not None and item.status == "published" and item.valid_to is not None and item.valid_to <= now:
        return "expired"
    return "unpublished"  # unpublished, deleted, not valid yet, or the published version dropped the channel


async def _current(
    session: AsyncSession, ids: list[int], now: datetime
) -> tuple[dict[int, Any], dict[tuple[int, str], View]]:
    """The items (id -> row, missing ones left out) and what each channel shows of them now."""
    rows = (
        await session.execute(
            select(
                Item.id,
                Item.status,
                Item.visibility,
                Item.valid_from,
                Item.valid_to,
                Item.source,
                Item.external_id,
                Item.published_version_id,
                ItemVersion.number,
                ItemVersion.channels,
            )
            .outerjoin(ItemVersion, ItemVersion.id == Item.published_version_id)
            .where(Item.id.in_(ids))
        )
    ).all()
    items = {r.id: r for r in rows}
    readers = await acl.readers_of_many(session, list(items))
    views: dict[tuple[int, str], View] = {}
    for r in rows:
        if r.status != "published" or r.number is None or not acl.is_valid_at(r, now):  # type: ignore[arg-type]
            continue
        view = View(r.number, r.visibility, tuple(readers.get(r.id, [])), r.source, r.external_id, r.valid_to)
        for channel in CHANNELS:
            if acl.shown_on(r, channel):  # type: ignore[arg-type]
                views[(r.id, channel)] = view
    return items, views


async def _stored(session: AsyncSession, ids: list[int]) -> dict[tuple[int, str], View]:
    rows = (await session.scalars(select(ChannelItemState).where(ChannelItemState.item_id.in_(ids)))).all()
    return {
        (s.item_id, s.channel): View(
            s.version, s.visibility, tuple(s.readers or []), s.source, s.external_id, s.valid_to
        )
        for s in rows
    }


def _diff(
    items: dict[int, Any], now_views: dict[tuple[int, str], View], stored: dict[tuple[int, str], View], now: datetime
) -> tuple[list[Event], list[tuple[int, str]]]:
    """The events, and the (item, channel) states that changed silently (valid_to moved)."""
    events: list[Event] = []
    silent: list[tuple[int, str]] = []
    for key in sorted(set(now_views) | set(stored)):
        item_id, channel = key
        before, after = stored.get(key), now_views.get(key)
        if before == after:
            continue
        if before is None:
            assert after is not None
            events.append(Event(channel, item_id, "published", None, after, after.visibility))
        elif after is None:
            item = items.get(item_id)
            events.append(
                Event(
                    channel,
                    item_id,
                    _gone_kind(item, now),
                    before,
                    None,
                    item.visibility if item is not None else before.visibility,
                )
            )
        elif (before.version, before.source, before.external_id) != (after.version, after.source, after.external_id):
            events.append(Event(channel, item_id, "updated", before, after, after.visibility))
        elif (before.visibility, before.readers) != (after.visibility, after.readers):
            events.append(Event(channel, item_id, "visibility_changed", before, after, after.visibility))
        else:
            silent.append(key)
    return events, silent


async def _take_seqs(session: AsyncSession, n: int) -> int:
    """Reserve `n` sequence numbers (n=0: only take the lock); returns the last one. The row lock is
    held until the transaction ends."""
    stmt = (
        update(ChannelFeed).where(ChannelFeed.id == FEED_ROW).values(seq=ChannelFeed.seq + n).returning(ChannelFeed.seq)
    )
    last = (await session.execute(stmt)).scalar_one_or_none()
    if last is None:  # a new (or emptied) database: create the row, whoever wins the race
        ins = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        await session.execute(ins(ChannelFeed).values(id=FEED_ROW, seq=0, floor=0).on_conflict_do_nothing())
        last = (await session.execute(stmt)).scalar_one()
    return int(last)


async def reconcile(session: AsyncSession, item_ids: list[int] | set[int]) -> list[dict[str, Any]]:
    """Bring the feed up to date for these items, in the caller's transaction (no commit). Returns
    the events appended (empty when the feed already says what the channels show)."""
    ids = sorted(set(item_ids))
    if len(ids) > RECONCILE_BATCH:  # a category's grants changed: thousands of items
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), RECONCILE_BATCH):
            out += await reconcile(session, ids[start : start + RECONCILE_BATCH])
        return out
    if not ids:
        return []
    await session.flush()
    now = utcnow()
    items, views = await _current(session, ids, now)
    events, silent = _diff(items, views, await _stored(session, ids), now)
    if not events and not silent:
        return []
    # Something changed: under the feed's lock, read again what the last writer committed (on
    # PostgreSQL each statement sees every commit before it), so two writers never both report it.
    await _take_seqs(session, 0)
    items, views = await _current(session, ids, now)
    stored = await _stored(session, ids)
    events, silent = _diff(items, views, stored, now)
    rows: list[dict[str, Any]] = []
    feed_moved(session)
    if silent:
        await session.execute(
            update(ChannelFeed).where(ChannelFeed.id == FEED_ROW).values(silent=ChannelFeed.silent + 1)
        )
    if events:
        last = await _take_seqs(session, len(events))
        first = last - len(events) + 1
        rows = [e.row(first + i, now) for i, e in enumerate(events)]
        await session.execute(insert(ChannelChange), rows)
    keys = [(e.item_id, e.channel) for e in events] + silent
    if keys:  # one DELETE and one INSERT for the whole batch
        await session.execute(
            delete(ChannelItemState).where(tuple_(ChannelItemState.item_id, ChannelItemState.channel).in_(keys))
        )
    states = [
        {
            "item_id": key[0],
            "channel": key[1],
            "version": view.version,
            "visibility": view.visibility,
            "readers": list(view.readers),
            "source": view.source,
            "external_id": view.external_id,
            "valid_to": view.valid_to,
            "shown_at": now,
        }
        for key in keys
        if (view := views.get(key)) is not None
    ]
    if states:
        await session.execute(insert(ChannelItemState), states)
    return rows


# ---------------------------------------------------------------- the scheduled sweep


async def due_items(session: AsyncSession, now: datetime, limit: int = SWEEP_BATCH) -> list[int]:
    """Items whose validity boundary passed since the feed last spoke of them: shown but expired
    (valid_to <= now), or published with a valid_from now passed and shown nowhere yet."""
    expired = (
        await session.scalars(
            select(ChannelItemState.item_id)
            .distinct()
            .where(ChannelItemState.valid_to <= now)
            .order_by(ChannelItemState.item_id)
            .limit(limit)
        )
    ).all()
    starting = (
        await session.scalars(
            select(Item.id)
            .join(ItemVersion, ItemVersion.id == Item.published_version_id)
            .where(
                Item.status == "published",
                Item.valid_from.is_not(None),
                acl.valid_filter(now),
                cast(ItemVersion.channels, String).like('%"%'),  # shown on at least one channel
                ~exists().where(ChannelItemState.item_id == Item.id),
            )
            .order_by(Item.id)
            .limit(limit)
        )
    ).all()
    return sorted(set(expired) | set(starting))


async def purge(session: AsyncSession, retention_days: float, now: datetime | None = None) -> int:
    """Delete the events older than the retention and raise `floor` past them; returns the new floor
    (0: nothing was ever purged). Cursors below the floor answer 410 `resync_required`."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    top = await session.scalar(select(func.max(ChannelChange.seq)).where(ChannelChange.at < cutoff))
    if top is None:
        return await feed_floor(session)
    await _take_seqs(session, 0)
    await session.execute(delete(ChannelChange).where(ChannelChange.seq <= top))
    await session.execute(
        update(ChannelFeed).where(ChannelFeed.id == FEED_ROW, ChannelFeed.floor < top).values(floor=top)
    )
    return await feed_floor(session)


# ---------------------------------------------------------------- reading


async def feed_position(session: AsyncSession) -> tuple[int, int]:
    """(head, floor): the last committed sequence number and the highest purged one."""
    row = (await session.execute(select(ChannelFeed.seq, ChannelFeed.floor).where(ChannelFeed.id == FEED_ROW))).first()
    return (int(row.seq), int(row.floor)) if row is not None else (0, 0)


async def feed_floor(session: AsyncSession) -> int:
    return (await feed_position(session))[1]


async def read_events(session: AsyncSession, channel: str, after: int, scan: int) -> list[ChannelChange]:
    """Up to `scan` events of `channel` after `after`, in order (the caller filters by ACL)."""
    return list(
        (
            await session.scalars(
                select(ChannelChange)
                .where(and_(ChannelChange.channel == channel, ChannelChange.seq > after))
                .order_by(ChannelChange.seq)
                .limit(scan)
            )
        ).all()
    )
