"""The to-do list's `study` section: my learning paths not completed yet, due first."""

from __future__ import annotations

from app.study import service
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext


async def study(ctx: TodoContext) -> TodoSection | None:
    if ctx.principal.kind != "user" or not ctx.principal.can(service.READ):
        return None
    todo = [p for p in await service.my_paths(ctx.session, ctx.principal) if not p.completed]
    return TodoSection(
        count=len(todo),
        items=[
            TodoEntry(
                kind="study_path",
                id=p.id,
                title=p.title,
                item_id=p.next_item.item_id if p.next_item else None,
                state="overdue" if p.overdue else f"{p.read}/{p.total}",
                due_at=p.due_at,
                link=f"/api/v1/me/study/paths/{p.id}",
            )
            for p in todo[: ctx.limit]
        ],
    )
