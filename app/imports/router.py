"""Bulk import and third-party sync: `/api/v1/sync-sources`, `/api/v1/imports`, `/api/v1/exports`.

A sync job sends its file as the request body (`curl --data-binary @faq.ndjson -H 'Content-Type:
application/x-ndjson'`); the answer is 202 with the job, which a worker runs (see engine.py).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from sqlalchemy import select
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from app.core.deps import AppSettings, DbSession
from app.core.errors import PROBLEMS, BadRequest, InvalidInput, problem_response
from app.core.etag import IfMatch, check_if_match
from app.core.pagination import Page, Paging, paginate_by_id
from app.core.schemas import Id
from app.identity.deps import CurrentPrincipal, Require, deny
from app.identity.principal import Principal
from app.imports import export, service
from app.imports.formats import CONTENT_TYPES
from app.imports.models import ImportJob, ImportOutcome, ImportRowError, SyncSource
from app.imports.schemas import (
    ExportFormat,
    ExportOut,
    ImportFormat,
    ImportMode,
    ImportOut,
    ImportState,
    OutcomeOut,
    RowErrorOut,
    SourceCreate,
    SourceName,
    SourceOut,
    SourceUpdate,
    WatermarkIn,
)

router = APIRouter(tags=["imports"], responses=PROBLEMS)
Manager = Require(service.ALL_SOURCES)


async def _sync_caller(request: Request, principal: CurrentPrincipal) -> Principal:
    """Holds knowledge:import or some import:<source> (which source: checked by the route). Refused
    before the parameters are looked at: 403 permission_denied, audited."""
    if not service.may_import_any(principal):
        raise await deny(request, principal, service.ALL_SOURCES)
    return principal


SyncCaller = Annotated[Principal, Depends(_sync_caller)]
CSV_EXPORT_BATCH = 2000

_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file itself: NDJSON or JSON (systems), CSV or XLSX (people), or a ZIP holding "
        "manifest.ndjson / manifest.csv plus the attachment files. Columns: see the README.",
        "content": {ctype: {"schema": {"type": "string", "format": "binary"}} for ctype in sorted(CONTENT_TYPES)},
    }
}


# ---------------------------------------------------------------- sources


@router.post(
    "/sync-sources",
    status_code=status.HTTP_201_CREATED,
    response_model=SourceOut,
    summary="Create a sync source and its policy",
)
async def create_source(body: SourceCreate, session: DbSession, principal: Manager, response: Response) -> SourceOut:
    src = await service.create_source(session, principal, body)
    response.headers["ETag"] = service.source_etag(src)
    return await service.source_out(session, src)


@router.get("/sync-sources", response_model=Page[SourceOut], summary="The sync sources the caller may write")
async def list_sources(session: DbSession, principal: SyncCaller, page: Paging) -> Page[SourceOut]:
    stmt = select(SyncSource)
    if not principal.can(service.ALL_SOURCES):
        names = [p.removeprefix("import:") for p in principal.permissions if p.startswith("import:")]
        stmt = stmt.where(SyncSource.name.in_(names))
    rows, nxt = await paginate_by_id(session, stmt, SyncSource.id, page, descending=False)
    return Page(items=[await service.source_out(session, s) for s in rows], next_cursor=nxt)


@router.get(
    "/sync-sources/{source}", response_model=SourceOut, summary="A source: policy, watermark, item count, last import"
)
async def get_source(source: SourceName, session: DbSession, principal: SyncCaller, response: Response) -> SourceOut:
    src = await service.get_source(session, principal, source)
    response.headers["ETag"] = service.source_etag(src)
    return await service.source_out(session, src)


@router.patch("/sync-sources/{source}", response_model=SourceOut, summary="Change a source's policy (If-Match)")
async def update_source(
    source: SourceName,
    body: SourceUpdate,
    session: DbSession,
    principal: Manager,
    response: Response,
    if_match: IfMatch = None,
) -> SourceOut:
    src = await service.get_source(session, principal, source)
    check_if_match(if_match, service.source_etag(src), src.row_version)
    src = await service.update_source(session, principal, src, body)
    response.headers["ETag"] = service.source_etag(src)
    return await service.source_out(session, src)


@router.put(
    "/sync-sources/{source}/watermark",
    response_model=SourceOut,
    summary="Write where the sync job left off; read it back with GET /sync-sources/{source}",
)
async def put_watermark(
    source: SourceName, body: WatermarkIn, session: DbSession, principal: SyncCaller, response: Response
) -> SourceOut:
    src = await service.get_source(session, principal, source)
    src = await service.set_watermark(session, principal, src, body.watermark)
    response.headers["ETag"] = service.source_etag(src)
    return await service.source_out(session, src)


# ---------------------------------------------------------------- imports


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise BadRequest("The client went away before the whole file arrived", code="incomplete_body")


@router.post(
    "/imports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ImportOut,
    openapi_extra=_BODY,
    summary="Import a file into a source (202: a job; the same Idempotency-Key answers the same job)",
)
async def create_import(
    request: Request,
    response: Response,
    session: DbSession,
    principal: SyncCaller,
    settings: AppSettings,
    source: Annotated[SourceName, Query(description="The sync source the rows belong to")],
    mode: Annotated[
        ImportMode,
        Query(
            description="incremental: only the rows sent; full: a complete snapshot, "
            "items of the source it lacks are archived"
        ),
    ] = "incremental",
    dry_run: Annotated[bool, Query(description="Validate and report what would happen; write nothing")] = False,
    confirm_mass_archive: Annotated[
        bool, Query(description="Let a full sync archive more than the source's max_archive_share")
    ] = False,
    format: Annotated[ImportFormat | None, Query(description="Default: from Content-Type, else from the bytes")] = None,
    encoding: Annotated[
        str | None,
        Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="CSV text encoding (default: detected)"),
    ] = None,
    sheet: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="XLSX sheet (default: the first with an external_id column)"),
    ] = None,
    watermark: Annotated[
        str | None, Query(max_length=1000, description="Stored on the source when the job ends without failed rows")
    ] = None,
    file_name: Annotated[str | None, Query(max_length=255, description="Shown in the job")] = None,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> ImportOut:
    src = await service.get_source(session, principal, source)
    declared = service.format_of(request.headers.get("content-type"), format)
    if encoding and (declared or "csv") not in ("csv", "zip"):
        raise InvalidInput("encoding is for CSV files", code="encoding_not_applicable", field="encoding")
    path, size, sha = await service.receive(_body(request), settings)
    options: dict[str, Any] = {
        k: v
        for k, v in {"encoding": encoding, "sheet": sheet, "watermark": watermark, "file_name": file_name}.items()
        if v is not None
    }
    job, replayed = await service.create_import(
        session,
        principal,
        settings,
        source=src,
        path=path,
        size=size,
        sha256=sha,
        declared=declared,
        mode=mode,
        dry_run=dry_run,
        confirm_mass_archive=confirm_mass_archive,
        options=options,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/api/v1/imports/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await service.import_out(session, job)


@router.get("/imports", response_model=Page[ImportOut], summary="Import jobs, newest first")
async def list_imports(
    session: DbSession,
    principal: SyncCaller,
    page: Paging,
    source: SourceName | None = None,
    state: ImportState | None = None,
) -> Page[ImportOut]:
    stmt = select(ImportJob)
    if source is not None:
        service.check_write(principal, source)
        stmt = stmt.where(ImportJob.source == source)
    elif not principal.can(service.ALL_SOURCES):
        names = [p.removeprefix("import:") for p in principal.permissions if p.startswith("import:")]
        stmt = stmt.where(ImportJob.source.in_(names))
    if state is not None:
        stmt = stmt.where(ImportJob.state == state)
    rows, nxt = await paginate_by_id(session, stmt, ImportJob.id, page)
    return Page(items=[await service.import_out(session, j) for j in rows], next_cursor=nxt)


@router.get("/imports/{import_id}", response_model=ImportOut, summary="An import job: state, progress, report")
async def get_import(import_id: Id, session: DbSession, principal: SyncCaller) -> ImportOut:
    return await service.import_out(session, await service.get_import(session, principal, import_id))


@router.get(
    "/imports/{import_id}/errors",
    response_model=Page[RowErrorOut],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    summary="Every row error, as JSON pages or (format=csv) one CSV file for Excel",
)
async def import_errors(
    import_id: Id,
    session: DbSession,
    principal: SyncCaller,
    page: Paging,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    job = await service.get_import(session, principal, import_id)
    if format == "csv":
        return StreamingResponse(
            _errors_csv(session, job.id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="import-{job.id}-errors.csv"'},
        )
    stmt = select(ImportRowError).where(ImportRowError.import_id == job.id)
    rows, nxt = await paginate_by_id(session, stmt, ImportRowError.id, page, descending=False)
    return Page(items=[RowErrorOut.model_validate(r) for r in rows], next_cursor=nxt)


async def _errors_csv(session: Any, import_id: int) -> AsyncIterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row", "external_id", "field", "code", "message"])
    yield ("\ufeff" + buf.getvalue()).encode()  # the BOM: Excel opens UTF-8 CSV correctly with it
    after = 0
    while True:
        rows = (
            await session.scalars(
                select(ImportRowError)
                .where(ImportRowError.import_id == import_id, ImportRowError.id > after)
                .order_by(ImportRowError.id)
                .limit(CSV_EXPORT_BATCH)
            )
        ).all()
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.writer(buf)
        for r in rows:
            writer.writerow([r.row, r.external_id or "", r.field or "", r.code, r.message])
        after = rows[-1].id
        yield buf.getvalue().encode()


@router.get(
    "/imports/{import_id}/outcomes",
    response_model=Page[OutcomeOut],
    summary="The items a job archived (full sync) or deleted, with their external ids",
)
async def import_outcomes(import_id: Id, session: DbSession, principal: SyncCaller, page: Paging) -> Page[OutcomeOut]:
    job = await service.get_import(session, principal, import_id)
    stmt = select(ImportOutcome).where(ImportOutcome.import_id == job.id)
    rows, nxt = await paginate_by_id(session, stmt, ImportOutcome.id, page, descending=False)
    return Page(items=[OutcomeOut.model_validate(r) for r in rows], next_cursor=nxt)


# ---------------------------------------------------------------- exports

_EXPORT_CONTENT = {
    200: {
        "description": "The file (up to KB_EXPORT_INLINE_MAX_ITEMS items)",
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in export.MEDIA_TYPES.values()},
    },
    202: {"model": ExportOut, "description": "More items: an export job; poll it, then fetch its file"},
}


@router.get(
    "/exports",
    responses=_EXPORT_CONTENT,
    response_class=Response,
    summary="Export a source's items with the import's columns (a job for large sets)",
)
async def export_items(
    request: Request,
    session: DbSession,
    principal: SyncCaller,
    settings: AppSettings,
    source: Annotated[SourceName, Query(description="The sync source whose items are written")],
    format: Annotated[ExportFormat, Query(description="ndjson (systems), csv or xlsx (people)")] = "ndjson",
    include_archived: Annotated[bool, Query(description="Archived items too (their last version)")] = False,
) -> Response:
    src = await service.get_source(session, principal, source)  # 404 unknown_source, 403 source_forbidden
    plan = await export.plan(
        session, src, include_archived, ZoneInfo(settings.import_timezone), export.readers_for(principal)
    )
    if plan.total > settings.export_inline_max_items:
        job = await export.start_job(session, principal, source=src.name, fmt=format, include_archived=include_archived)
        return JSONResponse(
            export.job_out(job).model_dump(mode="json"),
            status_code=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/exports/{job.id}"},
        )
    await session.close()  # the rows are read in sessions of their own, batch by batch
    name = export.file_name(src.name, format)
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Export-Rows": str(plan.total)}
    reader = export.RowReader(request.app.state.sessionmaker, plan)
    if format == "xlsx":  # a zip: written whole (in write-only mode) before it can be sent
        folder = export.exports_dir(settings)
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        path = folder / f"inline-{secrets.token_hex(8)}.xlsx"
        try:
            await export.write_file(reader, format, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return FileResponse(
            path,
            media_type=export.MEDIA_TYPES[format],
            headers=headers,
            background=BackgroundTask(path.unlink, missing_ok=True),
        )
    return StreamingResponse(export.stream(reader, format), media_type=export.MEDIA_TYPES[format], headers=headers)


@router.get("/exports/{export_id}", response_model=ExportOut, summary="An export job: state, rows written")
async def get_export(export_id: Id, session: DbSession, principal: SyncCaller) -> ExportOut:
    return export.job_out(await export.get_job(session, principal, export_id))


@router.get(
    "/exports/{export_id}/file",
    response_class=FileResponse,
    responses={
        200: {"content": {t: {} for t in export.MEDIA_TYPES.values()}},
        410: problem_response("The file was deleted after KB_EXPORT_RETENTION_HOURS"),
    },
    summary="The file of a finished export (409 export_not_ready before, 410 export_expired after the retention)",
)
async def export_file(export_id: Id, session: DbSession, principal: SyncCaller) -> FileResponse:
    job = await export.get_job(session, principal, export_id)
    path = await anyio.to_thread.run_sync(export.job_file, job)
    name = f"{job.source}-export-{job.id}.{job.format}"
    return FileResponse(
        path,
        media_type=export.MEDIA_TYPES[job.format],
        headers={"Content-Disposition": f'attachment; filename="{name}"', "X-Export-Rows": str(job.rows)},
    )
