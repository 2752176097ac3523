"""Announcements: who sees one, what they have read, who has not.

The audience is three lists; each non-empty one narrows (roles: the reader holds one of them;
departments: the reader sits in one of them or below; channels: where it is shown, empty meaning
the agent channel, i.e. signed-in staff). Anonymous readers and channel clients hold no role or
department, so a role- or department-targeted announcement never reaches them.

Only a handful of announcements are current at a time, so the audience is matched in Python on
the current ones; the unread list (thousands of agents) is resolved in SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, false, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.announcements.models import PRIORITIES, Announcement, AnnouncementRead
from app.announcements.schemas import (
    AnnouncementCreate,
    AnnouncementOut,
    AnnouncementUpdate,
    AudienceIn,
    AudienceOut,
    ChannelAnnouncement,
    MyAnnouncement,
    ReadOut,
    UnreadPage,
    UnreadUser,
)
from app.audit.service import changes, record
from app.channels.render import plain_text, to_html
from app.core.db import like_pattern, utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed
from app.core.etag import make_etag
from app.core.pagination import PageParams, decode_cursor, encode_cursor, paginate_by_id
from app.core.schemas import MAX_ID
from app.identity.models import Department, Role, User, user_roles
from app.identity.permissions import ALL, OPERATIONS, SYSTEM_ACCESS
from app.identity.principal import Principal
from app.identity.service import department_paths, role_ids_by_name
from app.knowledge.service import check_validity, sanitize_html

READ = "announcements:read"
MANAGE = "announcements:manage"
AGENT = "agent"
_RANK = {p: i for i, p in enumerate(PRIORITIES)}  # normal 0, high 1, urgent 2


def etag_of(a: Announcement) -> str:
    return make_etag("announcement", a.id, a.row_version)


def not_found(id_: int) -> NotFound:
    return NotFound(f"No announcement with id {id_}", code="announcement_not_found")


def is_current(a: Announcement, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return (
        a.state == "published"
        and (a.valid_from is None or a.valid_from <= now)
        and (a.valid_to is None or a.valid_to > now)
    )


def in_audience(a: Announcement, principal: Principal, channel: str = AGENT) -> bool:
    if not (channel in a.channels if a.channels else channel == AGENT):
        return False
    if a.roles and not set(a.roles) & set(principal.role_ids):
        return False
    return not (a.departments and not set(a.departments) & set(principal.department_ids))


def sort_key(a: Announcement, *, mandatory_first: bool = False) -> tuple[int, ...]:
    """Pinned first, then priority, then newest (mandatory ones before all of that for the to-do list)."""
    published = int((a.published_at or a.created_at).timestamp() * 1_000_000)
    return (int(mandatory_first and not a.mandatory), int(not a.pinned), -_RANK.get(a.priority, 0), -published, -a.id)


def _html(a: Announcement) -> str:
    return to_html(a.body, a.body_format)


# ---------------------------------------------------------------- audience


async def resolve_audience(session: AsyncSession, audience: AudienceIn) -> tuple[list[int], list[int], list[str]]:
    """Role names -> ids and known department ids; 422 naming the field for anything unknown."""
    role_ids = sorted((await role_ids_by_name(session, audience.roles, "audience.roles")).values())
    dept_ids = sorted(await department_paths(session, audience.departments, "audience.departments"))
    return role_ids, dept_ids, sorted(set(audience.channels))


async def role_names(session: AsyncSession, rows: Sequence[Announcement]) -> dict[int, str]:
    ids = {r for a in rows for r in a.roles}
    if not ids:
        return {}
    return dict((await session.execute(select(Role.id, Role.name).where(Role.id.in_(ids)))).all())


def out(a: Announcement, names: dict[int, str]) -> AnnouncementOut:
    return AnnouncementOut(
        id=a.id,
        title=a.title,
        body=a.body,
        body_format=a.body_format,
        html=_html(a),
        audience=AudienceOut(
            roles=[names[r] for r in a.roles if r in names], departments=list(a.departments), channels=list(a.channels)
        ),
        priority=a.priority,
        mandatory=a.mandatory,
        pinned=a.pinned,
        valid_from=a.valid_from,
        valid_to=a.valid_to,
        state=a.state,
        current=is_current(a),
        published_at=a.published_at,
        withdrawn_at=a.withdrawn_at,
        created_by=a.created_by,
        updated_by=a.updated_by,
        created_at=a.created_at,
        updated_at=a.updated_at,
        row_version=a.row_version,
        etag=etag_of(a),
    )


def _summary(a: Announcement) -> dict[str, Any]:
    return {
        "title": a.title,
        "priority": a.priority,
        "mandatory": a.mandatory,
        "pinned": a.pinned,
        "roles": list(a.roles),
        "departments": list(a.departments),
        "channels": list(a.channels),
        "valid_from": a.valid_from.isoformat() if a.valid_from else None,
        "valid_to": a.valid_to.isoformat() if a.valid_to else None,
        "state": a.state,
    }


async def _flush(session: AsyncSession, a: Announcement) -> None:
    """The optimistic lock on row_version caught a concurrent writer: 412, nothing written."""
    id_ = a.id
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        current = await session.scalar(select(Announcement.row_version).where(Announcement.id == id_))
        raise PreconditionFailed(
            "Someone changed this announcement at the same moment; reload and try again",
            current_etag=make_etag("announcement", id_, current or 0),
            current_version=current,
        )


def _clean_body(body: str, body_format: str) -> str:
    return sanitize_html(body) if body_format == "html" else body


# ---------------------------------------------------------------- managing


async def create(session: AsyncSession, actor: Principal, data: AnnouncementCreate) -> Announcement:
    check_validity(data.valid_from, data.valid_to)
    roles, departments, channels = await resolve_audience(session, data.audience)
    now = utcnow()
    a = Announcement(
        title=data.title,
        body=_clean_body(data.body, data.body_format),
        body_format=data.body_format,
        priority=data.priority,
        mandatory=data.mandatory,
        pinned=data.pinned,
        roles=roles,
        departments=departments,
        channels=channels,
        valid_from=data.valid_from,
        valid_to=data.valid_to,
        state=data.state,
        published_at=now if data.state == "published" else None,
        created_by=actor.actor,
        updated_by=actor.actor,
        created_at=now,
        updated_at=now,
    )
    session.add(a)
    await session.flush()
    record(session, actor, "announcement.create", "announcement", a.id, after=_summary(a))
    await session.commit()
    return a


def _transition(a: Announcement, state: str) -> None:
    if state == a.state:
        return
    if state == "draft":
        raise Conflict(
            "A published or withdrawn announcement cannot become a draft again",
            code="invalid_transition",
            state=a.state,
        )
    now = utcnow()
    if state == "published":
        a.published_at = a.published_at or now
        a.withdrawn_at = None
    else:
        a.withdrawn_at = now
    a.state = state


async def update(session: AsyncSession, actor: Principal, a: Announcement, data: AnnouncementUpdate) -> Announcement:
    sent = data.model_fields_set
    before = _summary(a)
    for field in ("title", "priority", "mandatory", "pinned"):
        value = getattr(data, field)
        if field in sent and value is None:
            raise InvalidInput(f"{field} cannot be null", code="validation_error", field=field)
        if value is not None:
            setattr(a, field, value)
    valid_from = data.valid_from if "valid_from" in sent else a.valid_from
    valid_to = data.valid_to if "valid_to" in sent else a.valid_to
    check_validity(valid_from, valid_to)
    a.valid_from, a.valid_to = valid_from, valid_to
    if data.body is not None or data.body_format is not None:
        fmt = data.body_format or a.body_format
        a.body, a.body_format = _clean_body(data.body if data.body is not None else a.body, fmt), fmt
    if data.audience is not None:
        a.roles, a.departments, a.channels = await resolve_audience(session, data.audience)
    if data.state is not None:
        _transition(a, data.state)
    a.updated_by = actor.actor
    a.updated_at = utcnow()  # every PATCH is an UPDATE: the ETag changes
    await _flush(session, a)
    record(session, actor, "announcement.update", "announcement", a.id, **changes(before, _summary(a)))
    await session.commit()
    return a


async def withdraw(session: AsyncSession, actor: Principal, a: Announcement) -> Announcement:
    if a.state != "withdrawn":
        _transition(a, "withdrawn")
        a.updated_by = actor.actor
        await _flush(session, a)
        record(session, actor, "announcement.withdraw", "announcement", a.id)
        await session.commit()
    return a


async def get(session: AsyncSession, id_: int) -> Announcement:
    a = await session.get(Announcement, id_)
    if a is None:
        raise not_found(id_)
    return a


async def list_all(
    session: AsyncSession,
    page: PageParams,
    *,
    state: str | None = None,
    priority: str | None = None,
    mandatory: bool | None = None,
    pinned: bool | None = None,
    current: bool | None = None,
    q: str | None = None,
) -> tuple[list[Announcement], str | None]:
    stmt = select(Announcement)
    if state:
        stmt = stmt.where(Announcement.state == state)
    if priority:
        stmt = stmt.where(Announcement.priority == priority)
    if mandatory is not None:
        stmt = stmt.where(Announcement.mandatory.is_(mandatory))
    if pinned is not None:
        stmt = stmt.where(Announcement.pinned.is_(pinned))
    if current is not None:
        cond = _current_condition(utcnow())
        stmt = stmt.where(cond if current else ~cond)
    if q:
        stmt = stmt.where(Announcement.title.like(like_pattern(q), escape="\\"))
    return await paginate_by_id(session, stmt, Announcement.id, page)


def _current_condition(now: datetime) -> Any:
    return and_(
        Announcement.state == "published",
        or_(Announcement.valid_from.is_(None), Announcement.valid_from <= now),
        or_(Announcement.valid_to.is_(None), Announcement.valid_to > now),
    )


# ---------------------------------------------------------------- reading


async def current_for(session: AsyncSession, principal: Principal, channel: str = AGENT) -> list[Announcement]:
    """The announcements `principal` sees on `channel` now, pinned first, then priority, then newest."""
    rows = (await session.scalars(select(Announcement).where(_current_condition(utcnow())))).all()
    return sorted((a for a in rows if in_audience(a, principal, channel)), key=sort_key)


async def _reads(session: AsyncSession, user_id: int, ids: list[int]) -> dict[int, datetime]:
    if not ids:
        return {}
    return dict(
        (
            await session.execute(
                select(AnnouncementRead.announcement_id, AnnouncementRead.read_at).where(
                    AnnouncementRead.user_id == user_id, AnnouncementRead.announcement_id.in_(ids)
                )
            )
        ).all()
    )


def _page_in_memory(rows: list[Announcement], page: PageParams) -> tuple[list[Announcement], str | None]:
    """Keyset paging over a list sorted by `key`: the cursor holds the last key shown."""
    if page.cursor:
        after = decode_cursor(page.cursor).get("k")
        if (
            not isinstance(after, list)
            or len(after) != 5
            or not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_ID for v in after)
        ):
            raise InvalidInput("The cursor is not valid; start again without it", code="invalid_cursor")
        rows = [a for a in rows if list(sort_key(a)) > after]
    shown = rows[: page.limit]
    nxt = encode_cursor({"k": list(sort_key(shown[-1]))}) if len(rows) > page.limit else None
    return shown, nxt


def _user(principal: Principal) -> int:
    if principal.kind != "user":
        raise Forbidden("Announcements and read receipts are for signed-in users", code="users_only")
    return principal.id


def mine_out(a: Announcement, read_at: datetime | None) -> MyAnnouncement:
    return MyAnnouncement(
        id=a.id,
        title=a.title,
        html=_html(a),
        priority=a.priority,
        mandatory=a.mandatory,
        pinned=a.pinned,
        valid_from=a.valid_from,
        valid_to=a.valid_to,
        published_at=a.published_at,
        read=read_at is not None,
        read_at=read_at,
    )


async def mine(
    session: AsyncSession, principal: Principal, page: PageParams, unread: bool = False
) -> tuple[list[MyAnnouncement], str | None]:
    user_id = _user(principal)
    rows = await current_for(session, principal)
    reads = await _reads(session, user_id, [a.id for a in rows])
    if unread:
        rows = [a for a in rows if a.id not in reads]
    shown, nxt = _page_in_memory(rows, page)
    return [mine_out(a, reads.get(a.id)) for a in shown], nxt


async def unread_for(session: AsyncSession, principal: Principal, limit: int) -> tuple[int, list[MyAnnouncement]]:
    """For the to-do list (待办): how many current announcements in my audience I have not read, and
    the first `limit` of them, mandatory ones first. Callers other than users have none."""
    if principal.kind != "user" or not principal.can(READ):
        return 0, []
    rows = await current_for(session, principal)
    reads = await _reads(session, principal.id, [a.id for a in rows])
    todo = sorted((a for a in rows if a.id not in reads), key=lambda a: sort_key(a, mandatory_first=True))
    return len(todo), [mine_out(a, None) for a in todo[: max(limit, 0)]]


async def mark_read(session: AsyncSession, principal: Principal, id_: int) -> ReadOut:
    """Idempotent: the first read_at stays. 404 unless it is current and the caller is in its audience."""
    user_id = _user(principal)
    a = await session.get(Announcement, id_)
    if a is None or not is_current(a) or not in_audience(a, principal):
        raise not_found(id_)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(AnnouncementRead.__table__)
        .values(  # a concurrent first read wins alike
            announcement_id=id_, user_id=user_id, read_at=utcnow()
        )
        .on_conflict_do_nothing()
    )
    read_at = (await _reads(session, user_id, [id_]))[id_]
    await session.commit()
    return ReadOut(announcement_id=id_, read_at=read_at)


def _may_read(roles: Sequence[Role]) -> Any:
    """SQL: the user may read announcements, i.e. holds `*`, or system access, the module and the
    permission, each through any of their roles (as `Principal.can` combines them)."""

    def holding(*perms: str) -> Any:
        ids = [r.id for r in roles if any(p in r.permissions for p in perms)]
        return exists().where(user_roles.c.user_id == User.id, user_roles.c.role_id.in_(ids))

    return or_(holding(ALL), and_(holding(SYSTEM_ACCESS), holding(OPERATIONS[READ][0]), holding(READ)))


async def unread_users(session: AsyncSession, a: Announcement, page: PageParams) -> UnreadPage:
    """Active users in the audience who may read announcements and have not read this one."""
    conds: list[Any] = [User.is_active.is_(True), _may_read((await session.scalars(select(Role))).all())]
    if a.channels and AGENT not in a.channels:
        conds.append(false())  # shown to no staff member
    if a.roles:
        conds.append(exists().where(user_roles.c.user_id == User.id, user_roles.c.role_id.in_(a.roles)))
    if a.departments:
        paths = (await session.scalars(select(Department.path).where(Department.id.in_(a.departments)))).all()
        subtree = select(Department.id).where(or_(false(), *(Department.path.like(p + "%") for p in paths)))
        conds.append(User.department_id.in_(subtree))
    has_read = exists().where(AnnouncementRead.announcement_id == a.id, AnnouncementRead.user_id == User.id)
    total = await session.scalar(select(func.count()).select_from(User).where(*conds)) or 0
    read = await session.scalar(select(func.count()).select_from(User).where(*conds, has_read)) or 0
    rows, nxt = await paginate_by_id(session, select(User).where(*conds, ~has_read), User.id, page, descending=False)
    return UnreadPage(
        items=[
            UnreadUser(id=u.id, username=u.username, display_name=u.display_name, department_id=u.department_id)
            for u in rows
        ],
        next_cursor=nxt,
        total=total,
        read=read,
        unread=total - read,
    )


def channel_out(a: Announcement) -> ChannelAnnouncement:
    return ChannelAnnouncement(
        id=a.id,
        title=a.title,
        html=_html(a),
        text=plain_text(a.body, a.body_format),
        priority=a.priority,
        pinned=a.pinned,
        valid_from=a.valid_from,
        valid_to=a.valid_to,
        published_at=a.published_at,
    )


async def on_channel(
    session: AsyncSession, principal: Principal, channel: str, page: PageParams
) -> tuple[list[ChannelAnnouncement], str | None, str]:
    """The page shown on a channel, its next cursor and its ETag."""
    shown, nxt = _page_in_memory(await current_for(session, principal, channel), page)
    digest = hashlib.sha1(repr((channel, [(a.id, a.row_version) for a in shown], nxt)).encode()).hexdigest()[:20]
    return [channel_out(a) for a in shown], nxt, f'"ann-{channel}-{digest}"'
