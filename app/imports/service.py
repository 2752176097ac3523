"""Sync sources and import jobs: who may write a source, receiving the file, reading the report.

Permissions: `knowledge:import` writes every source (users such as the knowledge manager, or a
client trusted with all of them); a client with the scope `import:<source>` writes only that
source: it may import into it, read its imports and the source, and set its watermark. Creating
and changing a source's policy takes `knowledge:import`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import changes, record
from app.core.config import Settings
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge, PreconditionFailed
from app.core.etag import make_etag
from app.identity.principal import Principal
from app.imports.formats import CONTENT_TYPES, FORMATS, ImportFileError, sniff_format
from app.imports.models import ImportJob, ImportOutcome, ImportRowError, SyncSource
from app.imports.schemas import ImportOut, LastImport, OutcomeOut, Progress, RowErrorOut, SourceCreate, SourceOut
from app.imports.schemas import SourceUpdate as SourceUpdateIn
from app.knowledge.models import Item
from app.taxonomy import service as taxonomy
from app.taxonomy.models import Taxonomy
from app.workers.outbox import enqueue

RUN_JOB = "imports.run"
RUN_ATTEMPTS = 10  # a worker killed mid-import, the database gone for a while: the import resumes
ALL_SOURCES = "knowledge:import"
CHUNK = 1024 * 1024
SHOWN_ERRORS = 50
SHOWN_OUTCOMES = 50
POLICY_FIELDS = (
    "description",
    "publish_mode",
    "create_categories",
    "create_tags",
    "taxonomy_id",
    "item_type",
    "channels",
    "visibility",
    "max_archive_share",
)


def source_scope(source: str) -> str:
    return f"import:{source}"


def may_write(principal: Principal, source: str) -> bool:
    return principal.can(ALL_SOURCES) or principal.can(source_scope(source))


def may_import_any(principal: Principal) -> bool:
    return principal.can(ALL_SOURCES) or any(p.startswith("import:") for p in principal.permissions)


def check_write(principal: Principal, source: str) -> None:
    if not may_write(principal, source):
        raise Forbidden(
            f"You may not write the source {source!r} (needs {ALL_SOURCES} or the scope {source_scope(source)})",
            code="source_forbidden",
            source=source,
        )


# ---------------------------------------------------------------- sources


async def get_source(session: AsyncSession, principal: Principal, name: str) -> SyncSource:
    """The source, when the caller may write it (403 `source_forbidden`); 404 `unknown_source`."""
    src = await session.scalar(select(SyncSource).where(SyncSource.name == name))
    if src is None:
        raise NotFound(
            f"No sync source {name!r}: an administrator creates it (POST /api/v1/sync-sources)",
            code="unknown_source",
            source=name,
        )
    check_write(principal, name)
    return src


def source_etag(src: SyncSource) -> str:
    return make_etag("sync_source", src.id, src.row_version)


async def source_out(session: AsyncSession, src: SyncSource) -> SourceOut:
    items = (
        await session.scalar(
            select(func.count()).select_from(Item).where(Item.source == src.name, Item.status != "archived")
        )
        or 0
    )
    last = await session.scalar(
        select(ImportJob)
        .where(ImportJob.source == src.name, ImportJob.dry_run.is_(False))
        .order_by(ImportJob.id.desc())
        .limit(1)
    )
    return SourceOut(
        name=src.name,
        description=src.description,
        publish_mode=src.publish_mode,
        create_categories=src.create_categories,
        create_tags=src.create_tags,
        taxonomy_id=src.taxonomy_id,
        item_type=src.item_type,
        channels=list(src.channels),
        visibility=src.visibility,
        max_archive_share=src.max_archive_share,
        watermark=src.watermark,
        watermark_at=src.watermark_at,
        items=items,
        last_import=LastImport(id=last.id, state=last.state, mode=last.mode, finished_at=last.finished_at)
        if last
        else None,
        etag=source_etag(src),
        created_at=src.created_at,
        updated_at=src.updated_at,
    )


async def _check_policy(session: AsyncSession, data: SourceCreate | SourceUpdateIn) -> None:
    sent = data.model_fields_set
    for name in POLICY_FIELDS:
        if name in sent and getattr(data, name) is None and name != "taxonomy_id":
            raise InvalidInput(f"{name} cannot be null", code="field_required", field=name)
    if data.taxonomy_id is not None and await session.get(Taxonomy, data.taxonomy_id) is None:
        raise InvalidInput(f"No taxonomy with id {data.taxonomy_id}", code="unknown_taxonomy", field="taxonomy_id")
    if data.item_type is not None:
        await taxonomy.get_item_type(session, data.item_type)


def _policy(src: SyncSource) -> dict[str, Any]:
    return {name: getattr(src, name) for name in POLICY_FIELDS}


async def create_source(session: AsyncSession, actor: Principal, data: SourceCreate) -> SyncSource:
    await _check_policy(session, data)
    values = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    src = SyncSource(**values)
    session.add(src)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A sync source named {data.name!r} exists", code="source_exists", source=data.name)
    record(session, actor, "sync_source.create", "sync_source", src.id, after={"name": src.name, **_policy(src)})
    await session.commit()
    return src


async def update_source(session: AsyncSession, actor: Principal, src: SyncSource, data: SourceUpdateIn) -> SyncSource:
    await _check_policy(session, data)
    before = _policy(src)
    for name in data.model_fields_set:
        setattr(src, name, getattr(data, name))
    after = _policy(src)
    record(session, actor, "sync_source.update", "sync_source", src.id, **changes(before, after))
    try:
        await session.commit()
    except StaleDataError:
        await session.rollback()
        raise PreconditionFailed("Someone changed this source at the same moment; reload and try again")
    return src


async def set_watermark(session: AsyncSession, actor: Principal, src: SyncSource, watermark: str | None) -> SyncSource:
    from app.core.db import utcnow

    before = src.watermark
    src.watermark, src.watermark_at = watermark, utcnow()
    record(
        session,
        actor,
        "sync_source.watermark",
        "sync_source",
        src.id,
        before={"watermark": before},
        after={"watermark": watermark},
    )
    await session.commit()
    return src


# ---------------------------------------------------------------- receiving a file


def format_of(content_type: str | None, declared: str | None) -> str | None:
    if declared:
        return declared
    media = (content_type or "").split(";")[0].strip().lower()
    if not media or media == "application/octet-stream":
        return None  # guessed from the bytes
    fmt = CONTENT_TYPES.get(media)
    if fmt is None:
        raise InvalidInput(
            f"Content-Type {media!r} is not an import format; send one of "
            f"{', '.join(sorted(CONTENT_TYPES))} or pass ?format=",
            code="unsupported_media_type",
            status=415,
            formats=list(FORMATS),
        )
    return fmt


async def receive(chunks: AsyncIterator[bytes], settings: Settings) -> tuple[Path, int, str]:
    """Stream the body to a file under the data dir (never whole in memory)."""
    folder = anyio.Path(settings.data_dir / "imports")
    await folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{secrets.token_hex(12)}.upload"
    digest = hashlib.sha256()
    size = 0
    try:
        async with await anyio.open_file(path, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > settings.import_max_bytes:
                    raise PayloadTooLarge(
                        f"The file is larger than the limit of {settings.import_max_bytes} bytes",
                        code="file_too_large",
                        limit=settings.import_max_bytes,
                    )
                digest.update(chunk)
                await f.write(chunk)
    except BaseException:
        await path.unlink(missing_ok=True)
        raise
    if size == 0:
        await path.unlink(missing_ok=True)
        raise InvalidInput("The body is empty: send the file as the request body", code="empty_file")
    return Path(path), size, digest.hexdigest()


async def create_import(
    session: AsyncSession,
    actor: Principal,
    settings: Settings,
    *,
    source: SyncSource,
    path: Path,
    size: int,
    sha256: str,
    declared: str | None,
    mode: str,
    dry_run: bool,
    confirm_mass_archive: bool,
    options: dict[str, Any],
    idempotency_key: str | None,
) -> tuple[ImportJob, bool]:
    """The job for this file (its file checked to be the declared format), or the job an earlier
    request with the same Idempotency-Key made (True: replayed; the new file is dropped)."""
    if idempotency_key:
        earlier = await session.scalar(
            select(ImportJob).where(ImportJob.created_by == actor.actor, ImportJob.idempotency_key == idempotency_key)
        )
        if earlier is not None:
            await anyio.Path(path).unlink(missing_ok=True)
            same = (
                earlier.file_sha256,
                earlier.source,
                earlier.mode,
                earlier.dry_run,
                earlier.confirm_mass_archive,
            ) == (sha256, source.name, mode, dry_run, confirm_mass_archive)
            if not same:
                raise Conflict(
                    "This Idempotency-Key was used for a different request (another file, source, mode, "
                    "dry_run or confirmation); use a new key",
                    code="idempotency_key_reused",
                    import_id=earlier.id,
                )
            return earlier, True
    try:
        fmt = await anyio.to_thread.run_sync(sniff_format, path, declared)
    except ImportFileError as e:
        await anyio.Path(path).unlink(missing_ok=True)
        raise InvalidInput(e.message, code=e.code, **e.extra)
    named = path.with_suffix(f".{fmt}")  # readers (openpyxl) go by the file name's extension
    await anyio.Path(path).rename(named)
    path = named
    job = ImportJob(
        source=source.name,
        mode=mode,
        format=fmt,
        dry_run=dry_run,
        confirm_mass_archive=confirm_mass_archive,
        options=options,
        state="queued",
        file_path=str(path),
        file_bytes=size,
        file_sha256=sha256,
        idempotency_key=idempotency_key,
        created_by=actor.actor,
        counts={},
    )
    session.add(job)
    try:
        await session.flush()
    except IntegrityError:  # the same key at the same moment
        await session.rollback()
        await anyio.Path(path).unlink(missing_ok=True)
        earlier = await session.scalar(
            select(ImportJob).where(ImportJob.created_by == actor.actor, ImportJob.idempotency_key == idempotency_key)
        )
        if earlier is None:
            raise
        return earlier, True
    work = enqueue(session, RUN_JOB, {"import_id": job.id}, created_by=actor.actor, max_attempts=RUN_ATTEMPTS)
    await session.flush()
    job.job_id = work.id
    record(
        session,
        actor,
        "import.create",
        "import",
        job.id,
        source=source.name,
        mode=mode,
        format=fmt,
        dry_run=dry_run,
        bytes=size,
        sha256=sha256,
    )
    await session.commit()
    return job, False


# ---------------------------------------------------------------- reading jobs


async def get_import(session: AsyncSession, principal: Principal, import_id: int) -> ImportJob:
    job = await session.get(ImportJob, import_id)
    if job is None or not may_write(principal, job.source):
        raise NotFound(f"No import with id {import_id}", code="import_not_found")
    return job


async def import_out(session: AsyncSession, job: ImportJob) -> ImportOut:
    errors = (
        await session.scalars(
            select(ImportRowError)
            .where(ImportRowError.import_id == job.id)
            .order_by(ImportRowError.row, ImportRowError.id)
            .limit(SHOWN_ERRORS)
        )
    ).all()
    total = (
        await session.scalar(select(func.count()).select_from(ImportRowError).where(ImportRowError.import_id == job.id))
        or 0
    )
    outcomes = (
        await session.scalars(
            select(ImportOutcome)
            .where(ImportOutcome.import_id == job.id)
            .order_by(ImportOutcome.id)
            .limit(SHOWN_OUTCOMES)
        )
    ).all()
    percent = None
    if job.rows_total:
        percent = round(100 * job.rows_done / job.rows_total, 1)
    elif job.rows_total == 0 and job.state == "done":
        percent = 100.0
    counts = {
        k: int(job.counts.get(k, 0)) for k in ("created", "updated", "unchanged", "archived", "deleted", "failed")
    }
    return ImportOut(
        id=job.id,
        source=job.source,
        mode=job.mode,
        format=job.format,
        dry_run=job.dry_run,
        confirm_mass_archive=job.confirm_mass_archive,
        state=job.state,  # type: ignore[arg-type]
        progress=Progress(phase=job.state, rows_done=job.rows_done, rows_total=job.rows_total, percent=percent),
        counts=counts,
        to_archive=job.to_archive,
        columns=list(job.columns),
        warnings=list(job.warnings),
        error=job.error,
        errors=[RowErrorOut.model_validate(e) for e in errors],
        errors_total=total,
        outcomes=[OutcomeOut.model_validate(o) for o in outcomes],
        file={
            "name": job.options.get("file_name"),
            "bytes": job.file_bytes,
            "sha256": job.file_sha256,
            "encoding": job.options.get("encoding"),
            "sheet": job.options.get("sheet"),
        },
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
