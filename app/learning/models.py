"""Training and exams (培训考试): a question bank linked to the knowledge, papers, exams, attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin, utcnow

KINDS = ("single_choice", "multiple_choice", "true_false", "fill_in", "short_answer")
OBJECTIVE = frozenset({"single_choice", "multiple_choice", "true_false", "fill_in"})
QUESTION_STATES = ("draft", "approved", "retired")
ATTEMPT_STATES = ("in_progress", "grading", "completed")  # completed: every answer has its score


class Question(IdMixin, TimestampMixin, Base):
    """One question. `options`: [{key: "A", text}] for choice questions; `answer`: the keys of the
    right options, ["true"] / ["false"], the accepted fill-in answers, or a reference answer for
    graders (short answer)."""

    __tablename__ = "learning_questions"
    __table_args__ = (Index("ix_learning_questions_pick", "state", "kind", "difficulty"),)

    kind: Mapped[str] = mapped_column(String(16))
    stem: Mapped[str] = mapped_column(Text)
    options: Mapped[list[Any]] = mapped_column(default=list)
    answer: Mapped[list[Any]] = mapped_column(default=list)
    explanation: Mapped[str] = mapped_column(Text, default="")
    difficulty: Mapped[int] = mapped_column(default=2)  # 1 (easy) .. 5 (hard)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    needs_review: Mapped[bool] = mapped_column(default=False, index=True)
    review_reason: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | generated
    created_by: Mapped[str] = mapped_column(String(80))
    updated_by: Mapped[str] = mapped_column(String(80))
    approved_by: Mapped[str | None] = mapped_column(String(80))
    approved_at: Mapped[datetime | None]
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class QuestionCategory(Base):
    __tablename__ = "learning_question_categories"

    question_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("learning_questions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("taxonomy_nodes.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class QuestionItem(Base):
    """An item a question was written against, with that item's version then. `role`: `source`
    (the question tests it: a wrong answer sends the agent there) or `distractor` (a wrong option
    was taken from it)."""

    __tablename__ = "learning_question_items"

    question_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("learning_questions.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    version: Mapped[int]
    role: Mapped[str] = mapped_column(String(16), default="source")


class Paper(IdMixin, TimestampMixin, Base):
    """试卷: a frozen snapshot of its questions (`questions`: each with its score, answer key and
    linked items as they were when the paper was assembled), so later edits change no exam."""

    __tablename__ = "learning_papers"

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(16))  # rules | manual
    rules: Mapped[list[Any]] = mapped_column(default=list)
    questions: Mapped[list[Any]] = mapped_column(default=list)
    total_score: Mapped[float] = mapped_column(default=0)
    pass_score: Mapped[float] = mapped_column(default=0)
    created_by: Mapped[str] = mapped_column(String(80))


class Exam(IdMixin, TimestampMixin, Base):
    __tablename__ = "learning_exams"

    paper_id: Mapped[int] = mapped_column(BigId, ForeignKey("learning_papers.id", ondelete="RESTRICT"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    opens_at: Mapped[datetime]
    closes_at: Mapped[datetime] = mapped_column(index=True)
    time_limit_minutes: Mapped[int]
    pass_score: Mapped[float]
    # The audience as sent (role names, department ids, user ids); `ExamAudience` holds it for queries.
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="published")  # published | cancelled
    created_by: Mapped[str] = mapped_column(String(80))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class ExamAudience(Base):
    """One subject an exam is assigned to, as the ACL spells them: `role:3`, `dept:5` (and its
    subtree), `user:12`; a caller is in the audience when one of their subjects is here."""

    __tablename__ = "learning_exam_audience"

    exam_id: Mapped[int] = mapped_column(BigId, ForeignKey("learning_exams.id", ondelete="CASCADE"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)


class Attempt(IdMixin, Base):
    """One agent's take of one exam. `answers`: question id (as text) -> the saved answer;
    `results`: question id -> {score, correct, graded_by, comment} once scored."""

    __tablename__ = "learning_attempts"
    __table_args__ = (UniqueConstraint("exam_id", "user_id"), Index("ix_learning_attempts_state", "state", "deadline"))

    exam_id: Mapped[int] = mapped_column(BigId, ForeignKey("learning_exams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    department_id: Mapped[int | None] = mapped_column(BigId)  # the agent's department when they started
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime]
    saved_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    auto_submitted: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default="in_progress")
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    score: Mapped[float | None]
    passed: Mapped[bool | None]
    graded_at: Mapped[datetime | None]
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class LearningState(Base):
    """One row: how far the review-flag sweep has read the change feed (`channel_changes.seq`)."""

    __tablename__ = "learning_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_seq: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
