"""Attachments: streamed uploads into the blob store, the rows that attach them to an item's draft,
removal, and what the read endpoints need.

Upload, in two phases so that no database transaction stays open while a large file arrives:

1. Stream: the multipart body is parsed incrementally from the request stream (python-multipart's
   streaming parser); each file goes straight into the `BlobStore` (temp file, SHA-256 on the way,
   atomic rename), so memory stays bounded whatever the size. The per-file limit stops a file the
   moment it passes `KB_MAX_UPLOAD_FILE_BYTES` (413 `file_too_large`); the request limit is enforced
   by `BodySizeLimitMiddleware`. The type is detected from the stored bytes, never from the client.
2. Commit: one transaction adds the missing `Blob` rows (an `attachments.extract` job for each new
   one), the `Attachment` rows, links them to the open draft (copied from the latest version when
   none is open, as a draft edit does), bumps the item's row version and writes the audit entry.

Any failure (bad name, empty file, over a limit, client gone, conflict) leaves nothing behind: the
blobs this request created and nobody else references are deleted again. Blobs that nothing
references later (removed attachments) are collected by the `attachments.collect_orphans` job.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import anyio
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.attachments.detect import detect_file, safe_filename
from app.attachments.models import Attachment, Blob, version_attachments
from app.attachments.storage import BlobNotFound, BlobStore, BlobTooLarge
from app.audit.service import record
from app.core.db import utcnow
from app.core.errors import AppError, Conflict, InvalidInput, NotFound, PayloadTooLarge
from app.identity.principal import Principal
from app.knowledge import service as knowledge
from app.knowledge.models import OPEN_STATES, Item, ItemVersion
from app.workers.outbox import enqueue

log = logging.getLogger(__name__)

UPLOAD_FIELD = "files"
MAX_FILES_PER_REQUEST = 50
MAX_ATTACHMENTS_PER_VERSION = 200
EXTRACT_JOB = "attachments.extract"
COLLECT_JOB = "attachments.collect_orphans"
INDEX_JOB = "search.index_item"
ORPHAN_GRACE_SECONDS = 3600

# Shown by the browser itself (SVG is not: it can carry scripts).
_INLINE_PREFIXES = ("image/", "audio/", "video/")
_INLINE_TYPES = frozenset({"application/pdf"})
# Shown as their source, as text/plain (never rendered: HTML and SVG could run scripts).
_TEXT_TYPES = frozenset({"application/json", "application/xml", "image/svg+xml"})


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RangeNotSatisfiable(AppError):
    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"


# ---------------------------------------------------------------- streaming multipart


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data body; 415 for another type, 422 without a boundary."""
    ctype, options = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType(
            "Send the files as multipart/form-data under the field 'files'", code="unsupported_media_type"
        )
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise InvalidInput("The multipart Content-Type has no usable boundary", code="malformed_multipart")
    return boundary


def _malformed(detail: str = "The multipart body is malformed") -> InvalidInput:
    return InvalidInput(detail, code="malformed_multipart")


def _decode_header_text(raw: bytes) -> str:
    """Header parameters arrive as raw bytes: UTF-8 (browsers, curl, httpx), else GB18030 (old Chinese
    Windows clients), else Latin-1 (never fails)."""
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


_EXT_FILENAME = re.compile(r"filename\*\s*=\s*([^;]+)", re.IGNORECASE)


def _extended_filename(disposition: str) -> str | None:
    """RFC 5987 `filename*=UTF-8''%E5%AE%BD...` (python-multipart ignores the extended form)."""
    m = _EXT_FILENAME.search(disposition)
    if not m:
        return None
    charset, _, rest = m.group(1).strip().strip('"').partition("'")
    _, _, encoded = rest.partition("'")
    try:
        codecs.lookup(charset or "utf-8")
    except LookupError:
        charset = "utf-8"
    return unquote(encoded, encoding=charset or "utf-8", errors="replace")


@dataclass
class Part:
    name: str | None
    filename: str | None  # None: the part is a plain field (no filename parameter)
    declared_type: str | None
    reader: MultipartReader
    finished: bool = False

    async def data(self) -> AsyncIterator[bytes]:
        while not self.finished:
            kind, value = await self.reader.next_event()
            if kind == "data":
                yield value
            elif kind == "part_end":
                self.finished = True
            else:
                raise _malformed("The multipart body ended inside a part")

    async def drain(self) -> None:
        async for _ in self.data():
            pass


class MultipartReader:
    """Incremental multipart/form-data parsing over an async byte stream: parts come out one by one and
    each part's data is an async iterator, pulled from the network only as fast as it is consumed."""

    def __init__(self, chunks: AsyncIterator[bytes], boundary: bytes) -> None:
        self._chunks = chunks.__aiter__()
        self._events: deque[tuple[str, Any]] = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._eof = False
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks, max_header_count=16, max_header_size=8192)
        except Exception:
            raise _malformed("The multipart boundary is not valid")

    # parser callbacks: they only record events, the consumer decides
    def _on_part_begin(self) -> None:
        self._headers = []

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers.append((bytes(self._field).lower().strip(), bytes(self._value).strip()))
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append(("headers", self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(("data", bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append(("part_end", None))

    def _on_end(self) -> None:
        self._events.append(("end", None))

    async def next_event(self) -> tuple[str, Any]:
        while not self._events:
            if self._eof:
                return "eof", None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._eof = True
                continue
            if chunk:
                try:
                    self._parser.write(chunk)
                except MultipartParseError:
                    raise _malformed()
        return self._events.popleft()

    async def parts(self) -> AsyncIterator[Part]:
        while True:
            kind, value = await self.next_event()
            if kind == "headers":
                part = self._part(value)
                yield part
                if not part.finished:
                    await part.drain()
            elif kind == "end":
                return
            elif kind == "eof":
                raise _malformed("The multipart body ended before its closing boundary")

    def _part(self, headers: list[tuple[bytes, bytes]]) -> Part:
        values = dict(headers)
        disposition = values.get(b"content-disposition")
        if disposition is None:
            raise _malformed("A multipart part has no Content-Disposition header")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        raw_filename = options.get(b"filename")
        filename = _decode_header_text(raw_filename) if raw_filename is not None else None
        if filename is None or filename == "":
            extended = _extended_filename(disposition.decode("latin-1"))
            if extended is not None:
                filename = extended
        declared = values.get(b"content-type")
        return Part(
            name=_decode_header_text(name) if name is not None else None,
            filename=filename,
            declared_type=declared.decode("latin-1")[:128] if declared else None,
            reader=self,
        )


# ---------------------------------------------------------------- phase 1: streaming into the store


@dataclass
class StoredFile:
    sha256: str
    size: int
    created: bool  # this request wrote the blob file (it did not exist)
    mtime_ns: int  # of the blob file when this request wrote or claimed it
    file_name: str
    declared_type: str | None
    mime: str = "application/octet-stream"
    extension: str = ".bin"


def clean_file_name(raw: str | None) -> str:
    try:
        return safe_filename(raw or "")
    except ValueError:
        shown = (raw or "")[:100]
        raise InvalidInput(
            f"The file name {shown!r} is empty once path and control characters are removed",
            code="invalid_file_name",
            field=UPLOAD_FIELD,
            file_name=shown,
        )


async def receive_files(
    chunks: AsyncIterator[bytes], boundary: bytes, blobs: BlobStore, max_file_bytes: int, out: list[StoredFile]
) -> None:
    """Stream every file of the body into the store, appending each to `out` as soon as it is stored
    (so the caller can discard them if anything fails later)."""
    reader = MultipartReader(chunks, boundary)
    async for part in reader.parts():
        if part.name != UPLOAD_FIELD:
            raise InvalidInput(
                f"Unexpected form field {part.name!r}: send the files under '{UPLOAD_FIELD}'",
                code="unexpected_field",
                field=part.name or "",
            )
        if len(out) >= MAX_FILES_PER_REQUEST:
            raise InvalidInput(
                f"At most {MAX_FILES_PER_REQUEST} files per request", code="too_many_files", limit=MAX_FILES_PER_REQUEST
            )
        name = clean_file_name(part.filename)
        try:
            blob = await blobs.write_stream(part.data(), max_file_bytes)
        except BlobTooLarge:
            raise PayloadTooLarge(
                f"The file {name!r} is larger than the limit of {max_file_bytes} bytes",
                code="file_too_large",
                file_name=name,
                limit=max_file_bytes,
            )
        ours = any(f.sha256 == blob.sha256 and f.created for f in out)
        # Claim an existing blob: a fresh stamp keeps the orphan collector away while this upload commits.
        mtime = await (blobs.stamp(blob.sha256) if blob.created or ours else blobs.touch(blob.sha256))
        stored = StoredFile(blob.sha256, blob.size, blob.created, mtime, name, part.declared_type)
        out.append(stored)
        if blob.size == 0:
            raise InvalidInput(f"The file {name!r} is empty", code="empty_file", file_name=name)
        async with blobs.local_file(blob.sha256) as path:
            detected = await anyio.to_thread.run_sync(detect_file, path, name)
        stored.mime, stored.extension = detected.mime, detected.extension
    if not out:
        raise InvalidInput(
            f"No files: send one or more under the multipart field '{UPLOAD_FIELD}'",
            code="no_files",
            field=UPLOAD_FIELD,
        )


async def discard(sessionmaker: async_sessionmaker[AsyncSession], blobs: BlobStore, files: Sequence[StoredFile]) -> int:
    """Delete the blob files this request created, unless a Blob row references them or another upload
    claimed them since (its touch changed the mtime). Never raises; returns how many were deleted."""
    removed = 0
    for f in files:
        if not f.created:
            continue
        try:
            async with sessionmaker() as s:
                if await s.scalar(select(Blob.sha256).where(Blob.sha256 == f.sha256)) is not None:
                    continue
            try:
                current = await blobs.stamp(f.sha256)
            except BlobNotFound:
                continue
            if current == f.mtime_ns and await blobs.delete(f.sha256):
                removed += 1
        except Exception:  # the orphan collector catches whatever is left
            log.exception("could not discard an uploaded blob", extra={"sha256": f.sha256})
    return removed


# ---------------------------------------------------------------- phase 2: the rows


def ensure_attachable(item: Item, latest: ItemVersion) -> None:
    """Attachments change the open draft: not on an archived item, not on a version in review."""
    knowledge.ensure_not_archived(item)
    knowledge.ensure_unlocked(latest, "change its attachments")


async def open_draft(session: AsyncSession, actor: Principal, item: Item) -> tuple[ItemVersion, bool]:
    """The item's open draft, copied from the latest version when none is open (the same rule as a
    draft edit: a rejected version becomes a draft again). Returns (draft, created)."""
    latest = await knowledge.latest_version(session, item)
    ensure_attachable(item, latest)
    if latest.state in OPEN_STATES:
        latest.state = "draft"
        return latest, False
    draft = knowledge.copy_version(latest, latest.number + 1, actor)
    item.latest_version_no = draft.number
    session.add(draft)
    await session.flush()
    return draft, True


def _uploader(actor: Principal) -> int | None:
    return actor.id if actor.kind == "user" else None


async def _insert_blob(session: AsyncSession, f: StoredFile) -> bool:
    """The Blob row for this content unless it exists (concurrent uploads of the same bytes insert it
    once). True when this transaction inserted it."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(Blob.__table__)
        .values(
            sha256=f.sha256,
            size=f.size,
            mime=f.mime,
            created_at=utcnow(),
            extraction_status="pending",
            extracted_chars=0,
            meta={},
        )
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)


async def add_attachments(
    session: AsyncSession, actor: Principal, item: Item, files: Sequence[StoredFile]
) -> tuple[ItemVersion, list[Attachment], bool]:
    """Attach the stored files to the open draft, in one transaction (committed here)."""
    async with knowledge.write_guard(session, item.id):
        draft, created = await open_draft(session, actor, item)
        by_key = {(a.sha256, a.file_name): a for a in draft.attachments}
        out: list[Attachment] = []
        new_blobs: list[str] = []
        for f in files:
            if await _insert_blob(session, f):
                new_blobs.append(f.sha256)
                enqueue(session, EXTRACT_JOB, {"sha256": f.sha256}, created_by=actor.actor)
            att = by_key.get((f.sha256, f.file_name))
            if att is None:  # the same file under the same name twice is attached once
                att = Attachment(
                    item_id=item.id,
                    sha256=f.sha256,
                    file_name=f.file_name,
                    mime=f.mime,
                    size=f.size,
                    uploaded_by=_uploader(actor),
                    created_at=utcnow(),
                )
                session.add(att)
                draft.attachments.append(att)
                by_key[(f.sha256, f.file_name)] = att
            if att not in out:
                out.append(att)
        if len(draft.attachments) > MAX_ATTACHMENTS_PER_VERSION:
            raise Conflict(
                f"A version carries at most {MAX_ATTACHMENTS_PER_VERSION} attachments",
                code="too_many_attachments",
                limit=MAX_ATTACHMENTS_PER_VERSION,
            )
        draft.updated_at = item.updated_at = utcnow()  # bumps row_version: the ETag changes
        await session.flush()
        record(
            session,
            actor,
            "item.attachments_add",
            "item",
            item.id,
            version=draft.number,
            created_draft=created,
            files=[
                {"attachment_id": a.id, "file_name": a.file_name, "sha256": a.sha256, "size": a.size, "mime": a.mime}
                for a in out
            ],
            declared_types=[f.declared_type for f in files],
            new_blobs=len(new_blobs),
        )
        await session.commit()
    return draft, out, created


async def remove_attachment(session: AsyncSession, actor: Principal, item: Item, attachment_id: int) -> ItemVersion:
    """Take an attachment off the open draft (created from the latest version if none is open); other
    versions keep it. An attachment no version carries any more is deleted; its blob becomes an orphan
    for the collector unless other attachments share it."""
    async with knowledge.write_guard(session, item.id):
        draft, created = await open_draft(session, actor, item)
        att = next((a for a in draft.attachments if a.id == attachment_id), None)
        if att is None:
            raise NotFound(
                f"Version {draft.number} of item {item.id} has no attachment {attachment_id}",
                code="attachment_not_found",
            )
        draft.attachments.remove(att)
        draft.updated_at = item.updated_at = utcnow()
        await session.flush()
        left = await session.scalar(
            select(func.count()).select_from(version_attachments).where(version_attachments.c.attachment_id == att.id)
        )
        if not left:
            await session.delete(att)
        record(
            session,
            actor,
            "item.attachment_remove",
            "item",
            item.id,
            version=draft.number,
            created_draft=created,
            attachment_id=attachment_id,
            file_name=att.file_name,
            sha256=att.sha256,
            deleted=not left,
        )
        await session.commit()
    return draft


# ---------------------------------------------------------------- reading


async def version_numbers(session: AsyncSession, attachment_ids: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
    """attachment id -> [(version id, version number)] of the versions carrying it."""
    out: dict[int, list[tuple[int, int]]] = {i: [] for i in attachment_ids}
    if not attachment_ids:
        return out
    rows = await session.execute(
        select(version_attachments.c.attachment_id, ItemVersion.id, ItemVersion.number)
        .join(ItemVersion, ItemVersion.id == version_attachments.c.version_id)
        .where(version_attachments.c.attachment_id.in_(attachment_ids))
        .order_by(ItemVersion.number)
    )
    for att_id, version_id, number in rows.all():
        out[att_id].append((version_id, number))
    return out


def is_inline(mime: str) -> bool:
    return mime in _INLINE_TYPES or (mime.startswith(_INLINE_PREFIXES) and mime != "image/svg+xml")


def is_text(mime: str) -> bool:
    return mime.startswith("text/") or mime in _TEXT_TYPES


def preview_kind(mime: str, blob: Blob) -> str:
    """inline (the browser shows the file), text (its source as text/plain), html (Tika's rendering or
    extracted text in a page), pending (extraction not finished) or none."""
    if is_inline(mime):
        return "inline"
    if is_text(mime):
        return "text"
    if blob.extraction_status == "pending":
        return "pending"
    if blob.extraction_status == "done" and blob.extracted_chars > 0:
        return "html"
    return "none"


def language_of(blob: Blob) -> str | None:
    value = (blob.meta or {}).get("language")
    return value if isinstance(value, str) else None


def truncated_of(blob: Blob) -> bool:
    return bool((blob.meta or {}).get("truncated"))


def describe(att: Attachment, blob: Blob, versions: list[int]) -> dict[str, Any]:
    base = f"/api/v1/attachments/{att.id}"
    return {
        "id": att.id,
        "item_id": att.item_id,
        "file_name": att.file_name,
        "mime": att.mime,
        "size": att.size,
        "sha256": att.sha256,
        "uploaded_by": att.uploaded_by,
        "created_at": att.created_at,
        "extraction_status": blob.extraction_status,
        "extraction_reason": blob.extraction_reason,
        "extracted_at": blob.extracted_at,
        "extracted_chars": blob.extracted_chars,
        "truncated": truncated_of(blob),
        "page_count": blob.page_count,
        "language": language_of(blob),
        "preview": preview_kind(att.mime, blob),
        "versions": versions,
        "content_url": f"{base}/content",
        "preview_url": f"{base}/preview",
        "text_url": f"{base}/text",
    }


async def blobs_for(session: AsyncSession, shas: Sequence[str]) -> dict[str, Blob]:
    if not shas:
        return {}
    rows = await session.scalars(select(Blob).where(Blob.sha256.in_(set(shas))))
    return {b.sha256: b for b in rows.all()}


# ---------------------------------------------------------------- HTTP details: ranges, names, charsets

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range of RFC 9110 as (first, last) inclusive; None means the whole file (no header, a
    syntax we ignore, or several ranges). 416 for a range that starts past the end."""
    if not header:
        return None
    m = _RANGE.match(header)
    if not m or not (m.group(1) or m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - n, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range-spec: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(int(last), size - 1) if last else size - 1


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"The file has {size} bytes; the requested range lies outside it",
        headers={"Content-Range": f"bytes */{size}"},
        size=size,
    )


_ATTR_CHARS = "!#$&+-.^_`|~"


def content_disposition(kind: str, file_name: str, attachment_id: int) -> str:
    """`attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266 / 5987)."""
    stem, dot, ext = file_name.rpartition(".")
    if not dot:
        stem, ext = file_name, ""

    def ascii_only(s: str) -> str:
        return "".join(c for c in s if 32 <= ord(c) < 127 and c not in '"\\%;')

    a_stem, a_ext = ascii_only(stem).strip(" ."), ascii_only(ext).strip()
    if not a_stem.strip("_-"):
        a_stem = f"attachment-{attachment_id}"
    fallback = f"{a_stem}.{a_ext}" if a_ext else a_stem
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe=_ATTR_CHARS)}"


_CHARSET_HEAD = 64 * 1024


def _sniff_charset(head: bytes) -> str:
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return name
    for name in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(name)().decode(head)  # a character cut at the end is fine
            return name
        except UnicodeDecodeError:
            continue
    return "utf-8"


async def text_charset(blobs: BlobStore, key: str) -> str:
    try:
        size = await blobs.size(key)
        chunks = await blobs.open_range(key, 0, min(size, _CHARSET_HEAD) - 1) if size else None
        head = b"".join([c async for c in chunks]) if chunks is not None else b""
    except BlobNotFound:
        return "utf-8"  # the caller answers 404 content_missing
    return _sniff_charset(head)
