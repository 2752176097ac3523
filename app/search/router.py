from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.etag import not_modified
from app.core.pagination import Page, Paging, paginate_by_id
from app.core.schemas import Id
from app.identity.deps import Require
from app.search import service
from app.search.backends.base import SearchBackend
from app.search.backends.es_bodies import ik_user_dictionary
from app.search.indexing import language_resources
from app.search.models import DictionaryWord, SearchLog, SynonymGroup
from app.search.schemas import (
    ClickIn,
    JobAccepted,
    SearchLogOut,
    SearchOut,
    SuggestionOut,
    SynonymIn,
    SynonymOut,
    SynonymPatch,
    WordOut,
    WordsIn,
)
from app.search.searchlog import SearchLogBuffer
from app.search.semantic import Semantic

router = APIRouter(prefix="/search", tags=["search"], responses=PROBLEMS)

Searcher = Require("search:query")
Manager = Require("search:manage")
ChannelName = Literal["agent", "web", "wechat", "app"]


def backend_of(request: Request) -> SearchBackend:
    return request.app.state.services["search"]


def search_log_of(request: Request) -> SearchLogBuffer:
    return request.app.state.search_log


def semantic_of(request: Request) -> Semantic | None:
    return request.app.state.services.get("semantic")


@router.get("", response_model=SearchOut)
async def search(
    request: Request,
    session: DbSession,
    principal: Searcher,
    q: Annotated[str, Query(max_length=20_000, description="Free text; empty = browse by filters")] = "",
    type: Annotated[list[str] | None, Query(description="item types (faq, article, ...)")] = None,
    category: Annotated[list[int] | None, Query(description="taxonomy node ids; each matches its subtree")] = None,
    tag: Annotated[list[str] | None, Query()] = None,
    attr: Annotated[list[str] | None, Query(description="attribute filter code:value, repeatable")] = None,
    status_: Annotated[list[str] | None, Query(alias="status", description="editors: published, archived")] = None,
    channel: ChannelName | None = None,
    valid_at: datetime | None = None,
    updated_since: datetime | None = None,
    sort: Literal["relevance", "updated"] = "relevance",
    page: Annotated[int, Query(ge=1, le=500)] = 1,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    highlight: bool = True,
    facets: bool = True,
    explain: bool = False,
    mode: Annotated[
        Literal["keyword", "semantic", "hybrid"] | None,
        Query(
            description="keyword (words), semantic (meaning) or hybrid (both, fused); default hybrid when an "
            "embedder is loaded, else keyword"
        ),
    ] = None,
) -> Response:
    """Chinese full-text search over titles, questions, bodies, channel answers and attachment text,
    filtered inside the engine by the caller's read ACL and channel."""
    params = service.SearchParams(
        q=q,
        types=type or [],
        categories=category or [],
        tags=tag or [],
        attrs=attr or [],
        statuses=status_ or [],
        channel=channel,
        valid_at=valid_at,
        updated_since=updated_since,
        sort=sort,
        page=page,
        limit=limit,
        cursor=cursor,
        highlight=highlight,
        facets=facets,
        explain=explain,
        mode=mode,
    )
    out = await service.search(
        session, backend_of(request), search_log_of(request), principal, params, semantic_of(request)
    )
    # Serialized here, once: returned as a model, FastAPI would validate and convert it again
    # (ten hits with highlights and the facet lists, on every search).
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/suggest", response_model=list[SuggestionOut])
async def suggest(
    request: Request,
    principal: Searcher,
    q: Annotated[str, Query(min_length=1, max_length=200, description="Chinese, pinyin or initials: 宽, kuandai, kd")],
    channel: ChannelName | None = None,
    limit: Annotated[int, Query(ge=1, le=20)] = 8,
) -> list[SuggestionOut]:
    found = await service.suggest(backend_of(request), principal, q, channel, limit)
    return [SuggestionOut(item_id=s.item_id, text=s.text) for s in found]


@router.post("/click", status_code=status.HTTP_204_NO_CONTENT)
async def click(request: Request, session: DbSession, principal: Searcher, body: ClickIn) -> None:
    """Record which result of a search the caller opened (for relevance analytics)."""
    await service.click(session, search_log_of(request), principal, body.search_id, body.item_id, body.position)


@router.get("/log", response_model=Page[SearchLogOut])
async def search_log(
    request: Request, session: DbSession, _: Manager, page: Paging, zero_result: bool | None = None
) -> Page[SearchLogOut]:
    """Every search (query, normalized form, filters, hits, click); `zero_result=true` lists the misses.
    Searches reach the log within half a second (they are written in batches)."""
    await search_log_of(request).flush()
    stmt = select(SearchLog)
    if zero_result is not None:
        stmt = stmt.where(SearchLog.zero_result == zero_result)
    rows, nxt = await paginate_by_id(session, stmt, SearchLog.id, page)
    return Page(items=[SearchLogOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/ik-dictionary.txt", response_class=PlainTextResponse, responses={304: {"description": "Not modified"}})
async def ik_dictionary(request: Request, session: DbSession) -> Response:
    """The managed dictionary and synonym terms as Elasticsearch's IK analyzer polls them
    (`remote_ext_dict`, HEAD with ETag). Public by design: IK cannot authenticate; serve it on the
    internal network only. It holds words, never content."""
    text = ik_user_dictionary(await language_resources(session))
    response = PlainTextResponse(text, media_type="text/plain; charset=utf-8")
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    if not_modified(request, response, etag, "no-cache"):
        return Response(status_code=304, headers={"ETag": etag})
    return response


@router.head("/ik-dictionary.txt", include_in_schema=False)
async def ik_dictionary_head(request: Request, session: DbSession) -> Response:
    """IK polls with HEAD and compares the ETag."""
    return await ik_dictionary(request, session)


@router.get("/dictionary", response_model=Page[WordOut])
async def list_words(session: DbSession, _: Manager, page: Paging) -> Page[WordOut]:
    rows, nxt = await paginate_by_id(session, select(DictionaryWord), DictionaryWord.id, page, descending=False)
    return Page(items=[WordOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/dictionary", response_model=list[WordOut], status_code=status.HTTP_201_CREATED)
async def add_words(session: DbSession, actor: Manager, body: WordsIn) -> list[DictionaryWord]:
    """Business words kept whole by the segmenter. Existing words are skipped; the index is
    re-tokenized by a rebuild job."""
    return await service.add_words(session, actor, body.words)


@router.delete("/dictionary/{word_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_word(session: DbSession, actor: Manager, word_id: Id) -> None:
    await service.delete_word(session, actor, word_id)


@router.get("/synonyms", response_model=Page[SynonymOut])
async def list_synonyms(session: DbSession, _: Manager, page: Paging) -> Page[SynonymOut]:
    rows, nxt = await paginate_by_id(session, select(SynonymGroup), SynonymGroup.id, page, descending=False)
    return Page(items=[SynonymOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/synonyms", response_model=SynonymOut, status_code=status.HTTP_201_CREATED)
async def create_synonyms(session: DbSession, actor: Manager, body: SynonymIn) -> SynonymGroup:
    """Customer words ⇔ internal terms; applied at query time, no reindex needed."""
    return await service.create_synonyms(session, actor, body)


@router.patch("/synonyms/{group_id}", response_model=SynonymOut)
async def update_synonyms(session: DbSession, actor: Manager, group_id: Id, body: SynonymPatch) -> SynonymGroup:
    return await service.update_synonyms(session, actor, group_id, body)


@router.delete("/synonyms/{group_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_synonyms(session: DbSession, actor: Manager, group_id: Id) -> None:
    await service.delete_synonyms(session, actor, group_id)


@router.post("/reindex", response_model=JobAccepted, status_code=status.HTTP_202_ACCEPTED)
async def reindex(session: DbSession, actor: Manager) -> JobAccepted:
    """Rebuild the whole index from the database as a job; follow its progress at `href`."""
    job_id = await service.start_job(session, actor, "search.reindex_all", {"reason": "requested"})
    return JobAccepted(job_id=job_id, status="pending", href=f"/api/v1/jobs/{job_id}")


@router.post("/consistency", response_model=JobAccepted, status_code=status.HTTP_202_ACCEPTED)
async def consistency(session: DbSession, actor: Manager, repair: bool = False) -> JobAccepted:
    """Compare the index with the database (missing, stale, extra items); `repair=true` fixes them."""
    job_id = await service.start_job(session, actor, "search.check_consistency", {"repair": repair})
    return JobAccepted(job_id=job_id, status="pending", href=f"/api/v1/jobs/{job_id}")
