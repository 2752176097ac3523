"""Shared builders for the search tests: realistic call-center documents and language data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from app.search.documents import AttachmentText, LanguageResources, SearchDocument

LANGUAGE = LanguageResources(
    words=["5G畅享套餐", "光猫", "携号转网", "网上国网"],
    synonym_groups=[["上不了网", "无法上网", "断网"], ["宽带", "宽频"], ["挂失", "丢卡"]],
)


def attachment(attachment_id: int, file_name: str, text: str) -> AttachmentText:
    return AttachmentText(attachment_id=attachment_id, file_name=file_name, text=text)


def search_doc(item_id: int, title: str, **overrides: Any) -> SearchDocument:
    """A published FAQ readable by everyone on every channel unless overridden."""
    fields: dict[str, Any] = {
        "item_id": item_id,
        "version_id": item_id * 10,
        "version_no": 1,
        "item_type": "faq",
        "status": "published",
        "title": title,
        "question": "",
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
        "updated_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    fields.update(overrides)
    if not fields["category_paths"] and fields["category_ids"]:
        fields["category_paths"] = ["/".join(str(i) for i in fields["category_ids"])]
    return SearchDocument(**fields)


@pytest.fixture(scope="session")
def language() -> LanguageResources:
    return LANGUAGE


@pytest.fixture
def make_doc() -> Callable[..., SearchDocument]:
    return search_doc
