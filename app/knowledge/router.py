"""Knowledge items: content, versions, workflow, ACLs.

Reading: editors (any knowledge permission beyond read) see every version; readers (only
knowledge:read) see the published version while it is valid and shown on their channel. An item
the caller may not read answers 404, as if it did not exist (the denial is audited).

Writing: every write names the item's ETag in `If-Match` (428 without, 412 when stale). The ETag
covers the item and its draft.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from app.core.db import utcnow
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from app.core.etag import IfMatch, check_if_match, not_modified
from app.core.pagination import Page, Paging
from app.core.schemas import Id, VersionNo
from app.identity.deps import CurrentPrincipal, Require, RequireAny, deny, record_denial, require_any
from app.identity.principal import Principal
from app.knowledge import acl, proposals, service, workflow
from app.knowledge.deps import Writer, accessible_item, item_not_found
from app.knowledge.diff import diff_versions
from app.knowledge.models import Item, ItemVersion
from app.knowledge.schemas import (
    AclIn,
    DiffOut,
    DraftUpdate,
    ItemAclOut,
    ItemCreate,
    ItemOut,
    ItemSummary,
    ItemUpdate,
    NodeAclOut,
    RestoreIn,
    ReviewOut,
    TransitionIn,
    VersionOut,
    VersionSummary,
)
from app.search import service as search_service
from app.search.backends.base import SearchUnavailable
from app.search.schemas import SimilarItemOut

router = APIRouter(tags=["knowledge"], responses=PROBLEMS)

Reader = Require("knowledge:read")
Editor = Require("knowledge:edit")
AclAdmin = Require("knowledge:acl")
CACHE = "private, no-cache"


def version_out(v: ItemVersion) -> VersionOut:
    out = VersionOut.model_validate(v)
    out.answers = service.answers(v)
    return out


async def item_out(
    session: DbSession, principal: Principal, item: Item, version: ItemVersion, response: Response | None = None
) -> ItemOut:
    published = await service.published_version(session, item)
    allowed: list[str] = []
    if service.sees_open_versions(principal, item) and item.status != "archived":
        allowed = [
            a
            for a in workflow.allowed_actions(version.state, await workflow.review_required(session, item))
            if proposals.may_transition(principal, item, version, a, workflow.PERMISSIONS[a])
        ]
    etag = service.etag_of(item)
    if response is not None:
        response.headers["ETag"] = etag
    return ItemOut(
        id=item.id,
        item_type=item.item_type,
        owner_id=item.owner_id,
        status=item.status,
        visibility=item.visibility,
        valid_from=item.valid_from,
        valid_to=item.valid_to,
        review_due=item.review_due,
        source=item.source,
        external_id=item.external_id,
        latest_version_no=item.latest_version_no,
        published_version_no=published.number if published else None,
        row_version=item.row_version,
        etag=etag,
        expired=item.valid_to is not None and item.valid_to <= utcnow(),
        created_by=item.created_by,
        created_at=item.created_at,
        updated_at=item.updated_at,
        version=version_out(version),
        allowed_actions=allowed,
    )


# ---------------------------------------------------------------- items


@router.post("/items", response_model=ItemOut, status_code=status.HTTP_201_CREATED)
async def create_item(
    request: Request,
    session: DbSession,
    actor: RequireAny("knowledge:create", proposals.PROPOSE_CASE),
    body: ItemCreate,
    response: Response,
) -> ItemOut:
    """Create an item with its first version, a draft. `knowledge:propose_case` alone creates items of
    type `case` only (a best-practice proposal; any other type is 403 `permission_denied`).
    `possible_duplicates` lists published items that seem to answer the same question (never fails
    the create: empty when search is down)."""
    if not proposals.may_create(actor, body.item_type):
        raise await deny(request, actor, "knowledge:create")
    item, version = await service.create_item(session, actor, body)
    out = await item_out(session, actor, item, version, response)
    out.possible_duplicates = await _duplicates(request, actor, item.id, version)
    return out


def _questions(version: ItemVersion) -> list[str]:
    return [version.question or version.title, version.title, *(version.similar_questions or [])]


async def _duplicates(request: Request, actor: Principal, item_id: int, version: ItemVersion) -> list[SimilarItemOut]:
    services = request.app.state.services
    return await search_service.possible_duplicates(
        services.get("search"), services.get("semantic"), actor, item_id, _questions(version)
    )


@router.get("/items/{item_id}/similar", response_model=list[SimilarItemOut])
async def similar(
    request: Request, session: DbSession, principal: Reader, item_id: Id, limit: Annotated[int, Query(ge=1, le=50)] = 10
) -> list[SimilarItemOut]:
    """Published items that answer the same question as this one (near duplicates), from the keyword
    and semantic legs under the caller's read ACL, best first, without the item itself."""
    item = await accessible_item(request, session, principal, item_id)
    version = await service.served_version(session, principal, item)
    if version is None:
        raise item_not_found(item_id)
    services = request.app.state.services
    try:
        return await search_service.similar_items(
            services["search"], services.get("semantic"), principal, item.id, _questions(version), limit
        )
    except SearchUnavailable as e:
        raise ServiceUnavailable(f"Search is unavailable: {e}", code="search_unavailable", headers={"Retry-After": "5"})


@router.get("/items", response_model=Page[ItemSummary])
async def list_items(
    request: Request,
    session: DbSession,
    principal: Reader,
    page: Paging,
    item_type: Annotated[str | None, Query(alias="type", max_length=32)] = None,
    status_: Annotated[Literal["draft", "published", "unpublished", "archived"] | None, Query(alias="status")] = None,
    state: Literal["draft", "in_review", "approved", "rejected", "published", "unpublished", "archived"] | None = None,
    category: Annotated[Id | None, Query(description="A taxonomy node id; its whole subtree matches")] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    owner_id: Id | None = None,
    valid_at: Annotated[datetime | None, Query(description="Only items valid at this instant")] = None,
    updated_since: datetime | None = None,
    q: Annotated[str | None, Query(max_length=100, description="Title contains")] = None,
) -> Page[ItemSummary]:
    """Editors list every item they may read (latest version); readers the published, currently
    valid items on their channel. Attribute filters: `attr.<code>=<value>` (any number)."""
    attrs = {k[5:]: v for k, v in request.query_params.items() if k.startswith("attr.") and len(k) > 5}
    if len(attrs) > 20:
        raise InvalidInput("At most 20 attribute filters", code="too_many_filters")
    for t in (valid_at, updated_since):
        if t is not None and t.tzinfo is None:
            raise InvalidInput("Datetimes need a timezone (e.g. 2026-01-01T00:00:00+08:00)", code="naive_datetime")
    rows, nxt = await service.list_items(
        session,
        principal,
        page,
        item_type=item_type,
        status=status_,
        state=state,
        category_id=category,
        tag=tag,
        owner_id=owner_id,
        valid_at=valid_at,
        updated_since=updated_since,
        q=q,
        attrs=attrs,
    )
    return Page(
        items=[
            ItemSummary(
                id=i.id,
                item_type=i.item_type,
                status=i.status,
                visibility=i.visibility,
                owner_id=i.owner_id,
                valid_from=i.valid_from,
                valid_to=i.valid_to,
                review_due=i.review_due,
                updated_at=i.updated_at,
                version_no=v.number,
                state=v.state,
                title=v.title,
                question=v.question,
            )
            for i, v in rows
        ],
        next_cursor=nxt,
    )


@router.get("/items/{item_id}", response_model=ItemOut, responses={304: {"description": "Not modified"}})
async def get_item(
    request: Request, response: Response, session: DbSession, principal: Reader, item_id: Id
) -> ItemOut | Response:
    """The item and the version the caller sees. Sends `ETag`; answers 304 to a current `If-None-Match`."""
    item = await accessible_item(request, session, principal, item_id)
    version = await service.served_version(session, principal, item)
    if version is None:
        raise item_not_found(item_id)
    if not_modified(request, response, service.etag_of(item), CACHE):
        return Response(status_code=304, headers={"ETag": service.etag_of(item), "Cache-Control": CACHE})
    return await item_out(session, principal, item, version, response)


@router.patch("/items/{item_id}", response_model=ItemOut)
async def update_item(
    request: Request,
    response: Response,
    session: DbSession,
    actor: Editor,
    item_id: Id,
    body: ItemUpdate,
    if_match: IfMatch = None,
) -> ItemOut:
    """Owner, visibility, validity window (`valid_to` after `valid_from`), review date, type,
    external reference. Content changes go to the draft."""
    item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
    check_if_match(if_match, service.etag_of(item), item.row_version)
    await service.update_item(session, actor, item, body)
    return await item_out(session, actor, item, await service.latest_version(session, item), response)


# ---------------------------------------------------------------- drafts and versions


@router.get("/items/{item_id}/draft", response_model=VersionOut)
async def get_draft(request: Request, response: Response, session: DbSession, actor: Editor, item_id: Id) -> VersionOut:
    """The open draft (or rejected version), with the item's ETag for the next PATCH."""
    item = await accessible_item(request, session, actor, item_id)
    latest = await service.latest_version(session, item)
    if latest.state not in ("draft", "rejected"):
        raise NotFound("This item has no open draft; PATCH /draft starts one", code="no_open_draft")
    response.headers["ETag"] = service.etag_of(item)
    return version_out(latest)


@router.patch("/items/{item_id}/draft", response_model=VersionOut)
async def save_draft(
    request: Request,
    response: Response,
    session: DbSession,
    actor: Writer,
    item_id: Id,
    body: DraftUpdate,
    if_match: IfMatch = None,
) -> VersionOut:
    """Edit the open draft; without one, a new draft is copied from the latest version first.
    Only the fields sent change (`null` clears). A rejected version becomes a draft again; one in
    review or approved is locked (409 `version_locked`: withdraw it first)."""
    item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
    check_if_match(if_match, service.etag_of(item), item.row_version)
    draft = await service.save_draft(session, actor, item, body)
    response.headers["ETag"] = service.etag_of(item)
    return version_out(draft)


@router.delete("/items/{item_id}/draft", response_model=VersionOut)
async def discard_draft(
    request: Request, response: Response, session: DbSession, actor: Writer, item_id: Id, if_match: IfMatch = None
) -> VersionOut:
    """Throw the open draft away (a rejected version too); returns the version that is the latest
    again. In review or approved: 409 `version_locked` (withdraw first). No draft: 404 `no_draft`.
    The item's only version: 409 `only_version` (delete the item instead)."""
    item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
    check_if_match(if_match, service.etag_of(item), item.row_version)
    latest = await service.discard_draft(session, actor, item)
    response.headers["ETag"] = service.etag_of(item)
    return version_out(latest)


@router.delete("/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(
    request: Request, session: DbSession, actor: Writer, item_id: Id, if_match: IfMatch = None
) -> None:
    """Delete an item created by mistake: only while its one version is a draft (or rejected) that
    was never published. Anything else answers 409 `item_not_deletable` (or `version_locked`):
    discard the draft, unpublish or archive instead. The audit log keeps the deletion."""
    item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
    check_if_match(if_match, service.etag_of(item), item.row_version)
    await service.delete_item(session, actor, item)


@router.get("/items/{item_id}/versions", response_model=Page[VersionSummary])
async def list_versions(
    request: Request, session: DbSession, principal: Reader, item_id: Id, page: Paging
) -> Page[VersionSummary]:
    """Newest first. Readers see only the version served to them."""
    item = await accessible_item(request, session, principal, item_id)
    rows, nxt = await service.list_versions(session, principal, item, page)
    return Page(items=[VersionSummary.model_validate(v) for v in rows], next_cursor=nxt)


@router.get("/items/{item_id}/versions/{number}", response_model=VersionOut)
async def get_version(
    request: Request, response: Response, session: DbSession, principal: Reader, item_id: Id, number: VersionNo
) -> VersionOut:
    item = await accessible_item(request, session, principal, item_id)
    version = await service.get_version(session, principal, item, number)
    response.headers["ETag"] = service.etag_of(item)
    return version_out(version)


@router.get("/items/{item_id}/diff", response_model=DiffOut)
async def diff(
    request: Request,
    session: DbSession,
    principal: Reader,
    item_id: Id,
    from_: Annotated[VersionNo, Query(alias="from")],
    to: VersionNo,
) -> DiffOut:
    """Field by field from version `from` to version `to`: unified diffs for the texts, added and
    removed categories, tags, channels and attributes."""
    item = await accessible_item(request, session, principal, item_id)
    a = await service.get_version(session, principal, item, from_)
    b = await service.get_version(session, principal, item, to)
    return diff_versions(item.id, a, b)


@router.post(
    "/items/{item_id}/versions/{number}/restore", response_model=VersionOut, status_code=status.HTTP_201_CREATED
)
async def restore(
    request: Request,
    response: Response,
    session: DbSession,
    actor: Editor,
    item_id: Id,
    number: VersionNo,
    if_match: IfMatch = None,
    body: RestoreIn | None = None,
    replace: Annotated[bool, Query(description="Overwrite the open draft")] = False,
) -> VersionOut:
    """A new draft with the content of version `number`. With a draft already open: 409
    `draft_open`, unless `replace=true` overwrites it."""
    item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
    check_if_match(if_match, service.etag_of(item), item.row_version)
    draft = await service.restore_version(session, actor, item, number, body.change_note if body else None, replace)
    response.headers["ETag"] = service.etag_of(item)
    return version_out(draft)


# ---------------------------------------------------------------- workflow


def _add_transition(action: str) -> None:
    async def endpoint(
        request: Request,
        response: Response,
        session: DbSession,
        actor: CurrentPrincipal,
        item_id: Id,
        number: VersionNo,
        if_match: IfMatch = None,
        body: TransitionIn | None = None,
    ) -> ItemOut:
        item = await accessible_item(request, session, actor, item_id, write=True, edit=action == "reopen")
        check_if_match(if_match, service.etag_of(item), item.row_version)
        version = await service.version_no(session, item, number)
        if not proposals.may_transition(actor, item, version, action, workflow.PERMISSIONS[action]):
            raise await deny(request, actor, workflow.PERMISSIONS[action], "item", item_id)
        if action == "withdraw" and not workflow.may_withdraw(actor, version):
            raise await deny(request, actor, "knowledge:review", "item", item_id)
        try:
            await workflow.transition(
                session,
                actor,
                item,
                version,
                action,
                body or TransitionIn(),
                four_eyes=request.app.state.settings.four_eyes,
            )
        except Forbidden as e:
            if e.code == "four_eyes":  # audited like any other refusal
                await record_denial(request, actor, "four_eyes", "item", item_id)
            raise
        out = await item_out(session, actor, item, version, response)
        if action == "submit":  # the reviewer sees the likely duplicates with the submission
            out.possible_duplicates = await _duplicates(request, actor, item.id, version)
        return out

    endpoint.__name__ = f"{action}_version"
    allowed_from = sorted({r.source for r in workflow.RULES if r.action == action})
    router.post(
        f"/items/{{item_id}}/versions/{{number}}/{action}",
        response_model=ItemOut,
        dependencies=[Depends(require_any(workflow.PERMISSIONS[action], proposals.SCOPED_FOR_ACTION[action]))],
        summary=workflow.SUMMARIES[action],
        description=f"{workflow.SUMMARIES[action]}. From: {', '.join(allowed_from)}. Needs "
        f"`{workflow.PERMISSIONS[action]}` and `If-Match`; a transition not allowed from the "
        "version's state answers 409 `invalid_transition` with the `allowed` actions. On a best-practice "
        f"case, `{proposals.SCOPED_FOR_ACTION[action]}` stands in for it (app/knowledge/proposals.py); "
        "nobody approves or publishes a case version they wrote."
        + (
            " With four-eyes review on (`KB_FOUR_EYES`), the version's author or anyone who changed "
            "it gets 403 `four_eyes`."
            if action == "approve"
            else ""
        ),
    )(endpoint)


for _action in workflow.ACTIONS:
    _add_transition(_action)


@router.get("/reviews", response_model=Page[ReviewOut])
async def reviews(
    request: Request,
    session: DbSession,
    principal: RequireAny("knowledge:review", proposals.APPROVE_CASE),
    page: Paging,
    state: Literal["in_review", "approved", "rejected"] = "in_review",
) -> Page[ReviewOut]:
    """The reviewer's queue (待办), oldest first: versions in review (or approved and waiting to be
    published, or rejected), among the items the caller may read. With four-eyes review
    (`KB_FOUR_EYES`), versions in review the caller wrote or changed are left out: another
    reviewer approves them. Holders of `knowledge:approve_case` alone see the best-practice cases."""
    rows, nxt = await workflow.review_queue(
        session, principal, page, state, four_eyes=request.app.state.settings.four_eyes
    )
    return Page(
        items=[
            ReviewOut(
                item_id=i.id,
                item_type=i.item_type,
                number=v.number,
                state=v.state,
                title=v.title,
                author_id=v.author_id,
                change_note=v.change_note,
                submitted_at=v.submitted_at,
                reviewed_at=v.reviewed_at,
                review_note=v.review_note,
                publish_at=v.publish_at,
                updated_at=v.updated_at,
            )
            for v, i in rows
        ],
        next_cursor=nxt,
    )


# ---------------------------------------------------------------- ACLs


async def _any_item(session: DbSession, item_id: Id, *, write: bool = False) -> Item:
    """ACL managers reach every item, also those whose grants leave them out."""
    item = await service.load_item(session, item_id, for_update=write)
    if item is None:
        raise item_not_found(item_id)
    return item


@router.get("/items/{item_id}/acl", response_model=ItemAclOut)
async def get_item_acl(session: DbSession, _: AclAdmin, item_id: Id) -> ItemAclOut:
    """The item's own grants, those inherited from its categories, and the effective sets."""
    return await acl.describe_item(session, await _any_item(session, item_id))


@router.put("/items/{item_id}/acl", response_model=ItemAclOut)
async def put_item_acl(
    session: DbSession, actor: AclAdmin, item_id: Id, body: AclIn, if_match: IfMatch = None
) -> ItemAclOut:
    """Replace the item's grants (an empty list: its categories decide again). `If-Match` is
    checked when sent."""
    item = await _any_item(session, item_id, write=True)
    if if_match is not None:
        check_if_match(if_match, service.etag_of(item), item.row_version)
    async with service.write_guard(session, item.id):
        await acl.set_item_grants(session, actor, item, body.grants)
    return await acl.describe_item(session, item)


@router.get("/taxonomy-nodes/{node_id}/acl", response_model=NodeAclOut)
async def get_node_acl(session: DbSession, _: AclAdmin, node_id: Id) -> NodeAclOut:
    """The node's own grants and those that apply to its items (its own or its nearest ancestor's)."""
    return await acl.describe_node(session, node_id)


@router.put("/taxonomy-nodes/{node_id}/acl", response_model=NodeAclOut)
async def put_node_acl(session: DbSession, actor: AclAdmin, node_id: Id, body: AclIn) -> NodeAclOut:
    """Replace the node's grants; its subtree inherits them. Affected items are recomputed and
    queued for reindexing."""
    await acl.set_node_grants(session, actor, node_id, body.grants)
    return await acl.describe_node(session, node_id)
