"""公告 (announcements): managers (`announcements:manage`) write them and see who has not read a
mandatory one; signed-in staff (`announcements:read`) list theirs and mark them read; the channel
read API shows the ones addressed to a channel (anonymous on public channels, like the other
channel reads, and never a role- or department-targeted one there)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.announcements import service
from app.announcements.models import Announcement
from app.announcements.schemas import (
    AnnouncementCreate,
    AnnouncementOut,
    AnnouncementUpdate,
    ChannelAnnouncement,
    MyAnnouncement,
    Priority,
    ReadOut,
    State,
    UnreadPage,
)
from app.channels.access import Caller
from app.channels.ratelimit import RateLimit
from app.channels.service import cache_control
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.etag import IfMatch, check_if_match, not_modified
from app.core.pagination import Page, Paging
from app.core.schemas import Id
from app.identity.deps import Require

router = APIRouter(tags=["announcements"], responses=PROBLEMS)
channel_router = APIRouter(
    prefix="/channels/{channel}", tags=["channels"], responses=PROBLEMS, dependencies=[RateLimit]
)


Manager = Require(service.MANAGE)
Reader = Require(service.READ)
NOT_MODIFIED = {304: {"description": "Not modified: the copy named in If-None-Match is current"}}


async def _out(session: DbSession, a: Announcement, response: Response) -> AnnouncementOut:
    response.headers["ETag"] = service.etag_of(a)
    return service.out(a, await service.role_names(session, [a]))


@router.post("/announcements", response_model=AnnouncementOut, status_code=status.HTTP_201_CREATED)
async def create_announcement(
    session: DbSession, actor: Manager, body: AnnouncementCreate, response: Response
) -> AnnouncementOut:
    """Publish (or save as a draft) an announcement. An unknown role or department in the audience
    is 422 `unknown_role` / `unknown_department` naming the field; an inverted validity window is
    422 `invalid_validity`."""
    return await _out(session, await service.create(session, actor, body), response)


@router.get("/announcements", response_model=Page[AnnouncementOut])
async def list_announcements(
    session: DbSession,
    actor: Manager,
    page: Paging,
    state: State | None = None,
    priority: Priority | None = None,
    mandatory: bool | None = None,
    pinned: bool | None = None,
    current: Annotated[bool | None, Query(description="Published and valid now (or, false, not)")] = None,
    q: Annotated[str | None, Query(max_length=100, description="Title contains")] = None,
) -> Page[AnnouncementOut]:
    """Every announcement, newest first."""
    rows, nxt = await service.list_all(
        session, page, state=state, priority=priority, mandatory=mandatory, pinned=pinned, current=current, q=q
    )
    names = await service.role_names(session, rows)
    return Page(items=[service.out(a, names) for a in rows], next_cursor=nxt)


@router.get("/announcements/{announcement_id}", response_model=AnnouncementOut)
async def get_announcement(
    session: DbSession, actor: Manager, announcement_id: Id, response: Response
) -> AnnouncementOut:
    return await _out(session, await service.get(session, announcement_id), response)


@router.patch("/announcements/{announcement_id}", response_model=AnnouncementOut)
async def update_announcement(
    session: DbSession,
    actor: Manager,
    announcement_id: Id,
    body: AnnouncementUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> AnnouncementOut:
    """Change what was sent (If-Match required: 428 without, 412 when stale). `state`: publish a
    draft, withdraw, publish again; back to draft is 409 `invalid_transition`."""
    a = await service.get(session, announcement_id)
    check_if_match(if_match, service.etag_of(a), a.row_version)
    return await _out(session, await service.update(session, actor, a, body), response)


@router.delete("/announcements/{announcement_id}", response_model=AnnouncementOut)
async def withdraw_announcement(
    session: DbSession, actor: Manager, announcement_id: Id, response: Response, if_match: IfMatch = None
) -> AnnouncementOut:
    """Withdraw (撤回): no longer shown anywhere; kept with its read receipts."""
    a = await service.get(session, announcement_id)
    check_if_match(if_match, service.etag_of(a), a.row_version)
    return await _out(session, await service.withdraw(session, actor, a), response)


@router.get("/announcements/{announcement_id}/unread", response_model=UnreadPage)
async def unread(session: DbSession, actor: Manager, announcement_id: Id, page: Paging) -> UnreadPage:
    """Who in the audience has not read it (active users holding `announcements:read` through one
    of their roles, narrowed by the audience's roles and departments), by user id, with the counts."""
    return await service.unread_users(session, await service.get(session, announcement_id), page)


@router.post("/announcements/{announcement_id}/read", response_model=ReadOut)
async def mark_read(session: DbSession, reader: Reader, announcement_id: Id) -> ReadOut:
    """已读: record that I read it. Reading again keeps the first time. 404 unless it is current
    (published, inside its window) and I am in its audience."""
    return await service.mark_read(session, reader, announcement_id)


@router.get("/me/announcements", response_model=Page[MyAnnouncement])
async def my_announcements(
    session: DbSession,
    reader: Reader,
    page: Paging,
    unread: Annotated[bool, Query(description="Only those I have not read")] = False,
) -> Page[MyAnnouncement]:
    """The current announcements addressed to me: pinned first, then priority, then newest."""
    rows, nxt = await service.mine(session, reader, page, unread)
    return Page(items=rows, next_cursor=nxt)


@channel_router.get("/announcements", response_model=Page[ChannelAnnouncement], responses=NOT_MODIFIED)
async def channel_announcements(request: Request, session: DbSession, caller: Caller, page: Paging) -> Response:
    """The current announcements addressed to this channel (pinned, priority, newest first). ETag
    and Cache-Control like the other channel reads; 304 on a current If-None-Match."""
    items, nxt, etag = await service.on_channel(session, caller.principal, caller.channel, page)
    conditional = Response(status_code=304, headers={"Vary": "Authorization"})
    if not_modified(request, conditional, etag, cache_control(caller)):
        return conditional
    return Response(
        Page[ChannelAnnouncement](items=items, next_cursor=nxt).model_dump_json(),
        media_type="application/json",
        headers=dict(conditional.headers),
    )
