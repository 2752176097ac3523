"""What a channel shows: the one lookup every channel route uses.

An item that is missing, draft, unpublished, archived, expired or not yet valid, not shown on the
channel, or not readable by the caller answers the same 404 `item_not_found`, so a public
channel never reveals that an internal item exists.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from email.utils import format_datetime

from cachetools import LRUCache
from fastapi import Request, Response
from sqlalchemy import ColumnElement, Select, and_, func, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from app.attachments.models import Attachment, version_attachments
from app.cases.display import shown_body
from app.channels.access import AGENT, ChannelCaller
from app.channels.publiccache import Key, Rendered, item_response
from app.channels.render import RENDER_REVISION, AttachmentRef, Source, render
from app.channels.schemas import (
    AnswerOut,
    AnswersOut,
    AttachmentLink,
    CategoryNodeOut,
    CategoryTreeOut,
    ItemRef,
    RelatedOut,
)
from app.core.errors import Forbidden, NotFound
from app.core.pagination import PageParams, paginate_by_id
from app.core.schemas import MAX_ID
from app.knowledge import acl
from app.knowledge.deps import item_not_found
from app.knowledge.models import Item, ItemVersion, version_categories, version_tags
from app.knowledge.service import answer_for
from app.search import service as search_service
from app.search.analysis import normalize
from app.search.backends.base import SearchBackend
from app.search.indexing import plain_text
from app.search.searchlog import SearchLogBuffer
from app.search.semantic import Semantic
from app.search.service import SearchParams
from app.taxonomy.models import Taxonomy, TaxonomyNode

DOWNLOAD = "attachments:download"
CACHE_SECONDS = 60  # anonymous public content in shared caches


def shown(caller: ChannelCaller) -> ColumnElement[bool]:
    """SQL on `Item` joined to its published `ItemVersion`: the caller sees it on the channel now."""
    return and_(acl.visible_filter(caller.principal), acl.channel_filter(caller.channel))


def shown_select(caller: ChannelCaller) -> Select[tuple[Item, ItemVersion]]:
    """`select(Item, ItemVersion)` of the items the caller sees on the channel, with their served version."""
    # The version's categories, tags and attachments load on their own (selectin) otherwise: three
    # more queries on the hottest path, for fields no rendering reads.
    return (
        select(Item, ItemVersion)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .where(shown(caller))
        .options(raiseload(ItemVersion.categories), raiseload(ItemVersion.tags), raiseload(ItemVersion.attachments))
    )  # type: ignore[attr-defined]


async def shown_item(session: AsyncSession, caller: ChannelCaller, item_id: int) -> tuple[Item, ItemVersion]:
    row = (await session.execute(shown_select(caller).where(Item.id == item_id))).first()
    if row is None:
        raise item_not_found(item_id)
    return row[0], row[1]


async def shown_item_by_external(
    session: AsyncSession, caller: ChannelCaller, source: str, external_id: str
) -> tuple[Item, ItemVersion]:
    row = (
        await session.execute(shown_select(caller).where(Item.source == source, Item.external_id == external_id))
    ).first()
    if row is None:
        raise NotFound(f"No item {external_id!r} from {source!r}", code="item_not_found")
    return row[0], row[1]


def cache_control(caller: ChannelCaller) -> str:
    """Anonymous public content may sit in shared caches briefly; anything read with a token is the
    caller's own (its ACL decides) and is revalidated every time."""
    if caller.is_anonymous:
        return f"public, max-age={CACHE_SECONDS}"
    return "private, no-cache"


def channel_item_url(base_url: str, channel: str, item_id: int) -> str:
    return f"{base_url.rstrip('/')}/api/v1/channels/{channel}/items/{item_id}"


def web_url(request_base: str, template: str, item_id: int) -> str:
    """The full web answer a WeChat text links to: `KB_WEB_ANSWER_URL` (e.g.
    https://faq.example.com/kb/{item_id}) or this service's web channel rendering."""
    return template.format(item_id=item_id) if template else channel_item_url(request_base, "web", item_id)


async def refs(session: AsyncSession, caller: ChannelCaller, item_ids: list[int]) -> dict[int, ItemRef]:
    """item id -> reference, for the ids the caller sees on the channel (others left out)."""
    if not item_ids:
        return {}
    rows = (
        await session.execute(
            select(
                Item.id,
                Item.item_type,
                ItemVersion.number,
                ItemVersion.title,
                ItemVersion.question,
                ItemVersion.published_at,
            )
            .join(ItemVersion, ItemVersion.id == Item.published_version_id)
            .where(shown(caller), Item.id.in_(set(item_ids)))
        )
    ).all()
    return {
        r.id: ItemRef(
            item_id=r.id,
            version=r.number,
            title=r.title,
            question=r.question,
            item_type=r.item_type,
            published_at=r.published_at,
        )
        for r in rows
    }


# ---------------------------------------------------------------- answers


def _grams(text: str) -> set[str]:
    t = "".join(ch for ch in normalize(text) if ch.isalnum())
    return {t[i : i + 2] for i in range(len(t) - 1)} or set(t)


def matched_question(query: str, question: str, similar: list[str]) -> str:
    """The standard or similar question closest to the caller's words (character bigram overlap)."""
    asked = _grams(query)
    best, best_score = question, -1.0
    for candidate in [question, *similar]:
        if not candidate:
            continue
        grams = _grams(candidate)
        score = len(asked & grams) / (len(asked | grams) or 1)
        if score > best_score:
            best, best_score = candidate, score
    return best


async def attachment_links(
    session: AsyncSession, version_ids: list[int], base_url: str
) -> dict[int, list[AttachmentLink]]:
    """version id -> its attachments as download links."""
    if not version_ids:
        return {}
    rows = (
        await session.execute(
            select(version_attachments.c.version_id, Attachment)
            .join(Attachment, Attachment.id == version_attachments.c.attachment_id)
            .where(version_attachments.c.version_id.in_(version_ids))
            .order_by(Attachment.id)
        )
    ).all()
    out: dict[int, list[AttachmentLink]] = defaultdict(list)
    for version_id, a in rows:
        out[version_id].append(
            AttachmentLink(
                id=a.id,
                file_name=a.file_name,
                mime=a.mime,
                size=a.size,
                url=f"{base_url.rstrip('/')}/api/v1/attachments/{a.id}/content",
            )
        )
    return out


def may_download(caller: ChannelCaller) -> bool:
    return not caller.is_anonymous and caller.principal.can(DOWNLOAD)


async def answers(
    session: AsyncSession,
    backend: SearchBackend,
    search_log: SearchLogBuffer,
    caller: ChannelCaller,
    q: str,
    limit: int,
    *,
    base_url: str,
    semantic: Semantic | None = None,
) -> AnswersOut:
    found = await search_service.search(
        session,
        backend,
        search_log,
        caller.principal,
        SearchParams(q=q, channel=caller.channel, limit=limit, highlight=False, facets=False),
        semantic,
    )
    ids = [h.item_id for h in found.items]
    # The index may trail the database by a moment (a version unpublished a second ago): what is
    # served is checked against the database, never the index alone.
    rows = (
        {}
        if not ids
        else {i.id: v for i, v in (await session.execute(shown_select(caller).where(Item.id.in_(ids)))).all()}
    )
    agent = caller.channel == AGENT
    links = (
        await attachment_links(session, [v.id for v in rows.values()], base_url)
        if agent and may_download(caller)
        else {}
    )
    items = []
    for hit in found.items:
        v = rows.get(hit.item_id)
        if v is None:
            continue
        out = AnswerOut(
            item_id=hit.item_id,
            version=v.number,
            title=v.title,
            question=v.question,
            matched_question=matched_question(q, v.question or v.title, list(v.similar_questions or [])),
            answer=plain_text(answer_for(v, caller.channel), v.body_format).strip(),
            score=hit.score,
            url=channel_item_url(base_url, caller.channel, hit.item_id),
        )
        if agent:
            out.related = await related_by_taxonomy(session, caller, hit.item_id, v.id, 3)
            out.attachments = links.get(v.id, [])
        items.append(out)
    return AnswersOut(
        channel=caller.channel,
        query=found.query,
        search_id=found.search_id,
        total=found.total,
        relaxed=found.relaxed,
        items=items,
        warnings=found.warnings,
    )


# ---------------------------------------------------------------- related


async def related_by_taxonomy(
    session: AsyncSession, caller: ChannelCaller, item_id: int, version_id: int, limit: int
) -> list[RelatedOut]:
    """Items the caller sees sharing the most categories and tags with this version."""
    node_ids = select(version_categories.c.node_id).where(version_categories.c.version_id == version_id)
    tag_ids = select(version_tags.c.tag_id).where(version_tags.c.version_id == version_id)
    shared = union_all(
        select(version_categories.c.version_id.label("vid")).where(version_categories.c.node_id.in_(node_ids)),
        select(version_tags.c.version_id.label("vid")).where(version_tags.c.tag_id.in_(tag_ids)),
    ).subquery()
    overlap = func.count().label("overlap")
    rows = (
        await session.execute(
            select(Item.id, overlap)
            .join(ItemVersion, ItemVersion.id == Item.published_version_id)
            .join(shared, shared.c.vid == ItemVersion.id)
            .where(shown(caller), Item.id != item_id)
            .group_by(Item.id)
            .order_by(overlap.desc(), Item.id.desc())
            .limit(limit)
        )
    ).all()
    found = await refs(session, caller, [r.id for r in rows])
    return [RelatedOut(**found[r.id].model_dump(), reason="categories") for r in rows if r.id in found]


async def related(
    session: AsyncSession,
    backend: SearchBackend,
    search_log: SearchLogBuffer,
    caller: ChannelCaller,
    found: tuple[Item, ItemVersion],
    limit: int,
    semantic: Semantic | None = None,
) -> list[RelatedOut]:
    item, version = found
    out = await related_by_taxonomy(session, caller, item.id, version.id, limit)
    if len(out) < limit:
        seen = {item.id, *(r.item_id for r in out)}
        hits = await search_service.search(
            session,
            backend,
            search_log,
            caller.principal,
            SearchParams(
                q=version.question or version.title,
                channel=caller.channel,
                limit=limit + len(seen),
                highlight=False,
                facets=False,
            ),
            semantic,
        )
        more = [h.item_id for h in hits.items if h.item_id not in seen]
        extra = await refs(session, caller, more)
        out += [RelatedOut(**extra[i].model_dump(), reason="similar") for i in more if i in extra]
    return out[:limit]


# ---------------------------------------------------------------- categories


async def _taxonomy(session: AsyncSession, ref: str | None) -> Taxonomy:
    stmt = select(Taxonomy).order_by(Taxonomy.position, Taxonomy.id).limit(1)
    if ref is not None:
        cond = Taxonomy.code == ref
        if ref.isdigit() and int(ref) <= MAX_ID:
            cond = or_(cond, Taxonomy.id == int(ref))
        stmt = select(Taxonomy).where(cond).limit(1)
    found = await session.scalar(stmt)
    if found is None:
        raise NotFound(f"No taxonomy {ref!r}" if ref else "No taxonomy exists yet", code="taxonomy_not_found")
    return found


async def _direct_counts(
    session: AsyncSession, caller: ChannelCaller, node_ids: list[int] | None = None, taxonomy_id: int | None = None
) -> dict[int, set[int]]:
    """node id -> the ids of items the caller sees on the channel placed directly in it."""
    stmt = (
        select(version_categories.c.node_id, Item.id)
        .join(ItemVersion, ItemVersion.id == version_categories.c.version_id)
        .join(Item, Item.published_version_id == ItemVersion.id)
        .where(shown(caller))
    )
    if taxonomy_id is not None:
        stmt = stmt.join(TaxonomyNode, TaxonomyNode.id == version_categories.c.node_id).where(
            TaxonomyNode.taxonomy_id == taxonomy_id
        )
    out: dict[int, set[int]] = defaultdict(set)
    for node_id, iid in (await session.execute(stmt)).all():
        out[node_id].add(iid)
    return out


async def category_tree(
    session: AsyncSession, caller: ChannelCaller, ref: str | None, include_empty: bool
) -> CategoryTreeOut:
    if include_empty and caller.principal.kind != "user":
        raise Forbidden("include_empty is for staff", code="permission_denied")
    tax = await _taxonomy(session, ref)
    nodes = (
        await session.scalars(
            select(TaxonomyNode)
            .where(TaxonomyNode.taxonomy_id == tax.id)
            .order_by(TaxonomyNode.position, TaxonomyNode.id)
        )
    ).all()
    direct = await _direct_counts(session, caller, taxonomy_id=tax.id)
    below: dict[int, set[int]] = defaultdict(set)  # an item in two nodes of one subtree counts once
    for node in nodes:
        item_ids = direct.get(node.id)
        if item_ids:
            for ancestor in (int(p) for p in node.path.strip("/").split("/") if p):
                below[ancestor] |= item_ids
    built: dict[int, CategoryNodeOut] = {}
    roots: list[CategoryNodeOut] = []
    # Parents before children: by depth, then the editors' order.
    for node in sorted(nodes, key=lambda n: (n.path.count("/"), n.position, n.id)):
        count = len(below.get(node.id, ()))
        if count == 0 and not include_empty:
            continue
        out = CategoryNodeOut(id=node.id, name=node.name, count=count)
        built[node.id] = out
        if node.parent_id is None:
            roots.append(out)
        elif node.parent_id in built:
            built[node.parent_id].children.append(out)
    total = len(set().union(*direct.values())) if direct else 0
    return CategoryTreeOut(channel=caller.channel, taxonomy_id=tax.id, taxonomy=tax.name, total=total, nodes=roots)


async def category_items(
    session: AsyncSession, caller: ChannelCaller, node_id: int, page: PageParams
) -> tuple[list[ItemRef], str | None]:
    node = await session.get(TaxonomyNode, node_id)
    missing = NotFound(f"No category {node_id}", code="category_not_found")
    if node is None:
        raise missing
    in_subtree = (
        select(version_categories.c.version_id)
        .join(TaxonomyNode, TaxonomyNode.id == version_categories.c.node_id)
        .where(TaxonomyNode.path.startswith(node.path))
    )
    stmt = (
        select(Item)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .where(shown(caller), ItemVersion.id.in_(in_subtree))
    )
    items, nxt = await paginate_by_id(session, stmt, Item.id, page)
    ids = [i.id for i in items]
    if not ids and page.cursor is None:
        raise missing  # the node shows nothing to this caller: as if it did not exist
    found = await refs(session, caller, list(ids))
    return [found[i] for i in ids if i in found], nxt


# ---------------------------------------------------------------- one item, rendered


# A published version is immutable: rendered and serialized once per channel and parameters,
# bounded by the bytes kept (64 MB per process).
_serialized: LRUCache[tuple[Source, str, int], bytes] = LRUCache(maxsize=64 * 1024 * 1024, getsizeof=len)


def _rendered_json(source: Source, channel: str, max_bytes: int) -> bytes:
    key = (source, channel, max_bytes)
    out = _serialized.get(key)
    if out is None:
        out = _serialized[key] = render(source, channel, max_bytes=max_bytes).model_dump_json().encode()
    return out


def rendering_key(request: Request, caller: ChannelCaller, max_bytes: int) -> Key:
    """What an anonymous rendering depends on beyond the version: channel, text limit, base URL."""
    return caller.channel, max_bytes if caller.channel == "wechat" else 0, str(request.base_url)


async def rendered_response(
    request: Request,
    session: AsyncSession,
    caller: ChannelCaller,
    found: tuple[Item, ItemVersion],
    max_bytes: int,
    keep: Callable[[Rendered], None] | None = None,
) -> Response:
    """The 200 or 304 of `items/{id}`; `keep` receives the 200 (the anonymous read cache)."""
    item, version = found
    channel, max_bytes, base = rendering_key(request, caller, max_bytes)
    files = may_download(caller) and channel in (AGENT, "app")
    wurl = web_url(base, request.app.state.settings.web_answer_url, item.id)
    digest = hashlib.sha1(f"{RENDER_REVISION}|{version.id}|{max_bytes}|{files}|{wurl}".encode()).hexdigest()[:16]
    etag = f'"{channel}-{item.id}-{version.number}-{digest}"'
    last_modified = format_datetime(version.published_at, usegmt=True) if version.published_at is not None else None
    current = item_response(request, etag, cache_control(caller), last_modified, None)
    if current is not None:  # the client's copy is current: 304 without rendering
        return current
    attachments: tuple[AttachmentRef, ...] = ()
    if files:
        links = (await attachment_links(session, [version.id], base)).get(version.id, [])
        attachments = tuple(
            AttachmentRef(id=a.id, file_name=a.file_name, content_type=a.mime, size=a.size, url=a.url) for a in links
        )
    source = Source(
        item_id=item.id,
        version=version.number,
        version_id=version.id,
        title=version.title,
        question=version.question,
        similar_questions=tuple(version.similar_questions or ()),
        body=shown_body(item.item_type, version),
        body_format=version.body_format,
        answers=tuple(sorted((version.channel_answers or {}).items())),
        attachments=attachments,
        web_url=wurl,
    )
    rendered = Rendered(
        etag=etag,
        body=_rendered_json(source, channel, max_bytes),
        cache_control=cache_control(caller),
        last_modified=last_modified,
        version=version.number,
        valid_from=item.valid_from,
        valid_to=item.valid_to,
    )
    if keep is not None:
        keep(rendered)
    return rendered.response(request)
