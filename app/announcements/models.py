"""公告: bulletins for staff and the public channels, and who has read them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin, utcnow

STATES = ("draft", "published", "withdrawn")
PRIORITIES = ("normal", "high", "urgent")


class Announcement(IdMixin, TimestampMixin, Base):
    __tablename__ = "announcements"
    __table_args__ = (Index("ix_announcements_state", "state", "id"),)

    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")  # sanitized HTML or Markdown
    body_format: Mapped[str] = mapped_column(String(16), default="html")
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    mandatory: Mapped[bool] = mapped_column(default=False)
    pinned: Mapped[bool] = mapped_column(default=False)
    # The audience: role ids, department ids (their subtrees too), channels. Empty lists do not narrow.
    roles: Mapped[list[Any]] = mapped_column(default=list)
    departments: Mapped[list[Any]] = mapped_column(default=list)
    channels: Mapped[list[Any]] = mapped_column(default=list)
    valid_from: Mapped[datetime | None]
    valid_to: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="draft")
    published_at: Mapped[datetime | None]
    withdrawn_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(80))
    updated_by: Mapped[str] = mapped_column(String(80))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class AnnouncementRead(Base):
    """A read receipt: the first read counts, later ones change nothing."""

    __tablename__ = "announcement_reads"
    __table_args__ = (Index("ix_announcement_reads_user", "user_id", "announcement_id"),)

    announcement_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("announcements.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(default=utcnow)
