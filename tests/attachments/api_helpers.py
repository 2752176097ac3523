"""Helpers for the attachment API tests: items through the real API, hand-built multipart bodies (so
names with control characters or raw bytes reach the server as sent), the real worker, and looks at
the blob folder and the tables."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app.attachments.models import Attachment, Blob, BlobText, version_attachments
from app.workers.models import Job
from app.workers.worker import Worker

BOUNDARY = "kbtestBoundary7MA4YWxkTrZu0gW"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def drain(app: Any) -> int:
    return await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()


def part_head(
    filename: bytes | str | None,
    *,
    field: str = "files",
    content_type: str = "application/octet-stream",
    extra: str = "",
) -> bytes:
    disp = f'form-data; name="{field}"'.encode()
    if filename is not None:
        raw = filename.encode("utf-8") if isinstance(filename, str) else filename
        disp += b'; filename="' + raw + b'"'
    disp += extra.encode()
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b"Content-Disposition: "
        + disp
        + b"\r\n"
        + f"Content-Type: {content_type}\r\n\r\n".encode()
    )


def multipart(files: Iterable[tuple[bytes | str | None, bytes]], **kw: Any) -> bytes:
    out = b""
    for name, data in files:
        out += part_head(name, **kw) + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def streamed(
    files: Iterable[tuple[str, Iterable[bytes]]], *, fail_after: int | None = None, pulled: list[int] | None = None
) -> AsyncIterator[bytes]:
    """A multipart body sent chunk by chunk; `fail_after`: the client dies after that many chunks."""
    n = 0
    for name, chunks in files:
        yield part_head(name)
        for chunk in chunks:
            n += 1
            if pulled is not None:
                pulled.append(len(chunk))
            if fail_after is not None and n > fail_after:
                raise ConnectionResetError("client went away")
            yield chunk
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def random_chunks(total: int, chunk: int = 64 * 1024, head: bytes = b"", seed: int = 1) -> Iterable[bytes]:
    block = hashlib.sha256(str(seed).encode()).digest() * (chunk // 32 + 1)
    sent = 0
    first = head
    i = 0
    while sent < total:
        n = min(chunk, total - sent)
        data = (first + i.to_bytes(8, "little") + block)[:n]
        first = b""
        i += 1
        sent += n
        yield data


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    item_id: int,
    files: Iterable[tuple[bytes | str | None, bytes]],
    **kw: Any,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/items/{item_id}/attachments",
        content=multipart(files),
        headers={**headers, "Content-Type": CTYPE, **kw.pop("extra_headers", {})},
        **kw,
    )


async def upload_ok(
    client: httpx.AsyncClient, headers: dict[str, str], item_id: int, files: Iterable[tuple[bytes | str | None, bytes]]
) -> dict[str, Any]:
    r = await upload(client, headers, item_id, files)
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == r.json()["etag"]
    return r.json()


async def create_item(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"title": "宽带故障处理手册", "body": "<p>请参考附件。</p>", **fields}
    r = await client.post("/api/v1/items", headers=headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def etag(client: httpx.AsyncClient, headers: dict[str, str], item_id: int) -> str:
    r = await client.get(f"/api/v1/items/{item_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["etag"]


async def act(
    client: httpx.AsyncClient, headers: dict[str, str], item_id: int, number: int, *actions: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for action in actions:
        r = await client.post(
            f"/api/v1/items/{item_id}/versions/{number}/{action}",
            headers={**headers, "If-Match": await etag(client, headers, item_id)},
        )
        assert r.status_code == 200, f"{action}: {r.text}"
        out = r.json()
    return out


async def publish(client: httpx.AsyncClient, headers: dict[str, str], item_id: int, number: int) -> dict[str, Any]:
    return await act(client, headers, item_id, number, "submit", "approve", "publish")


def blob_files(app: Any) -> list[Path]:
    root = Path(app.state.services["blobs"].root)
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts)


def temp_files(app: Any) -> list[Path]:
    tmp = Path(app.state.services["blobs"].temp_dir)
    return sorted(tmp.iterdir()) if tmp.exists() else []


async def counts(app: Any) -> dict[str, int]:
    async with app.state.sessionmaker() as s:
        return {
            "blobs": await s.scalar(select(func.count()).select_from(Blob)),
            "blob_texts": await s.scalar(select(func.count()).select_from(BlobText)),
            "attachments": await s.scalar(select(func.count()).select_from(Attachment)),
            "links": await s.scalar(select(func.count()).select_from(version_attachments)),
            "extract_jobs": await s.scalar(
                select(func.count()).select_from(Job).where(Job.kind == "attachments.extract")
            ),
        }


async def jobs(app: Any, kind: str) -> list[Job]:
    async with app.state.sessionmaker() as s:
        return list((await s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))).all())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exe_bytes() -> bytes:
    """A minimal PE header: 'MZ', NUL-filled DOS header, e_lfanew -> 'PE\\0\\0'."""
    dos = bytearray(b"MZ" + b"\x00" * 62)
    dos[0x3C:0x40] = (64).to_bytes(4, "little")
    return bytes(dos) + b"PE\x00\x00" + b"\x4c\x01" + b"\x00" * 200 + os.urandom(256)


def mp4_bytes(size: int) -> bytes:
    """An ISO-BMFF header (ftyp isom) followed by filler: looks like an MP4 to any sniffer."""
    ftyp = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    mdat_len = size - len(ftyp)
    head = ftyp + mdat_len.to_bytes(4, "big") + b"mdat"
    body = b"".join(random_chunks(size - len(head), seed=7))
    return head + body
