"""Channel delivery tables: the change feed (app/channels/feed.py), screen-pop rules, events."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin, utcnow

Seq = BigInteger().with_variant(Integer(), "sqlite")


class ChannelFeed(Base):
    """One row: the last sequence number handed out and the highest one purged (`floor`). Writers
    take the next numbers with `UPDATE ... RETURNING`: the row lock queues them until commit, so
    sequence numbers become visible in commit order (a reader never skips a late commit)."""

    __tablename__ = "channel_feed"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Seq, default=0)
    floor: Mapped[int] = mapped_column(Seq, default=0)
    # Bumped by a transaction that changed what a channel shows without an event (valid_to moved
    # on an item still shown): the anonymous read cache (app/channels/publiccache.py) watches it
    # beside `seq`.
    silent: Mapped[int] = mapped_column(Seq, default=0, server_default="0")


class ChannelItemState(Base):
    """What a channel shows of an item right now, as the feed last told it (a row per item and
    channel it is shown on; no row: not shown)."""

    __tablename__ = "channel_item_states"

    item_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int]
    visibility: Mapped[str] = mapped_column(String(16))
    readers: Mapped[list[Any]]
    source: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(128))
    valid_to: Mapped[datetime | None] = mapped_column(index=True)  # the sweep looks for expiries
    shown_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChannelChange(Base):
    """One event of the feed. `readers`: the read sets before and after, joined (who must hear of
    it); `readers_after`: who sees the item after it."""

    __tablename__ = "channel_changes"
    __table_args__ = (Index("ix_channel_changes_channel_seq", "channel", "seq"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    channel: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[int] = mapped_column(BigId)
    version: Mapped[int | None]
    source: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(24))
    visibility: Mapped[str] = mapped_column(String(16))
    readers: Mapped[list[Any]]
    readers_after: Mapped[list[Any]]
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# ---------------------------------------------------------------- CTI screen pop (app/channels/screenpop.py)


class ScreenPopRule(IdMixin, TimestampMixin, Base):
    """What the agent's softphone shows for a call. A rule matches a call when every condition it
    states holds (conditions left empty match anything; at least one is set); its targets are the
    pinned items, categories and tags whose items are recommended."""

    __tablename__ = "screen_pop_rules"
    __table_args__ = (Index("ix_screen_pop_rules_enabled_priority", "enabled", "priority"),)

    name: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(default=True)
    priority: Mapped[int] = mapped_column(default=0)  # higher first
    # Conditions, stored normalized: digits only; IVR node path "1/3/2"; business code upper-case.
    called: Mapped[str | None] = mapped_column(String(32))
    ivr_path: Mapped[str | None] = mapped_column(String(200))
    business_code: Mapped[str | None] = mapped_column(String(64))
    caller_tags: Mapped[list[Any]] = mapped_column(default=list)  # any of them
    # Targets.
    category_ids: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    pinned_item_ids: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str | None] = mapped_column(String(80))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


# ---------------------------------------------------------------- end CTI screen pop


# ---------------------------------------------------------------- channel events (views, feedback)


class ChannelView(IdMixin, Base):
    """One read of an item on a channel."""

    __tablename__ = "channel_views"
    # actor/item: what one reader has read (app/study: learning paths, "what changed since you read it")
    __table_args__ = (
        Index("ix_channel_views_channel_at_item", "channel", "at", "item_id"),
        Index("ix_channel_views_actor_item", "actor", "item_id"),
    )

    at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[int] = mapped_column(BigId)
    version: Mapped[int]  # the version number served
    actor: Mapped[str | None] = mapped_column(String(80))  # client:N / user:N; null: anonymous
    address: Mapped[str | None] = mapped_column(String(64))  # anonymous callers only
    query: Mapped[str | None] = mapped_column(String(200))  # the question that led there
    search_id: Mapped[str | None] = mapped_column(String(32))


class ChannelViewDay(Base):
    """Views per day, channel and item, added to by every flush: `hot` sums at most 90 rows an item
    instead of counting raw views."""

    __tablename__ = "channel_view_days"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)  # UTC
    item_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    views: Mapped[int] = mapped_column(default=0)


class ChannelFeedback(IdMixin, Base):
    """The vote of one voter on one item on one channel: a later vote replaces the earlier one."""

    __tablename__ = "channel_feedback"
    __table_args__ = (Index("uq_channel_feedback_vote", "item_id", "channel", "voter", unique=True),)

    item_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(16))
    voter: Mapped[str] = mapped_column(String(120))  # user:N, client:N[/visitor:X], visitor:X, ip:A
    version: Mapped[int]  # the version number voted on
    helpful: Mapped[bool]
    comment: Mapped[str | None] = mapped_column(String(500))
    search_id: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(default=utcnow)
