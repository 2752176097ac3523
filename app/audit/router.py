from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.audit.schemas import AuditOut
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.pagination import Page, Paging, paginate_by_id
from app.identity.deps import Require

router = APIRouter(prefix="/audit", tags=["audit"], responses=PROBLEMS)


@router.get("", response_model=Page[AuditOut])
async def list_audit(
    session: DbSession,
    _: Require("audit:read"),
    page: Paging,
    actor: Annotated[str | None, Query(max_length=80, description="e.g. user:3, client:2")] = None,
    action: Annotated[str | None, Query(max_length=80, description="exact, or a prefix ending in '.'")] = None,
    outcome: Literal["ok", "denied"] | None = None,
    target_type: Annotated[str | None, Query(max_length=40)] = None,
    target_id: Annotated[str | None, Query(max_length=80)] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditOut]:
    """The audit log, newest first. It is append-only: there is no way to edit or delete it."""
    stmt = select(AuditEntry)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action:
        stmt = stmt.where(AuditEntry.action.startswith(action) if action.endswith(".") else AuditEntry.action == action)
    if outcome:
        stmt = stmt.where(AuditEntry.outcome == outcome)
    if target_type:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if request_id:
        stmt = stmt.where(AuditEntry.request_id == request_id)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    rows, nxt = await paginate_by_id(session, stmt, AuditEntry.id, page)
    return Page(items=[AuditOut.model_validate(r) for r in rows], next_cursor=nxt)
