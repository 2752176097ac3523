"""The to-do list (待办): what waits for the caller, gathered from every domain that has work for them.

Each domain contributes a section with one registration:

    @todo_section("announcements")
    async def unread(ctx: TodoContext) -> TodoSection | None: ...

A provider answers None when the section does not apply to the caller (e.g. `reviews` for someone
without knowledge:review); otherwise the section's total `count` and its first `ctx.limit` entries.
Sections appear in registration order (app/todo/sections.py registers them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.identity.principal import Principal
from app.todo.schemas import TodoOut, TodoSection


@dataclass(frozen=True)
class TodoContext:
    session: AsyncSession
    principal: Principal
    settings: Settings
    limit: int  # entries per section
    now: datetime
    expiring_within_days: int


Provider = Callable[[TodoContext], Awaitable[TodoSection | None]]
SECTIONS: dict[str, Provider] = {}


def todo_section(name: str) -> Callable[[Provider], Provider]:
    def register(fn: Provider) -> Provider:
        SECTIONS[name] = fn
        return fn

    return register


async def count_of(session: AsyncSession, stmt: Select[tuple[object]]) -> int:
    """The number of rows a section's query finds (ordering and limits left out)."""
    return await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0


async def gather(ctx: TodoContext) -> TodoOut:
    sections: dict[str, TodoSection] = {}
    for name, provider in SECTIONS.items():
        section = await provider(ctx)
        if section is not None:
            sections[name] = section
    return TodoOut(total=sum(s.count for s in sections.values()), sections=sections)
