from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class TodoEntry(BaseModel):
    """One thing to do; `link` is the API path of what to open."""

    kind: str = Field(description="review, error_report, review_due, expiring, ...")
    id: int = Field(description="The id of the thing itself (a task id, a version's item id ...)")
    title: str | None = None
    item_id: int | None = None
    version_no: int | None = None
    task_id: int | None = None
    state: str | None = None
    due_at: datetime | None = None
    created_at: datetime | None = None
    link: str


class TodoSection(BaseModel):
    count: int = Field(description="Everything waiting in this section")
    items: list[TodoEntry] = Field(description="The first entries (`limit`), oldest or most urgent first")


class TodoOut(BaseModel):
    total: int
    sections: dict[str, TodoSection] = Field(
        description="reviews (reviewers only), error_reports, review_due, expiring, unassigned (managers only), "
        "announcements (unread, mandatory first), exams (open, not submitted, nearest deadline "
        "first), grading (learning:manage: attempts waiting for short-answer grading), "
        "announcements (unread, mandatory first), expert_questions (routed to me, unanswered by me), "
        "answered_questions (my questions with an answer to accept), study (my unfinished learning "
        "paths), case_proposals (my best-practice drafts and rejected proposals), "
        "and any other domain's"
    )
