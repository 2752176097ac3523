"""Taxonomies (category trees), tags, attribute definitions, templates and item types.

Rules worth knowing:

- A node's `path` is "/<root id>/.../<own id>/"; a subtree is a prefix match on it. Nodes are
  at most MAX_DEPTH levels deep. Sibling positions are kept dense (0, 1, 2 ...).
- Changes to the shape of a tree (create, move, delete a node; delete a taxonomy) lock the
  taxonomy row first (FOR UPDATE on PostgreSQL; SQLite has one writer), so two moves can never
  build a cycle between them.
- A move or a re-homing delete changes which categories (with their ancestors) an item sits in,
  so in the same transaction it recomputes the stored read sets of the items below (category ACLs
  inherit down the tree) and enqueues `search.reindex_items` for the published ones.
- A taxonomy can be deleted only while no item version (of any state) is placed in one of its
  nodes; its nodes go with it. A node can be deleted only when empty, or with `rehome_to`.
- Tag usage = distinct items carrying the tag on a current version (any state but superseded
  or archived). A tag referenced by any version, even an old one, cannot be deleted.
- Attribute values are keyed by the attribute code, which never changes; "used" means some item
  version (of any state, history included) holds a non-null value for it.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from datetime import date
from typing import Any

from sqlalchemy import bindparam, delete, distinct, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import changes, record
from app.core.db import get_or_404, like_pattern
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.pagination import PageParams, paginate_by_id
from app.identity.principal import Principal
from app.knowledge.models import AclGrant, Item, ItemVersion, version_categories, version_tags
from app.taxonomy.models import (
    AttributeDefinition,
    ItemType,
    Tag,
    Taxonomy,
    TaxonomyNode,
    Template,
    template_attributes,
)
from app.taxonomy.schemas import (
    AttributeCreate,
    AttributeUpdate,
    ItemTypeCreate,
    ItemTypeUpdate,
    NodeCreate,
    NodeMove,
    NodeRename,
    TagOut,
    TaxonomyCreate,
    TaxonomyTreeOut,
    TaxonomyUpdate,
    TemplateCreate,
    TemplateUpdate,
    TreeNodeOut,
)
from app.workers.outbox import enqueue

MAX_DEPTH = 20
MAX_TAG_LENGTH = 64
REINDEX_BATCH = 500
REINDEX_JOB = "search.reindex_items"
HISTORY_STATES = ("superseded", "archived")  # versions that no longer count as "current"
ENUM_TYPES = ("enum", "multi_enum")
CATEGORY_ACL = "category"  # AclGrant.target_type of a category grant

DEFAULT_ITEM_TYPES: dict[str, str] = {
    "faq": "常见问题",
    "article": "文章",
    "policy": "政策制度",
    "announcement": "公告",
}


# ---------------------------------------------------------------- shared helpers


def _depth(path: str) -> int:
    return path.count("/") - 1


def _path_ids(path: str) -> list[int]:
    return [int(p) for p in path.strip("/").split("/") if p]


async def _published_items_in_nodes(session: AsyncSession, node_ids: list[int]) -> list[int]:
    """Items whose published version is placed in one of these nodes."""
    if not node_ids:
        return []
    stmt = (
        select(ItemVersion.item_id)
        .distinct()
        .join(version_categories, version_categories.c.version_id == ItemVersion.id)
        .where(version_categories.c.node_id.in_(node_ids), ItemVersion.state == "published")
    )
    return sorted((await session.scalars(stmt)).all())


async def _refresh_readers_below(session: AsyncSession, node_ids: list[int]) -> None:
    """Category ACLs inherit down the tree: after a change of shape, recompute the stored read sets
    of the items below these nodes (the rule lives in app/knowledge/acl.py)."""
    from app.knowledge.acl import items_under, refresh_readers  # late: acl imports this module

    await session.flush()
    await refresh_readers(session, await items_under(session, node_ids))


def _enqueue_reindex(session: AsyncSession, actor: Principal | None, item_ids: list[int]) -> int:
    """Outbox: the search index catches up after this transaction commits. Nothing when no items."""
    for i in range(0, len(item_ids), REINDEX_BATCH):
        enqueue(
            session,
            REINDEX_JOB,
            {"item_ids": item_ids[i : i + REINDEX_BATCH]},
            created_by=actor.actor if actor else None,
        )
    return len(item_ids)


async def _delete_and_commit(session: AsyncSession, row: object, code: str, detail: str) -> None:
    """Delete a row whose users were checked; a reference added concurrently still ends as a 409."""
    await session.delete(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(detail, code=code)
    await session.commit()


# ---------------------------------------------------------------- taxonomies


def _taxonomy_summary(t: Taxonomy) -> dict[str, Any]:
    return {"code": t.code, "name": t.name, "description": t.description, "position": t.position}


async def list_taxonomies(session: AsyncSession) -> list[Taxonomy]:
    return list((await session.scalars(select(Taxonomy).order_by(Taxonomy.position, Taxonomy.id))).all())


# Node names, cached per process: every search with facets labels its categories and every
# category filter checks its ids. A process forgets them after it writes nodes; other API
# processes see a rename within NAMES_TTL_SECONDS.
NAMES_TTL_SECONDS = 30.0
_names: dict[int, tuple[str, float]] = {}


def forget_node_names() -> None:
    _names.clear()


async def node_names(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    """id -> name of the nodes among `ids` that exist."""
    now = time.monotonic()
    found: dict[int, str] = {}
    missing: list[int] = []
    for node_id in dict.fromkeys(ids):
        cached = _names.get(node_id)
        if cached is not None and cached[1] > now:
            found[node_id] = cached[0]
        else:
            missing.append(node_id)
    if missing:
        rows = await session.execute(select(TaxonomyNode.id, TaxonomyNode.name).where(TaxonomyNode.id.in_(missing)))
        for node_id, name in rows.all():
            _names[node_id] = (name, now + NAMES_TTL_SECONDS)
            found[node_id] = name
    return found


async def _lock_taxonomy(session: AsyncSession, taxonomy_id: int) -> Taxonomy:
    """Serialize changes to the shape of one tree (FOR UPDATE is a no-op on SQLite)."""
    tax = await session.scalar(
        select(Taxonomy).where(Taxonomy.id == taxonomy_id).with_for_update().execution_options(populate_existing=True)
    )
    if tax is None:
        raise NotFound(f"No taxonomy with id {taxonomy_id}", code="taxonomy_not_found")
    return tax


async def _check_taxonomy_name(session: AsyncSession, name: str, exclude_id: int | None = None) -> None:
    stmt = select(Taxonomy.id).where(Taxonomy.name == name)
    if exclude_id is not None:
        stmt = stmt.where(Taxonomy.id != exclude_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"A taxonomy named {name!r} exists", code="taxonomy_exists")


async def create_taxonomy(session: AsyncSession, actor: Principal, data: TaxonomyCreate) -> Taxonomy:
    await _check_taxonomy_name(session, data.name)
    tax = Taxonomy(code=data.code, name=data.name, description=data.description, position=data.position)
    session.add(tax)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A taxonomy with code {data.code!r} exists", code="taxonomy_exists")
    record(session, actor, "taxonomy.create", "taxonomy", tax.id, after=_taxonomy_summary(tax))
    await session.commit()
    return tax


async def update_taxonomy(session: AsyncSession, actor: Principal, taxonomy_id: int, data: TaxonomyUpdate) -> Taxonomy:
    tax = await get_or_404(session, Taxonomy, taxonomy_id, "taxonomy")
    before = _taxonomy_summary(tax)
    if data.name is not None and data.name != tax.name:
        await _check_taxonomy_name(session, data.name, exclude_id=tax.id)
        tax.name = data.name
    if data.description is not None:
        tax.description = data.description
    if data.position is not None:
        tax.position = data.position
    await session.flush()
    record(session, actor, "taxonomy.update", "taxonomy", tax.id, **changes(before, _taxonomy_summary(tax)))
    await session.commit()
    return tax


async def delete_taxonomy(session: AsyncSession, actor: Principal, taxonomy_id: int) -> None:
    """Deletes the taxonomy with all its nodes, unless an item version is placed in one of them."""
    tax = await _lock_taxonomy(session, taxonomy_id)
    node_ids = select(TaxonomyNode.id).where(TaxonomyNode.taxonomy_id == tax.id)
    placements = await session.scalar(
        select(func.count()).select_from(version_categories).where(version_categories.c.node_id.in_(node_ids))
    )
    if placements:
        raise Conflict(
            "Items are still placed in this taxonomy; move them or delete the nodes with rehome_to",
            code="taxonomy_in_use",
            placements=placements,
        )
    nodes = await session.scalar(select(func.count()).where(TaxonomyNode.taxonomy_id == tax.id))
    await session.execute(
        delete(AclGrant).where(AclGrant.target_type == CATEGORY_ACL, AclGrant.target_id.in_(node_ids))
    )
    # parent_id is ON DELETE RESTRICT: detach the tree first, then remove every node at once.
    await session.execute(
        update(TaxonomyNode)
        .where(TaxonomyNode.taxonomy_id == tax.id)
        .values(parent_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(TaxonomyNode).where(TaxonomyNode.taxonomy_id == tax.id).execution_options(synchronize_session=False)
    )
    record(session, actor, "taxonomy.delete", "taxonomy", tax.id, before=_taxonomy_summary(tax), nodes_deleted=nodes)
    await _delete_and_commit(session, tax, "taxonomy_in_use", "Items were placed in this taxonomy meanwhile")
    forget_node_names()


async def taxonomy_tree(session: AsyncSession, taxonomy_id: int) -> TaxonomyTreeOut:
    tax = await get_or_404(session, Taxonomy, taxonomy_id, "taxonomy")
    rows = (
        await session.scalars(
            select(TaxonomyNode)
            .where(TaxonomyNode.taxonomy_id == tax.id)
            .order_by(TaxonomyNode.position, TaxonomyNode.id)
        )
    ).all()
    out = {n.id: TreeNodeOut(id=n.id, name=n.name, position=n.position, path=n.path) for n in rows}
    roots: list[TreeNodeOut] = []
    for n in rows:  # already in sibling order, so children lists come out ordered too
        if n.parent_id is None or n.parent_id not in out:
            roots.append(out[n.id])
        else:
            out[n.parent_id].children.append(out[n.id])
    return TaxonomyTreeOut(id=tax.id, code=tax.code, name=tax.name, nodes=roots)


# ---------------------------------------------------------------- nodes


def _node_summary(n: TaxonomyNode) -> dict[str, Any]:
    return {"name": n.name, "parent_id": n.parent_id, "position": n.position, "path": n.path}


async def list_nodes(
    session: AsyncSession, taxonomy_id: int, page: PageParams, parent_id: int | None, top_level: bool, q: str | None
) -> tuple[list[TaxonomyNode], str | None]:
    await get_or_404(session, Taxonomy, taxonomy_id, "taxonomy")
    stmt = select(TaxonomyNode).where(TaxonomyNode.taxonomy_id == taxonomy_id)
    if top_level:
        stmt = stmt.where(TaxonomyNode.parent_id.is_(None))
    elif parent_id is not None:
        stmt = stmt.where(TaxonomyNode.parent_id == parent_id)
    if q:
        stmt = stmt.where(TaxonomyNode.name.ilike(like_pattern(q), escape="\\"))
    return await paginate_by_id(session, stmt, TaxonomyNode.id, page, descending=False)


async def _siblings(
    session: AsyncSession, taxonomy_id: int, parent_id: int | None, exclude_id: int | None = None
) -> list[TaxonomyNode]:
    stmt = select(TaxonomyNode).where(TaxonomyNode.taxonomy_id == taxonomy_id)
    stmt = stmt.where(TaxonomyNode.parent_id.is_(None) if parent_id is None else TaxonomyNode.parent_id == parent_id)
    if exclude_id is not None:
        stmt = stmt.where(TaxonomyNode.id != exclude_id)
    return list((await session.scalars(stmt.order_by(TaxonomyNode.position, TaxonomyNode.id))).all())


def _renumber(nodes: list[TaxonomyNode]) -> None:
    for i, n in enumerate(nodes):
        if n.position != i:
            n.position = i


def _check_name_free(siblings: list[TaxonomyNode], name: str) -> None:
    # The unique constraint cannot see top-level duplicates (parent_id NULL), so check here.
    if any(s.name == name for s in siblings):
        raise Conflict(f"A node named {name!r} exists at that place", code="node_exists", name=name)


async def _parent_for(session: AsyncSession, taxonomy_id: int, parent_id: int) -> TaxonomyNode:
    parent = await session.get(TaxonomyNode, parent_id)
    if parent is None:
        raise InvalidInput(
            f"No node with id {parent_id} to place this under",
            code="unknown_parent",
            field="parent_id",
            unknown=[parent_id],
        )
    if parent.taxonomy_id != taxonomy_id:
        raise InvalidInput(
            "A node can only be placed under a node of the same taxonomy", code="taxonomy_mismatch", field="parent_id"
        )
    return parent


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"A tree may be at most {MAX_DEPTH} levels deep", code="tree_too_deep", max_depth=MAX_DEPTH)


async def create_node(session: AsyncSession, actor: Principal, taxonomy_id: int, data: NodeCreate) -> TaxonomyNode:
    tax = await _lock_taxonomy(session, taxonomy_id)
    parent = None
    if data.parent_id is not None:
        parent = await _parent_for(session, tax.id, data.parent_id)
        _check_depth(_depth(parent.path) + 1)
    siblings = await _siblings(session, tax.id, data.parent_id)
    _check_name_free(siblings, data.name)
    node = TaxonomyNode(taxonomy_id=tax.id, parent_id=data.parent_id, name=data.name, position=len(siblings), path="/")
    session.add(node)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A node named {data.name!r} exists at that place", code="node_exists", name=data.name)
    node.path = f"{parent.path if parent else '/'}{node.id}/"
    siblings.insert(len(siblings) if data.position is None else min(data.position, len(siblings)), node)
    _renumber(siblings)
    await session.flush()
    record(
        session, actor, "taxonomy_node.create", "taxonomy_node", node.id, taxonomy_id=tax.id, after=_node_summary(node)
    )
    await session.commit()
    forget_node_names()
    return node


async def rename_node(session: AsyncSession, actor: Principal, node_id: int, data: NodeRename) -> TaxonomyNode:
    node = await get_or_404(session, TaxonomyNode, node_id, "node")
    await _lock_taxonomy(session, node.taxonomy_id)  # top-level names are unique only by this check
    await session.refresh(node)
    before = _node_summary(node)
    if data.name != node.name:
        _check_name_free(await _siblings(session, node.taxonomy_id, node.parent_id, exclude_id=node.id), data.name)
        node.name = data.name
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"A node named {data.name!r} exists at that place", code="node_exists", name=data.name)
    record(session, actor, "taxonomy_node.rename", "taxonomy_node", node.id, **changes(before, _node_summary(node)))
    await session.commit()
    forget_node_names()
    return node


async def _subtree(session: AsyncSession, node: TaxonomyNode) -> list[TaxonomyNode]:
    """The node and all its descendants."""
    return list((await session.scalars(select(TaxonomyNode).where(TaxonomyNode.path.startswith(node.path)))).all())


async def move_node(session: AsyncSession, actor: Principal, node_id: int, data: NodeMove) -> TaxonomyNode:
    """Move under another parent of the same taxonomy (or to the top) and/or change position.
    The paths of the whole subtree follow; published items in it are reindexed."""
    node = await get_or_404(session, TaxonomyNode, node_id, "node")
    await _lock_taxonomy(session, node.taxonomy_id)
    await session.refresh(node)  # the state after the lock, not before
    before = _node_summary(node)
    new_parent_id = data.parent_id if "parent_id" in data.model_fields_set else node.parent_id
    reindexed = 0
    if new_parent_id != node.parent_id:
        prefix = "/"
        if new_parent_id is not None:
            if new_parent_id == node.id:
                raise Conflict("A node cannot move under itself", code="taxonomy_cycle")
            parent = await _parent_for(session, node.taxonomy_id, new_parent_id)
            if parent.path.startswith(node.path):
                raise Conflict("A node cannot move under one of its own descendants", code="taxonomy_cycle")
            prefix = parent.path
        subtree = await _subtree(session, node)
        depth_below = max(_depth(n.path) for n in subtree) - _depth(node.path)
        _check_depth(_depth(prefix) + 1 + depth_below)
        new_siblings = await _siblings(session, node.taxonomy_id, new_parent_id)
        _check_name_free(new_siblings, node.name)
        _renumber(await _siblings(session, node.taxonomy_id, node.parent_id, exclude_id=node.id))
        old_path, new_path = node.path, f"{prefix}{node.id}/"
        for n in subtree:
            n.path = new_path + n.path[len(old_path) :]
        node.parent_id = new_parent_id
        position = len(new_siblings) if data.position is None else min(data.position, len(new_siblings))
        new_siblings.insert(position, node)
        _renumber(new_siblings)
        reindexed = _enqueue_reindex(session, actor, await _published_items_in_nodes(session, [n.id for n in subtree]))
        await _refresh_readers_below(session, [node.id])
    elif data.position is not None:  # a reorder among the same siblings
        siblings = await _siblings(session, node.taxonomy_id, node.parent_id, exclude_id=node.id)
        siblings.insert(min(data.position, len(siblings)), node)
        _renumber(siblings)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A node named {node.name!r} exists at that place", code="node_exists", name=node.name)
    record(
        session,
        actor,
        "taxonomy_node.move",
        "taxonomy_node",
        node.id,
        **changes(before, _node_summary(node)),
        reindexed_items=reindexed,
    )
    await session.commit()
    forget_node_names()
    return node


async def delete_node(session: AsyncSession, actor: Principal, node_id: int, rehome_to: int | None = None) -> None:
    """Delete an empty node; with `rehome_to`, first move its children and its item placements
    there (same taxonomy, outside the deleted node), all in this one transaction."""
    node = await get_or_404(session, TaxonomyNode, node_id, "node")
    await _lock_taxonomy(session, node.taxonomy_id)
    await session.refresh(node)
    children = await _siblings(session, node.taxonomy_id, node.id)
    placements = (
        await session.scalar(
            select(func.count()).select_from(version_categories).where(version_categories.c.node_id == node.id)
        )
        or 0
    )
    info: dict[str, Any] = {}
    if rehome_to is None:
        if children or placements:
            raise Conflict(
                "Only an empty node can be deleted; pass rehome_to to move its content first",
                code="node_not_empty",
                children=len(children),
                placements=placements,
            )
    else:
        target = await session.get(TaxonomyNode, rehome_to)
        if target is None:
            raise InvalidInput(
                f"No node with id {rehome_to} to re-home into", code="invalid_rehome_target", field="rehome_to"
            )
        if target.taxonomy_id != node.taxonomy_id:
            raise InvalidInput(
                "Content can only be re-homed within the same taxonomy", code="taxonomy_mismatch", field="rehome_to"
            )
        if target.path.startswith(node.path):
            raise InvalidInput(
                "The re-home target must lie outside the node being deleted",
                code="invalid_rehome_target",
                field="rehome_to",
            )
        subtree = await _subtree(session, node)
        affected = await _published_items_in_nodes(session, [n.id for n in subtree])
        if children:
            depth_below = max(_depth(n.path) for n in subtree) - _depth(node.path)
            _check_depth(_depth(target.path) + depth_below)
            target_children = await _siblings(session, node.taxonomy_id, target.id)
            clash = sorted({c.name for c in children} & {t.name for t in target_children})
            if clash:
                raise Conflict(
                    f"The target already has children named {', '.join(clash)}", code="node_exists", names=clash
                )
            for n in subtree:
                if n.id != node.id:
                    n.path = target.path + n.path[len(node.path) :]
            for c in children:
                c.parent_id = target.id
            _renumber(target_children + children)
        if placements:
            # A version already placed in the target keeps that one placement.
            already = select(version_categories.c.version_id).where(version_categories.c.node_id == target.id)
            await session.execute(
                delete(version_categories).where(
                    version_categories.c.node_id == node.id, version_categories.c.version_id.in_(already)
                )
            )
            await session.execute(
                update(version_categories).where(version_categories.c.node_id == node.id).values(node_id=target.id)
            )
        info = {
            "rehome_to": target.id,
            "moved_children": [c.id for c in children],
            "moved_placements": placements,
            "reindexed_items": _enqueue_reindex(session, actor, affected),
        }
        await session.flush()  # children leave before their parent goes (parent_id is RESTRICT)
        await _refresh_readers_below(session, [target.id])
    await session.execute(delete(AclGrant).where(AclGrant.target_type == CATEGORY_ACL, AclGrant.target_id == node.id))
    _renumber(await _siblings(session, node.taxonomy_id, node.parent_id, exclude_id=node.id))
    record(
        session,
        actor,
        "taxonomy_node.delete",
        "taxonomy_node",
        node.id,
        taxonomy_id=node.taxonomy_id,
        before=_node_summary(node),
        **info,
    )
    await _delete_and_commit(session, node, "node_not_empty", "Content was added to this node meanwhile")
    forget_node_names()


# ---- used by other domains (knowledge, search, ACL)


async def subtree_ids(session: AsyncSession, node_ids: list[int]) -> list[int]:
    """Every node in the subtrees of these nodes, themselves included (unknown ids are ignored)."""
    if not node_ids:
        return []
    paths = sorted(
        set((await session.scalars(select(TaxonomyNode.path).where(TaxonomyNode.id.in_(set(node_ids))))).all())
    )
    out: set[int] = set()
    for i in range(0, len(paths), 200):
        prefixes = [TaxonomyNode.path.startswith(p) for p in paths[i : i + 200]]
        out.update((await session.scalars(select(TaxonomyNode.id).where(or_(*prefixes)))).all())
    return sorted(out)


async def ancestors_and_self(session: AsyncSession, node_ids: list[int]) -> list[int]:
    """These nodes and all their ancestors (unknown ids are ignored)."""
    if not node_ids:
        return []
    paths = (await session.scalars(select(TaxonomyNode.path).where(TaxonomyNode.id.in_(set(node_ids))))).all()
    return sorted({i for p in paths for i in _path_ids(p)})


async def validate_node_ids(session: AsyncSession, ids: list[int]) -> list[TaxonomyNode]:
    """The nodes, in the order given (duplicates dropped); InvalidInput `unknown_category` names any
    id that does not exist."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    found = {n.id: n for n in (await session.scalars(select(TaxonomyNode).where(TaxonomyNode.id.in_(wanted)))).all()}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InvalidInput(f"Unknown categories: {missing}", code="unknown_category", unknown=missing)
    return [found[i] for i in wanted]


# ---------------------------------------------------------------- tags


def normalize_tag(name: str) -> str | None:
    """NFKC, trimmed, inner whitespace collapsed; None when empty, too long or with control characters."""
    if not isinstance(name, str):
        return None
    norm = " ".join(unicodedata.normalize("NFKC", name).split())
    if not norm or len(norm) > MAX_TAG_LENGTH or any(unicodedata.category(c) == "Cc" for c in norm):
        return None
    return norm


def _tag_name(name: str) -> str:
    norm = normalize_tag(name)
    if norm is None:
        raise InvalidInput(
            f"A tag is 1 to {MAX_TAG_LENGTH} characters without control characters",
            code="invalid_tag",
            invalid=[name],
            field="name",
        )
    return norm


async def _tag_usage(session: AsyncSession, tag_ids: list[int]) -> dict[int, int]:
    if not tag_ids:
        return {}
    stmt = (
        select(version_tags.c.tag_id, func.count(distinct(ItemVersion.item_id)))
        .join(ItemVersion, ItemVersion.id == version_tags.c.version_id)
        .where(version_tags.c.tag_id.in_(tag_ids), ItemVersion.state.not_in(HISTORY_STATES))
        .group_by(version_tags.c.tag_id)
    )
    return {tid: n for tid, n in (await session.execute(stmt)).all()}


def _tag_out(tag: Tag, usage: dict[int, int]) -> TagOut:
    return TagOut(
        id=tag.id, name=tag.name, usage_count=usage.get(tag.id, 0), created_at=tag.created_at, updated_at=tag.updated_at
    )


async def list_tags(session: AsyncSession, page: PageParams, q: str | None) -> tuple[list[TagOut], str | None]:
    stmt = select(Tag)
    if q:
        prefix = " ".join(unicodedata.normalize("NFKC", q).split())
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Tag.name.ilike(escaped + "%", escape="\\"))
    rows, nxt = await paginate_by_id(session, stmt, Tag.id, page, descending=False)
    usage = await _tag_usage(session, [t.id for t in rows])
    return [_tag_out(t, usage) for t in rows], nxt


async def get_tag(session: AsyncSession, tag_id: int) -> TagOut:
    tag = await get_or_404(session, Tag, tag_id, "tag")
    return _tag_out(tag, await _tag_usage(session, [tag.id]))


async def _check_tag_free(session: AsyncSession, name: str, exclude_id: int | None = None) -> None:
    stmt = select(Tag.id).where(Tag.name == name)
    if exclude_id is not None:
        stmt = stmt.where(Tag.id != exclude_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"The tag {name!r} exists", code="tag_exists", name=name)


async def create_tag(session: AsyncSession, actor: Principal, name: str) -> TagOut:
    norm = _tag_name(name)
    await _check_tag_free(session, norm)
    tag = Tag(name=norm)
    session.add(tag)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"The tag {norm!r} exists", code="tag_exists", name=norm)
    record(session, actor, "tag.create", "tag", tag.id, after={"name": tag.name})
    await session.commit()
    return _tag_out(tag, {})


async def rename_tag(session: AsyncSession, actor: Principal, tag_id: int, name: str) -> TagOut:
    """Rename everywhere at once (versions refer to the tag by id); published items carrying it
    are reindexed, since the index holds tag names."""
    tag = await get_or_404(session, Tag, tag_id, "tag")
    norm = _tag_name(name)
    before = {"name": tag.name}
    reindexed = 0
    if norm != tag.name:
        await _check_tag_free(session, norm, exclude_id=tag.id)
        tag.name = norm
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"The tag {norm!r} exists", code="tag_exists", name=norm)
        items = (
            await session.scalars(
                select(ItemVersion.item_id)
                .distinct()
                .join(version_tags, version_tags.c.version_id == ItemVersion.id)
                .where(version_tags.c.tag_id == tag.id, ItemVersion.state == "published")
            )
        ).all()
        reindexed = _enqueue_reindex(session, actor, sorted(items))
    record(
        session, actor, "tag.rename", "tag", tag.id, **changes(before, {"name": tag.name}), reindexed_items=reindexed
    )
    await session.commit()
    return _tag_out(tag, await _tag_usage(session, [tag.id]))


async def delete_tag(session: AsyncSession, actor: Principal, tag_id: int) -> None:
    """Refused while any version, history included, carries the tag."""
    tag = await get_or_404(session, Tag, tag_id, "tag")
    versions = await session.scalar(
        select(func.count()).select_from(version_tags).where(version_tags.c.tag_id == tag.id)
    )
    if versions:
        usage = (await _tag_usage(session, [tag.id])).get(tag.id, 0)
        raise Conflict(
            f"The tag {tag.name!r} is used by {versions} item versions",
            code="tag_in_use",
            versions=versions,
            usage_count=usage,
        )
    record(session, actor, "tag.delete", "tag", tag.id, before={"name": tag.name})
    await _delete_and_commit(session, tag, "tag_in_use", f"The tag {tag.name!r} was used meanwhile")


async def resolve_tags(session: AsyncSession, names: list[str], create_missing: bool) -> list[Tag]:
    """Tags for these names (normalized like the API does; duplicates after normalization dropped,
    order kept). Invalid names → InvalidInput `invalid_tag`; unknown names → created (flushed, not
    committed) when `create_missing`, else InvalidInput `unknown_tag`."""
    invalid = [n for n in names if normalize_tag(n) is None]
    if invalid:
        raise InvalidInput(
            f"Tags are 1 to {MAX_TAG_LENGTH} characters without control characters",
            code="invalid_tag",
            invalid=invalid[:50],
        )
    wanted = list(dict.fromkeys(n for n in (normalize_tag(x) for x in names) if n is not None))
    if not wanted:
        return []
    found = {t.name: t for t in (await session.scalars(select(Tag).where(Tag.name.in_(wanted)))).all()}
    missing = [n for n in wanted if n not in found]
    if missing:
        if not create_missing:
            raise InvalidInput(f"Unknown tags: {', '.join(missing)}", code="unknown_tag", unknown=missing)
        for n in missing:
            found[n] = Tag(name=n)
            session.add(found[n])
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict("Someone created the same tag at the same moment; try again", code="tag_conflict")
    return [found[n] for n in wanted]


# ---------------------------------------------------------------- attribute definitions


def _attribute_summary(a: AttributeDefinition) -> dict[str, Any]:
    return {
        "code": a.code,
        "name": a.name,
        "type": a.type,
        "options": list(a.options),
        "required": a.required,
        "description": a.description,
    }


def _check_options(type_: str, options: list[str]) -> list[str]:
    if type_ in ENUM_TYPES:
        if not options:
            raise InvalidInput(
                f"An {type_} attribute needs a non-empty list of options", code="invalid_options", field="options"
            )
        dupes = sorted({o for o in options if options.count(o) > 1})
        if dupes:
            raise InvalidInput(
                f"Options must be unique; repeated: {', '.join(dupes)}",
                code="invalid_options",
                field="options",
                duplicates=dupes,
            )
        return list(options)
    if options:
        raise InvalidInput(f"A {type_} attribute takes no options", code="invalid_options", field="options")
    return []


async def _attribute_use_count(session: AsyncSession, code: str) -> int:
    """Item versions (any state) holding a non-null value for this attribute."""
    return (
        await session.scalar(
            select(func.count()).select_from(ItemVersion).where(ItemVersion.attributes[code].as_string().is_not(None))
        )
        or 0
    )


async def _options_in_use(session: AsyncSession, attr: AttributeDefinition, options: list[str]) -> list[str]:
    if not options:
        return []
    if attr.type == "enum":
        value = ItemVersion.attributes[attr.code].as_string()
        used = (await session.scalars(select(value).distinct().where(value.in_(options)))).all()
        return sorted(used)
    if session.get_bind().dialect.name == "postgresql":
        stmt = text(
            "SELECT DISTINCT e FROM item_versions, jsonb_array_elements_text(CASE WHEN "
            "jsonb_typeof(item_versions.attributes -> CAST(:code AS text)) = 'array' "
            "THEN item_versions.attributes -> CAST(:code AS text) ELSE CAST('[]' AS jsonb) END) AS e "
            "WHERE e = ANY(:opts)"
        ).bindparams(code=attr.code, opts=list(options))
    else:
        stmt = text(
            "SELECT DISTINCT je.value FROM item_versions, json_each(item_versions.attributes, :path) AS je "
            "WHERE json_type(item_versions.attributes, :path) = 'array' AND je.value IN :opts"
        ).bindparams(bindparam("opts", value=list(options), expanding=True), path=f'$."{attr.code}"')
    return sorted((await session.scalars(stmt)).all())


async def list_attributes(
    session: AsyncSession, page: PageParams, q: str | None
) -> tuple[list[AttributeDefinition], str | None]:
    stmt = select(AttributeDefinition)
    if q:
        like = like_pattern(q)
        stmt = stmt.where(
            AttributeDefinition.code.ilike(like, escape="\\") | AttributeDefinition.name.ilike(like, escape="\\")
        )
    return await paginate_by_id(session, stmt, AttributeDefinition.id, page, descending=False)


async def create_attribute(session: AsyncSession, actor: Principal, data: AttributeCreate) -> AttributeDefinition:
    attr = AttributeDefinition(
        code=data.code,
        name=data.name,
        type=data.type,
        options=_check_options(data.type, data.options),
        required=data.required,
        description=data.description,
    )
    session.add(attr)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"An attribute with code {data.code!r} exists", code="attribute_exists")
    record(session, actor, "attribute.create", "attribute", attr.id, after=_attribute_summary(attr))
    await session.commit()
    return attr


async def update_attribute(
    session: AsyncSession, actor: Principal, attr_id: int, data: AttributeUpdate
) -> AttributeDefinition:
    """The type cannot change once a version holds a value; an enum option cannot be removed
    while a version holds it."""
    attr = await get_or_404(session, AttributeDefinition, attr_id, "attribute")
    before = _attribute_summary(attr)
    new_type = data.type or attr.type
    if data.options is not None:
        options = data.options
    else:
        options = list(attr.options) if new_type in ENUM_TYPES and attr.type in ENUM_TYPES else []
    options = _check_options(new_type, options)
    if new_type != attr.type:
        used = await _attribute_use_count(session, attr.code)
        if used:
            raise Conflict(
                f"{used} item versions hold a value for {attr.code!r}; its type cannot change",
                code="attribute_in_use",
                versions=used,
            )
    else:
        removed = [o for o in attr.options if o not in options]
        still_used = await _options_in_use(session, attr, removed)
        if still_used:
            raise Conflict(
                f"Options still used by item versions: {', '.join(still_used)}",
                code="option_in_use",
                options=still_used,
            )
    attr.type, attr.options = new_type, options
    if data.name is not None:
        attr.name = data.name
    if data.required is not None:
        attr.required = data.required
    if data.description is not None:
        attr.description = data.description
    await session.flush()
    record(session, actor, "attribute.update", "attribute", attr.id, **changes(before, _attribute_summary(attr)))
    await session.commit()
    return attr


async def delete_attribute(session: AsyncSession, actor: Principal, attr_id: int) -> None:
    attr = await get_or_404(session, AttributeDefinition, attr_id, "attribute")
    templates = (
        await session.scalars(
            select(Template.name)
            .join(template_attributes, template_attributes.c.template_id == Template.id)
            .where(template_attributes.c.attribute_id == attr.id)
            .order_by(Template.id)
        )
    ).all()
    if templates:
        raise Conflict(
            f"Templates still use this attribute: {', '.join(templates)}",
            code="attribute_in_template",
            templates=list(templates),
        )
    used = await _attribute_use_count(session, attr.code)
    if used:
        raise Conflict(f"{used} item versions hold a value for {attr.code!r}", code="attribute_in_use", versions=used)
    record(session, actor, "attribute.delete", "attribute", attr.id, before=_attribute_summary(attr))
    await _delete_and_commit(session, attr, "attribute_in_template", "A template took this attribute meanwhile")


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
MAX_TEXT_VALUE = 4000


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        s = value.strip()
        if not _NUMBER.match(s):
            return None
        value = float(s) if any(c in s for c in ".eE") else int(s)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return None


def validate_attribute_values(
    defs: list[AttributeDefinition], values: dict[str, Any], *, for_publish: bool
) -> dict[str, Any]:
    """Check and normalize attribute values against the definitions of an item type's template.

    text → trimmed string; number → int or float (numeric strings accepted); date → "YYYY-MM-DD";
    enum → one of the options; multi_enum → a list of distinct options, in the options' order.
    None, "" and [] mean "no value" and are dropped. Required attributes are enforced only when
    `for_publish` (drafts may be incomplete). Raises InvalidInput `invalid_attribute` with an
    `errors` list: {"field": "attributes.<code>", "attribute", "type", "message"} per bad field.
    """
    if not isinstance(values, dict):
        raise InvalidInput(
            "attributes must be an object of attribute code → value",
            code="invalid_attribute",
            errors=[
                {"field": "attributes", "attribute": None, "type": "not_an_object", "message": "must be an object"}
            ],
        )
    by_code = {d.code: d for d in defs}
    errors: list[dict[str, Any]] = []
    out: dict[str, Any] = {}

    def bad(code: str, kind: str, message: str) -> None:
        errors.append({"field": f"attributes.{code}", "attribute": code, "type": kind, "message": message})

    for code, value in values.items():
        d = by_code.get(code)
        if d is None:
            bad(code, "unknown_attribute", "no such attribute for this item type")
            continue
        if value is None or value == "" or value == []:
            continue
        if d.type == "text":
            if not isinstance(value, str):
                bad(code, "wrong_type", "must be text")
            elif len(value.strip()) > MAX_TEXT_VALUE:
                bad(code, "too_long", f"at most {MAX_TEXT_VALUE} characters")
            elif value.strip():
                out[code] = value.strip()
        elif d.type == "number":
            num = _number(value)
            if num is None:
                bad(code, "wrong_type", "must be a number")
            else:
                out[code] = num
        elif d.type == "date":
            parsed = None
            if isinstance(value, date) and not hasattr(value, "hour"):
                parsed = value
            elif isinstance(value, str) and _DATE.match(value.strip()):
                try:
                    parsed = date.fromisoformat(value.strip())
                except ValueError:
                    parsed = None
            if parsed is None:
                bad(code, "invalid_date", "must be a date written YYYY-MM-DD")
            else:
                out[code] = parsed.isoformat()
        elif d.type == "enum":
            if not isinstance(value, str):
                bad(code, "wrong_type", "must be one of the options, as text")
            elif value.strip() not in d.options:
                bad(code, "not_in_options", f"{value!r} is not one of: {', '.join(map(str, d.options))}")
            else:
                out[code] = value.strip()
        elif d.type == "multi_enum":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad(code, "wrong_type", "must be a list of options")
                continue
            chosen = [v.strip() for v in value]
            outside = [v for v in chosen if v not in d.options]
            dupes = sorted({v for v in chosen if chosen.count(v) > 1})
            if outside:
                bad(code, "not_in_options", f"not among the options: {', '.join(outside)}")
            elif dupes:
                bad(code, "duplicate", f"listed more than once: {', '.join(dupes)}")
            else:
                out[code] = [o for o in d.options if o in chosen]
        else:  # a definition with a type this code does not know: refuse rather than guess
            bad(code, "wrong_type", f"unsupported attribute type {d.type!r}")
    if for_publish:
        for d in defs:
            if d.required and d.code not in out and not any(e["attribute"] == d.code for e in errors):
                bad(d.code, "required", "required before publishing")
    if errors:
        raise InvalidInput(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors)[:2000], code="invalid_attribute", errors=errors
        )
    return out


# ---------------------------------------------------------------- templates


def _template_summary(t: Template) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "attributes": [a.code for a in t.attributes]}


async def _set_template_attributes(session: AsyncSession, template: Template, ids: list[int]) -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InvalidInput(
            f"Attributes listed more than once: {dupes}",
            code="duplicate_attribute",
            field="attribute_ids",
            duplicates=dupes,
        )
    known = (
        set((await session.scalars(select(AttributeDefinition.id).where(AttributeDefinition.id.in_(ids)))).all())
        if ids
        else set()
    )
    missing = [i for i in ids if i not in known]
    if missing:
        raise InvalidInput(
            f"Unknown attributes: {missing}", code="unknown_attribute", field="attribute_ids", unknown=missing
        )
    await session.execute(delete(template_attributes).where(template_attributes.c.template_id == template.id))
    if ids:
        await session.execute(
            insert(template_attributes),
            [{"template_id": template.id, "attribute_id": a, "position": i} for i, a in enumerate(ids)],
        )
    await session.refresh(template, ["attributes"])


async def _check_template_name(session: AsyncSession, name: str, exclude_id: int | None = None) -> None:
    stmt = select(Template.id).where(Template.name == name)
    if exclude_id is not None:
        stmt = stmt.where(Template.id != exclude_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"A template named {name!r} exists", code="template_exists")


async def list_templates(session: AsyncSession) -> list[Template]:
    return list((await session.scalars(select(Template).order_by(Template.id))).all())


async def create_template(session: AsyncSession, actor: Principal, data: TemplateCreate) -> Template:
    await _check_template_name(session, data.name)
    tmpl = Template(name=data.name, description=data.description)
    session.add(tmpl)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A template named {data.name!r} exists", code="template_exists")
    await _set_template_attributes(session, tmpl, data.attribute_ids)
    record(session, actor, "template.create", "template", tmpl.id, after=_template_summary(tmpl))
    await session.commit()
    return tmpl


async def update_template(session: AsyncSession, actor: Principal, template_id: int, data: TemplateUpdate) -> Template:
    tmpl = await get_or_404(session, Template, template_id, "template")
    before = _template_summary(tmpl)
    if data.name is not None and data.name != tmpl.name:
        await _check_template_name(session, data.name, exclude_id=tmpl.id)
        tmpl.name = data.name
    if data.description is not None:
        tmpl.description = data.description
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A template named {data.name!r} exists", code="template_exists")
    if data.attribute_ids is not None:
        await _set_template_attributes(session, tmpl, data.attribute_ids)
    record(session, actor, "template.update", "template", tmpl.id, **changes(before, _template_summary(tmpl)))
    await session.commit()
    return tmpl


async def delete_template(session: AsyncSession, actor: Principal, template_id: int) -> None:
    tmpl = await get_or_404(session, Template, template_id, "template")
    types = (
        await session.scalars(select(ItemType.code).where(ItemType.template_id == tmpl.id).order_by(ItemType.code))
    ).all()
    if types:
        raise Conflict(
            f"Item types still use this template: {', '.join(types)}", code="template_in_use", item_types=list(types)
        )
    record(session, actor, "template.delete", "template", tmpl.id, before=_template_summary(tmpl))
    await session.delete(tmpl)
    await session.commit()


# ---------------------------------------------------------------- item types


def _item_type_summary(t: ItemType) -> dict[str, Any]:
    return {"name": t.name, "template_id": t.template_id, "review_required": t.review_required}


async def list_item_types(session: AsyncSession) -> list[ItemType]:
    return list((await session.scalars(select(ItemType).order_by(ItemType.code))).all())


async def item_type_or_404(session: AsyncSession, code: str) -> ItemType:
    row = await session.get(ItemType, code)
    if row is None:
        raise NotFound(f"No item type {code!r}", code="item_type_not_found")
    return row


async def _check_template_id(session: AsyncSession, template_id: int | None) -> None:
    if template_id is not None and await session.get(Template, template_id) is None:
        raise InvalidInput(
            f"No template with id {template_id}", code="unknown_template", field="template_id", unknown=[template_id]
        )


async def create_item_type(session: AsyncSession, actor: Principal, data: ItemTypeCreate) -> ItemType:
    if await session.get(ItemType, data.code) is not None:
        raise Conflict(f"The item type {data.code!r} exists", code="item_type_exists")
    await _check_template_id(session, data.template_id)
    row = ItemType(code=data.code, name=data.name, template_id=data.template_id, review_required=data.review_required)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"The item type {data.code!r} exists", code="item_type_exists")
    record(session, actor, "item_type.create", "item_type", row.code, after=_item_type_summary(row))
    await session.commit()
    return row


async def update_item_type(session: AsyncSession, actor: Principal, code: str, data: ItemTypeUpdate) -> ItemType:
    """A new template applies to the next edit of each item; stored values are not rewritten."""
    row = await item_type_or_404(session, code)
    before = _item_type_summary(row)
    if data.name is not None:
        row.name = data.name
    if "template_id" in data.model_fields_set:
        await _check_template_id(session, data.template_id)
        row.template_id = data.template_id
    if data.review_required is not None:
        row.review_required = data.review_required
    await session.flush()
    record(session, actor, "item_type.update", "item_type", row.code, **changes(before, _item_type_summary(row)))
    await session.commit()
    return row


async def delete_item_type(session: AsyncSession, actor: Principal, code: str) -> None:
    row = await item_type_or_404(session, code)
    items = await session.scalar(select(func.count()).select_from(Item).where(Item.item_type == row.code))
    if items:
        raise Conflict(f"{items} items are of type {row.code!r}", code="item_type_in_use", items=items)
    record(session, actor, "item_type.delete", "item_type", row.code, before=_item_type_summary(row))
    await _delete_and_commit(session, row, "item_type_in_use", f"Items of type {row.code!r} were created meanwhile")


async def ensure_default_item_types(session: AsyncSession) -> list[ItemType]:
    """faq / article / policy / announcement, when missing (flushed; the caller commits)."""
    existing = {
        t.code: t for t in (await session.scalars(select(ItemType).where(ItemType.code.in_(DEFAULT_ITEM_TYPES)))).all()
    }
    for code, name in DEFAULT_ITEM_TYPES.items():
        if code not in existing:
            existing[code] = ItemType(code=code, name=name, review_required=True)
            session.add(existing[code])
    await session.flush()
    return [existing[c] for c in DEFAULT_ITEM_TYPES]


async def get_item_type(session: AsyncSession, code: str) -> ItemType:
    """For other services: InvalidInput `unknown_item_type` (a bad value in their request body)."""
    row = await session.get(ItemType, code)
    if row is None:
        raise InvalidInput(f"Unknown item type {code!r}", code="unknown_item_type", field="item_type")
    return row


async def template_for_type(session: AsyncSession, item_type: str) -> list[AttributeDefinition]:
    """The attribute definitions of the item type's template, in template order ([] without one)."""
    row = await get_item_type(session, item_type)
    if row.template_id is None:
        return []
    tmpl = await session.get(Template, row.template_id)
    return list(tmpl.attributes) if tmpl is not None else []
