"""Taxonomies, nodes, tags, attribute definitions, templates, item types.

Reads need `knowledge:read`; every write needs `taxonomy:manage` and is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from app.core.db import get_or_404
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.pagination import Page, Paging
from app.core.schemas import Id
from app.identity.deps import Require
from app.taxonomy import service
from app.taxonomy.models import AttributeDefinition, ItemType, Taxonomy, TaxonomyNode, Template
from app.taxonomy.schemas import (
    AttributeCreate,
    AttributeOut,
    AttributeUpdate,
    ItemTypeCreate,
    ItemTypeOut,
    ItemTypeUpdate,
    NodeCreate,
    NodeMove,
    NodeOut,
    NodeRename,
    TagOut,
    TagWrite,
    TaxonomyCreate,
    TaxonomyOut,
    TaxonomyTreeOut,
    TaxonomyUpdate,
    TemplateCreate,
    TemplateOut,
    TemplateUpdate,
)

router = APIRouter(tags=["taxonomy"], responses=PROBLEMS)

Manager = Require("taxonomy:manage")
Reader = Require("knowledge:read")
TypeCodePath = Annotated[str, Path(max_length=32)]


# taxonomies -----------------------------------------------------------


@router.get("/taxonomies", response_model=list[TaxonomyOut])
async def list_taxonomies(session: DbSession, _: Reader) -> list[Taxonomy]:
    """Every taxonomy (知识分类, 所属部门, 适用范围 ...), by position."""
    return await service.list_taxonomies(session)


@router.post("/taxonomies", response_model=TaxonomyOut, status_code=status.HTTP_201_CREATED)
async def create_taxonomy(session: DbSession, actor: Manager, body: TaxonomyCreate) -> Taxonomy:
    return await service.create_taxonomy(session, actor, body)


@router.get("/taxonomies/{taxonomy_id}", response_model=TaxonomyOut)
async def get_taxonomy(session: DbSession, _: Reader, taxonomy_id: Id) -> Taxonomy:
    return await get_or_404(session, Taxonomy, taxonomy_id, "taxonomy")


@router.patch("/taxonomies/{taxonomy_id}", response_model=TaxonomyOut)
async def update_taxonomy(session: DbSession, actor: Manager, taxonomy_id: Id, body: TaxonomyUpdate) -> Taxonomy:
    """Rename, describe, or change the order of the taxonomies (the code never changes)."""
    return await service.update_taxonomy(session, actor, taxonomy_id, body)


@router.delete("/taxonomies/{taxonomy_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_taxonomy(session: DbSession, actor: Manager, taxonomy_id: Id) -> None:
    """Deletes the taxonomy and all its nodes; 409 `taxonomy_in_use` while any item version
    (of any state) is placed in one of its nodes."""
    await service.delete_taxonomy(session, actor, taxonomy_id)


@router.get("/taxonomies/{taxonomy_id}/tree", response_model=TaxonomyTreeOut)
async def taxonomy_tree(session: DbSession, _: Reader, taxonomy_id: Id) -> TaxonomyTreeOut:
    """The whole tree, nested; siblings ordered by position."""
    return await service.taxonomy_tree(session, taxonomy_id)


# nodes -----------------------------------------------------------------


@router.get("/taxonomies/{taxonomy_id}/nodes", response_model=Page[NodeOut])
async def list_nodes(
    session: DbSession,
    _: Reader,
    taxonomy_id: Id,
    page: Paging,
    parent_id: Annotated[Id | None, Query(description="Only the children of this node")] = None,
    top_level: Annotated[bool, Query(description="Only the top-level nodes")] = False,
    q: Annotated[str | None, Query(max_length=100, description="Name contains")] = None,
) -> Page[NodeOut]:
    """The nodes as a flat list, by id (use `/tree` for the nested, ordered view)."""
    rows, nxt = await service.list_nodes(session, taxonomy_id, page, parent_id, top_level, q)
    return Page(items=[NodeOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/taxonomies/{taxonomy_id}/nodes", response_model=NodeOut, status_code=status.HTTP_201_CREATED)
async def create_node(session: DbSession, actor: Manager, taxonomy_id: Id, body: NodeCreate) -> TaxonomyNode:
    """Add a node at the top or under `parent_id` (a node of this taxonomy), at `position`
    among its siblings (default: last)."""
    return await service.create_node(session, actor, taxonomy_id, body)


@router.get("/taxonomy-nodes/{node_id}", response_model=NodeOut)
async def get_node(session: DbSession, _: Reader, node_id: Id) -> TaxonomyNode:
    return await get_or_404(session, TaxonomyNode, node_id, "node")


@router.patch("/taxonomy-nodes/{node_id}", response_model=NodeOut)
async def rename_node(session: DbSession, actor: Manager, node_id: Id, body: NodeRename) -> TaxonomyNode:
    """Rename (use `/move` to change the parent or the position)."""
    return await service.rename_node(session, actor, node_id, body)


@router.post("/taxonomy-nodes/{node_id}/move", response_model=NodeOut)
async def move_node(session: DbSession, actor: Manager, node_id: Id, body: NodeMove) -> TaxonomyNode:
    """Move and reorder: `parent_id` (omitted: same parent; null: top level; never into its own
    subtree → 409 `taxonomy_cycle`; same taxonomy only) and `position` among the new siblings
    (omitted: last after a parent change, unchanged otherwise). The subtree moves along; published
    items in it are queued for reindexing."""
    return await service.move_node(session, actor, node_id, body)


@router.delete("/taxonomy-nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_node(
    session: DbSession,
    actor: Manager,
    node_id: Id,
    rehome_to: Annotated[Id | None, Query(description="Move children and item placements here first")] = None,
) -> None:
    """Only an empty node (no children, no item version placed in it), else 409 `node_not_empty`;
    with `rehome_to`, its children and placements move to that node first, in one transaction."""
    await service.delete_node(session, actor, node_id, rehome_to)


# tags ------------------------------------------------------------------


@router.get("/tags", response_model=Page[TagOut])
async def list_tags(
    session: DbSession,
    _: Reader,
    page: Paging,
    q: Annotated[str | None, Query(max_length=64, description="Name starts with (case-insensitive)")] = None,
) -> Page[TagOut]:
    """Tags by id with `usage_count`: distinct items carrying the tag on a current version."""
    rows, nxt = await service.list_tags(session, page, q)
    return Page(items=rows, next_cursor=nxt)


@router.post("/tags", response_model=TagOut, status_code=status.HTTP_201_CREATED)
async def create_tag(session: DbSession, actor: Manager, body: TagWrite) -> TagOut:
    """Names are normalized (NFKC, trimmed, inner spaces collapsed), 1–64 characters."""
    return await service.create_tag(session, actor, body.name)


@router.get("/tags/{tag_id}", response_model=TagOut)
async def get_tag(session: DbSession, _: Reader, tag_id: Id) -> TagOut:
    return await service.get_tag(session, tag_id)


@router.patch("/tags/{tag_id}", response_model=TagOut)
async def rename_tag(session: DbSession, actor: Manager, tag_id: Id, body: TagWrite) -> TagOut:
    return await service.rename_tag(session, actor, tag_id, body.name)


@router.delete("/tags/{tag_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tag(session: DbSession, actor: Manager, tag_id: Id) -> None:
    """409 `tag_in_use` while any item version, history included, carries the tag."""
    await service.delete_tag(session, actor, tag_id)


# attribute definitions ---------------------------------------------------


@router.get("/attributes", response_model=Page[AttributeOut])
async def list_attributes(
    session: DbSession,
    _: Reader,
    page: Paging,
    q: Annotated[str | None, Query(max_length=100, description="Code or name contains")] = None,
) -> Page[AttributeOut]:
    rows, nxt = await service.list_attributes(session, page, q)
    return Page(items=[AttributeOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/attributes", response_model=AttributeOut, status_code=status.HTTP_201_CREATED)
async def create_attribute(session: DbSession, actor: Manager, body: AttributeCreate) -> AttributeDefinition:
    """Types: text, number, date, enum, multi_enum; `options` (unique, non-empty) for the enum
    types only."""
    return await service.create_attribute(session, actor, body)


@router.get("/attributes/{attribute_id}", response_model=AttributeOut)
async def get_attribute(session: DbSession, _: Reader, attribute_id: Id) -> AttributeDefinition:
    return await get_or_404(session, AttributeDefinition, attribute_id, "attribute")


@router.patch("/attributes/{attribute_id}", response_model=AttributeOut)
async def update_attribute(
    session: DbSession, actor: Manager, attribute_id: Id, body: AttributeUpdate
) -> AttributeDefinition:
    """409 `attribute_in_use` for a type change once a version holds a value; 409 `option_in_use`
    when removing an enum option that a version holds."""
    return await service.update_attribute(session, actor, attribute_id, body)


@router.delete("/attributes/{attribute_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_attribute(session: DbSession, actor: Manager, attribute_id: Id) -> None:
    await service.delete_attribute(session, actor, attribute_id)


# templates ---------------------------------------------------------------


@router.get("/templates", response_model=list[TemplateOut])
async def list_templates(session: DbSession, _: Reader) -> list[Template]:
    return await service.list_templates(session)


@router.post("/templates", response_model=TemplateOut, status_code=status.HTTP_201_CREATED)
async def create_template(session: DbSession, actor: Manager, body: TemplateCreate) -> Template:
    return await service.create_template(session, actor, body)


@router.get("/templates/{template_id}", response_model=TemplateOut)
async def get_template(session: DbSession, _: Reader, template_id: Id) -> Template:
    return await get_or_404(session, Template, template_id, "template")


@router.patch("/templates/{template_id}", response_model=TemplateOut)
async def update_template(session: DbSession, actor: Manager, template_id: Id, body: TemplateUpdate) -> Template:
    """`attribute_ids` replaces the whole ordered list."""
    return await service.update_template(session, actor, template_id, body)


@router.delete("/templates/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(session: DbSession, actor: Manager, template_id: Id) -> None:
    await service.delete_template(session, actor, template_id)


# item types --------------------------------------------------------------


@router.get("/item-types", response_model=list[ItemTypeOut])
async def list_item_types(session: DbSession, _: Reader) -> list[ItemType]:
    return await service.list_item_types(session)


@router.post("/item-types", response_model=ItemTypeOut, status_code=status.HTTP_201_CREATED)
async def create_item_type(session: DbSession, actor: Manager, body: ItemTypeCreate) -> ItemType:
    return await service.create_item_type(session, actor, body)


@router.get("/item-types/{code}", response_model=ItemTypeOut)
async def get_item_type(session: DbSession, _: Reader, code: TypeCodePath) -> ItemType:
    return await service.item_type_or_404(session, code)


@router.patch("/item-types/{code}", response_model=ItemTypeOut)
async def update_item_type(session: DbSession, actor: Manager, code: TypeCodePath, body: ItemTypeUpdate) -> ItemType:
    return await service.update_item_type(session, actor, code, body)


@router.delete("/item-types/{code}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item_type(session: DbSession, actor: Manager, code: TypeCodePath) -> None:
    """409 `item_type_in_use` while items are of this type."""
    await service.delete_item_type(session, actor, code)
