"""Every section of the to-do list, in the order they appear. A new domain adds one line."""

from __future__ import annotations

from app.announcements import todo as announcements
from app.cases import todo as cases
from app.core.pagination import PageParams
from app.experts import todo as experts
from app.feedback import todo as feedback
from app.knowledge import proposals, workflow
from app.learning import todo as learning
from app.study import todo as study
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext, count_of, todo_section


async def reviews(ctx: TodoContext) -> TodoSection | None:
    """Versions in review the caller may review (GET /reviews' queue), oldest first."""
    if not ctx.principal.can("knowledge:review") and not proposals.approvable_types(ctx.principal):
        return None
    four_eyes = ctx.settings.four_eyes
    count = await count_of(ctx.session, workflow.review_queue_stmt(ctx.principal, "in_review", four_eyes))
    rows, _ = await workflow.review_queue(
        ctx.session, ctx.principal, PageParams(ctx.limit, None), "in_review", four_eyes
    )
    return TodoSection(
        count=count,
        items=[
            TodoEntry(
                kind="review",
                id=v.id,
                title=v.title,
                item_id=i.id,
                version_no=v.number,
                state=v.state,
                created_at=v.submitted_at,
                link=f"/api/v1/items/{i.id}/versions/{v.number}",
            )
            for v, i in rows
        ],
    )


todo_section("reviews")(reviews)
todo_section("error_reports")(feedback.error_reports)
todo_section("review_due")(feedback.review_due)
todo_section("expiring")(feedback.expiring)
todo_section("unassigned")(feedback.unassigned)
todo_section("announcements")(announcements.unread)
todo_section("exams")(learning.open_exams)
todo_section("grading")(learning.grading)
todo_section("expert_questions")(experts.expert_questions)
todo_section("answered_questions")(experts.answered_questions)
todo_section("study")(study.study)
todo_section("case_proposals")(cases.case_proposals)
