"""The to-do list's sections of this domain: exams to sit (`exams`) and answers to grade (`grading`)."""

from __future__ import annotations

from sqlalchemy import select

from app.learning import exams
from app.learning.models import Attempt, Exam
from app.learning.service import MANAGE, STUDY
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext


async def open_exams(ctx: TodoContext) -> TodoSection | None:
    """Open exams assigned to me that I have not submitted, the nearest deadline first (`due_at`:
    my attempt's deadline once started, else the window's end; `state`: not_started or in_progress)."""
    if ctx.principal.kind != "user" or not ctx.principal.can(STUDY):
        return None
    rows = await exams.open_for(ctx.session, ctx.principal, ctx.now)
    return TodoSection(
        count=len(rows),
        items=[
            TodoEntry(
                kind="exam",
                id=e.id,
                title=e.title,
                state="in_progress" if started else "not_started",
                due_at=due,
                created_at=e.created_at,
                link=f"/api/v1/me/exams/{e.id}",
            )
            for e, due, started in rows[: ctx.limit]
        ],
    )


async def grading(ctx: TodoContext) -> TodoSection | None:
    """For graders (learning:manage): submitted attempts whose short answers wait, oldest first."""
    if not ctx.principal.can(MANAGE):
        return None
    count = await exams.grading_count(ctx.session)
    rows = (
        await ctx.session.execute(
            select(Attempt, Exam.title)
            .join(Exam, Exam.id == Attempt.exam_id)
            .where(Attempt.state == "grading")
            .order_by(Attempt.submitted_at, Attempt.id)
            .limit(ctx.limit)
        )
    ).all()
    return TodoSection(
        count=count,
        items=[
            TodoEntry(
                kind="grading",
                id=a.id,
                title=title,
                state=a.state,
                created_at=a.submitted_at,
                link=f"/api/v1/learning/attempts/{a.id}",
            )
            for a, title in rows
        ],
    )
