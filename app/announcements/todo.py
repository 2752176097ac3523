"""The to-do list's `announcements` section: current announcements addressed to me that I have not read."""

from __future__ import annotations

from app.announcements.service import unread_for
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext


async def unread(ctx: TodoContext) -> TodoSection | None:
    """Mandatory ones first; `state` says mandatory or unread, `due_at` is the end of its validity."""
    if not ctx.principal.can("announcements:read"):
        return None
    count, rows = await unread_for(ctx.session, ctx.principal, ctx.limit)
    return TodoSection(
        count=count,
        items=[
            TodoEntry(
                kind="announcement",
                id=a.id,
                title=a.title,
                state="mandatory" if a.mandatory else "unread",
                due_at=a.valid_to,
                created_at=a.published_at,
                link=f"/api/v1/me/announcements#{a.id}",
            )
            for a in rows
        ],
    )
