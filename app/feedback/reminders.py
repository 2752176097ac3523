"""Review reminders: `review_due` and `expiring` tasks for the owners of published items.

One run, in the job's transaction, does up to `batch` rows per step (a full step runs again in a
second, so 100,000 due items take a series of short transactions, never one long one):

1. an open `review_due` task for every published item whose review_due came (today, UTC, or
   before) and has none unresolved;
2. an open `expiring` task for every published item whose valid_to falls in the next
   `KB_EXPIRY_WARNING_DAYS` and has none unresolved;
3. closes (state fixed, by nobody: the system) unresolved review_due tasks whose item's review_due
   moved into the future or went, and expiring ones whose valid_to moved past the window or went,
   or whose item is no longer published;
4. keeps the rest current: an expiring task's due_at follows its item's valid_to, and every
   unresolved task follows its item's owner (a PATCH of the owner moves its tasks at the next run).

The partial unique index `uq_tasks_one_open_reminder` makes a second unresolved task per item and
kind impossible, whatever runs at the same time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, exists, insert, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record
from app.core.db import utcnow
from app.feedback.models import UNRESOLVED, Task
from app.knowledge.models import Item, ItemVersion
from app.knowledge.workflow import SCHEDULER

BATCH = 2000
tasks, items = Task.__table__, Item.__table__


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _unresolved(kind: str) -> Any:
    return and_(tasks.c.kind == kind, tasks.c.state.in_(UNRESOLVED))


def _has_unresolved(kind: str) -> Any:
    return exists().where(tasks.c.item_id == items.c.id, _unresolved(kind))


async def _create(session: AsyncSession, kind: str, due: Any, due_col: Any, now: datetime, batch: int) -> int:
    """Open tasks of `kind` for the published items matching `due` that have none unresolved."""
    rows = (
        await session.execute(
            select(items.c.id, items.c.owner_id, due_col, ItemVersion.number)
            .select_from(items)
            .outerjoin(ItemVersion, ItemVersion.id == items.c.published_version_id)
            .where(items.c.status == "published", due, not_(_has_unresolved(kind)))
            .order_by(items.c.id)
            .limit(batch)
        )
    ).all()
    if rows:
        await session.execute(
            insert(tasks),
            [
                {
                    "kind": kind,
                    "item_id": item_id,
                    "assignee_id": owner_id,
                    "version_no": number,
                    "due_at": _midnight(due_value)
                    if isinstance(due_value, date) and not isinstance(due_value, datetime)
                    else due_value,
                    "state": "open",
                    "comment": "",
                    "created_at": now,
                    "updated_at": now,
                    "row_version": 1,
                }
                for item_id, owner_id, due_value, number in rows
            ],
        )
    return len(rows)


async def _close(session: AsyncSession, kind: str, reasons: list[tuple[Any, str]], now: datetime, batch: int) -> int:
    """Resolve (fixed, by the system) unresolved tasks of `kind` whose item meets one of `reasons`."""
    closed = 0
    for condition, note in reasons:
        ids = list(
            (
                await session.scalars(
                    select(tasks.c.id)
                    .select_from(tasks)
                    .join(items, items.c.id == tasks.c.item_id)
                    .where(_unresolved(kind), condition)
                    .order_by(tasks.c.id)
                    .limit(batch - closed)
                )
            ).all()
        )
        if ids:
            await session.execute(
                update(tasks)
                .where(tasks.c.id.in_(ids))
                .values(
                    state="fixed",
                    resolved_at=now,
                    resolved_by=None,
                    resolution_note=note,
                    updated_at=now,
                    updated_by=None,
                    row_version=tasks.c.row_version + 1,
                )
            )
            closed += len(ids)
        if closed >= batch:
            break
    return closed


def _of_item(column: Any) -> Any:
    return select(column).where(items.c.id == tasks.c.item_id).scalar_subquery()


async def _follow_items(session: AsyncSession, now: datetime) -> tuple[int, int]:
    """Expiring tasks' due_at follows valid_to; unresolved tasks follow the item's owner."""
    moved = await session.execute(
        update(tasks)
        .where(
            _unresolved("expiring"),
            exists().where(
                items.c.id == tasks.c.item_id,
                items.c.valid_to.is_not(None),
                or_(tasks.c.due_at.is_(None), items.c.valid_to != tasks.c.due_at),
            ),
        )
        .values(due_at=_of_item(items.c.valid_to), updated_at=now, row_version=tasks.c.row_version + 1)
    )
    owners = await session.execute(
        update(tasks)
        .where(
            tasks.c.state.in_(UNRESOLVED),
            exists().where(items.c.id == tasks.c.item_id, items.c.owner_id.is_distinct_from(tasks.c.assignee_id)),
        )
        .values(assignee_id=_of_item(items.c.owner_id), updated_at=now, row_version=tasks.c.row_version + 1)
    )
    return moved.rowcount or 0, owners.rowcount or 0


async def run_reminders(
    session: AsyncSession, *, warning_days: int, now: datetime | None = None, batch: int = BATCH
) -> dict[str, Any]:
    """One run (in the caller's transaction; the caller commits). `more`: a step was full."""
    now = now or utcnow()
    today = now.date()
    horizon = now + timedelta(days=warning_days)
    not_published = items.c.status != "published"
    report = {
        "review_due_created": await _create(
            session,
            "review_due",
            and_(items.c.review_due.is_not(None), items.c.review_due <= today),
            items.c.review_due,
            now,
            batch,
        ),
        "expiring_created": await _create(
            session,
            "expiring",
            and_(items.c.valid_to.is_not(None), items.c.valid_to > now, items.c.valid_to <= horizon),
            items.c.valid_to,
            now,
            batch,
        ),
        "review_due_closed": await _close(
            session,
            "review_due",
            [
                (not_published, "Closed by the reminder job: the item is no longer published"),
                (
                    or_(items.c.review_due.is_(None), items.c.review_due > today),
                    "Closed by the reminder job: the review date moved into the future",
                ),
            ],
            now,
            batch,
        ),
        "expiring_closed": await _close(
            session,
            "expiring",
            [
                (not_published, "Closed by the reminder job: the item is no longer published"),
                (
                    or_(items.c.valid_to.is_(None), items.c.valid_to > horizon),
                    "Closed by the reminder job: the item's validity was extended",
                ),
            ],
            now,
            batch,
        ),
    }
    report["due_moved"], report["reassigned"] = await _follow_items(session, now)
    report["more"] = any(
        report[k] >= batch for k in ("review_due_created", "expiring_created", "review_due_closed", "expiring_closed")
    )
    if any(v for k, v in report.items() if k != "more"):
        record(session, SCHEDULER, "feedback.reminders", None, None, **report)
    return report
