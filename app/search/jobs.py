"""Outbox handlers that keep the search index equal to the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.channels.changes import reconcile
from app.search.backends.base import SearchBackend
from app.search.documents import SearchDocument
from app.search.indexing import build_documents, expected_versions, language_resources, searchable_item_ids
from app.search.semantic import Semantic, drop_other_models, embed_documents
from app.workers.models import Job
from app.workers.outbox import (
    BatchContext,
    BatchOutcome,
    JobContext,
    PermanentJobError,
    batch_handler,
    enqueue,
    handler,
)

BATCH = 500
# Index jobs run this many at a time (one build_documents, one engine write, one reconcile):
# about 2 s of work for 500 items (bench/indexing.py), far inside the job lease.
INDEX_BATCH = 500


def _semantic(ctx: JobContext | BatchContext) -> Semantic | None:
    return ctx.services.get("semantic")


async def _documents(ctx: JobContext | BatchContext, item_ids: list[int]) -> tuple[list[SearchDocument], list[int]]:
    """The items' documents with their vectors (from the cache, else embedded now). An embedder
    failure never fails the job: those documents are indexed for keyword search only."""
    docs, gone = await build_documents(ctx.session, item_ids)
    await embed_documents(ctx.session, _semantic(ctx), docs)
    return docs, gone


def _backend(ctx: JobContext | BatchContext) -> SearchBackend:
    backend = ctx.services.get("search")
    if backend is None:
        raise RuntimeError("no search backend configured in this process")
    return backend


async def _sync(ctx: JobContext, item_ids: list[int]) -> dict[str, Any]:
    backend = _backend(ctx)
    docs, gone = await _documents(ctx, item_ids)
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


def _item_id(payload: dict[str, Any]) -> int:
    item_id = payload.get("item_id")
    if not isinstance(item_id, int) or isinstance(item_id, bool):
        raise PermanentJobError("payload needs an integer item_id")
    return item_id


@handler("search.index_item")
async def index_item(ctx: JobContext) -> dict[str, Any]:
    """One job alone: the path of a worker without batch handlers."""
    return await _sync(ctx, [_item_id(ctx.payload)])


def index_outcomes(
    jobs_of: dict[int, list[int]], errors: dict[int, str | None], removed: set[int], feed_events: dict[int, int]
) -> BatchOutcome:
    """Each job's outcome from its item's: `errors` is what `backend.upsert` answered (item id ->
    None or the error of that document); a job of a failed item is retried, the others are done."""
    batch = {"batch_jobs": sum(len(j) for j in jobs_of.values()), "batch_items": len(jobs_of)}
    out: BatchOutcome = {}
    for item_id, job_ids in jobs_of.items():
        error = errors.get(item_id)
        for job_id in job_ids:
            if error:
                out[job_id] = RuntimeError(f"document of item {item_id} failed: {error}")
            else:
                out[job_id] = {
                    "item_id": item_id,
                    "indexed": int(item_id not in removed),
                    "removed": int(item_id in removed),
                    "feed_events": feed_events.get(item_id, 0),
                    "coalesced": len(job_ids),
                    **batch,
                }
    return out


@batch_handler("search.index_item", max_batch=INDEX_BATCH)
async def index_items(ctx: BatchContext) -> BatchOutcome:
    """Every writer's index jobs, coalesced by item: one document per item however many jobs name
    it, one engine write (one Tantivy commit; one bulk request on Elasticsearch), one delete, one
    reconcile for the batch. An engine failure raises: the worker retries the whole batch."""
    out: BatchOutcome = {}
    jobs_of: dict[int, list[int]] = {}
    for job in ctx.jobs:
        try:
            jobs_of.setdefault(_item_id(job.payload), []).append(job.job_id)
        except PermanentJobError as e:  # fails alone
            out[job.job_id] = e
    if not jobs_of:
        return out
    backend = _backend(ctx)
    docs, gone = await _documents(ctx, list(jobs_of))
    errors = await backend.upsert(docs) if docs else {}
    if gone:
        await backend.delete(gone)
    synced = [item_id for item_id in jobs_of if not errors.get(item_id)]
    events = await reconcile(ctx.session, synced)  # last: the feed's lock is held until the worker commits
    per_item: dict[int, int] = {}
    for event in events:
        per_item[event["item_id"]] = per_item.get(event["item_id"], 0) + 1
    out.update(index_outcomes(jobs_of, errors, set(gone), per_item))
    return out


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
    semantic = _semantic(ctx)
    if semantic is not None and semantic.model:
        await drop_other_models(ctx.session, semantic.model)
        await ctx.session.commit()  # a short write: the lock is not held through the embedding
    docs = []
    for start in range(0, len(ids), BATCH):
        batch, _ = await _documents(ctx, ids[start : start + BATCH])
        docs += batch
        # The embedding cache rows written so far (idempotent): committed before the progress
        # report's own transaction, which SQLite's one writer would otherwise make wait.
        await ctx.session.commit()
        await ctx.report_progress(done=min(start + BATCH, len(ids)), total=len(ids), phase="reading")
    await ctx.report_progress(done=len(ids), total=len(ids), phase="indexing")
    await backend.rebuild(docs)
    return {"indexed": len(docs), "with_vectors": sum(1 for d in docs if d.embedder)}


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
    """Compare the index with the database; with repair=true, fix every difference. With an
    embedder loaded, items without vectors of its model (embedder down when they were indexed,
    an index of another model) are listed too, and repaired by embedding them again."""
    backend = _backend(ctx)
    indexed = await backend.indexed_versions()
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
    without: list[int] = []
    semantic = _semantic(ctx)
    if semantic is not None and semantic.model:
        lacking = await backend.items_lacking_vectors(semantic.model)
        if lacking is not None:
            others = set(missing) | set(stale) | set(extra)
            without = [i for i in lacking if i not in others]
            report.update(vector_model=semantic.model, without_vectors=without[:1000])
    elif semantic is not None and semantic.name != "off":
        report["vector_model"] = None
        report["semantic"] = semantic.status()
    if ctx.payload.get("repair") and (missing or stale or extra or without):
        await _sync(ctx, missing + stale + extra + without)
        report["repaired"] = True
    return report


async def pending_rebuild(session: Any) -> bool:
    found = await session.scalar(
        select(Job.id).where(Job.kind == "search.reindex_all", Job.status.in_(("pending", "running"))).limit(1)
    )
    return found is not None
