"""Daily rollups of the raw events, so a report reads days, not events.

Views already have theirs (`channel_view_days`, kept by the channel event writer itself). The
search log and the votes are folded in by the `analytics.rollup` job (app/analytics/rollup.py).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.channels.models import ChannelFeedback, ChannelViewDay
from app.core.db import Base, BigId
from app.search.models import SearchLog

NO_CHANNEL = ""  # searches made outside a channel (the staff search without one)


class SearchDay(Base):
    """Searches of one normalized query on one channel and UTC day."""

    __tablename__ = "analytics_search_days"

    day: Mapped[date] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    normalized: Mapped[str] = mapped_column(String(500), primary_key=True)
    query: Mapped[str] = mapped_column(String(500))  # one of the raw spellings, to show
    searches: Mapped[int] = mapped_column(default=0)
    zero_results: Mapped[int] = mapped_column(default=0)
    clicked: Mapped[int] = mapped_column(default=0)  # searches with a result opened
    last_at: Mapped[datetime]


class FeedbackDay(Base):
    """The counted votes (each voter's latest) cast on one UTC day, per channel and item."""

    __tablename__ = "analytics_feedback_days"
    __table_args__ = (Index("ix_analytics_feedback_days_item", "item_id"),)

    day: Mapped[date] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    helpful: Mapped[int] = mapped_column(default=0)
    not_helpful: Mapped[int] = mapped_column(default=0)
    comments: Mapped[int] = mapped_column(default=0)


class RollupState(Base):
    """Per rolled-up source: how far it has been folded in (`watermark`) and when."""

    __tablename__ = "analytics_rollup_state"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    watermark: Mapped[datetime]
    rolled_at: Mapped[datetime]


# Indexes the rollup needs on the raw tables of other domains: the days a late click touched,
# the items whose votes changed, and views by day over every channel.
Index("ix_search_log_clicked_at", SearchLog.clicked_at)
Index("ix_channel_feedback_at", ChannelFeedback.at)
Index("ix_channel_view_days_day", ChannelViewDay.day, ChannelViewDay.item_id)
