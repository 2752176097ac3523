"""Builders shared by the search tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.search.documents import AttachmentText, SearchDocument


def search_doc(item_id: int, title: str, **overrides: Any) -> SearchDocument:
    """A published, public FAQ visible on every channel, with `overrides` applied."""
    values: dict[str, Any] = {
        "item_id": item_id,
        "version_id": item_id * 100,
        "version_no": 1,
        "item_type": "faq",
        "status": "published",
        "title": title,
        "question": title,
        "similar_questions": [],
        "body_text": "",
        "channel_answers": {},
        "attachments": [],
        "category_ids": [],
        "category_paths": [],
        "tags": [],
        "attributes": {},
        "acl_principals": ["public"],
        "channels": ["agent", "web", "wechat", "app"],
        "valid_from": None,
        "valid_to": None,
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(overrides)
    return SearchDocument(**values)


def attachment(attachment_id: int, file_name: str, text: str) -> AttachmentText:
    return AttachmentText(attachment_id=attachment_id, file_name=file_name, text=text)
