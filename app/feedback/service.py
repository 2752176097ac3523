"""Error reports (纠错) and the tasks they make for item owners: filing, listing, resolving.

Who sees a task: its assignee, and holders of feedback:manage (unassigned tasks too), always only
for items they may read under the knowledge ACL; anyone else gets 404. Every transition is audited.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import record
from app.core.db import utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed, RateLimited
from app.core.etag import make_etag
from app.core.pagination import PageParams, paginate_by_id
from app.feedback.models import UNRESOLVED, Task
from app.feedback.schemas import AcceptIn, DismissIn, ErrorReportIn, FixIn, OwnerTransferIn, OwnerTransferOut, TaskOut
from app.identity.models import User
from app.identity.principal import Principal
from app.knowledge import acl
from app.knowledge import service as knowledge
from app.knowledge.models import Item, ItemVersion

MANAGE = "feedback:manage"
# action -> (the states it leaves from, the state it goes to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "accept": (frozenset({"open"}), "accepted"),
    "fix": (frozenset({"open", "accepted"}), "fixed"),
    "dismiss": (frozenset({"open", "accepted"}), "dismissed"),
}
# A fix names a version that was published (it may have been superseded since).
PUBLISHED_STATES = ("published", "superseded")


def etag_of(task: Task) -> str:
    return make_etag("task", task.id, task.row_version)


def allowed_actions(state: str) -> list[str]:
    return [a for a, (sources, _) in TRANSITIONS.items() if state in sources]


def version_url(item_id: int, number: int | None) -> str | None:
    return None if number is None else f"/api/v1/items/{item_id}/versions/{number}"


def task_out(task: Task, title: str | None = None) -> TaskOut:
    return TaskOut.model_validate(
        {
            **{name: getattr(task, name) for name in TaskOut.model_fields if hasattr(task, name)},
            "item_title": title,
            "etag": etag_of(task),
            "fixed_version_url": version_url(task.item_id, task.fixed_version),
            "allowed_actions": allowed_actions(task.state),
        }
    )


async def titles_of(session: AsyncSession, item_ids: set[int]) -> dict[int, str]:
    """item id -> the title of its published version, else of its latest."""
    if not item_ids:
        return {}
    rows = await session.execute(
        select(ItemVersion.item_id, ItemVersion.title)
        .join(Item, Item.id == ItemVersion.item_id)
        .where(
            Item.id.in_(item_ids),
            or_(
                ItemVersion.id == Item.published_version_id,
                and_(Item.published_version_id.is_(None), ItemVersion.number == Item.latest_version_no),
            ),
        )
    )
    return {item_id: title for item_id, title in rows.all()}


async def outs(session: AsyncSession, tasks: list[Task]) -> list[TaskOut]:
    titles = await titles_of(session, {t.item_id for t in tasks})
    return [task_out(t, titles.get(t.item_id)) for t in tasks]


def user_of(actor: Principal) -> int:
    uid = knowledge.user_id(actor)
    if uid is None:
        raise Forbidden("Only signed-in staff users file and resolve error reports", code="user_required")
    return uid


# ---------------------------------------------------------------- filing


async def _open_report(session: AsyncSession, reporter_id: int, item_id: int, category: str) -> Task | None:
    return await session.scalar(
        select(Task).where(
            Task.kind == "error_report",
            Task.reporter_id == reporter_id,
            Task.item_id == item_id,
            Task.category == category,
            Task.state.in_(UNRESOLVED),
        )
    )


async def _throttle(session: AsyncSession, reporter_id: int, per_hour: int, now: datetime) -> None:
    """At most `per_hour` reports per reporter in any hour (KB_ERROR_REPORT_MAX_PER_HOUR)."""
    since = now - timedelta(hours=1)
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(Task.created_at)).where(
                Task.kind == "error_report", Task.reporter_id == reporter_id, Task.created_at > since
            )
        )
    ).one()
    if count >= per_hour:
        wait = max(1, math.ceil(((oldest or now) + timedelta(hours=1) - now).total_seconds()))
        raise RateLimited(
            f"At most {per_hour} error reports an hour; try again in {wait} seconds",
            code="too_many_reports",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )


async def _reported_version(session: AsyncSession, item: Item, served: ItemVersion, number: int | None) -> int:
    if number is None:
        published = await knowledge.published_version(session, item)
        return (published or served).number
    found = await session.scalar(
        select(ItemVersion.number).where(ItemVersion.item_id == item.id, ItemVersion.number == number)
    )
    if found is None:
        raise InvalidInput(f"Item {item.id} has no version {number}", code="version_not_found", field="version")
    return number


async def file_report(
    session: AsyncSession, actor: Principal, item: Item, data: ErrorReportIn, per_hour: int
) -> tuple[Task, bool]:
    """The report and True; or the reporter's unresolved report of this item and category and False."""
    reporter = user_of(actor)
    served = await knowledge.served_version(session, actor, item)
    if served is None:  # nothing of it is shown to this caller: as if it did not exist
        raise NotFound(f"No item with id {item.id}", code="item_not_found")
    existing = await _open_report(session, reporter, item.id, data.category)
    if existing is not None:
        return existing, False
    now = utcnow()
    await _throttle(session, reporter, per_hour, now)
    number = await _reported_version(session, item, served, data.version)
    task = Task(
        kind="error_report",
        item_id=item.id,
        version_no=number,
        assignee_id=item.owner_id,
        reporter_id=reporter,
        category=data.category,
        comment=data.comment,
        state="open",
        created_at=now,
        updated_at=now,
        updated_by=reporter,
    )
    session.add(task)
    try:
        await session.flush()
    except IntegrityError:  # the same report at the same moment (a double click): answer that one
        await session.rollback()
        existing = await _open_report(session, reporter, item.id, data.category)
        if existing is None:
            raise
        return existing, False
    record(
        session,
        actor,
        "error_report.create",
        "task",
        task.id,
        item_id=item.id,
        version=number,
        category=data.category,
        assignee_id=item.owner_id,
    )
    await session.commit()
    return task, True


async def my_reports(
    session: AsyncSession, actor: Principal, page: PageParams, state: str | None
) -> tuple[list[Task], str | None]:
    stmt = (
        select(Task)
        .join(Item, Item.id == Task.item_id)
        .where(Task.kind == "error_report", Task.reporter_id == user_of(actor), acl.read_filter(actor))
    )
    if state is not None:
        stmt = stmt.where(Task.state == state)
    return await paginate_by_id(session, stmt, Task.id, page)


# ---------------------------------------------------------------- tasks


def visible(principal: Principal) -> ColumnElement[bool]:
    """On `Task` joined with `Item`: the caller's own tasks, or every task for managers; readable items only."""
    readable = acl.read_filter(principal)
    if principal.can(MANAGE):
        return readable
    uid = knowledge.user_id(principal)
    return false() if uid is None else and_(Task.assignee_id == uid, readable)


def assigned_to_me(principal: Principal, kinds: tuple[str, ...]) -> Select[tuple[Task]]:
    """Unresolved tasks of these kinds assigned to the caller, on items they may read (the to-do list)."""
    uid = knowledge.user_id(principal)
    return (
        select(Task)
        .join(Item, Item.id == Task.item_id)
        .where(
            Task.kind.in_(kinds),
            Task.state.in_(UNRESOLVED),
            false() if uid is None else Task.assignee_id == uid,
            acl.read_filter(principal),
        )
    )


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    state: str | None,
    kind: str | None,
    item_id: int | None,
    assignee: str | None,
) -> tuple[list[Task], str | None]:
    """Newest first. `assignee`: me, unassigned or a user id (other people's tasks only for managers)."""
    stmt = select(Task).join(Item, Item.id == Task.item_id).where(visible(principal))
    if state is not None:
        stmt = stmt.where(Task.state == state)
    if kind is not None:
        stmt = stmt.where(Task.kind == kind)
    if item_id is not None:
        stmt = stmt.where(Task.item_id == item_id)
    if assignee == "me":
        uid = knowledge.user_id(principal)
        stmt = stmt.where(false() if uid is None else Task.assignee_id == uid)
    elif assignee == "unassigned":
        stmt = stmt.where(Task.assignee_id.is_(None))
    elif assignee is not None:
        stmt = stmt.where(Task.assignee_id == int(assignee))
    return await paginate_by_id(session, stmt, Task.id, page)


def task_not_found(task_id: int) -> NotFound:
    return NotFound(f"No task with id {task_id}", code="task_not_found")


async def load_task(session: AsyncSession, principal: Principal, task_id: int, *, for_update: bool = False) -> Task:
    stmt = select(Task).join(Item, Item.id == Task.item_id).where(Task.id == task_id, visible(principal))
    if for_update:  # PostgreSQL: concurrent resolutions queue here and then see the newer row_version
        stmt = stmt.with_for_update(of=Task).execution_options(populate_existing=True)
    task = await session.scalar(stmt)
    if task is None:
        raise task_not_found(task_id)
    return task


async def _check_fix(session: AsyncSession, task: Task, number: int) -> None:
    state = await session.scalar(
        select(ItemVersion.state).where(ItemVersion.item_id == task.item_id, ItemVersion.number == number)
    )
    if state is None:
        raise InvalidInput(f"Item {task.item_id} has no version {number}", code="version_not_found", field="version")
    if state not in PUBLISHED_STATES:
        raise InvalidInput(
            f"Version {number} is {state}, not published: publish the correction first",
            code="version_not_published",
            field="version",
            state=state,
        )
    if task.version_no is not None and number <= task.version_no:
        raise InvalidInput(
            f"Version {number} is not newer than the reported version {task.version_no}",
            code="version_not_newer",
            field="version",
            reported_version=task.version_no,
        )


async def transition(
    session: AsyncSession, actor: Principal, task: Task, action: str, data: AcceptIn | FixIn | DismissIn
) -> Task:
    sources, target = TRANSITIONS[action]
    if task.state not in sources:
        raise Conflict(
            f"A task that is {task.state} cannot be {action}ed",
            code="invalid_transition",
            state=task.state,
            allowed=allowed_actions(task.state),
        )
    before = task.state
    now = utcnow()
    uid = knowledge.user_id(actor)
    if isinstance(data, FixIn):
        await _check_fix(session, task, data.version)
        task.fixed_version = data.version
    note = data.reason if isinstance(data, DismissIn) else data.note
    task.state = target
    if note:
        task.resolution_note = note
    if target in ("fixed", "dismissed"):
        task.resolved_at, task.resolved_by = now, uid
    task.updated_at, task.updated_by = now, uid
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        raise PreconditionFailed("Someone changed this task at the same moment; reload and try again")
    record(
        session,
        actor,
        f"task.{action}",
        "task",
        task.id,
        kind=task.kind,
        item_id=task.item_id,
        from_state=before,
        to_state=target,
        fixed_version=task.fixed_version,
        note=note or None,
    )
    await session.commit()
    return task


# ---------------------------------------------------------------- owners


async def transfer_owner(session: AsyncSession, actor: Principal, data: OwnerTransferIn) -> OwnerTransferOut:
    """Every item owned by one user, and their unresolved tasks, to another (someone leaves); one
    transaction. Administrative: it reaches every item, whatever its ACL."""
    if data.from_user_id == data.to_user_id:
        raise InvalidInput("from_user_id and to_user_id are the same user", code="same_user", field="to_user_id")
    if await session.get(User, data.from_user_id) is None:
        raise InvalidInput(f"No user with id {data.from_user_id}", code="unknown_user", field="from_user_id")
    target = await session.get(User, data.to_user_id)
    if target is None:
        raise InvalidInput(f"No user with id {data.to_user_id}", code="unknown_user", field="to_user_id")
    if not target.is_active:
        raise InvalidInput(f"User {data.to_user_id} is not active", code="inactive_user", field="to_user_id")
    owned = Item.owner_id == data.from_user_id
    open_tasks = and_(Task.assignee_id == data.from_user_id, Task.state.in_(UNRESOLVED))
    items = await session.scalar(select(func.count()).select_from(Item).where(owned)) or 0
    tasks = await session.scalar(select(func.count()).select_from(Task).where(open_tasks)) or 0
    out = OwnerTransferOut(
        from_user_id=data.from_user_id, to_user_id=data.to_user_id, dry_run=data.dry_run, items=items, tasks=tasks
    )
    if data.dry_run:
        return out
    now = utcnow()
    # Core UPDATEs (the ORM's version counter only runs on flushes): each ETag moves on by hand.
    await session.execute(
        update(Item.__table__)
        .where(Item.__table__.c.owner_id == data.from_user_id)
        .values(owner_id=data.to_user_id, row_version=Item.__table__.c.row_version + 1, updated_at=now)
    )
    t = Task.__table__.c
    await session.execute(
        update(Task.__table__)
        .where(t.assignee_id == data.from_user_id, t.state.in_(UNRESOLVED))
        .values(
            assignee_id=data.to_user_id,
            row_version=t.row_version + 1,
            updated_at=now,
            updated_by=knowledge.user_id(actor),
        )
    )
    record(
        session,
        actor,
        "item.owner_transfer",
        "user",
        data.from_user_id,
        to_user_id=data.to_user_id,
        items=items,
        tasks=tasks,
    )
    await session.commit()
    return out
