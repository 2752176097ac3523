"""Questions generated from the knowledge (出题).

For a published FAQ item: a single-choice question whose stem is the item's standard question,
whose right option is its answer (the agent channel's own answer, else the body; the first
sentences, at most 120 characters), and whose wrong options are the answers of the most
confusable other items. Those are found with the search engine, under the caller's ACL, on the
agent channel: FAQ items in the same categories (when those hold too few, their parent
categories), searched with the item's question (any of its words, BM25 order), so the first hits
are the items a new agent is most likely to mix up with it.
Options are compared folded (width, case, traditional characters, spaces and punctuation): a
candidate equal to the right answer or to a wrong option already taken is passed over; an item
without enough distinct wrong answers is skipped, saying so. Generated questions are drafts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record
from app.channels.render import news_description, plain_text
from app.core.db import utcnow
from app.core.errors import InvalidInput, ServiceUnavailable
from app.identity.principal import Principal
from app.knowledge import acl
from app.knowledge.models import Item, ItemVersion, version_categories
from app.learning import service
from app.learning.models import Question, QuestionItem
from app.learning.schemas import GenerateIn, SkippedOut
from app.learning.scoring import fold
from app.search.backends.base import SearchBackend, SearchUnavailable
from app.search.documents import SearchFilters, SearchQuery
from app.search.indexing import principals_for_search

FAQ = "faq"
CANDIDATES = 25  # search hits looked at per question


def answer_text(version: ItemVersion) -> str:
    """What an agent answers: the agent channel's own answer, else the body; its first sentences."""
    own = (version.channel_answers or {}).get("agent")
    text = plain_text(own, "html") if own else plain_text(version.body or "", version.body_format)
    return news_description(text).strip()


@dataclass
class _Source:
    item: Item
    version: ItemVersion


async def _generated_already(session: AsyncSession, pairs: list[tuple[int, int]]) -> set[int]:
    """Items that have a generated, not retired question of that very version."""
    if not pairs:
        return set()
    rows = (
        await session.execute(
            select(QuestionItem.item_id, QuestionItem.version)
            .join(Question, Question.id == QuestionItem.question_id)
            .where(
                QuestionItem.item_id.in_([i for i, _ in pairs]),
                QuestionItem.role == "source",
                Question.source == "generated",
                Question.state != "retired",
            )
        )
    ).all()
    wanted = set(pairs)
    return {i for i, v in rows if (i, v) in wanted}


async def _named(session: AsyncSession, actor: Principal, ids: list[int], skipped: list[SkippedOut]) -> list[_Source]:
    out: list[_Source] = []
    for item_id in dict.fromkeys(ids):
        item = await session.get(Item, item_id)
        if item is None or not await acl.can_read(session, actor, item):
            skipped.append(SkippedOut(item_id=item_id, reason="not_found", detail=f"No item {item_id}"))
            continue
        if item.item_type != FAQ:
            skipped.append(
                SkippedOut(
                    item_id=item_id, reason="not_faq", detail=f"Item {item_id} is a {item.item_type}, not an FAQ"
                )
            )
            continue
        version = await session.get(ItemVersion, item.published_version_id) if item.published_version_id else None
        if item.status != "published" or version is None or not acl.is_valid_at(item):
            skipped.append(
                SkippedOut(
                    item_id=item_id, reason="not_published", detail=f"Item {item_id} has no published version valid now"
                )
            )
            continue
        out.append(_Source(item, version))
    return out


async def _in_category(session: AsyncSession, actor: Principal, category_id: int, count: int) -> list[_Source]:
    """Published FAQ items of the category's subtree the caller sees, those without a generated
    question of their published version first, oldest first."""
    nodes = await service.subtree(session, await service.check_categories(session, [category_id], "category_id"))
    stmt = (
        select(Item, ItemVersion)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .where(
            acl.visible_filter(actor),
            Item.item_type == FAQ,
            ItemVersion.id.in_(select(version_categories.c.version_id).where(version_categories.c.node_id.in_(nodes))),
        )
        .order_by(Item.id)
    )
    done = (
        select(QuestionItem.item_id)
        .join(Question, Question.id == QuestionItem.question_id)
        .where(
            QuestionItem.role == "source",
            Question.source == "generated",
            Question.state != "retired",
            QuestionItem.item_id == Item.id,
            QuestionItem.version == ItemVersion.number,
        )
    )
    rows = (await session.execute(stmt.where(~done.exists()).limit(count))).all()
    return [_Source(i, v) for i, v in rows]


async def _similar(backend: SearchBackend, actor: Principal, src: _Source, categories: list[int]) -> list[int]:
    v = src.version
    query = SearchQuery(
        text=(v.question or v.title)[:200],
        principals=principals_for_search(actor),
        channel="agent",
        filters=SearchFilters(item_types=[FAQ], category_ids=categories, valid_at=utcnow()),
        limit=CANDIDATES,
        highlight=False,
        facets=False,
        strict=False,
    )
    try:
        hits = (await backend.search(query)).hits
    except SearchUnavailable as e:
        raise ServiceUnavailable(f"Search is unavailable: {e}", code="search_unavailable", headers={"Retry-After": "5"})
    return [h.item_id for h in hits if h.item_id != src.item.id]


async def _distractors(
    session: AsyncSession, backend: SearchBackend, actor: Principal, src: _Source, right: str, wanted: int
) -> list[tuple[str, int, int]]:
    """(answer, item id, version) of up to `wanted` confusable items with distinct answers: from the
    item's own categories first, then (when they hold too few) from their parent categories."""
    nodes = [c.id for c in src.version.categories]
    ids = await _similar(backend, actor, src, nodes)
    parents = sorted({c.parent_id for c in src.version.categories if c.parent_id is not None})
    if len(ids) < wanted and parents:
        ids += [i for i in await _similar(backend, actor, src, parents) if i not in ids]
    if not ids:
        return []
    versions = {
        i.id: ver
        for i, ver in (
            await session.execute(
                select(Item, ItemVersion)
                .join(ItemVersion, ItemVersion.id == Item.published_version_id)
                .where(Item.id.in_(ids), acl.visible_filter(actor))
            )
        ).all()
    }
    seen = {fold(right)}
    out: list[tuple[str, int, int]] = []
    for item_id in ids:
        ver = versions.get(item_id)
        if ver is None:
            continue
        text = answer_text(ver)
        key = fold(text)
        if not key or key in seen:
            continue
        seen.add(key)
        out.append((text, item_id, ver.number))
        if len(out) == wanted:
            break
    return out


async def generate(
    session: AsyncSession, backend: SearchBackend, actor: Principal, data: GenerateIn
) -> tuple[list[Question], list[SkippedOut]]:
    if bool(data.item_ids) == (data.category_id is not None):
        raise InvalidInput("Send item_ids or category_id", code="generate_source", field="item_ids")
    skipped: list[SkippedOut] = []
    if data.item_ids:
        sources = await _named(session, actor, data.item_ids, skipped)
        already = await _generated_already(session, [(s.item.id, s.version.number) for s in sources])
        for s in [s for s in sources if s.item.id in already]:
            skipped.append(
                SkippedOut(
                    item_id=s.item.id,
                    reason="already_generated",
                    detail=f"Item {s.item.id} version {s.version.number} has a generated question",
                )
            )
        sources = [s for s in sources if s.item.id not in already]
    else:
        assert data.category_id is not None
        sources = await _in_category(session, actor, data.category_id, data.count * 3)  # some may be skipped
    difficulty = service.difficulty_of(data.difficulty)
    created: list[Question] = []
    for src in sources:
        v = src.version
        right = answer_text(v)
        if not fold(right):
            skipped.append(SkippedOut(item_id=src.item.id, reason="no_answer", detail="The item has no answer text"))
            continue
        wrong = await _distractors(session, backend, actor, src, right, data.distractors)
        if len(wrong) < data.distractors:
            skipped.append(
                SkippedOut(
                    item_id=src.item.id,
                    reason="not_enough_distractors",
                    detail=f"Found {len(wrong)} distinct wrong answers among similar items, need {data.distractors}",
                )
            )
            continue
        texts = [right, *(w for w, _, _ in wrong)]
        random.Random(f"{src.item.id}:{v.number}").shuffle(texts)
        assert service.duplicate_options(texts) is None  # checked above; the bank never holds such a question
        key = service.KEYS[texts.index(right)]
        q = await service.add_question(
            session,
            actor,
            kind="single_choice",
            stem=(v.question or v.title)[:2000],
            options=texts,
            answer=[key],
            explanation=f"依据知识《{v.title}》：{right}",
            difficulty=difficulty,
            categories=[c.id for c in v.categories],
            links=[(src.item.id, v.number)],
            distractor_links=[(i, n) for _, i, n in wrong],
            source="generated",
        )
        info: dict[str, Any] = {
            "item_id": src.item.id,
            "version": v.number,
            "distractor_items": [i for _, i, _ in wrong],
        }
        record(session, actor, "question.generate", "question", q.id, after=service.summary(q), **info)
        created.append(q)
        if len(created) == data.count:
            break
    await session.commit()
    return created, skipped
