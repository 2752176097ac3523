"""The channel read API, `/api/v1/channels/{channel}/...`: public on the channels of
`KB_PUBLIC_CHANNELS` (anonymous callers), otherwise for the channel's client or (agent) staff.
See app/channels/access.py for who may call, app/channels/service.py for what they see."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from app.channels import service
from app.channels.access import Caller
from app.channels.events import record_view
from app.channels.publiccache import PublicCache
from app.channels.ratelimit import RateLimit
from app.channels.render import RenderedItem
from app.channels.schemas import AnswersOut, CategoryTreeOut, ItemRef, RelatedOut
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.pagination import Page, Paging
from app.core.schemas import Id
from app.search.router import backend_of, search_log_of, semantic_of

router = APIRouter(prefix="/channels/{channel}", tags=["channels"], responses=PROBLEMS, dependencies=[RateLimit])

NOT_MODIFIED = {304: {"description": "Not modified: the copy named in If-None-Match is current"}}
MaxBytes = Annotated[int, Query(ge=64, le=65_536, description="wechat: the text's limit in UTF-8 bytes")]


def _json(model: object, response: Response | None = None) -> Response:
    out = Response(model.model_dump_json(), media_type="application/json")  # type: ignore[attr-defined]
    if response is not None:
        out.headers.update(response.headers)
    return out


@router.get("/answers", response_model=AnswersOut)
async def answers(
    request: Request,
    session: DbSession,
    caller: Caller,
    # A question, not a document: 1,000 characters keep the URL within what the HTTP server reads
    # (percent-encoded Chinese is 9 bytes a character); search uses the first 200.
    q: Annotated[str, Query(min_length=1, max_length=1_000, description="The question in the customer's words")],
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> Response:
    """The best answers for a question: the same engine and ranking as /search, filtered to what
    the caller sees on the channel, each with the channel's answer text and the question it
    matched. On `agent`, also related items and the attachments the agent may open."""
    out = await service.answers(
        session,
        backend_of(request),
        search_log_of(request),
        caller,
        q,
        limit,
        base_url=str(request.base_url),
        semantic=semantic_of(request),
    )
    response = _json(out)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/items/{item_id}", response_model=RenderedItem, responses=NOT_MODIFIED)
async def item(
    request: Request,
    caller: Caller,
    item_id: Id,
    max_bytes: MaxBytes = 2048,
    q: Annotated[str | None, Query(max_length=200, description="The query that led here (view analytics)")] = None,
    search_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The published version rendered for the channel: `web` sanitized HTML, `app` structured
    blocks, `wechat` plain text within `max_bytes` plus the 图文 news shape, `agent` the script
    (坐席话术), the full body and the attachments. Strong ETag per version and rendering; 304 on
    If-None-Match. Anything the caller does not see on the channel is 404, like a missing id."""
    keep = None
    if caller.is_anonymous:  # the website FAQ's hot path: kept renderings, checked against the feed
        cache: PublicCache = request.app.state.public_cache
        key = service.rendering_key(request, caller, max_bytes)
        if (hit := await cache.get(item_id, key)) is not None:
            record_view(request, caller, item_id, hit.version, q, search_id)
            return hit.response(request)
        head = cache.head
        keep = partial(cache.put, item_id, key, head=head)
    async with request.app.state.sessionmaker() as session:  # a read: closing it rolls back
        found = await service.shown_item(session, caller, item_id)
        record_view(request, caller, item_id, found[1].number, q, search_id)
        return await service.rendered_response(request, session, caller, found, max_bytes, keep)


@router.get("/items/by-external/{source}/{external_id}", response_model=RenderedItem, responses=NOT_MODIFIED)
async def item_by_external(
    request: Request,
    session: DbSession,
    caller: Caller,
    source: Annotated[str, Path(max_length=64)],
    external_id: Annotated[str, Path(max_length=128)],
    max_bytes: MaxBytes = 2048,
) -> Response:
    """The same rendering, found by the id a synced system gave the item."""
    found = await service.shown_item_by_external(session, caller, source, external_id)
    record_view(request, caller, found[0].id, found[1].number)
    return await service.rendered_response(request, session, caller, found, max_bytes)


@router.get("/categories", response_model=CategoryTreeOut)
async def categories(
    session: DbSession,
    caller: Caller,
    taxonomy: Annotated[str | None, Query(max_length=64, description="Taxonomy code or id; default: the first")] = None,
    include_empty: Annotated[bool, Query(description="Also nodes with no item shown to the caller")] = False,
) -> Response:
    """The navigation tree of a taxonomy with the count of items the caller sees on the channel in
    each node and below. Nodes without such items are left out unless `include_empty` (staff only)."""
    tree = await service.category_tree(session, caller, taxonomy, include_empty)
    response = _json(tree)
    response.headers["Cache-Control"] = service.cache_control(caller)
    return response


@router.get("/categories/{node_id}/items", response_model=Page[ItemRef])
async def category_items(session: DbSession, caller: Caller, node_id: Id, page: Paging) -> Page[ItemRef]:
    """The items the caller sees on the channel in a category and below, newest id first. A node
    with no such item is 404, like a missing one."""
    rows, nxt = await service.category_items(session, caller, node_id, page)
    return Page(items=rows, next_cursor=nxt)


@router.get("/related/{item_id}", response_model=list[RelatedOut])
async def related(
    request: Request,
    session: DbSession,
    caller: Caller,
    item_id: Id,
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> list[RelatedOut]:
    """Items related to one the caller sees: sharing its categories or tags first, then similar by
    search on its question."""
    found = await service.shown_item(session, caller, item_id)
    return await service.related(
        session, backend_of(request), search_log_of(request), caller, found, limit, semantic_of(request)
    )
