"""Channel tables. No foreign keys to items on the event tables: they are analytics written
behind the response, and a batch must not fail (and wait forever) because an item went."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, utcnow

# ---------------------------------------------------------------- channel events (views, feedback)


class ChannelView(IdMixin, Base):
    """One read of an item on a channel."""

    __tablename__ = "channel_views"
    __table_args__ = (Index("ix_channel_views_channel_at_item", "channel", "at", "item_id"),)

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
