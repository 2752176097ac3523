from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record
from app.core.db import get_or_404, utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from app.core.pagination import decode_cursor, encode_cursor
from app.identity.principal import Principal
from app.search import fusion, ranking
from app.search.analysis import normalize
from app.search.backends.base import SearchBackend, SearchUnavailable
from app.search.documents import SearchFilters, SearchHit, SearchQuery, SearchResult, Suggestion
from app.search.embedding import EmbedderUnavailable
from app.search.fusion import Candidate
from app.search.indexing import principals_for_search, searchable_item_ids
from app.search.jobs import pending_rebuild
from app.search.models import DictionaryWord, SearchLog, SynonymGroup
from app.search.schemas import (
    FacetOut,
    HighlightOut,
    HitOut,
    SearchOut,
    SimilarItemOut,
    SynonymIn,
    SynonymPatch,
)
from app.search.searchlog import SearchLogBuffer
from app.search.semantic import Semantic
from app.taxonomy.models import AttributeDefinition
from app.taxonomy.service import node_names
from app.workers.outbox import enqueue

MAX_QUERY_CHARS = 200
MAX_OFFSET = 5_000
EDITOR_STATUSES = {"published", "archived"}


@dataclass
class SearchParams:
    q: str = ""
    types: list[str] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    attrs: list[str] = field(default_factory=list)  # "code:value"
    statuses: list[str] = field(default_factory=list)
    channel: str | None = None
    valid_at: datetime | None = None
    updated_since: datetime | None = None
    sort: str = "relevance"
    page: int = 1
    limit: int = 10
    cursor: str | None = None
    highlight: bool = True
    facets: bool = True
    explain: bool = False
    mode: str | None = None  # keyword | semantic | hybrid; None: hybrid when an embedder is loaded


def channel_for(principal: Principal, asked: str | None) -> str | None:
    """Channel clients always see their own channel; staff see the agent channel unless they
    preview another one."""
    if principal.kind == "client":
        if asked and principal.channel and asked != principal.channel:
            raise Forbidden(f"This client serves the {principal.channel} channel", code="channel_mismatch")
        return principal.channel
    return asked or "agent"


async def _attributes(session: AsyncSession, raw: list[str]) -> dict[str, list[str | int | float]]:
    parsed: dict[str, list[str | int | float]] = {}
    for pair in raw:
        code, sep, value = pair.partition(":")
        if not sep or not code or not value:
            raise InvalidInput(f"attr must look like code:value, got {pair!r}", code="invalid_filter")
        parsed.setdefault(code, []).append(value)
    if parsed:
        defs = {
            d.code: d
            for d in (
                await session.scalars(select(AttributeDefinition).where(AttributeDefinition.code.in_(parsed)))
            ).all()
        }
        unknown = sorted(set(parsed) - set(defs))
        if unknown:
            raise InvalidInput(f"Unknown attributes: {', '.join(unknown)}", code="unknown_attribute", unknown=unknown)
        for code, values in parsed.items():
            if defs[code].type == "number":
                try:
                    parsed[code] = [float(v) if "." in str(v) else int(v) for v in values]
                except ValueError:
                    raise InvalidInput(f"{code} takes numbers", code="invalid_filter")
    return parsed


async def _check_categories(session: AsyncSession, ids: list[int]) -> None:
    if not ids:
        return
    unknown = sorted(set(ids) - set(await node_names(session, ids)))
    if unknown:
        raise InvalidInput(f"Unknown categories: {unknown}", code="unknown_category", unknown=unknown)


async def _labels(session: AsyncSession, result: SearchResult) -> dict[str, str]:
    ids = [int(f.value) for f in result.facets.get("category", []) if f.value.isdigit()]
    return {str(i): name for i, name in (await node_names(session, ids)).items()} if ids else {}


async def search(
    session: AsyncSession,
    backend: SearchBackend,
    search_log: SearchLogBuffer,
    principal: Principal,
    p: SearchParams,
    semantic: Semantic | None = None,
) -> SearchOut:
    warnings: list[str] = []
    text = p.q or ""
    if len(text) > MAX_QUERY_CHARS:
        text = text[:MAX_QUERY_CHARS]
        warnings.append(f"query truncated to its first {MAX_QUERY_CHARS} characters")
    editor = principal.can("knowledge:edit")
    statuses = p.statuses or ["published"]
    if set(statuses) - {"published"} and not editor:
        raise Forbidden(
            "Only editors may search archived items", code="permission_denied", required_permission="knowledge:edit"
        )
    bad = sorted(set(statuses) - EDITOR_STATUSES)
    if bad:
        raise InvalidInput(
            f"Unknown statuses: {bad}; the index holds published and archived items", code="invalid_filter"
        )
    if p.explain and not editor:
        raise Forbidden("explain is for editors", code="permission_denied", required_permission="knowledge:edit")
    await _check_categories(session, p.categories)
    attributes = await _attributes(session, p.attrs)
    offset = (p.page - 1) * p.limit
    if p.cursor:
        offset = decode_cursor(p.cursor).get("offset", -1)
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInput("The cursor is not valid; start again without it", code="invalid_cursor")
    if offset > MAX_OFFSET:
        raise InvalidInput(
            f"Results beyond the first {MAX_OFFSET} are not served; narrow the query", code="page_out_of_range"
        )
    channel = channel_for(principal, p.channel)
    query = SearchQuery(
        text=text,
        principals=principals_for_search(principal),
        channel=channel,
        filters=SearchFilters(
            item_types=p.types,
            category_ids=p.categories,
            tags=p.tags,
            attributes=attributes,
            statuses=statuses,
            valid_at=p.valid_at or utcnow(),
            updated_since=p.updated_since,
        ),
        sort="updated" if p.sort == "updated" else "relevance",
        offset=offset,
        limit=p.limit,
        highlight=p.highlight,
        facets=p.facets,
        explain=p.explain,
    )
    mode = p.mode or ("hybrid" if semantic is not None and semantic.available else "keyword")
    vector = None
    if mode != "keyword" and text.strip() and p.sort != "updated":
        vector = await _query_vector(semantic, text, warnings)
    try:
        if vector is None:
            result, mode_used = await backend.search(query), "keyword"
        else:
            assert semantic is not None
            result, mode_used = await _semantic_search(backend, semantic, query, vector, mode, warnings)
    except SearchUnavailable as e:
        await _rebuild_if_missing(session, backend)
        raise ServiceUnavailable(f"Search is unavailable: {e}", code="search_unavailable", headers={"Retry-After": "5"})
    labels = await _labels(session, result)
    normalized = normalize(text).strip()
    log_id = search_log.add(
        actor=principal.actor,
        channel=channel,
        query=(p.q or "")[:500],
        normalized=normalized[:500],
        filters={**_filters_summary(p, statuses), **({"mode": mode_used} if mode_used != "keyword" else {})},
        total=result.total,
        zero_result=result.total == 0,
        took_ms=round(result.took_ms, 2),
    )
    nxt = offset + p.limit
    return SearchOut(
        search_id=log_id,
        query=text,
        normalized=normalized,
        total=result.total,
        items=[
            HitOut(
                item_id=h.item_id,
                version=h.version_no,
                title=h.title,
                item_type=h.item_type,
                score=h.score,
                updated_at=h.updated_at,
                explanation=h.explanation,
                highlights=[
                    HighlightOut(
                        field=x.field, fragments=x.fragments, attachment_id=x.attachment_id, file_name=x.file_name
                    )
                    for x in h.highlights
                ],
            )
            for h in result.hits
        ],
        facets={
            name: [
                FacetOut(value=f.value, count=f.count, label=labels.get(f.value) if name == "category" else None)
                for f in values
            ]
            for name, values in result.facets.items()
        },
        page=offset // p.limit + 1,
        limit=p.limit,
        next_cursor=encode_cursor({"offset": nxt}) if nxt < result.total and nxt <= MAX_OFFSET else None,
        took_ms=round(result.took_ms, 2),
        relaxed=result.relaxed,
        mode=mode,
        mode_used=mode_used,
        warnings=warnings,
    )


SEMANTIC_UNAVAILABLE = "semantic_unavailable"


async def _query_vector(semantic: Semantic | None, text: str, warnings: list[str]) -> list[float] | None:
    """The query's vector, or None with a `semantic_unavailable` warning (keyword search then)."""
    if semantic is None or not semantic.available:
        reason = "the embedder is off" if semantic is None or semantic.name == "off" else semantic.status()
        warnings.append(f"{SEMANTIC_UNAVAILABLE}: {reason}; keyword results only")
        return None
    try:
        return await semantic.query_vector(text)
    except EmbedderUnavailable as e:
        warnings.append(f"{SEMANTIC_UNAVAILABLE}: {e}; keyword results only")
        return None


async def _semantic_search(
    backend: SearchBackend,
    semantic: Semantic,
    query: SearchQuery,
    vector: list[float],
    mode: str,
    warnings: list[str],
) -> tuple[SearchResult, str]:
    """A semantic or hybrid search. Both legs run inside the engine under the same ACL, channel and
    filters, each from the top through `window` items (so pages of one query stay consistent);
    the page is cut from the fused list. `total` of a hybrid search counts the fused window plus
    the keyword matches beyond it (an estimate: some of those may be in the window already)."""
    window = max(semantic.candidates, query.offset + query.limit)
    semantic_query = replace(query, mode="semantic", vector=vector, embedder=semantic.model, offset=0, limit=window)
    page = slice(query.offset, query.offset + query.limit)
    if mode == "semantic":
        found = await backend.search(semantic_query)
        found.total = min(found.total, window)
        found.hits = found.hits[page]
        return found, "semantic"
    keyword = await backend.search(replace(query, offset=0, limit=window))
    try:
        meaning = await backend.search(replace(semantic_query, facets=query.facets and keyword.total == 0))
    except SearchUnavailable as e:
        warnings.append(f"{SEMANTIC_UNAVAILABLE}: {e}; keyword results only")
        keyword.hits = keyword.hits[page]
        return keyword, "keyword"
    candidates: dict[int, Candidate] = {}
    hits: dict[int, SearchHit] = {}
    for rank, hit in enumerate(keyword.hits):
        candidates[hit.item_id] = Candidate(
            hit.item_id, keyword_rank=rank, keyword_score=hit.score, questions=hit.questions
        )
        hits[hit.item_id] = hit
    for rank, hit in enumerate(meaning.hits):
        found_by_words = candidates.get(hit.item_id)
        if found_by_words is not None:
            found_by_words.semantic_rank, found_by_words.semantic_score = rank, hit.score
        elif hit.score >= semantic.min_score:  # meaning alone must be close to count
            candidates[hit.item_id] = Candidate(
                hit.item_id, semantic_rank=rank, semantic_score=hit.score, questions=hit.questions
            )
            hits[hit.item_id] = hit
    fused = fusion.fuse(query.text, list(candidates.values()), embedder=semantic.model)
    page_hits = []
    for candidate, score in fused[page]:
        hit = hits[candidate.item_id]
        explanation = None
        if query.explain:
            explanation = (
                f"fused {score:.6f}: keyword rank {_rank(candidate.keyword_rank)}, semantic rank "
                f"{_rank(candidate.semantic_rank)} (cosine {_cosine(candidate.semantic_score)})"
                + (f"; keyword: {hit.explanation}" if candidate.keyword_rank is not None and hit.explanation else "")
            )
        page_hits.append(dataclasses.replace(hit, score=score, explanation=explanation))
    beyond = max(0, keyword.total - len(keyword.hits))
    return SearchResult(
        total=len(fused) + beyond,
        hits=page_hits,
        facets=keyword.facets if keyword.total else meaning.facets,
        took_ms=keyword.took_ms + meaning.took_ms,
        relaxed=keyword.relaxed,
    ), "hybrid"


def _rank(rank: int | None) -> str:
    return "-" if rank is None else str(rank + 1)


def _cosine(score: float | None) -> str:
    return "-" if score is None else f"{score:.4f}"


def _filters_summary(p: SearchParams, statuses: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "types": p.types,
        "categories": p.categories,
        "tags": p.tags,
        "attrs": p.attrs,
        "statuses": statuses,
        "sort": p.sort,
    }
    return {k: v for k, v in out.items() if v}


async def _queue_rebuild(session: AsyncSession, reason: str) -> bool:
    """Queue one system rebuild unless one is already queued or running."""
    if await pending_rebuild(session):
        return False
    enqueue(session, "search.reindex_all", {"reason": reason}, created_by="system")
    await session.commit()
    return True


async def _rebuild_if_missing(session: AsyncSession, backend: SearchBackend) -> None:
    """An index directory deleted under a running service: queue one rebuild."""
    try:
        healthy = await backend.health()
    except Exception:
        healthy = False
    if not healthy:
        await _queue_rebuild(session, "index missing")


async def rebuild_if_empty(session: AsyncSession, backend: SearchBackend) -> bool:
    """At start-up: an empty index (a new engine, an index schema changed by an upgrade, a folder
    deleted while stopped) while the database holds searchable items: queue one rebuild."""
    if not await searchable_item_ids(session, limit=1) or await backend.document_count() > 0:
        return False
    return await _queue_rebuild(session, "index empty at start-up")


async def revectorize_if_needed(session: AsyncSession, backend: SearchBackend, semantic: Semantic | None) -> str | None:
    """At start-up: items indexed without vectors of the loaded model (the embedder was off or
    down, or another model made them) are indexed again; from the embedding cache where it can."""
    if semantic is None or semantic.model is None:
        return None
    lacking = await backend.items_lacking_vectors(semantic.model)
    if not lacking:
        return None
    if len(lacking) * 2 > await backend.document_count():
        return "reindex" if await _queue_rebuild(session, f"vectors missing or not of {semantic.model}") else None
    enqueue(session, "search.reindex_items", {"item_ids": lacking}, created_by="system")
    await session.commit()
    return "reindex_items"


async def suggest(
    backend: SearchBackend, principal: Principal, prefix: str, channel: str | None, limit: int
) -> list[Suggestion]:
    try:
        return await backend.suggest(
            prefix[:MAX_QUERY_CHARS], principals_for_search(principal), channel_for(principal, channel), limit
        )
    except SearchUnavailable as e:
        raise ServiceUnavailable(f"Search is unavailable: {e}", code="search_unavailable", headers={"Retry-After": "5"})


async def click(
    session: AsyncSession,
    search_log: SearchLogBuffer,
    principal: Principal,
    search_id: str,
    item_id: int,
    position: int,
) -> None:
    await search_log.flush()  # this process's rows; another process's arrive within its interval
    log = None
    for attempt in range(3):
        log = await session.scalar(select(SearchLog).where(SearchLog.search_id == search_id))
        if log is not None:
            break
        if attempt < 2:
            await asyncio.sleep(search_log.interval)
    if log is None or log.actor != principal.actor:
        raise NotFound(f"No search {search_id} of yours", code="search_not_found")
    log.clicked_item_id, log.clicked_position, log.clicked_at = item_id, position, utcnow()
    await session.commit()


# ---------------------------------------------------------------- language resources


def _enqueue_language(session: AsyncSession, actor: Principal, dictionary_changed: bool) -> None:
    enqueue(session, "search.language", {"dictionary_changed": dictionary_changed}, created_by=actor.actor)


async def add_words(session: AsyncSession, actor: Principal, words: list[str]) -> list[DictionaryWord]:
    existing = set((await session.scalars(select(DictionaryWord.word).where(DictionaryWord.word.in_(words)))).all())
    added = []
    for w in dict.fromkeys(words):
        if w not in existing:
            row = DictionaryWord(word=w, created_by=actor.actor)
            session.add(row)
            added.append(row)
    if added:
        await session.flush()
        record(session, actor, "search.dictionary.add", "dictionary", None, words=[w.word for w in added])
        _enqueue_language(session, actor, True)
    await session.commit()
    return added


async def delete_word(session: AsyncSession, actor: Principal, word_id: int) -> None:
    row = await get_or_404(session, DictionaryWord, word_id, "word")
    record(session, actor, "search.dictionary.delete", "dictionary", word_id, before={"word": row.word})
    await session.delete(row)
    _enqueue_language(session, actor, True)
    await session.commit()


def _clean_terms(terms: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for t in terms:
        key = normalize(t).strip()
        if not key:
            raise InvalidInput(f"{t!r} has no searchable characters", code="invalid_synonym")
        seen.setdefault(key, t)
    if len(seen) < 2:
        raise InvalidInput("A synonym group needs two different terms", code="invalid_synonym")
    return list(seen.values())


async def create_synonyms(session: AsyncSession, actor: Principal, data: SynonymIn) -> SynonymGroup:
    group = SynonymGroup(terms=_clean_terms(data.terms), note=data.note)
    session.add(group)
    await session.flush()
    record(session, actor, "search.synonyms.create", "synonyms", group.id, after={"terms": group.terms})
    _enqueue_language(session, actor, False)
    await session.commit()
    return group


async def update_synonyms(session: AsyncSession, actor: Principal, group_id: int, data: SynonymPatch) -> SynonymGroup:
    group = await get_or_404(session, SynonymGroup, group_id, "synonyms")
    before = {"terms": list(group.terms), "note": group.note}
    if data.terms is not None:
        group.terms = _clean_terms(data.terms)
    if data.note is not None:
        group.note = data.note
    record(
        session,
        actor,
        "search.synonyms.update",
        "synonyms",
        group.id,
        before=before,
        after={"terms": group.terms, "note": group.note},
    )
    _enqueue_language(session, actor, False)
    await session.commit()
    return group


async def delete_synonyms(session: AsyncSession, actor: Principal, group_id: int) -> None:
    group = await get_or_404(session, SynonymGroup, group_id, "synonyms")
    record(session, actor, "search.synonyms.delete", "synonyms", group_id, before={"terms": group.terms})
    await session.delete(group)
    _enqueue_language(session, actor, False)
    await session.commit()


async def start_job(session: AsyncSession, actor: Principal, kind: str, payload: dict[str, Any]) -> int:
    if kind == "search.reindex_all" and await pending_rebuild(session):
        raise Conflict("A rebuild is already queued or running", code="reindex_in_progress")
    job = enqueue(session, kind, payload, created_by=actor.actor, max_attempts=3)
    await session.flush()
    record(session, actor, kind, "job", job.id, **payload)
    await session.commit()
    return job.id


# ---------------------------------------------------------------- near duplicates

LIKELY_DUPLICATE_MATCH = 0.6  # character overlap of two questions (ranking.question_match)


async def similar_items(
    backend: SearchBackend,
    semantic: Semantic | None,
    principal: Principal,
    item_id: int | None,
    texts: list[str],
    limit: int = 10,
) -> list[SimilarItemOut]:
    """Published items answering the question of `texts` (title, standard question, similar
    questions), from both legs under the caller's ACL, without `item_id` itself, best first.

    score = max(cosine of the item's question with the other item's nearest text, character
    overlap of their best pair of questions); `likely_duplicate` past KB_DUPLICATE_MIN_SCORE or
    LIKELY_DUPLICATE_MATCH. Raises SearchUnavailable when the engine is down; an embedder that
    fails leaves the keyword leg alone."""
    texts = [t.strip()[:MAX_QUERY_CHARS] for t in texts if t and t.strip()]
    if not texts:
        return []
    text = texts[0]
    base = SearchQuery(
        text=text,
        principals=principals_for_search(principal),
        channel=None,
        filters=SearchFilters(statuses=["published"]),
        limit=limit + 1,
        highlight=False,
        facets=False,
        strict=False,
    )
    found: dict[int, SearchHit] = {hit.item_id: hit for hit in (await backend.search(base)).hits}
    cosine: dict[int, float] = {}
    if semantic is not None and semantic.available:
        try:
            vector = await semantic.query_vector(text)
        except EmbedderUnavailable:
            vector = None
        if vector is not None:
            near = await backend.search(replace(base, mode="semantic", vector=vector, embedder=semantic.model))
            for hit in near.hits:
                found.setdefault(hit.item_id, hit)
                cosine[hit.item_id] = hit.score
    threshold = semantic.duplicate_min_score if semantic is not None else 1.0
    out = []
    for other, hit in found.items():
        if other == item_id:
            continue
        match = max(ranking.question_match(t, hit.questions) for t in texts)
        sem = cosine.get(other)
        out.append(
            SimilarItemOut(
                item_id=other,
                title=hit.title,
                item_type=hit.item_type,
                score=round(max(match, sem or 0.0), 4),
                semantic_score=None if sem is None else round(sem, 4),
                question_match=round(match, 4),
                likely_duplicate=match >= LIKELY_DUPLICATE_MATCH or (sem is not None and sem >= threshold),
            )
        )
    out.sort(key=lambda s: (-s.score, s.item_id))
    return out[:limit]


async def possible_duplicates(
    backend: SearchBackend | None, semantic: Semantic | None, principal: Principal, item_id: int, texts: list[str]
) -> list[SimilarItemOut]:
    """The likely duplicates shown on item create and submit: never fails the write."""
    if backend is None:
        return []
    try:
        found = await similar_items(backend, semantic, principal, item_id, texts, limit=10)
    except Exception:  # search down or failing: the editor's write goes through without the hint
        logging.getLogger(__name__).warning("possible duplicates not computed", exc_info=True)
        return []
    return [s for s in found if s.likely_duplicate][:5]
