"""Outbox handlers that keep the search index equal to the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.channels.changes import reconcile
from app.search.backends.base import SearchBackend
from app.search.indexing import build_documents, expected_versions, language_resources, searchable_item_ids
from app.workers.models import Job
from app.workers.outbox import JobContext, PermanentJobError, enqueue, handler

BATCH = 500


def _backend(ctx: JobContext) -> SearchBackend:
    backend = ctx.services.get("search")
    if backend is None:
        raise RuntimeError("no search backend configured in this process")
    return backend


async def _sync(ctx: JobContext, item_ids: list[int]) -> dict[str, Any]:
    backend = _backend(ctx)
    docs, gone = await build_documents(ctx.session, item_ids)
    errors = {k: v for k, v in (await backend.upsert(docs)).items() if v} if docs else {}
    if gone:
        await backend.delete(gone)
    if errors:  # the job is retried; documents that succeeded are simply written again
        sample = "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:5])
        raise RuntimeError(f"{len(errors)} documents failed: {sample}")
    # The change feed's safety net for changes that did not reconcile themselves (a category moved,
    # inherited grants): last, so the feed's lock is held only until the worker commits.
    events = await reconcile(ctx.session, item_ids)
    return {"indexed": len(docs), "removed": len(gone), "feed_events": len(events)}


@handler("search.index_item")
async def index_item(ctx: JobContext) -> dict[str, Any]:
    item_id = ctx.payload.get("item_id")
    if not isinstance(item_id, int):
        raise PermanentJobError("payload needs an integer item_id")
    return await _sync(ctx, [item_id])


@handler("search.reindex_items")
async def reindex_items(ctx: JobContext) -> dict[str, Any]:
    ids = ctx.payload.get("item_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise PermanentJobError("payload needs a list of integer item_ids")
    out = {"indexed": 0, "removed": 0, "feed_events": 0}
    for start in range(0, len(ids), BATCH):
        part = await _sync(ctx, ids[start : start + BATCH])
        out = {k: out[k] + part[k] for k in out}
    return out


@handler("search.reindex_all")
async def reindex_all(ctx: JobContext) -> dict[str, Any]:
    """Rebuild the whole index from the database; readers keep the old index until the swap."""
    backend = _backend(ctx)
    if not await backend.health():  # index missing (deleted under us, or a new engine): start empty
        await backend.open()
    await backend.set_language(await language_resources(ctx.session))
    ids = await searchable_item_ids(ctx.session)
    docs = []
    for start in range(0, len(ids), BATCH):
        batch, _ = await build_documents(ctx.session, ids[start : start + BATCH])
        docs += batch
        await ctx.report_progress(done=min(start + BATCH, len(ids)), total=len(ids), phase="reading")
    await ctx.report_progress(done=len(ids), total=len(ids), phase="indexing")
    await backend.rebuild(docs)
    return {"indexed": len(docs)}


@handler("search.language")
async def apply_language(ctx: JobContext) -> dict[str, Any]:
    """Dictionary or synonyms changed: apply them; a dictionary change also re-tokenizes the index."""
    resources = await language_resources(ctx.session)
    await _backend(ctx).set_language(resources)
    if ctx.payload.get("dictionary_changed"):
        enqueue(ctx.session, "search.reindex_all", {"reason": "dictionary changed"}, created_by="system")
    return {"words": len(resources.words), "synonym_groups": len(resources.synonym_groups)}


@handler("search.check_consistency")
async def check_consistency(ctx: JobContext) -> dict[str, Any]:
    """Compare the index with the database; with repair=true, fix every difference."""
    indexed = await _backend(ctx).indexed_versions()
    expected = await expected_versions(ctx.session)
    missing = sorted(set(expected) - set(indexed))
    stale = sorted(i for i in expected if i in indexed and indexed[i] != expected[i])
    extra = sorted(set(indexed) - set(expected))
    report: dict[str, Any] = {
        "expected": len(expected),
        "indexed": len(indexed),
        "missing": missing[:1000],
        "stale": stale[:1000],
        "extra": extra[:1000],
        "repaired": False,
    }
    if ctx.payload.get("repair") and (missing or stale or extra):
        await _sync(ctx, missing + stale + extra)
        report["repaired"] = True
    return report


async def pending_rebuild(session: Any) -> bool:
    found = await session.scalar(
        select(Job.id).where(Job.kind == "search.reindex_all", Job.status.in_(("pending", "running"))).limit(1)
    )
    return found is not None
