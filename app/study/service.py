"""Learning paths and what each agent has read.

Reading is taken from the agent channel's view events (app/channels/events.py: one `channel_views`
row per read, `actor` = "user:N", `version` = the published version number served). Decided here:

- An item of a path counts as read when the agent viewed its *current* published version (or a
  later one). Reading an older version does not count once a newer one is published: the item is
  `changed` and listed by GET /me/study/changes with the diff, so a republish asks for a re-read.
- Agents see (and are counted on) only the path items they can read now on the agent channel:
  published, inside the validity window, shown on `agent`, and allowed by the item ACL
  (app/knowledge/acl.py). Anything else is left out entirely: no title, no id, nothing counted.
- A path may only hold items its whole audience may read when it is written (422
  `items_not_readable` otherwise); an ACL tightened later is still honoured per agent, as above.
- Views reach the database in batches: the routes flush this process's writer first.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, false, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import changes, record
from app.channels.models import ChannelView
from app.core.db import utcnow
from app.core.errors import InvalidInput, NotFound, PreconditionFailed
from app.core.etag import make_etag
from app.core.pagination import PageParams, paginate_by_id
from app.identity.models import Department, Role, User, user_roles
from app.identity.principal import Principal
from app.identity.service import department_paths, role_ids_by_name
from app.knowledge import acl
from app.knowledge.diff import diff_versions
from app.knowledge.models import Item, ItemVersion
from app.knowledge.schemas import DiffOut
from app.study.models import StudyPath, StudyPathItem
from app.study.schemas import (
    AgentProgress,
    ChangedItem,
    MyPath,
    MyPathItem,
    PathCreate,
    PathItemOut,
    PathOut,
    PathUpdate,
    ProgressPage,
)

READ = "study:read"
MANAGE = "study:manage"
AGENT = "agent"


def etag_of(p: StudyPath) -> str:
    return make_etag("study-path", p.id, p.row_version)


def not_found(id_: int) -> NotFound:
    return NotFound(f"No learning path with id {id_}", code="study_path_not_found")


async def get(session: AsyncSession, id_: int) -> StudyPath:
    p = await session.get(StudyPath, id_)
    if p is None:
        raise not_found(id_)
    return p


# ---------------------------------------------------------------- checking what managers send


async def _role_ids(session: AsyncSession, names: list[str]) -> list[int]:
    return sorted((await role_ids_by_name(session, names, "roles")).values())


async def _department_paths(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    return await department_paths(session, ids, "departments")


def _path_ids(path: str) -> list[int]:
    return [int(p) for p in path.strip("/").split("/") if p]


async def _check_items(
    session: AsyncSession, item_ids: list[int], roles: list[int], departments: dict[int, str]
) -> list[int]:
    """The item ids in order; 422 for duplicates, unknown ids, and items some of the audience may not read."""
    dupes = sorted({i for i in item_ids if item_ids.count(i) > 1})
    if dupes:
        raise InvalidInput(
            f"Items listed more than once: {dupes}", code="duplicate_items", field="item_ids", duplicates=dupes
        )
    found = set((await session.scalars(select(Item.id).where(Item.id.in_(item_ids)))).all())
    unknown = [i for i in item_ids if i not in found]
    if unknown:
        raise InvalidInput(f"Unknown items: {unknown}", code="unknown_items", field="item_ids", unknown=unknown)
    readers = await acl.readers_of_many(session, item_ids)

    def readable(subjects: set[str]) -> bool:
        # Every agent of the audience holds one of `roles` and, with departments, sits below one of them.
        if subjects & {acl.PUBLIC, acl.INTERNAL}:
            return True
        if all(f"role:{r}" in subjects for r in roles):
            return True
        return bool(departments) and all(
            any(f"dept:{a}" in subjects for a in _path_ids(path) or [d]) for d, path in departments.items()
        )

    hidden = [i for i in item_ids if not readable(set(readers.get(i, [])))]
    if hidden:
        raise InvalidInput(
            f"Some of the path's audience may not read items {hidden} (item ACL)",
            code="items_not_readable",
            field="item_ids",
            items=hidden,
        )
    return item_ids


# ---------------------------------------------------------------- managing


async def _items_of(session: AsyncSession, path_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    """path id -> [(position, item id)] in order."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if not path_ids:
        return out
    rows = await session.execute(
        select(StudyPathItem.path_id, StudyPathItem.position, StudyPathItem.item_id)
        .where(StudyPathItem.path_id.in_(path_ids))
        .order_by(StudyPathItem.path_id, StudyPathItem.position)
    )
    for path_id, position, item_id in rows.all():
        out[path_id].append((position, item_id))
    return out


async def _set_items(session: AsyncSession, p: StudyPath, item_ids: list[int]) -> None:
    await session.execute(delete(StudyPathItem).where(StudyPathItem.path_id == p.id))
    await session.execute(
        insert(StudyPathItem), [{"path_id": p.id, "item_id": i, "position": n} for n, i in enumerate(item_ids)]
    )


def _summary(p: StudyPath, item_ids: list[int]) -> dict[str, Any]:
    return {
        "title": p.title,
        "roles": list(p.roles),
        "departments": list(p.departments),
        "due_at": p.due_at.isoformat() if p.due_at else None,
        "active": p.active,
        "item_ids": item_ids,
    }


async def create(session: AsyncSession, actor: Principal, data: PathCreate) -> StudyPath:
    roles = await _role_ids(session, data.roles)
    departments = await _department_paths(session, data.departments)
    item_ids = await _check_items(session, list(data.item_ids), roles, departments)
    now = utcnow()
    p = StudyPath(
        title=data.title,
        description=data.description,
        roles=roles,
        departments=sorted(departments),
        due_at=data.due_at,
        active=True,
        created_by=actor.actor,
        updated_by=actor.actor,
        created_at=now,
        updated_at=now,
    )
    session.add(p)
    await session.flush()
    await _set_items(session, p, item_ids)
    record(session, actor, "study_path.create", "study_path", p.id, after=_summary(p, item_ids))
    await session.commit()
    return p


async def update(session: AsyncSession, actor: Principal, p: StudyPath, data: PathUpdate) -> StudyPath:
    sent = data.model_fields_set
    for name in ("title", "description", "roles", "departments", "item_ids", "active"):
        if name in sent and getattr(data, name) is None:
            raise InvalidInput(f"{name} cannot be null", code="field_required", field=name)
    before = _summary(p, [i for _, i in (await _items_of(session, [p.id]))[p.id]])
    roles = await _role_ids(session, data.roles) if data.roles is not None else list(p.roles)
    departments = await _department_paths(
        session, data.departments if data.departments is not None else list(p.departments)
    )
    item_ids = data.item_ids if data.item_ids is not None else before["item_ids"]
    if {"roles", "departments", "item_ids"} & sent:  # the audience must still read every item
        await _check_items(session, list(item_ids), roles, departments)
    if data.title is not None:
        p.title = data.title
    if data.description is not None:
        p.description = data.description
    p.roles, p.departments = roles, sorted(departments)
    if "due_at" in sent:
        p.due_at = data.due_at
    if data.active is not None:
        p.active = data.active
    p.updated_by, p.updated_at = actor.actor, utcnow()
    id_ = p.id
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        current = await session.scalar(select(StudyPath.row_version).where(StudyPath.id == id_))
        raise PreconditionFailed(
            "Someone changed this learning path at the same moment; reload and try again",
            current_etag=make_etag("study-path", id_, current or 0),
            current_version=current,
        )
    if data.item_ids is not None:
        await _set_items(session, p, list(item_ids))
    record(session, actor, "study_path.update", "study_path", p.id, **changes(before, _summary(p, list(item_ids))))
    await session.commit()
    return p


async def delete_path(session: AsyncSession, actor: Principal, p: StudyPath) -> None:
    record(
        session,
        actor,
        "study_path.delete",
        "study_path",
        p.id,
        before=_summary(p, [i for _, i in (await _items_of(session, [p.id]))[p.id]]),
    )
    await session.delete(p)
    await session.commit()


async def list_paths(
    session: AsyncSession, page: PageParams, active: bool | None
) -> tuple[list[StudyPath], str | None]:
    stmt = select(StudyPath)
    if active is not None:
        stmt = stmt.where(StudyPath.active.is_(active))
    return await paginate_by_id(session, stmt, StudyPath.id, page)


async def out_many(session: AsyncSession, paths: list[StudyPath]) -> list[PathOut]:
    items = await _items_of(session, [p.id for p in paths])
    role_ids = {r for p in paths for r in p.roles}
    names = (
        dict((await session.execute(select(Role.id, Role.name).where(Role.id.in_(role_ids)))).all()) if role_ids else {}
    )
    item_ids = {i for rows in items.values() for _, i in rows}
    titles: dict[int, tuple[str, str]] = {}
    if item_ids:
        rows = await session.execute(
            select(Item.id, Item.status, ItemVersion.title)
            .join(
                ItemVersion,
                and_(
                    ItemVersion.item_id == Item.id,
                    or_(
                        ItemVersion.id == Item.published_version_id,
                        and_(Item.published_version_id.is_(None), ItemVersion.number == Item.latest_version_no),
                    ),
                ),
            )
            .where(Item.id.in_(item_ids))
        )
        titles = {i: (t, s) for i, s, t in rows.all()}
    return [
        PathOut(
            id=p.id,
            title=p.title,
            description=p.description,
            roles=[names[r] for r in p.roles if r in names],
            departments=list(p.departments),
            due_at=p.due_at,
            active=p.active,
            items=[
                PathItemOut(item_id=i, position=n, title=titles.get(i, ("", ""))[0], status=titles.get(i, ("", ""))[1])
                for n, i in items[p.id]
            ],
            created_by=p.created_by,
            updated_by=p.updated_by,
            created_at=p.created_at,
            updated_at=p.updated_at,
            row_version=p.row_version,
            etag=etag_of(p),
        )
        for p in paths
    ]


# ---------------------------------------------------------------- what an agent has read


def in_audience(p: StudyPath, principal: Principal) -> bool:
    if not p.active or not set(p.roles) & set(principal.role_ids):
        return False
    return not (p.departments and not set(p.departments) & set(principal.department_ids))


async def reads_of(
    session: AsyncSession,
    actors: list[str],
    item_ids: list[int] | None = None,
) -> dict[tuple[str, int], tuple[int, datetime]]:
    """(actor, item id) -> (newest version viewed on the agent channel, when last viewed)."""
    if not actors:
        return {}
    stmt = (
        select(ChannelView.actor, ChannelView.item_id, func.max(ChannelView.version), func.max(ChannelView.at))
        .where(ChannelView.actor.in_(actors), ChannelView.channel == AGENT)
        .group_by(ChannelView.actor, ChannelView.item_id)
    )
    if item_ids is not None:
        stmt = stmt.where(ChannelView.item_id.in_(item_ids))
    return {(a, i): (int(v), at) for a, i, v, at in (await session.execute(stmt)).all()}


def _visible_stmt(principal: Principal | None) -> Any:
    """(item id, published number, title, published_at, change note) of what a reader sees on the agent channel."""
    conds = (
        [acl.visible_filter(principal), acl.channel_filter(AGENT)]
        if principal is not None
        else [Item.status == "published", acl.valid_filter(), acl.channel_filter(AGENT)]
    )
    return (
        select(Item.id, ItemVersion.number, ItemVersion.title, ItemVersion.published_at, ItemVersion.change_note)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .where(*conds)
    )


def _user_only(principal: Principal) -> int:
    if principal.kind != "user":
        raise NotFound("Learning paths are for signed-in users", code="users_only")
    return principal.id


def _my_item(position: int, item_id: int, title: str, number: int, read: tuple[int, datetime] | None) -> MyPathItem:
    return MyPathItem(
        item_id=item_id,
        position=position,
        title=title,
        current_version=number,
        read=read is not None and read[0] >= number,
        read_version=read[0] if read else None,
        read_at=read[1] if read else None,
        changed=read is not None and read[0] < number,
        link=f"/api/v1/channels/agent/items/{item_id}",
    )


async def my_paths(
    session: AsyncSession,
    principal: Principal,
    page: PageParams | None = None,
) -> list[MyPath]:
    """My active paths, due first (no due date last), then newest."""
    _user_only(principal)
    paths = [
        p
        for p in (await session.scalars(select(StudyPath).where(StudyPath.active.is_(True)))).all()
        if in_audience(p, principal)
    ]
    paths.sort(key=lambda p: (p.due_at is None, p.due_at or utcnow(), -p.id))
    items = await _items_of(session, [p.id for p in paths])
    ids = sorted({i for rows in items.values() for _, i in rows})
    visible = (
        {i: (n, t) for i, n, t, _, _ in (await session.execute(_visible_stmt(principal).where(Item.id.in_(ids)))).all()}
        if ids
        else {}
    )
    reads = await reads_of(session, [principal.actor], list(visible))
    now = utcnow()
    out = []
    for p in paths:
        mine = [
            _my_item(pos, i, visible[i][1], visible[i][0], reads.get((principal.actor, i)))
            for pos, i in items[p.id]
            if i in visible
        ]
        read = sum(1 for m in mine if m.read)
        completed = read == len(mine)
        out.append(
            MyPath(
                id=p.id,
                title=p.title,
                description=p.description,
                due_at=p.due_at,
                overdue=not completed and p.due_at is not None and p.due_at <= now,
                total=len(mine),
                read=read,
                completed=completed,
                next_item=next((m for m in mine if not m.read), None),
                items=mine,
            )
        )
    return out


async def my_path(session: AsyncSession, principal: Principal, path_id: int) -> MyPath:
    for p in await my_paths(session, principal):
        if p.id == path_id:
            return p
    raise not_found(path_id)


async def my_changes(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
) -> tuple[list[ChangedItem], str | None]:
    """Items I viewed whose published version is newer than the one I last viewed, newest item first."""
    _user_only(principal)
    seen = (
        select(
            ChannelView.item_id.label("item_id"),
            func.max(ChannelView.version).label("version"),
            func.max(ChannelView.at).label("at"),
        )
        .where(ChannelView.actor == principal.actor, ChannelView.channel == AGENT)
        .group_by(ChannelView.item_id)
        .subquery()
    )
    stmt = (
        select(Item)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .join(seen, seen.c.item_id == Item.id)
        .where(acl.visible_filter(principal), acl.channel_filter(AGENT), ItemVersion.number > seen.c.version)
    )
    items, nxt = await paginate_by_id(session, stmt, Item.id, page)
    if not items:
        return [], nxt
    ids = [i.id for i in items]
    versions = {
        v.item_id: v
        for v in (
            await session.scalars(
                select(ItemVersion).join(Item, Item.published_version_id == ItemVersion.id).where(Item.id.in_(ids))
            )
        ).all()
    }
    reads = await reads_of(session, [principal.actor], ids)
    out = []
    for i in items:
        v = versions[i.id]
        read_version, read_at = reads[(principal.actor, i.id)]
        out.append(
            ChangedItem(
                item_id=i.id,
                title=v.title,
                read_version=read_version,
                read_at=read_at,
                current_version=v.number,
                published_at=v.published_at,
                change_note=v.change_note,
                diff=f"/api/v1/me/study/changes/{i.id}",
            )
        )
    return out, nxt


async def my_change(session: AsyncSession, principal: Principal, item_id: int) -> DiffOut:
    """The diff from the version I last viewed to the published one. I may see that older version:
    it was served to me. 404 when the item is not visible to me or not changed since."""
    _user_only(principal)
    row = (await session.execute(_visible_stmt(principal).where(Item.id == item_id))).first()
    read = (await reads_of(session, [principal.actor], [item_id])).get((principal.actor, item_id))
    if row is None or read is None or read[0] >= row[1]:
        raise NotFound(f"Item {item_id} has not changed since you read it", code="no_change")
    old = await session.scalar(select(ItemVersion).where(ItemVersion.item_id == item_id, ItemVersion.number == read[0]))
    new = await session.scalar(select(ItemVersion).where(ItemVersion.item_id == item_id, ItemVersion.number == row[1]))
    if old is None or new is None:
        raise NotFound(f"Item {item_id} has not changed since you read it", code="no_change")
    return diff_versions(item_id, old, new)


# ---------------------------------------------------------------- managers: progress per agent


def _audience_conditions(p: StudyPath, dept_paths: list[str]) -> list[Any]:
    conds: list[Any] = [
        User.is_active.is_(True),
        exists().where(user_roles.c.user_id == User.id, user_roles.c.role_id.in_(p.roles)),
    ]
    if p.departments:
        subtree = select(Department.id).where(or_(false(), *(Department.path.like(x + "%") for x in dept_paths)))
        conds.append(User.department_id.in_(subtree))
    return conds


async def progress(session: AsyncSession, p: StudyPath, page: PageParams) -> ProgressPage:
    """Every active user of the audience (by id) with what they read of the items they can read."""
    dept_paths = (
        list((await session.scalars(select(Department.path).where(Department.id.in_(p.departments)))).all())
        if p.departments
        else []
    )
    users, nxt = await paginate_by_id(
        session, select(User).where(*_audience_conditions(p, dept_paths)), User.id, page, descending=False
    )
    ids = [i for _, i in (await _items_of(session, [p.id]))[p.id]]
    visible = (
        {i: n for i, n, _, _, _ in (await session.execute(_visible_stmt(None).where(Item.id.in_(ids)))).all()}
        if ids
        else {}
    )
    readers = await acl.readers_of_many(session, list(visible))
    dept_ids = {u.department_id for u in users if u.department_id is not None}
    chains = (
        {
            d: _path_ids(path)
            for d, path in (
                await session.execute(select(Department.id, Department.path).where(Department.id.in_(dept_ids)))
            ).all()
        }
        if dept_ids
        else {}
    )
    reads = await reads_of(session, [f"user:{u.id}" for u in users], list(visible))
    now = utcnow()
    out = []
    for u in users:
        if any("*" in r.permissions for r in u.roles):
            subjects = None  # a superuser reads everything
        else:
            subjects = {
                acl.PUBLIC,
                acl.INTERNAL,
                f"user:{u.id}",
                *(f"role:{r.id}" for r in u.roles),
                *(f"dept:{d}" for d in chains.get(u.department_id or 0, [])),
            }
        mine = [i for i in visible if subjects is None or subjects & set(readers.get(i, []))]
        done = [
            reads[(f"user:{u.id}", i)]
            for i in mine
            if (f"user:{u.id}", i) in reads and reads[(f"user:{u.id}", i)][0] >= visible[i]
        ]
        completed = len(done) == len(mine)
        out.append(
            AgentProgress(
                user_id=u.id,
                username=u.username,
                display_name=u.display_name,
                department_id=u.department_id,
                total=len(mine),
                read=len(done),
                completed=completed,
                overdue=not completed and p.due_at is not None and p.due_at <= now,
                last_read_at=max((at for _, at in done), default=None),
            )
        )
    return ProgressPage(items=out, next_cursor=nxt, path_id=p.id, item_count=len(visible))
