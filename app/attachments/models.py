from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, BigId, IdMixin, utcnow
from app.knowledge.models import ItemVersion

version_attachments = Table(
    "version_attachments",
    Base.metadata,
    Column("version_id", BigId, ForeignKey("item_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("attachment_id", BigId, ForeignKey("attachments.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Blob(Base):
    """File content, stored once by SHA-256 however often it is attached. Text is extracted once."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mime: Mapped[str] = mapped_column(String(128))  # detected from the bytes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    extraction_status: Mapped[str] = mapped_column(String(16), default="pending")  # pending done failed skipped
    extraction_reason: Mapped[str | None] = mapped_column(String(500))
    extracted_chars: Mapped[int] = mapped_column(default=0)
    page_count: Mapped[int | None]
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    extracted_at: Mapped[datetime | None]


class BlobText(Base):
    __tablename__ = "blob_texts"

    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)  # a rendering for previews of Office files


class Attachment(IdMixin, Base):
    """A file attached to an item; versions list the attachments they carry."""

    __tablename__ = "attachments"

    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("items.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256", ondelete="RESTRICT"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    mime: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# A version's attachment set (copied into each new draft, restored with an old version). Declared here so the
# knowledge models need no import of this module; loaded with the version like its categories and tags.
ItemVersion.attachments = relationship(  # type: ignore[attr-defined]
    Attachment, secondary=version_attachments, lazy="selectin", order_by=Attachment.id
)
