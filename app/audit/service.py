from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.models import AuditEntry
from app.core.context import request_id_var
from app.identity.principal import Principal


def record(
    session: AsyncSession,
    actor: Principal | None,
    action: str,
    target_type: str | None = None,
    target_id: object = None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    outcome: str = "ok",
    **info: Any,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction: it commits with the change it records."""
    entry = AuditEntry(
        **entry_values(actor, action, target_type, target_id, before=before, after=after, outcome=outcome, **info)
    )
    session.add(entry)
    return entry


def entry_values(
    actor: Principal | None,
    action: str,
    target_type: str | None = None,
    target_id: object = None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    outcome: str = "ok",
    **info: Any,
) -> dict[str, Any]:
    """The columns of an audit entry (`record` adds one; `record_many` inserts many in one statement)."""
    summary: dict[str, Any] = dict(info)
    if before is not None:
        summary["before"] = before
    if after is not None:
        summary["after"] = after
    return {
        "actor": actor.actor if actor else "anonymous",
        "actor_name": actor.name if actor else "",
        "action": action,
        "outcome": outcome,
        "target_type": target_type,
        "target_id": None if target_id is None else str(target_id),
        "request_id": request_id_var.get(),
        "summary": summary,
    }


async def record_many(session: AsyncSession, entries: list[dict[str, Any]]) -> None:
    """Bulk writers (imports): many entries of `entry_values`, one INSERT, in the caller's transaction."""
    if entries:
        await session.execute(insert(AuditEntry.__table__), entries)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fields that differ, as {"before": {...}, "after": {...}} for an audit summary."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {"before": {k: before.get(k) for k in keys}, "after": {k: after[k] for k in keys}}


async def record_apart(
    sessionmaker: async_sessionmaker[AsyncSession],
    actor: Principal | None,
    action: str,
    target_type: str | None = None,
    target_id: object = None,
    **info: Any,
) -> None:
    """An entry in its own transaction, for what is refused: the request's own is about to fail."""
    async with sessionmaker() as s:
        record(s, actor, action, target_type, target_id, outcome="denied", **info)
        await s.commit()
