from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, BigId, IdMixin, TimestampMixin, utcnow

VERSION_STATES = ("draft", "in_review", "approved", "rejected", "published", "superseded", "unpublished", "archived")
# An item has at most one open version, and it is its latest (see app/knowledge/workflow.py).
OPEN_STATES = frozenset({"draft", "in_review", "approved", "rejected"})

version_categories = Table(
    "version_categories",
    Base.metadata,
    Column("version_id", BigId, ForeignKey("item_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", BigId, ForeignKey("taxonomy_nodes.id", ondelete="RESTRICT"), primary_key=True),
)

version_tags = Table(
    "version_tags",
    Base.metadata,
    Column("version_id", BigId, ForeignKey("item_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", BigId, ForeignKey("tags.id", ondelete="RESTRICT"), primary_key=True),
)


class Item(IdMixin, TimestampMixin, Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    item_type: Mapped[str] = mapped_column(String(32), ForeignKey("item_types.code", ondelete="RESTRICT"), index=True)
    owner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # Summary of the life cycle: draft (never published), published, archived.
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    # public: every channel incl. anonymous website/WeChat/APP readers; internal: staff only.
    visibility: Mapped[str] = mapped_column(String(16), default="internal")
    valid_from: Mapped[datetime | None]
    valid_to: Mapped[datetime | None]
    review_due: Mapped[date | None]
    source: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(128))
    latest_version_no: Mapped[int] = mapped_column(default=0)
    published_version_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("item_versions.id", ondelete="SET NULL", use_alter=True), index=True
    )
    # Bumped on every change to the item or its versions: the ETag.
    row_version: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))

    __mapper_args__ = {"version_id_col": row_version}  # optimistic locking on every UPDATE


class ItemVersion(IdMixin, Base):
    """Immutable content snapshot; only the workflow fields change after creation
    (a draft's content may be edited until it is submitted)."""

    __tablename__ = "item_versions"
    __table_args__ = (
        UniqueConstraint("item_id", "number"),
        # The one-published-version invariant, enforced by the database itself.
        Index(
            "uq_item_versions_one_published",
            "item_id",
            unique=True,
            sqlite_where=text("state = 'published'"),
            postgresql_where=text("state = 'published'"),
        ),
        Index("ix_item_versions_state", "state"),
    )

    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("items.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default="draft")
    title: Mapped[str] = mapped_column(String(300))
    question: Mapped[str] = mapped_column(String(500), default="")
    similar_questions: Mapped[list[Any]] = mapped_column(default=list)
    body: Mapped[str] = mapped_column(Text, default="")
    body_format: Mapped[str] = mapped_column(String(16), default="html")  # html | markdown
    channel_answers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # agent/web/wechat/app -> text
    channels: Mapped[list[Any]] = mapped_column(default=lambda: ["agent", "web", "wechat", "app"])
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # attribute code -> value(s)
    change_note: Mapped[str] = mapped_column(String(1000), default="")
    author_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None]
    reviewed_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None]
    review_note: Mapped[str | None] = mapped_column(String(1000))  # the reason of a rejection
    publish_at: Mapped[datetime | None]  # scheduled publication
    published_at: Mapped[datetime | None]
    published_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    restored_from: Mapped[int | None]  # the version number this draft was restored from

    categories: Mapped[list[Any]] = relationship("TaxonomyNode", secondary=version_categories, lazy="selectin")
    tags: Mapped[list[Any]] = relationship("Tag", secondary=version_tags, lazy="selectin")


class AclGrant(IdMixin, Base):
    """Read (or edit) access on a category (inherited down its subtree) or an item (overrides)."""

    __tablename__ = "acl_grants"
    __table_args__ = (
        UniqueConstraint("target_type", "target_id", "subject", "access"),
        Index("ix_acl_grants_target", "target_type", "target_id"),
    )

    target_type: Mapped[str] = mapped_column(String(16))  # category | item
    target_id: Mapped[int] = mapped_column(BigId)
    # "role:3", "dept:5", "client:7", "user:2", "internal" (any staff), "public" (anyone)
    subject: Mapped[str] = mapped_column(String(80))
    access: Mapped[str] = mapped_column(String(8), default="read")  # read | edit
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(80))


class ItemReader(Base):
    """Who may read an item, computed from its ACL (see app/knowledge/acl.py) and kept beside it,
    so lists and search filter inside the query."""

    __tablename__ = "item_readers"

    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)
