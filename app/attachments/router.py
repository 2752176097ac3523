"""Attachments of knowledge items: upload to the draft, remove, list, and the file itself.

Who sees what: an attachment follows its item's read ACL and the versions the caller may see —
editors any version, readers (only knowledge:read) the published version while it is valid and
shown on their channel. Anything else answers 404, as if it did not exist. Metadata and the
extracted text need knowledge:read; the file itself, by download or preview, also needs
attachments:download (the fifth permission level).
"""

from __future__ import annotations

import html
from typing import Annotated, Any

import anyio
import anyio.to_thread
import nh3
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.requests import ClientDisconnect

from app.attachments import service
from app.attachments.models import Attachment, Blob, BlobText, version_attachments
from app.attachments.schemas import (
    AttachmentDetail,
    AttachmentOut,
    AttachmentTextOut,
    CollectOrphansIn,
    UploadOut,
)
from app.attachments.storage import BlobNotFound, BlobStore
from app.audit.service import record
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, AppError, BadRequest, Conflict, NotFound, problem_response
from app.core.etag import IfMatch, check_if_match
from app.core.pagination import Page, Paging, paginate_by_id
from app.core.schemas import Id, VersionNo
from app.identity.deps import Require, deny
from app.identity.principal import Principal
from app.knowledge import service as knowledge
from app.knowledge.deps import Writer, accessible_item
from app.knowledge.models import Item
from app.search.schemas import JobAccepted
from app.workers.outbox import enqueue

router = APIRouter(tags=["attachments"], responses=PROBLEMS)

Reader = Require("knowledge:read")
Downloader = Require("attachments:download")
JobsAdmin = Require("jobs:manage")

CACHE = "private, no-cache"
# Inline previews may be framed by the same origin; they load nothing else.
MEDIA_CSP = (
    "default-src 'none'; img-src 'self'; media-src 'self'; object-src 'self'; "
    "style-src 'unsafe-inline'; frame-ancestors 'self'"
)
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_PAGE_STYLE = (
    "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;line-height:1.6;"
    "max-width:60em;margin:1em auto;padding:0 1em;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2em .5em}pre{white-space:pre-wrap;word-break:break-word}"
    "img{max-width:100%}"
)

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or many files, any format",
                    }
                },
            }
        }
    },
}


def _not_found(attachment_id: Id) -> NotFound:
    return NotFound(f"No attachment with id {attachment_id}", code="attachment_not_found")


def _blobs(request: Request) -> BlobStore:
    return request.app.state.services["blobs"]


async def _out(
    session: DbSession, principal: Principal, item: Item, atts: list[Attachment], served_id: Id | None = None
) -> list[AttachmentOut]:
    blobs = await service.blobs_for(session, [a.sha256 for a in atts])
    versions = await service.version_numbers(session, [a.id for a in atts])
    editor = knowledge.sees_open_versions(principal, item)
    out = []
    for a in atts:
        numbers = [n for vid, n in versions[a.id] if editor or vid == served_id]
        out.append(AttachmentOut(**service.describe(a, blobs[a.sha256], numbers)))
    return out


async def _visible(
    request: Request, session: DbSession, principal: Principal, attachment_id: Id
) -> tuple[Attachment, Item, Blob, list[int]]:
    """The attachment if the caller may see it (item ACL, then the version rule), else 404."""
    att = await session.get(Attachment, attachment_id)
    if att is None:
        raise _not_found(attachment_id)
    try:
        item = await accessible_item(request, session, principal, att.item_id)  # audits a denial
    except NotFound:
        raise _not_found(attachment_id)
    versions = (await service.version_numbers(session, [att.id]))[att.id]
    if not knowledge.sees_open_versions(principal, item):
        served = await knowledge.served_version(session, principal, item)
        versions = [(vid, n) for vid, n in versions if served is not None and vid == served.id]
    if not versions:
        raise _not_found(attachment_id)
    blob = await session.get(Blob, att.sha256)
    if blob is None:
        raise _not_found(attachment_id)
    return att, item, blob, [n for _, n in versions]


async def _with_read(request: Request, principal: Principal) -> None:
    """The file needs both levels: reading content (knowledge:read) and downloading (attachments:download)."""
    if not principal.can("knowledge:read"):
        raise await deny(request, principal, "knowledge:read")


# ---------------------------------------------------------------- on an item


@router.post(
    "/items/{item_id}/attachments",
    response_model=UploadOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        409: problem_response("item_archived or version_locked"),
        413: problem_response("file_too_large or payload_too_large"),
        415: problem_response("Not multipart/form-data"),
        422: problem_response("empty_file, invalid_file_name, no_files, malformed_multipart"),
    },
)
async def upload(
    request: Request, response: Response, session: DbSession, actor: Writer, item_id: Id, if_match: IfMatch = None
) -> UploadOut:
    """Attach one or many files (multipart field `files`, any format) to the item's open draft; without
    one, a new draft is copied from the latest version first. Files are streamed to storage and stored
    once by SHA-256; the type is detected from the bytes; the name is kept (made safe). Limits:
    `KB_MAX_UPLOAD_FILE_BYTES` per file (413 `file_too_large`), `KB_MAX_UPLOAD_REQUEST_BYTES` per
    request. Text extraction runs as a job per new file. `If-Match` is checked when sent."""
    item = await accessible_item(request, session, actor, item_id, edit=True)
    if if_match is not None:
        check_if_match(if_match, knowledge.etag_of(item), item.row_version)
    service.ensure_attachable(item, await knowledge.latest_version(session, item))
    boundary = service.multipart_boundary(request.headers.get("content-type"))
    await session.rollback()  # no transaction stays open while the files arrive

    settings = request.app.state.settings
    blobs = _blobs(request)
    stored: list[service.StoredFile] = []
    try:
        await service.receive_files(request.stream(), boundary, blobs, settings.max_upload_file_bytes, stored)
        item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
        if if_match is not None:
            check_if_match(if_match, knowledge.etag_of(item), item.row_version)
        draft, atts, created = await service.add_attachments(session, actor, item, stored)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await session.rollback()
            await service.discard(request.app.state.sessionmaker, blobs, stored)
        if isinstance(exc, ClientDisconnect):  # nobody is listening; say so in the log, not as a crash
            raise BadRequest("The client went away before the upload finished", code="upload_aborted") from None
        raise
    etag = knowledge.etag_of(item)
    response.headers["ETag"] = etag
    return UploadOut(
        item_id=item.id,
        version=draft.number,
        created_draft=created,
        etag=etag,
        attachments=await _out(session, actor, item, atts),
    )


@router.get("/items/{item_id}/attachments", response_model=Page[AttachmentOut])
async def list_attachments(
    request: Request,
    session: DbSession,
    principal: Reader,
    item_id: Id,
    page: Paging,
    version: Annotated[VersionNo | None, Query(description="A version number; default: the one you see")] = None,
) -> Page[AttachmentOut]:
    """The attachments of a version, oldest first. Editors: any version (default the latest); readers:
    only the published version served to them."""
    item = await accessible_item(request, session, principal, item_id)
    if version is None:
        v = await knowledge.served_version(session, principal, item)
        if v is None:
            raise NotFound(f"No item with id {item_id}", code="item_not_found")
    else:
        v = await knowledge.get_version(session, principal, item, version)
    stmt = (
        select(Attachment)
        .join(version_attachments, version_attachments.c.attachment_id == Attachment.id)
        .where(version_attachments.c.version_id == v.id)
    )
    rows, nxt = await paginate_by_id(session, stmt, Attachment.id, page, descending=False)
    return Page(items=await _out(session, principal, item, rows, served_id=v.id), next_cursor=nxt)


@router.delete(
    "/items/{item_id}/attachments/{attachment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: problem_response("item_archived or version_locked")},
)
async def remove(
    request: Request, session: DbSession, actor: Writer, item_id: Id, attachment_id: Id, if_match: IfMatch = None
) -> Response:
    """Take the attachment off the open draft (copied from the latest version if none is open); the
    published version keeps it until the draft is published. Needs `If-Match` (428 without it, 412
    when stale), like every other change to a draft; the new ETag comes back in the header."""
    item = await accessible_item(request, session, actor, item_id, write=True, edit=True)
    check_if_match(if_match, knowledge.etag_of(item), item.row_version)
    await service.remove_attachment(session, actor, item, attachment_id)
    return Response(status_code=204, headers={"ETag": knowledge.etag_of(item)})


# ---------------------------------------------------------------- one attachment


@router.post("/attachments/collect-orphans", response_model=JobAccepted, status_code=status.HTTP_202_ACCEPTED)
async def collect_orphans(session: DbSession, actor: JobsAdmin, body: CollectOrphansIn | None = None) -> JobAccepted:
    """Queue the job that deletes blob files and rows no attachment references (and temp files of
    crashed uploads), older than `grace_seconds` (default one hour)."""
    grace = body.grace_seconds if body else service.ORPHAN_GRACE_SECONDS
    job = enqueue(session, service.COLLECT_JOB, {"grace_seconds": grace}, created_by=actor.actor, max_attempts=3)
    await session.flush()
    record(session, actor, service.COLLECT_JOB, "job", job.id, grace_seconds=grace)
    await session.commit()
    return JobAccepted(job_id=job.id, status="pending", href=f"/api/v1/jobs/{job.id}")


@router.get("/attachments/{attachment_id}", response_model=AttachmentDetail)
async def get_attachment(
    request: Request, session: DbSession, principal: Reader, attachment_id: Id
) -> AttachmentDetail:
    """Metadata: name, detected type, size, SHA-256, extraction status and reason, page count,
    language, the versions carrying it and what Tika reported."""
    att, _, blob, versions = await _visible(request, session, principal, attachment_id)
    tika = (blob.meta or {}).get("tika")
    return AttachmentDetail(**service.describe(att, blob, versions), metadata=tika if isinstance(tika, dict) else {})


@router.get("/attachments/{attachment_id}/text", response_model=AttachmentTextOut)
async def get_text(request: Request, session: DbSession, principal: Reader, attachment_id: Id) -> AttachmentTextOut:
    """The text Tika extracted (empty until extraction is done). Follows the read ACL; needs no
    download permission."""
    att, _, blob, _ = await _visible(request, session, principal, attachment_id)
    row = await session.get(BlobText, att.sha256)
    text = row.text if row is not None else ""
    return AttachmentTextOut(
        attachment_id=att.id,
        status=blob.extraction_status,
        reason=blob.extraction_reason,
        text=text,
        truncated=service.truncated_of(blob),
        language=service.language_of(blob),
        chars=len(text),
    )


def _matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


async def _send_file(
    request: Request, att: Attachment, *, disposition: str, content_type: str, csp: str | None = None
) -> Response:
    """The file's bytes, whole or one `Range` (206; 416 when unsatisfiable), streamed from the store."""
    blobs = _blobs(request)
    etag = f'"{att.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": CACHE,
        "Content-Disposition": service.content_disposition(disposition, att.file_name, att.id),
        "X-Content-Type-Options": "nosniff",
    }
    if csp:
        headers["Content-Security-Policy"] = csp
        headers["X-Frame-Options"] = "SAMEORIGIN"
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    try:
        size = await blobs.size(att.sha256)
    except BlobNotFound:
        raise NotFound("The file's content is missing from storage", code="content_missing")
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted and if_range is not None and if_range.strip() != etag:
        wanted = None  # the client's copy is another file: send the whole new one
    chosen = service.parse_range(wanted, size)
    start, end = chosen if chosen is not None else (0, size - 1)
    chunks = await blobs.open_range(att.sha256, start, end) if size else _empty()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    code = 200
    if chosen is not None:
        code = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(chunks, status_code=code, headers=headers)


async def _empty() -> Any:
    if False:  # pragma: no cover - an empty async iterator
        yield b""


async def _file_type(request: Request, att: Attachment) -> str:
    if service.is_text(att.mime):
        charset = await service.text_charset(_blobs(request), att.sha256)
        return f"{att.mime}; charset={charset}"
    return att.mime


@router.get(
    "/attachments/{attachment_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file"},
        206: {"description": "One byte range"},
        304: {"description": "Not modified"},
        416: problem_response("Range not satisfiable"),
    },
)
async def download(request: Request, session: DbSession, principal: Downloader, attachment_id: Id) -> Response:
    """Download the file (`Content-Disposition: attachment` with the UTF-8 name). Supports one `Range`
    (206 with `Content-Range`, 416 outside the file) and `If-Range`; the ETag is the SHA-256. Needs
    attachments:download and knowledge:read."""
    await _with_read(request, principal)
    att, _, _, _ = await _visible(request, session, principal, attachment_id)
    return await _send_file(request, att, disposition="attachment", content_type=await _file_type(request, att))


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


@router.get(
    "/attachments/{attachment_id}/preview",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/html": {}, "application/pdf": {}, "image/*": {}, "video/*": {}},
            "description": "The file inline, or an HTML rendering",
        },
        409: problem_response("preview_not_ready: extraction is pending"),
        415: problem_response("no_preview"),
    },
)
async def preview(request: Request, session: DbSession, principal: Downloader, attachment_id: Id) -> Response:
    """Show the file in the browser: PDF, images, audio and video inline (with `Range`); text files as
    plain text (SVG and HTML as their source, never rendered); Office and other documents as the HTML
    rendering Tika made (or the extracted text) in a page with a strict CSP. 409 `preview_not_ready`
    while extraction is pending, 415 `no_preview` when there is nothing to show. Needs
    attachments:download and knowledge:read."""
    await _with_read(request, principal)
    att, _, blob, _ = await _visible(request, session, principal, attachment_id)
    kind = service.preview_kind(att.mime, blob)
    if kind == "inline":
        return await _send_file(request, att, disposition="inline", content_type=att.mime, csp=MEDIA_CSP)
    if kind == "text":
        charset = await service.text_charset(_blobs(request), att.sha256)
        return await _send_file(
            request, att, disposition="inline", content_type=f"text/plain; charset={charset}", csp=HTML_CSP
        )
    if kind == "pending":
        raise Conflict(
            "Text extraction for this file has not finished; try again shortly",
            code="preview_not_ready",
            extraction_status=blob.extraction_status,
        )
    row = await session.get(BlobText, att.sha256) if kind == "html" else None
    if row is None or not (row.html or row.text):
        raise AppError(
            f"There is no preview for {att.mime} files; download it instead",
            status=415,
            code="no_preview",
            mime=att.mime,
            extraction_status=blob.extraction_status,
            extraction_reason=blob.extraction_reason,
        )
    if row.html:
        body = await anyio.to_thread.run_sync(nh3.clean, row.html)  # stored sanitized; cleaned again
    else:
        body = f"<pre>{html.escape(row.text)}</pre>"
    page = _page(att.file_name, body)
    return Response(
        page,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": HTML_CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": CACHE,
            "ETag": f'"{att.sha256}-html"',
        },
    )
