"""Outbox handlers: text extraction per new blob, and the collection of orphaned blobs."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.attachments.extraction import ExtractionLimits, ExtractionResult, Extractor, ExtractorUnavailable
from app.attachments.models import Attachment, Blob, BlobText, version_attachments
from app.attachments.service import COLLECT_JOB, EXTRACT_JOB, INDEX_JOB, ORPHAN_GRACE_SECONDS
from app.attachments.storage import BlobNotFound, BlobStore
from app.core.db import utcnow
from app.knowledge.models import Item, ItemVersion
from app.workers.models import Job
from app.workers.outbox import JobContext, PermanentJobError, enqueue, handler, schedule_recurring

log = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{64}")
MAX_REASON = 500
MAX_META_KEYS = 200
BATCH = 500


def _service(ctx: JobContext, name: str) -> Any:
    svc = ctx.services.get(name)
    if svc is None:
        raise RuntimeError(f"no {name!r} service in this process")
    return svc


def clean_text(s: str) -> str:
    """PostgreSQL text and JSONB refuse NUL characters and lone surrogates; SQLite would keep them."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


def clean_json(value: Any, depth: int = 0) -> Any:
    if depth > 5:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in list(value.items())[:MAX_META_KEYS]}
    if isinstance(value, list | tuple):
        return [clean_json(v, depth + 1) for v in value[:100]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean_text(str(value))


async def _items_showing(ctx: JobContext, sha256: str) -> list[int]:
    """Items whose indexed version carries this content: the published one, or (archived items, still
    searchable by editors) an archived one."""
    stmt = (
        select(Item.id)
        .distinct()
        .join(ItemVersion, ItemVersion.item_id == Item.id)
        .join(version_attachments, version_attachments.c.version_id == ItemVersion.id)
        .join(Attachment, Attachment.id == version_attachments.c.attachment_id)
        .where(
            Attachment.sha256 == sha256,
            or_(
                ItemVersion.id == Item.published_version_id,
                and_(Item.status == "archived", ItemVersion.state == "archived"),
            ),
        )
        .order_by(Item.id)
    )
    return list((await ctx.session.scalars(stmt)).all())


async def _store_result(ctx: JobContext, sha256: str, result: ExtractionResult) -> Blob | None:
    blob = await ctx.session.scalar(select(Blob).where(Blob.sha256 == sha256).execution_options(populate_existing=True))
    if blob is None:  # collected while we were extracting
        return None
    text = clean_text(result.text or "")
    html = clean_text(result.html) if result.html else None
    blob.extraction_status = result.status
    blob.extraction_reason = clean_text(result.reason)[:MAX_REASON] if result.reason else None
    blob.extracted_chars = len(text)
    blob.page_count = result.page_count
    blob.extracted_at = utcnow()
    blob.meta = clean_json(
        {
            "language": result.language,
            "content_type": result.content_type,
            "truncated": result.truncated,
            "tika": result.metadata,
        }
    )
    row = await ctx.session.get(BlobText, sha256)
    if row is None:
        if text or html:
            ctx.session.add(BlobText(sha256=sha256, text=text, html=html))
    else:
        row.text, row.html = text, html
    return blob


async def _mark_unavailable(ctx: JobContext, sha256: str, error: str) -> None:
    async with ctx.sessionmaker() as s:
        blob = await s.get(Blob, sha256)
        if blob is not None:
            blob.extraction_status = "failed"
            blob.extraction_reason = f"extractor unavailable: {error}"[:MAX_REASON]
            blob.extracted_at = utcnow()
            await s.commit()


@handler(EXTRACT_JOB)
async def extract_blob(ctx: JobContext) -> dict[str, Any]:
    """Extract text and metadata of one blob (limits from settings) and store the outcome on it; then
    reindex the items whose searchable version carries it. A file can never fail this job: whatever
    the extractor does ends in a status. Only an unreachable extractor (tika-server down) is retried."""
    sha256 = ctx.payload.get("sha256")
    if not isinstance(sha256, str) or not _SHA.fullmatch(sha256):
        raise PermanentJobError("payload needs the sha256 of a blob")
    blob = await ctx.session.get(Blob, sha256)
    if blob is None:
        return {"status": "gone"}
    mime = blob.mime
    job = await ctx.session.get(Job, ctx.job_id)
    last_attempt = job is None or ctx.attempt >= job.max_attempts
    await ctx.session.commit()  # no transaction stays open while Tika works (up to the time limit)

    extractor: Extractor = _service(ctx, "extractor")
    blobs: BlobStore = _service(ctx, "blobs")
    limits = ExtractionLimits.from_settings(_service(ctx, "settings"))
    try:
        async with blobs.local_file(sha256) as path:
            result = await extractor.extract(path, mime, limits)
    except ExtractorUnavailable as exc:
        if last_attempt:  # the job ends failed; an administrator's retry extracts again
            await _mark_unavailable(ctx, sha256, str(exc))
        raise
    except Exception as exc:  # a bug or an OS error: the file gets a status, the worker goes on
        log.exception("extraction crashed", extra={"sha256": sha256})
        result = ExtractionResult("failed", f"extraction error: {type(exc).__name__}: {exc}")

    stored = await _store_result(ctx, sha256, result)
    if stored is None:
        return {"status": "gone"}
    items = await _items_showing(ctx, sha256)
    for item_id in items:
        enqueue(ctx.session, INDEX_JOB, {"item_id": item_id}, created_by="system")
    return {
        "status": stored.extraction_status,
        "reason": stored.extraction_reason,
        "chars": stored.extracted_chars,
        "reindexed": items,
    }


async def _stale(blobs: BlobStore, key: str, cutoff_ts: float) -> bool:
    try:
        return await blobs.stamp(key) < cutoff_ts * 1_000_000_000
    except BlobNotFound:
        return False


async def schedule_orphan_collection(session: AsyncSession, every_hours: float, *, besides: int | None = None) -> bool:
    """Keep one recurring collection queued (`KB_ORPHAN_COLLECT_HOURS`; 0 turns it off)."""
    return await schedule_recurring(session, COLLECT_JOB, every_hours * 3600, besides=besides)


@handler(COLLECT_JOB)
async def collect_orphans(ctx: JobContext) -> dict[str, Any]:
    """Delete what no version needs any more, older than the grace period (uploads in flight are
    younger): attachments no version carries, blob rows no attachment references with their files,
    blob files without a row, and temp files of crashed uploads."""
    grace = ctx.payload.get("grace_seconds", ORPHAN_GRACE_SECONDS)
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        raise PermanentJobError("grace_seconds must be a non-negative integer")
    blobs: BlobStore = _service(ctx, "blobs")
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    cutoff_ts = cutoff.timestamp()
    s = ctx.session

    gone_atts = await s.execute(
        delete(Attachment).where(
            ~exists().where(version_attachments.c.attachment_id == Attachment.id), Attachment.created_at < cutoff
        )
    )
    orphan_shas = list(
        (
            await s.scalars(
                select(Blob.sha256).where(~exists().where(Attachment.sha256 == Blob.sha256), Blob.created_at < cutoff)
            )
        ).all()
    )
    for start in range(0, len(orphan_shas), BATCH):
        part = orphan_shas[start : start + BATCH]
        await s.execute(delete(Blob).where(Blob.sha256.in_(part), ~exists().where(Attachment.sha256 == Blob.sha256)))
    await s.commit()  # rows first: a file is only deleted once nothing can point at it

    report = {
        "attachments": gone_atts.rowcount or 0,
        "blob_rows": len(orphan_shas),
        "blob_files": 0,
        "stray_files": 0,
        "kept_recent": 0,
        "temp_files": 0,
    }
    for sha in orphan_shas:
        # a fresh mtime: an upload of the same bytes is claiming the file right now
        if await _stale(blobs, sha, cutoff_ts):
            report["blob_files"] += int(await blobs.delete(sha))
        else:
            report["kept_recent"] += 1

    batch: list[str] = []

    async def sweep(keys: list[str]) -> None:
        known = set((await s.scalars(select(Blob.sha256).where(Blob.sha256.in_(keys)))).all())
        for key in keys:
            if key in known:
                continue
            if await _stale(blobs, key, cutoff_ts):
                report["stray_files"] += int(await blobs.delete(key))
            else:
                report["kept_recent"] += 1

    async for key in blobs.iter_keys():
        batch.append(key)
        if len(batch) >= BATCH:
            await sweep(batch)
            batch = []
    if batch:
        await sweep(batch)
    report["temp_files"] = await blobs.cleanup_temp(older_than_seconds=float(grace))
    settings = ctx.services.get("settings")
    if settings is not None:  # the next run, committed with this job's state
        report["next_scheduled"] = await schedule_orphan_collection(
            s, settings.orphan_collect_hours, besides=ctx.job_id
        )
    return report
