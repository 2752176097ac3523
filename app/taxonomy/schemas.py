from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from app.core.schemas import Id, Out, Schema


def _no_control_chars(v: str) -> str:
    if any(unicodedata.category(c) == "Cc" for c in v):
        raise ValueError("must not contain control characters")
    return v


Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control_chars)]
Description = Annotated[str, StringConstraints(max_length=500), AfterValidator(_no_control_chars)]
Code = Annotated[str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
TypeCode = Annotated[str, StringConstraints(min_length=2, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]
AttributeType = Literal["text", "number", "date", "enum", "multi_enum"]
# Tag names are normalized (NFKC) and checked in the service: `resolve_tags` applies the same rule.
TagName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Option = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control_chars)]
Position = Annotated[int, Field(ge=0, le=100_000)]

# ---------------------------------------------------------------- taxonomies


class TaxonomyCreate(Schema):
    code: Code
    name: Name
    description: Description = ""
    position: Position = 0


class TaxonomyUpdate(Schema):
    name: Name | None = None
    description: Description | None = None
    position: Position | None = None


class TaxonomyOut(Out):
    id: int
    code: str
    name: str
    description: str
    position: int
    created_at: datetime
    updated_at: datetime


class TreeNodeOut(Out):
    id: int
    name: str
    position: int
    path: str
    children: list[TreeNodeOut] = Field(default_factory=list)


class TaxonomyTreeOut(Out):
    id: int
    code: str
    name: str
    nodes: list[TreeNodeOut]


# ---------------------------------------------------------------- nodes


class NodeCreate(Schema):
    name: Name
    parent_id: Id | None = Field(None, description="Omit or null for a top-level node")
    position: Position | None = Field(None, description="0-based place among its siblings; default: last")


class NodeRename(Schema):
    name: Name


class NodeMove(Schema):
    """Move and reorder in one call. Omit `parent_id` to stay under the same parent (a pure
    reorder); send `null` to move to the top level."""

    parent_id: Id | None = None
    position: Position | None = Field(None, description="0-based place among the new siblings; default: last")


class NodeOut(Out):
    id: int
    taxonomy_id: Id
    parent_id: Id | None
    name: str
    position: int
    path: str
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- tags


class TagWrite(Schema):
    name: TagName


class TagOut(Out):
    id: int
    name: str
    usage_count: int = Field(
        description="Distinct items carrying the tag on a current version (any state but superseded or archived)"
    )
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- attributes


class AttributeCreate(Schema):
    code: Code
    name: Name
    type: AttributeType
    options: list[Option] = Field(default_factory=list, max_length=500)
    required: bool = False
    description: Description = ""


class AttributeUpdate(Schema):
    """The code never changes (stored values are keyed by it)."""

    name: Name | None = None
    type: AttributeType | None = None
    options: list[Option] | None = Field(None, max_length=500)
    required: bool | None = None
    description: Description | None = None


class AttributeOut(Out):
    id: int
    code: str
    name: str
    type: str
    options: list[Any]
    required: bool
    description: str
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- templates


class TemplateCreate(Schema):
    name: Name
    description: Description = ""
    attribute_ids: list[Id] = Field(default_factory=list, max_length=200, description="In display order")


class TemplateUpdate(Schema):
    name: Name | None = None
    description: Description | None = None
    attribute_ids: list[Id] | None = Field(None, max_length=200)


class TemplateOut(Out):
    id: int
    name: str
    description: str
    attributes: list[AttributeOut]
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- item types


class ItemTypeCreate(Schema):
    code: TypeCode
    name: Name
    template_id: Id | None = None
    review_required: bool = True


class ItemTypeUpdate(Schema):
    name: Name | None = None
    template_id: Id | None = None
    review_required: bool | None = None


class ItemTypeOut(Out):
    code: str
    name: str
    template_id: Id | None
    review_required: bool
    created_at: datetime
    updated_at: datetime
