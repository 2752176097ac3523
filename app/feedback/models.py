"""Tasks for item owners: error reports (纠错) from agents, and review / expiry reminders."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin

KINDS = ("error_report", "review_due", "expiring")
SYSTEM_KINDS = ("review_due", "expiring")
CATEGORIES = ("outdated", "wrong", "unclear", "missing")
STATES = ("open", "accepted", "fixed", "dismissed")
UNRESOLVED = ("open", "accepted")
_UNRESOLVED_SQL = "state IN ('open', 'accepted')"


class Task(IdMixin, TimestampMixin, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # One unresolved report per reporter, item and category: a repeat answers the existing one.
        Index(
            "uq_tasks_one_open_report",
            "reporter_id",
            "item_id",
            "category",
            unique=True,
            sqlite_where=text(f"kind = 'error_report' AND {_UNRESOLVED_SQL}"),
            postgresql_where=text(f"kind = 'error_report' AND {_UNRESOLVED_SQL}"),
        ),
        # One unresolved reminder per item and kind: the reminder job never makes a second one.
        Index(
            "uq_tasks_one_open_reminder",
            "item_id",
            "kind",
            unique=True,
            sqlite_where=text(f"kind IN ('review_due', 'expiring') AND {_UNRESOLVED_SQL}"),
            postgresql_where=text(f"kind IN ('review_due', 'expiring') AND {_UNRESOLVED_SQL}"),
        ),
        Index("ix_tasks_assignee", "assignee_id", "state", "kind"),
        Index("ix_tasks_item", "item_id", "kind", "state"),
        Index("ix_tasks_reporter", "reporter_id", "created_at"),
    )

    kind: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("items.id", ondelete="CASCADE"))
    # The version the report is about (the published one when the report did not say; for reminders
    # the published version when the task was made).
    version_no: Mapped[int | None]
    # The item's owner; none: the item has no owner, holders of feedback:manage see it as unassigned.
    assignee_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    reporter_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    category: Mapped[str | None] = mapped_column(String(16))  # error reports only
    comment: Mapped[str] = mapped_column(String(2000), default="")
    # Reminders: the review date (as midnight UTC) or the valid_to they are about.
    due_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="open")
    resolution_note: Mapped[str | None] = mapped_column(String(2000))  # a dismissal's reason, a fix's note
    fixed_version: Mapped[int | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    updated_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}  # optimistic locking: the ETag
