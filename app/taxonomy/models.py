from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ForeignKey, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, BigId, IdMixin, TimestampMixin


class Taxonomy(IdMixin, TimestampMixin, Base):
    """A named category tree: 知识分类, 所属部门, 适用范围 ..."""

    __tablename__ = "taxonomies"

    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    position: Mapped[int] = mapped_column(default=0)


class TaxonomyNode(IdMixin, TimestampMixin, Base):
    __tablename__ = "taxonomy_nodes"
    __table_args__ = (UniqueConstraint("taxonomy_id", "parent_id", "name"),)

    taxonomy_id: Mapped[int] = mapped_column(BigId, ForeignKey("taxonomies.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("taxonomy_nodes.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(default=0)
    # "/3/8/15/": ids from the root down to this node; a subtree is a prefix match.
    path: Mapped[str] = mapped_column(String(1000), default="/", index=True)


class Tag(IdMixin, TimestampMixin, Base):
    __tablename__ = "tags"

    name: Mapped[str] = mapped_column(String(64), unique=True)


template_attributes = Table(
    "template_attributes",
    Base.metadata,
    Column("template_id", BigId, ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
    Column("attribute_id", BigId, ForeignKey("attribute_definitions.id", ondelete="RESTRICT"), primary_key=True),
    Column("position", BigId, nullable=False, default=0),
)


class AttributeDefinition(IdMixin, TimestampMixin, Base):
    __tablename__ = "attribute_definitions"

    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(16))  # text number date enum multi_enum
    options: Mapped[list[Any]] = mapped_column(default=list)  # allowed values for enum / multi_enum
    required: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str] = mapped_column(String(500), default="")


class Template(IdMixin, TimestampMixin, Base):
    """A group of attribute definitions; an item type uses one template."""

    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    attributes: Mapped[list[AttributeDefinition]] = relationship(
        secondary=template_attributes, lazy="selectin", order_by=template_attributes.c.position
    )


class ItemType(TimestampMixin, Base):
    """faq, article, policy, announcement, or a configured type."""

    __tablename__ = "item_types"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    template_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("templates.id", ondelete="SET NULL"))
    review_required: Mapped[bool] = mapped_column(default=True)
