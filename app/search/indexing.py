"""From database rows to `SearchDocument`s: what the index holds is derived here only."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence

import nh3
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.attachments.models import Attachment, Blob, BlobText, version_attachments
from app.knowledge import acl
from app.knowledge.models import Item, ItemVersion
from app.search.documents import CHANNELS, AttachmentText, LanguageResources, SearchDocument
from app.search.models import DictionaryWord, SynonymGroup

# Every document is readable by administrators (`*` permission), whatever its ACL.
SUPERUSER_SUBJECT = "superuser"
# Attachment text indexed per file; the full text stays in the database for /text.
MAX_ATTACHMENT_CHARS = 200_000


def plain_text(body: str, body_format: str) -> str:
    if body_format == "html":
        return html.unescape(nh3.clean(body, tags=set()))
    return body


def principals_for_search(principal: object) -> list[str]:
    """The caller's subjects as the index stores them (the same rule as acl.subjects_of)."""
    from app.identity.principal import Principal

    assert isinstance(principal, Principal)
    subjects = acl.subjects_of(principal)
    return [*subjects, SUPERUSER_SUBJECT] if principal.is_superuser else subjects


async def language_resources(session: AsyncSession) -> LanguageResources:
    words = (await session.scalars(select(DictionaryWord.word).order_by(DictionaryWord.id))).all()
    groups = (await session.scalars(select(SynonymGroup.terms).order_by(SynonymGroup.id))).all()
    return LanguageResources(words=list(words), synonym_groups=[list(g) for g in groups])


async def _attachment_texts(session: AsyncSession, version_ids: Sequence[int]) -> dict[int, list[AttachmentText]]:
    """version id -> extracted texts of its attachments (files whose extraction is done)."""
    rows = (
        await session.execute(
            select(version_attachments.c.version_id, Attachment.id, Attachment.file_name, BlobText.text)
            .join(Attachment, version_attachments.c.attachment_id == Attachment.id)
            .join(Blob, Blob.sha256 == Attachment.sha256)
            .outerjoin(BlobText, BlobText.sha256 == Blob.sha256)
            .where(version_attachments.c.version_id.in_(version_ids), Blob.extraction_status == "done")
            .order_by(version_attachments.c.version_id, Attachment.id)
        )
    ).all()
    out: dict[int, list[AttachmentText]] = defaultdict(list)
    for version_id, a_id, name, text in rows:
        if text:
            out[version_id].append(AttachmentText(a_id, name, text[:MAX_ATTACHMENT_CHARS]))
    return out


def _indexed_version(item: Item) -> int | None:
    return item.published_version_id


async def build_documents(session: AsyncSession, item_ids: Sequence[int]) -> tuple[list[SearchDocument], list[int]]:
    """Documents for the items that belong in the index (published, or archived for editors),
    and the ids that must leave it. A few queries per batch, not per item (reindex reads
    every item through here)."""
    if not item_ids:
        return [], []
    items = {i.id: i for i in (await session.scalars(select(Item).where(Item.id.in_(item_ids)))).all()}
    published = [i.published_version_id for i in items.values() if i.published_version_id is not None]
    versions = {v.id: v for v in (await session.scalars(select(ItemVersion).where(ItemVersion.id.in_(published))))}
    chosen: dict[int, ItemVersion] = {}
    for item_id in item_ids:
        item = items.get(item_id)
        if item is None:
            continue
        if item.published_version_id is not None:
            version = versions.get(item.published_version_id)
        else:
            version = await _archived_version(session, item)
        if version is not None:
            chosen[item_id] = version
    readers = await acl.readers_of_many(session, list(chosen))
    texts = await _attachment_texts(session, [v.id for v in chosen.values()])
    docs = [
        _document(items[item_id], version, readers.get(item_id, []), texts.get(version.id, []))
        for item_id, version in chosen.items()
    ]
    return docs, [item_id for item_id in item_ids if item_id not in chosen]


async def _archived_version(session: AsyncSession, item: Item) -> ItemVersion | None:
    if item.status != "archived":
        return None
    # Editors may still find archived answers (status filter).
    return await session.scalar(
        select(ItemVersion)
        .where(ItemVersion.item_id == item.id, ItemVersion.state == "archived")
        .order_by(ItemVersion.number.desc())
        .limit(1)
    )


async def _searchable_version(session: AsyncSession, item: Item) -> ItemVersion | None:
    if item.published_version_id is not None:
        return await session.get(ItemVersion, item.published_version_id)
    return await _archived_version(session, item)


def _document(item: Item, version: ItemVersion, readers: list[str], texts: list[AttachmentText]) -> SearchDocument:
    from app.knowledge.service import answer_for

    paths = [n.path.strip("/") for n in version.categories]
    category_ids = sorted({int(p) for path in paths for p in path.split("/") if p})
    attributes: dict[str, list[str | int | float]] = {
        code: (value if isinstance(value, list) else [value])
        for code, value in (version.attributes or {}).items()
        if value is not None
    }
    return SearchDocument(
        item_id=item.id,
        version_id=version.id,
        version_no=version.number,
        item_type=item.item_type,
        status="archived" if item.status == "archived" else "published",
        title=version.title,
        question=version.question or "",
        similar_questions=list(version.similar_questions or []),
        body_text=plain_text(version.body or "", version.body_format),
        channel_answers={
            c: plain_text(answer_for(version, c), version.body_format)
            for c in CHANNELS
            if (version.channel_answers or {}).get(c)
        },
        attachments=texts,
        category_ids=category_ids,
        category_paths=paths,
        tags=sorted(t.name for t in version.tags),
        attributes=attributes,
        acl_principals=[*readers, SUPERUSER_SUBJECT],
        channels=list(version.channels or []),
        valid_from=item.valid_from,
        valid_to=item.valid_to,
        updated_at=version.published_at or item.updated_at,
    )


async def searchable_item_ids(session: AsyncSession, limit: int | None = None) -> list[int]:
    rows = await session.scalars(
        select(Item.id)
        .where((Item.published_version_id.is_not(None)) | (Item.status == "archived"))
        .order_by(Item.id)
        .limit(limit)
    )
    return list(rows.all())


async def expected_versions(session: AsyncSession) -> dict[int, int]:
    """item_id -> version number the index should hold (consistency check)."""
    out: dict[int, int] = {}
    for item_id in await searchable_item_ids(session):
        item = await session.get(Item, item_id)
        version = await _searchable_version(session, item) if item else None
        if version is not None:
            out[item_id] = version.number
    return out
