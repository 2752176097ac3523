"""The to-do list's `case_proposals` section: my best-practice proposals still to finish or rework
(a draft not yet submitted, or rejected with the supervisor's reason)."""

from __future__ import annotations

from sqlalchemy import and_, select

from app.knowledge.models import Item, ItemVersion
from app.knowledge.proposals import CASE_TYPE, PROPOSE_CASE
from app.todo.schemas import TodoEntry, TodoSection
from app.todo.service import TodoContext, count_of


async def case_proposals(ctx: TodoContext) -> TodoSection | None:
    p = ctx.principal
    if p.kind != "user" or not p.can(PROPOSE_CASE):
        return None
    stmt = (
        select(Item, ItemVersion)
        .join(ItemVersion, and_(ItemVersion.item_id == Item.id, ItemVersion.number == Item.latest_version_no))
        .where(
            Item.item_type == CASE_TYPE,
            Item.created_by == p.id,
            Item.status == "draft",
            ItemVersion.state.in_(("draft", "rejected")),
        )
    )
    rows = (await ctx.session.execute(stmt.order_by(Item.id).limit(ctx.limit))).all()
    return TodoSection(
        count=await count_of(ctx.session, stmt),
        items=[
            TodoEntry(
                kind="case_proposal",
                id=i.id,
                title=v.title,
                item_id=i.id,
                version_no=v.number,
                state=v.state,
                created_at=v.reviewed_at or v.created_at,
                link=f"/api/v1/items/{i.id}",
            )
            for i, v in rows
        ],
    )
