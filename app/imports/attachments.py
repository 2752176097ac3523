"""Files named by a ZIP import's manifest (`attachments` column), attached to the rows' versions.

The files go into the same blob store as uploads (stored once by content hash, text extracted by
the same job); a row's hash includes the files' hashes, so a changed file makes a new version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import select

from app.attachments.detect import detect_file, safe_filename
from app.attachments.models import Attachment
from app.attachments.service import EXTRACT_JOB, MAX_ATTACHMENTS_PER_VERSION, StoredFile, _insert_blob
from app.attachments.storage import BlobStore, BlobTooLarge, file_sha256
from app.core.config import Settings
from app.core.db import utcnow
from app.identity.principal import Principal
from app.imports.columns import RowError
from app.knowledge.models import Item
from app.workers.outbox import enqueue

CHUNK = 1024 * 1024


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(CHUNK):
            yield chunk


class ZipFiles:
    def __init__(self, reader: Any, services: dict[str, Any], settings: Settings, *, dry_run: bool) -> None:
        self.reader, self.settings, self.dry_run = reader, settings, dry_run
        self.blobs: BlobStore | None = services.get("blobs")
        self._hashes: dict[str, tuple[Path, str]] = {}

    async def _file(self, name: str) -> tuple[Path, str]:
        if name not in self._hashes:
            path = await asyncio.to_thread(self.reader.attachment, name)
            if path is None:
                raise RowError(
                    f"the manifest names {name!r}, which is not in the ZIP", "attachment_missing", "attachments"
                )
            self._hashes[name] = (path, await asyncio.to_thread(file_sha256, path))
        return self._hashes[name]

    async def hashes(self, names: list[str]) -> list[str]:
        if len(names) > MAX_ATTACHMENTS_PER_VERSION:
            raise RowError(
                f"a version carries at most {MAX_ATTACHMENTS_PER_VERSION} attachments",
                "too_many_attachments",
                "attachments",
            )
        return [f"{name}:{(await self._file(name))[1]}" for name in names]

    async def attach(self, session: Any, actor: Principal, item: Item, names: list[str]) -> list[Attachment]:
        """The version's attachment set: these files, stored (not in a dry run) and attached."""
        out: list[Attachment] = []
        existing = {
            (a.sha256, a.file_name): a
            for a in (await session.scalars(select(Attachment).where(Attachment.item_id == item.id))).all()
        }
        for name in dict.fromkeys(names):
            path, sha = await self._file(name)
            file_name = safe_filename(Path(name).name)
            size = (await anyio.Path(path).stat()).st_size
            if size == 0:
                raise RowError(f"the file {name!r} is empty", "empty_file", "attachments")
            detected = await asyncio.to_thread(detect_file, path, file_name)
            if size > self.settings.max_upload_file_bytes:
                raise RowError(f"the file {name!r} is larger than the upload limit", "file_too_large", "attachments")
            if not self.dry_run:  # a dry run's rows (the blob row too) are rolled back: no file is written
                if self.blobs is None:
                    raise RuntimeError("no blob store configured in this process")
                try:
                    await self.blobs.write_stream(_chunks(path), self.settings.max_upload_file_bytes)
                except BlobTooLarge:
                    raise RowError(
                        f"the file {name!r} is larger than the upload limit", "file_too_large", "attachments"
                    )
            stored = StoredFile(sha, size, True, 0, file_name, None, detected.mime, detected.extension)
            if await _insert_blob(session, stored):
                enqueue(session, EXTRACT_JOB, {"sha256": sha}, created_by=actor.actor)
            att = existing.get((sha, file_name)) or Attachment(
                item_id=item.id,
                sha256=sha,
                file_name=file_name,
                mime=detected.mime,
                size=size,
                uploaded_by=actor.id if actor.kind == "user" else None,
                created_at=utcnow(),
            )
            session.add(att)
            out.append(att)
        return out
