from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record
from app.core.db import get_or_404, utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from app.core.pagination import decode_cursor, encode_cursor
from app.identity.principal import Principal
from app.search.analysis import normalize
from app.search.backends.base import SearchBackend, SearchUnavailable
from app.search.documents import SearchFilters, SearchQuery, SearchResult, Suggestion
from app.search.indexing import principals_for_search, searchable_item_ids
from app.search.jobs import pending_rebuild
from app.search.models import DictionaryWord, SearchLog, SynonymGroup
from app.search.schemas import FacetOut, HighlightOut, HitOut, SearchOut, SynonymIn, SynonymPatch
from app.search.searchlog import SearchLogBuffer
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
    session: AsyncSession, backend: SearchBackend, search_log: SearchLogBuffer, principal: Principal, p: SearchParams
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
    try:
        result = await backend.search(query)
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
        filters=_filters_summary(p, statuses),
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
        warnings=warnings,
    )


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
