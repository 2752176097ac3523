"""Who may read (and edit) an item. THE one place the rule lives: items, search and channels
all use the functions here.

The rule, per access kind (`read`, `edit`) separately:

1. Grants on the item itself, if it has any of that kind, are its set (they override categories).
2. Otherwise its categories decide: each category node of the governing version (the published
   one, else the latest) contributes its own grants of that kind, or — when it has none — those
   of its nearest ancestor that has some. The item's set is the union of what its nodes contribute.
3. No grant anywhere: `read` defaults to "internal" (every staff user with knowledge:read), plus
   "public" when the item's visibility is public; `edit` is unrestricted (knowledge:edit suffices).
4. visibility "internal" (agents only) strikes every "client:N" from the read set and narrows
   "public" to "internal", whatever was granted.

Subjects: "public" (anyone, anonymous channel readers included), "internal" (any staff user),
"role:N", "dept:N" (a user's department or any ancestor of it), "client:N", "user:N" — the same
strings as `Principal.acl_principals`. The read set is stored in `item_readers` (kept current by
`refresh_readers`), so lists and search filter inside the query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, String, and_, cast, delete, exists, insert, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record
from app.core.db import get_or_404, utcnow
from app.core.errors import Conflict, InvalidInput
from app.identity.models import ApiClient, Department, Role, User
from app.identity.principal import Principal
from app.knowledge.models import AclGrant, Item, ItemReader, ItemVersion, version_categories
from app.knowledge.schemas import GrantIn, InheritedGrant, ItemAclOut, NodeAclOut
from app.taxonomy.models import TaxonomyNode
from app.taxonomy.service import subtree_ids
from app.workers.outbox import enqueue

PUBLIC, INTERNAL = "public", "internal"
READ, EDIT = "read", "edit"


# ---------------------------------------------------------------- reading: the filters


def subjects_of(principal: Principal | None) -> list[str]:
    """The ACL subjects a caller stands for; an anonymous channel reader is only "public"."""
    return principal.acl_principals if principal is not None else [PUBLIC]


def read_filter(principal: Principal | None) -> ColumnElement[bool]:
    """SQL condition on `Item`: the caller may read it under the ACL (superusers read everything).
    ACL only: add `visible_filter` for what readers (not editors) see."""
    if principal is not None and principal.is_superuser:
        return true()
    return exists().where(ItemReader.item_id == Item.id, ItemReader.subject.in_(subjects_of(principal)))


def valid_filter(at: datetime | None = None) -> ColumnElement[bool]:
    """SQL condition on `Item`: inside its validity window at `at` (default now)."""
    at = at or utcnow()
    return and_(or_(Item.valid_from.is_(None), Item.valid_from <= at), or_(Item.valid_to.is_(None), Item.valid_to > at))


def visible_filter(principal: Principal | None, at: datetime | None = None) -> ColumnElement[bool]:
    """What a reader sees (only knowledge:read, a channel client, an anonymous visitor): published,
    valid now, and readable under the ACL. Combine with `channel_filter` on the published version."""
    return and_(
        Item.status == "published", Item.published_version_id.is_not(None), valid_filter(at), read_filter(principal)
    )


def channel_filter(channel: str | None) -> ColumnElement[bool]:
    """SQL condition on the served `ItemVersion`: shown on `channel` (None: no channel restriction)."""
    if channel is None:
        return true()
    # `channels` is a JSON list from a fixed vocabulary; its text form holds each name quoted.
    return cast(ItemVersion.channels, String).like(f'%"{channel}"%')


def is_valid_at(item: Item, at: datetime | None = None) -> bool:
    at = at or utcnow()
    return (item.valid_from is None or item.valid_from <= at) and (item.valid_to is None or item.valid_to > at)


def channel_of(principal: Principal | None) -> str | None:
    """The channel a caller reads on: users act on "agent", clients on their own channel."""
    return principal.channel if principal is not None else None


def shown_on(version: ItemVersion, channel: str | None) -> bool:
    return channel is None or channel in (version.channels or [])


async def can_read(session: AsyncSession, principal: Principal | None, item: Item) -> bool:
    """The ACL alone (not the life cycle): may this caller read this item at all?"""
    if principal is not None and principal.is_superuser:
        return True
    found = await session.scalar(
        select(ItemReader.item_id)
        .where(ItemReader.item_id == item.id, ItemReader.subject.in_(subjects_of(principal)))
        .limit(1)
    )
    return found is not None


async def readers_of(session: AsyncSession, item_id: int) -> list[str]:
    """The item's read set, e.g. ["internal", "public"] or ["client:7", "role:3"] (search documents)."""
    return (await readers_of_many(session, [item_id])).get(item_id, [])


async def readers_of_many(session: AsyncSession, item_ids: list[int]) -> dict[int, list[str]]:
    """item id -> its read set (items without one are left out)."""
    out: dict[int, list[str]] = defaultdict(list)
    rows = await session.execute(select(ItemReader.item_id, ItemReader.subject).where(ItemReader.item_id.in_(item_ids)))
    for item_id, subject in rows.all():
        out[item_id].append(subject)
    return {item_id: sorted(subjects) for item_id, subjects in out.items()}


async def can_edit(session: AsyncSession, principal: Principal, item: Item) -> bool:
    """Read access and, when edit grants apply to the item, a match with one of them.
    (The caller's knowledge:edit permission is checked by the route.)"""
    if principal.is_superuser:
        return True
    if not await can_read(session, principal, item):
        return False
    editors = (await effective_sets(session, [item.id]))[item.id][EDIT]
    return not editors or bool(set(editors) & set(principal.acl_principals))


# ---------------------------------------------------------------- computing the sets


async def _governing_categories(session: AsyncSession, item_ids: list[int]) -> dict[int, list[int]]:
    """item id -> node ids of its governing version (the published one, else the latest)."""
    stmt = (
        select(Item.id, version_categories.c.node_id)
        .join(ItemVersion, ItemVersion.item_id == Item.id)
        .join(version_categories, version_categories.c.version_id == ItemVersion.id)
        .where(
            Item.id.in_(item_ids),
            or_(
                ItemVersion.id == Item.published_version_id,
                and_(Item.published_version_id.is_(None), ItemVersion.number == Item.latest_version_no),
            ),
        )
    )
    out: dict[int, list[int]] = defaultdict(list)
    for item_id, node_id in (await session.execute(stmt)).all():
        out[item_id].append(node_id)
    return out


async def _chains(session: AsyncSession, node_ids: Iterable[int]) -> dict[int, list[int]]:
    """node id -> [itself, parent, ..., root] (from the materialized path)."""
    ids = set(node_ids)
    if not ids:
        return {}
    rows = await session.execute(select(TaxonomyNode.id, TaxonomyNode.path).where(TaxonomyNode.id.in_(ids)))
    out = {}
    for node_id, path in rows.all():
        chain = [int(p) for p in path.strip("/").split("/") if p] or [node_id]
        out[node_id] = list(reversed(chain))
    return out


async def _grants(session: AsyncSession, target_type: str, ids: Iterable[int]) -> dict[int, dict[str, list[str]]]:
    """target id -> access -> subjects."""
    ids = set(ids)
    out: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    if not ids:
        return out
    rows = await session.execute(
        select(AclGrant.target_id, AclGrant.access, AclGrant.subject)
        .where(AclGrant.target_type == target_type, AclGrant.target_id.in_(ids))
        .order_by(AclGrant.id)
    )
    for target_id, access, subject in rows.all():
        out[target_id][access].append(subject)
    return out


def _nearest(chain: list[int], grants: dict[int, dict[str, list[str]]], access: str) -> int | None:
    for node_id in chain:
        if grants.get(node_id, {}).get(access):
            return node_id
    return None


def _visible(subjects: Iterable[str], visibility: str) -> set[str]:
    """An agents-only (internal) item: channel clients are struck, and "public" (anyone) narrows to
    "internal" (any staff user)."""
    out = set(subjects)
    if visibility != "public":
        if PUBLIC in out:
            out = (out - {PUBLIC}) | {INTERNAL}
        out = {s for s in out if not s.startswith("client:")}
    return out


async def effective_sets(session: AsyncSession, item_ids: list[int]) -> dict[int, dict[str, list[str]]]:
    """item id -> {"read": [...], "edit": [...]} by the rule in this module's docstring."""
    items = {i.id: i for i in (await session.scalars(select(Item).where(Item.id.in_(item_ids)))).all()}
    cats = await _governing_categories(session, list(items))
    chains = await _chains(session, {n for nodes in cats.values() for n in nodes})
    node_grants = await _grants(session, "category", {n for chain in chains.values() for n in chain})
    item_grants = await _grants(session, "item", items)
    out: dict[int, dict[str, list[str]]] = {}
    for item_id, item in items.items():
        sets: dict[str, list[str]] = {}
        for access in (READ, EDIT):
            own = item_grants.get(item_id, {}).get(access)
            if own:
                chosen = set(own)
            else:
                chosen = set()
                for node_id in cats.get(item_id, []):
                    src = _nearest(chains.get(node_id, [node_id]), node_grants, access)
                    if src is not None:
                        chosen.update(node_grants[src][access])
            if access == READ:
                if not chosen:
                    chosen = {INTERNAL, PUBLIC} if item.visibility == "public" else {INTERNAL}
                chosen = _visible(chosen, item.visibility)
            sets[access] = sorted(chosen)
        out[item_id] = sets
    return out


async def refresh_readers(session: AsyncSession, item_ids: Iterable[int]) -> None:
    """Recompute the stored read sets of these items (in the caller's transaction). Call it whenever
    grants, the categories of the governing version, the published version or visibility change."""
    ids = sorted(set(item_ids))
    if not ids:
        return
    await session.flush()
    sets = await effective_sets(session, ids)
    await session.execute(delete(ItemReader).where(ItemReader.item_id.in_(ids)))
    rows = [{"item_id": i, "subject": s} for i in ids for s in sets.get(i, {}).get(READ, [])]
    if rows:
        await session.execute(insert(ItemReader), rows)


async def items_under(session: AsyncSession, node_ids: Iterable[int]) -> list[int]:
    """Items whose governing version sits in any of these nodes or their subtrees."""
    nodes = await subtree_ids(session, list(node_ids))
    if not nodes:
        return []
    stmt = (
        select(Item.id)
        .distinct()
        .join(ItemVersion, ItemVersion.item_id == Item.id)
        .join(version_categories, version_categories.c.version_id == ItemVersion.id)
        .where(
            version_categories.c.node_id.in_(nodes),
            or_(
                ItemVersion.id == Item.published_version_id,
                and_(Item.published_version_id.is_(None), ItemVersion.number == Item.latest_version_no),
            ),
        )
    )
    return sorted((await session.scalars(stmt)).all())


async def refresh_for_categories(session: AsyncSession, node_ids: Iterable[int]) -> list[int]:
    """After category grants change or nodes move: recompute the items below these nodes and queue
    their search documents for reindexing (in the caller's transaction). Returns the item ids."""
    from app.channels.changes import reconcile  # late: it imports this module

    affected = await items_under(session, node_ids)
    if affected:
        await refresh_readers(session, affected)
        await reconcile(session, affected)
        enqueue(session, "search.reindex_items", {"item_ids": affected})
    return affected


# ---------------------------------------------------------------- managing grants


async def _check_subjects(session: AsyncSession, grants: list[GrantIn]) -> list[tuple[str, str]]:
    wanted = sorted({(g.subject, g.access) for g in grants})
    by_kind: dict[str, set[int]] = defaultdict(set)
    for subject, _ in wanted:
        kind, _, raw = subject.partition(":")
        if raw:
            by_kind[kind].add(int(raw))
    models = {"role": Role, "dept": Department, "client": ApiClient, "user": User}
    unknown = []
    for kind, ids in by_kind.items():
        model = models[kind]
        found = set((await session.scalars(select(model.id).where(model.id.in_(ids)))).all())
        unknown += [f"{kind}:{i}" for i in sorted(ids - found)]
    if unknown:
        raise InvalidInput(f"Unknown ACL subjects: {', '.join(unknown)}", code="unknown_subject", unknown=unknown)
    return wanted


async def _replace(
    session: AsyncSession, actor: Principal, target_type: str, target_id: int, grants: list[GrantIn]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    wanted = await _check_subjects(session, grants)
    old = (
        await session.scalars(
            select(AclGrant).where(AclGrant.target_type == target_type, AclGrant.target_id == target_id)
        )
    ).all()
    before = [{"subject": g.subject, "access": g.access} for g in sorted(old, key=lambda g: (g.subject, g.access))]
    await session.execute(delete(AclGrant).where(AclGrant.target_type == target_type, AclGrant.target_id == target_id))
    for subject, access in wanted:
        session.add(
            AclGrant(
                target_type=target_type, target_id=target_id, subject=subject, access=access, created_by=actor.actor
            )
        )
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(
            "Someone changed these grants at the same moment; reload and try again", code="concurrent_update"
        )
    return before, [{"subject": s, "access": a} for s, a in wanted]


async def set_item_grants(session: AsyncSession, actor: Principal, item: Item, grants: list[GrantIn]) -> None:
    from app.channels.changes import reconcile  # late: it imports this module

    before, after = await _replace(session, actor, "item", item.id, grants)
    item.updated_at = utcnow()  # the item's ETag changes with its ACL
    await refresh_readers(session, [item.id])
    await reconcile(session, [item.id])
    record(session, actor, "item.acl_update", "item", item.id, before=before, after=after)
    enqueue(session, "search.reindex_items", {"item_ids": [item.id]})
    await session.commit()


async def set_node_grants(session: AsyncSession, actor: Principal, node_id: int, grants: list[GrantIn]) -> list[int]:
    await get_or_404(session, TaxonomyNode, node_id, "node")
    before, after = await _replace(session, actor, "category", node_id, grants)
    affected = await refresh_for_categories(session, [node_id])
    record(
        session,
        actor,
        "taxonomy_node.acl_update",
        "taxonomy_node",
        node_id,
        before=before,
        after=after,
        items_affected=len(affected),
    )
    await session.commit()
    return affected


async def describe_item(session: AsyncSession, item: Item) -> ItemAclOut:
    own = (
        await session.scalars(
            select(AclGrant)
            .where(AclGrant.target_type == "item", AclGrant.target_id == item.id)
            .order_by(AclGrant.subject)
        )
    ).all()
    cats = (await _governing_categories(session, [item.id])).get(item.id, [])
    chains = await _chains(session, cats)
    node_grants = await _grants(session, "category", {n for c in chains.values() for n in c})
    inherited = []
    for node_id in sorted(cats):
        for access in (READ, EDIT):
            src = _nearest(chains.get(node_id, [node_id]), node_grants, access)
            if src is not None:
                inherited += [
                    InheritedGrant(node_id=node_id, from_node_id=src, subject=s, access=access)
                    for s in sorted(node_grants[src][access])
                ]
    sets = (await effective_sets(session, [item.id]))[item.id]
    return ItemAclOut(
        item_id=item.id,
        grants=[{"subject": g.subject, "access": g.access} for g in own],
        inherited=inherited,
        readers=await readers_of(session, item.id),
        editors=sets[EDIT],
    )


async def describe_node(session: AsyncSession, node_id: int) -> NodeAclOut:
    await get_or_404(session, TaxonomyNode, node_id, "node")
    chain = (await _chains(session, [node_id]))[node_id]
    grants = await _grants(session, "category", chain)
    effective = []
    for access in (READ, EDIT):
        src = _nearest(chain, grants, access)
        if src is not None:
            effective += [
                InheritedGrant(node_id=node_id, from_node_id=src, subject=s, access=access)
                for s in sorted(grants[src][access])
            ]
    own = [{"subject": s, "access": a} for a in (READ, EDIT) for s in sorted(grants.get(node_id, {}).get(a, []))]
    return NodeAclOut(node_id=node_id, grants=own, effective=effective)
