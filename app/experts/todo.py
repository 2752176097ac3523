"""The to-do list's sections of the expert network."""

from __future__ import annotations

from app.experts import service
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext, count_of


async def expert_questions(ctx: TodoContext) -> TodoSection | None:
    """Questions routed to me (open or answered by others) that I have not answered, oldest first."""
    p = ctx.principal
    if p.kind != "user" or not (p.can(service.ANSWER) or p.can(service.MANAGE)):
        return None
    stmt = service.waiting_for_expert(p.id)
    rows = (await ctx.session.scalars(stmt.order_by(service.ExpertQuestion.id).limit(ctx.limit))).all()
    return TodoSection(
        count=await count_of(ctx.session, stmt),
        items=[
            TodoEntry(
                kind="expert_question",
                id=q.id,
                title=q.title,
                item_id=q.item_id,
                state=q.state,
                created_at=q.created_at,
                link=f"/api/v1/questions/{q.id}",
            )
            for q in rows
        ],
    )


async def answered_questions(ctx: TodoContext) -> TodoSection | None:
    """My questions that have an answer waiting for me to accept it."""
    p = ctx.principal
    if p.kind != "user" or not p.can(service.ASK):
        return None
    stmt = service.answered_for_asker(p.id)
    rows = (await ctx.session.scalars(stmt.order_by(service.ExpertQuestion.id).limit(ctx.limit))).all()
    return TodoSection(
        count=await count_of(ctx.session, stmt),
        items=[
            TodoEntry(
                kind="answered_question",
                id=q.id,
                title=q.title,
                item_id=q.item_id,
                state=q.state,
                created_at=q.answered_at,
                link=f"/api/v1/questions/{q.id}",
            )
            for q in rows
        ],
    )
