from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin

QUESTION_STATES = ("open", "answered", "resolved", "closed")


class ExpertProfile(TimestampMixin, Base):
    """A user who answers the questions of some categories (their subtrees included) and tags."""

    __tablename__ = "expert_profiles"

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    bio: Mapped[str] = mapped_column(String(2000), default="")
    categories: Mapped[list[Any]] = mapped_column(default=list)  # taxonomy node ids
    tags: Mapped[list[Any]] = mapped_column(default=list)  # tag names
    available: Mapped[bool] = mapped_column(default=True)  # false: on leave, receives no new questions
    created_by: Mapped[str] = mapped_column(String(80))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class ExpertQuestion(IdMixin, TimestampMixin, Base):
    __tablename__ = "expert_questions"
    __table_args__ = (
        Index("ix_expert_questions_asker", "asker_id", "state"),
        Index("ix_expert_questions_state", "state", "id"),
    )

    asker_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text, default="")
    categories: Mapped[list[Any]] = mapped_column(default=list)  # taxonomy node ids
    tags: Mapped[list[Any]] = mapped_column(default=list)  # tag names
    item_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("items.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="open")
    routing: Mapped[str] = mapped_column(String(16), default="experts")  # experts | fallback
    accepted_answer_id: Mapped[int | None] = mapped_column(BigId)
    draft_item_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("items.id", ondelete="SET NULL"))
    answered_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class QuestionRoute(Base):
    """Who a question was routed to (their to-do list)."""

    __tablename__ = "expert_question_routes"
    __table_args__ = (Index("ix_expert_question_routes_user", "user_id", "question_id"),)

    question_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("expert_questions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class ExpertAnswer(IdMixin, TimestampMixin, Base):
    __tablename__ = "expert_answers"
    __table_args__ = (Index("ix_expert_answers_question", "question_id", "id"),)

    question_id: Mapped[int] = mapped_column(BigId, ForeignKey("expert_questions.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    accepted: Mapped[bool] = mapped_column(default=False)
