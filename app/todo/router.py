"""GET /me/todo: the caller's to-do list (待办), one section per kind of work (app/todo/sections.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.db import utcnow
from app.core.deps import AppSettings, DbSession
from app.core.errors import PROBLEMS
from app.identity.deps import Require
from app.todo import sections  # noqa: F401 - registers the sections
from app.todo.schemas import TodoOut
from app.todo.service import TodoContext, gather

router = APIRouter(tags=["todo"], responses=PROBLEMS)


@router.get("/me/todo", response_model=TodoOut)
async def my_todo(
    session: DbSession,
    settings: AppSettings,
    principal: Require("module:knowledge"),
    limit: Annotated[int, Query(ge=1, le=50, description="Entries per section")] = 10,
    expiring_within_days: Annotated[
        int | None, Query(ge=1, le=365, description="The `expiring` section's horizon (default KB_EXPIRY_WARNING_DAYS)")
    ] = None,
) -> TodoOut:
    """What waits for the caller: `reviews` (versions in review they may review; reviewers only),
    `error_reports` (open or accepted reports on their items), `review_due` (their items past the
    review date), `expiring` (their items whose valid_to is near) and, for holders of
    feedback:manage, `unassigned` (tasks on items without an owner), each with its `count` and
    its first `limit` entries. Other domains add sections (app/todo/service.py)."""
    ctx = TodoContext(
        session=session,
        principal=principal,
        settings=settings,
        limit=limit,
        now=utcnow(),
        expiring_within_days=expiring_within_days or settings.expiry_warning_days,
    )
    return await gather(ctx)
