from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.core.schemas import Id, Out, Schema

PreviewKind = Literal["inline", "text", "html", "pending", "none"]


class AttachmentOut(Out):
    """A file attached to an item. `versions` lists the version numbers that carry it (readers see only
    the published one). Links point at the download, the preview and the extracted text."""

    id: int
    item_id: Id
    file_name: str = Field(description="The original name, made safe (no path, no control characters)")
    mime: str = Field(description="Detected from the bytes; the client's Content-Type is never trusted")
    size: int
    sha256: str
    uploaded_by: int | None
    created_at: datetime
    extraction_status: Literal["pending", "done", "failed", "skipped"]
    extraction_reason: str | None
    extracted_at: datetime | None
    extracted_chars: int
    truncated: bool = Field(description="The extracted text was cut at KB_EXTRACTION_MAX_CHARS")
    page_count: int | None
    language: str | None = Field(description="zh-Hans, zh-Hant, ja, ko or null (a script-level guess)")
    preview: PreviewKind = Field(
        description="What /preview shows: the file inline, its text, an HTML rendering, nothing yet "
        "(extraction pending) or nothing"
    )
    versions: list[int]
    content_url: str
    preview_url: str
    text_url: str


class AttachmentDetail(AttachmentOut):
    metadata: dict[str, Any] = Field(default_factory=dict, description="What Tika reported about the file")


class UploadOut(Schema):
    item_id: Id
    version: int = Field(description="The draft the files were attached to")
    created_draft: bool = Field(description="A new draft was copied from the latest version for this upload")
    etag: str
    attachments: list[AttachmentOut]


class AttachmentTextOut(Schema):
    attachment_id: Id
    status: Literal["pending", "done", "failed", "skipped"]
    reason: str | None
    text: str
    truncated: bool
    language: str | None
    chars: int


class CollectOrphansIn(Schema):
    grace_seconds: int = Field(
        3600,
        ge=0,
        le=30 * 86400,
        description="Only files and rows older than this are collected, so uploads in flight are never touched",
    )
