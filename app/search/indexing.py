"""From database rows to `SearchDocument`s: what the index holds is derived here only."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence

import nh3
from sqlalchemy import CompoundSelect, func, select, union_all
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


def _searchable_versions(item_ids: Sequence[int] | None = None) -> CompoundSelect:
    """(item_id, version_id, number) of the version the index holds for each item: the published
    one, else, for an archived item, its newest archived version (editors may still find
    archived answers with the status filter). All items when `item_ids` is None."""
    published = select(Item.id, ItemVersion.id, ItemVersion.number).join(
        ItemVersion, ItemVersion.id == Item.published_version_id
    )
    newest = (
        select(ItemVersion.item_id, func.max(ItemVersion.number).label("number"))
        .join(Item, Item.id == ItemVersion.item_id)
        .where(Item.published_version_id.is_(None), Item.status == "archived", ItemVersion.state == "archived")
        .group_by(ItemVersion.item_id)
    )
    if item_ids is not None:
        published = published.where(Item.id.in_(item_ids))
        newest = newest.where(ItemVersion.item_id.in_(item_ids))
    latest = newest.subquery()
    archived = select(ItemVersion.item_id, ItemVersion.id, ItemVersion.number).join(
        latest, (ItemVersion.item_id == latest.c.item_id) & (ItemVersion.number == latest.c.number)
    )
    return union_all(published, archived)


async def build_documents(session: AsyncSession, item_ids: Sequence[int]) -> tuple[list[SearchDocument], list[int]]:
    """Documents for the items that belong in the index, and the ids that must leave it.
    A few queries per batch, not per item (reindex reads every item through here)."""
    if not item_ids:
        return [], []
    version_of = {
        item_id: version_id for item_id, version_id, _ in await session.execute(_searchable_versions(item_ids))
    }
    items = {i.id: i for i in await session.scalars(select(Item).where(Item.id.in_(list(version_of))))}
    versions = {
        v.id: v for v in await session.scalars(select(ItemVersion).where(ItemVersion.id.in_(list(version_of.values()))))
    }
    chosen = [item_id for item_id in item_ids if item_id in version_of]
    readers = await acl.readers_of_many(session, chosen)
    texts = await _attachment_texts(session, list(version_of.values()))
    docs = [
        _document(items[i], versions[version_of[i]], readers.get(i, []), texts.get(version_of[i], [])) for i in chosen
    ]
    return docs, [item_id for item_id in item_ids if item_id not in version_of]


def _document(item: Item, version: ItemVersion, readers: list[str], texts: list[AttachmentText]) -> SearchDocument:
    from app.cases.display import shown_body
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
        body_text=plain_text(shown_body(item.item_type, version), version.body_format),
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
    return {item_id: number for item_id, _, number in await session.execute(_searchable_versions())}
