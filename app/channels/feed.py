"""The change feed over HTTP: `GET /changes?channel=` and `GET /channels/{channel}/snapshot`.

A front end syncs so: page through the snapshot (every item it sees on the channel now), then
follow `/changes` from the snapshot's `changes_cursor`, for ever, resuming from each page's
`next_cursor`. Per event: `shown` true -> keep (item_id, version), false -> drop the item. Its
copy then equals the channel's view. Callers as for channel reads (app/channels/access.py), and
an event reaches only callers who could read the item before or after it (a public feed never
names an internal item). The logic (reconcile, sweep, the counter) is in app/channels/changes.py.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from app.channels.access import Caller, ChannelCaller, channel_caller
from app.channels.changes import GONE, KINDS, feed_position, read_events
from app.channels.ratelimit import RateLimit, check_rate
from app.channels.service import shown_select
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, AppError, BadRequest
from app.core.pagination import encode_cursor
from app.core.schemas import MAX_ID
from app.identity.deps import MaybePrincipal
from app.knowledge import acl
from app.knowledge.models import Item, ItemVersion

router = APIRouter(tags=["channels"], responses=PROBLEMS)
channel_router = APIRouter(
    prefix="/channels/{channel}", tags=["channels"], responses=PROBLEMS, dependencies=[RateLimit]
)

SCAN_FACTOR = 10  # events examined per requested one (the rest are other readers' items)
MAX_LIMIT = 200


class ChangeOut(BaseModel):
    seq: int
    kind: str = Field(description=", ".join(KINDS))
    channel: str
    item_id: int
    version: int | None = Field(description="The version shown (for gone kinds: the one that was shown)")
    external_id: str | None
    source: str | None
    visibility: str
    shown: bool = Field(
        description="Whether the item is in YOUR view after this event: keep (item_id, version) "
        "when true, drop the item when false"
    )
    at: datetime


class ChangesPage(BaseModel):
    items: list[ChangeOut]
    next_cursor: str = Field(description="Where to resume (always given, also on an empty page)")
    has_more: bool = Field(description="More events may be waiting: ask again at once")


class SnapshotItem(BaseModel):
    item_id: int
    version: int
    external_id: str | None
    source: str | None
    visibility: str
    updated_at: datetime


class SnapshotPage(BaseModel):
    items: list[SnapshotItem]
    next_cursor: str | None
    changes_cursor: str = Field(
        description="The change feed's position when the snapshot began: follow "
        "/changes from it once the last page is read"
    )


def _bad_cursor() -> BadRequest:
    return BadRequest("The cursor is not valid; start again without it", code="invalid_cursor")


def _int(values: dict[str, Any], key: str, low: int = 0) -> int:
    v = values.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= MAX_ID:
        raise _bad_cursor()
    return v


def _decode(cursor: str) -> dict[str, Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad_cursor()
    if not isinstance(values, dict):
        raise _bad_cursor()
    return values


def _resync(detail: str) -> AppError:
    return AppError(
        detail + "; read the channel's snapshot again and follow the feed from its changes_cursor",
        status=410,
        code="resync_required",
    )


def _sees(caller: ChannelCaller, subjects: set[str], readers: list[str]) -> bool:
    return caller.principal.is_superuser or bool(subjects.intersection(readers))


@router.get("/changes", response_model=ChangesPage, summary="The change feed of a channel (ordered, resumable)")
async def changes(
    request: Request,
    response: Response,
    session: DbSession,
    principal: MaybePrincipal,
    channel: Annotated[str, Query(max_length=16, description="agent, web, wechat or app")],
    cursor: Annotated[
        str | None,
        Query(max_length=500, description="next_cursor of the previous page, or the snapshot's changes_cursor"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Events per page")] = 50,
) -> ChangesPage:
    """Events in commit order: `published`, `updated` (a new version, or a new external id),
    `unpublished`, `archived`, `expired` (valid_to passed; sent by a sweep every
    `KB_CHANNEL_SWEEP_SECONDS`), `visibility_changed`. The cursor is opaque and stable across
    restarts and processes; malformed: 400 `invalid_cursor`; older than the retention
    (`KB_CHANGES_RETENTION_DAYS`): 410 `resync_required`. Without a cursor: from the oldest event kept."""
    caller = await channel_caller(request, principal, channel)
    if policy := await check_rate(request, caller):
        response.headers["RateLimit-Policy"] = policy
    head, floor = await feed_position(session)
    after = floor
    if cursor is not None:
        after = _int(_decode(cursor), "s")
        if after < floor:
            raise _resync("This cursor is older than the feed's retention")
        if after > head:
            raise _resync("This cursor is not from this feed (it is ahead of it)")
    scan = limit * SCAN_FACTOR
    rows = await read_events(session, caller.channel, after, scan + 1)
    subjects = set(acl.subjects_of(caller.principal))
    out: list[ChangeOut] = []
    position, examined = after, 0
    for row in rows[:scan]:
        examined += 1
        position = row.seq
        if not _sees(caller, subjects, row.readers):
            continue
        out.append(
            ChangeOut(
                seq=row.seq,
                kind=row.kind,
                channel=row.channel,
                item_id=row.item_id,
                version=row.version,
                external_id=row.external_id,
                source=row.source,
                visibility=row.visibility,
                at=row.at,
                shown=row.kind not in GONE and _sees(caller, subjects, row.readers_after),
            )
        )
        if len(out) == limit:
            break
    return ChangesPage(items=out, next_cursor=encode_cursor({"s": position}), has_more=len(rows) > examined)


@channel_router.get(
    "/snapshot",
    response_model=SnapshotPage,
    summary="Every item the channel shows the caller now, to start (or restart) a change feed from",
)
async def snapshot(
    session: DbSession,
    caller: Caller,
    cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 100,
) -> SnapshotPage:
    """Paged by item id. `changes_cursor` is the feed's position when the first page was read (the
    page cursors carry it): events after it replay whatever changed while the pages were read."""
    if cursor is None:
        after, position = 0, (await feed_position(session))[0]  # the position first, then the items
    else:
        values = _decode(cursor)
        after, position = _int(values, "i", 1), _int(values, "c")
    stmt = (
        shown_select(caller)
        .where(Item.id > after)
        .order_by(Item.id)
        .limit(limit + 1)
        .with_only_columns(Item.id, ItemVersion.number, Item.external_id, Item.source, Item.visibility, Item.updated_at)
    )
    rows = (await session.execute(stmt)).all()
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor({"i": rows[-1].id, "c": position})
    return SnapshotPage(
        items=[
            SnapshotItem(
                item_id=r.id,
                version=r.number,
                external_id=r.external_id,
                source=r.source,
                visibility=r.visibility,
                updated_at=r.updated_at,
            )
            for r in rows
        ],
        next_cursor=nxt,
        changes_cursor=encode_cursor({"s": position}),
    )
