from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin


class StudyPath(IdMixin, TimestampMixin, Base):
    """An ordered reading list. The audience: holders of one of `roles`, narrowed to `departments`
    (and their sub-departments) when that list is not empty."""

    __tablename__ = "study_paths"
    __table_args__ = (Index("ix_study_paths_active", "active", "id"),)

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    roles: Mapped[list[Any]] = mapped_column(default=list)  # role ids
    departments: Mapped[list[Any]] = mapped_column(default=list)  # department ids
    due_at: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)  # false: withdrawn, kept with its history
    created_by: Mapped[str] = mapped_column(String(80))
    updated_by: Mapped[str] = mapped_column(String(80))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class StudyPathItem(Base):
    __tablename__ = "study_path_items"
    __table_args__ = (Index("ix_study_path_items_item", "item_id"),)

    path_id: Mapped[int] = mapped_column(BigId, ForeignKey("study_paths.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(default=0)
