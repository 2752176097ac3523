"""The to-do list's sections of this domain: tasks assigned to the caller (app/todo)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.feedback import service
from app.feedback.models import SYSTEM_KINDS, UNRESOLVED, Task
from app.knowledge.models import Item
from app.knowledge.service import user_id
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext, count_of


async def _section(ctx: TodoContext, kind: str, *, unassigned: bool = False) -> TodoSection | None:
    if user_id(ctx.principal) is None:  # API clients have no tasks
        return None
    if unassigned:
        stmt = (
            select(Task)
            .join(Item, Item.id == Task.item_id)
            .where(Task.assignee_id.is_(None), Task.state.in_(UNRESOLVED), service.visible(ctx.principal))
        )
    else:
        stmt = service.assigned_to_me(ctx.principal, (kind,))
    if kind == "expiring":
        stmt = stmt.where(Item.valid_to <= ctx.now + timedelta(days=ctx.expiring_within_days))
    count = await count_of(ctx.session, stmt)
    order = (Task.due_at, Task.id) if kind in SYSTEM_KINDS else (Task.id,)
    tasks = list((await ctx.session.scalars(stmt.order_by(*order).limit(ctx.limit))).all())
    titles = await service.titles_of(ctx.session, {t.item_id for t in tasks})
    return TodoSection(
        count=count,
        items=[
            TodoEntry(
                kind=t.kind,
                id=t.id,
                task_id=t.id,
                title=titles.get(t.item_id),
                item_id=t.item_id,
                version_no=t.version_no,
                state=t.state,
                due_at=t.due_at,
                created_at=t.created_at,
                link=f"/api/v1/tasks/{t.id}",
            )
            for t in tasks
        ],
    )


async def error_reports(ctx: TodoContext) -> TodoSection | None:
    """Open or accepted error reports on items the caller owns, oldest first."""
    return await _section(ctx, "error_report")


async def review_due(ctx: TodoContext) -> TodoSection | None:
    """Items of the caller's whose review date came, the longest overdue first."""
    return await _section(ctx, "review_due")


async def expiring(ctx: TodoContext) -> TodoSection | None:
    """Items of the caller's that the reminder job flagged as expiring, whose valid_to is at most
    `expiring_within_days` away (or passed while the task is open), the soonest first."""
    return await _section(ctx, "expiring")


async def unassigned(ctx: TodoContext) -> TodoSection | None:
    """For holders of feedback:manage: unresolved tasks on items without an owner, oldest first."""
    if not ctx.principal.can(service.MANAGE):
        return None
    return await _section(ctx, "unassigned", unassigned=True)
