"""Content-addressed blob storage for attachments.

A blob's key is the SHA-256 of its bytes (64 lowercase hex characters), so identical uploads are
stored once. `LocalBlobStore` keeps blob ``<sha>`` at ``root/ab/cd/<sha>`` and streams uploads into
``root/.tmp`` first: the final path only ever appears through an atomic rename of a complete,
fsync'ed file, so a crash or a client that disconnects mid-upload never leaves a half blob behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

log = logging.getLogger(__name__)
_KEY_RE = re.compile(r"[0-9a-f]{64}")
TEMP_DIR_NAME = ".tmp"
_TEMP_PREFIX = "upload-"


def validate_key(key: str) -> str:
    """A key is exactly 64 lowercase hex characters; anything else (paths, dots, NULs) is refused."""
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise ValueError("blob key must be 64 lowercase hexadecimal characters")
    return key


def check_range(start: int, end: int | None, total: int) -> int:
    """The last byte of ``start..end`` in a blob of `total` bytes; `RangeNotSatisfiable` outside it."""
    if start < 0 or (end is not None and (end < start or end >= total)) or (start >= total and total > 0):
        raise RangeNotSatisfiable(start, end, total)
    return total - 1 if end is None else end


def file_sha256(path: Path, chunk: int = 1024 * 1024) -> str:
    """SHA-256 of a local file, read in chunks (blob keys, backups, import files)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class BlobTooLarge(Exception):
    def __init__(self, limit: int, received: int) -> None:
        super().__init__(f"blob exceeds the limit of {limit} bytes (received at least {received})")
        self.limit = limit
        self.received = received


class BlobNotFound(FileNotFoundError):
    pass


class RangeNotSatisfiable(ValueError):
    def __init__(self, start: int, end: int | None, size: int) -> None:
        super().__init__(f"range {start}-{'' if end is None else end} not satisfiable for {size} bytes")
        self.size = size


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    key: str
    created: bool = True  # False when identical content was already stored


class BlobStore(ABC):
    @abstractmethod
    async def write_stream(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredBlob:
        """Store the stream; raise `BlobTooLarge` as soon as it passes `max_bytes` (nothing is kept)."""

    @abstractmethod
    async def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` of a blob, both inclusive as in an HTTP Range header (`end` None: to the end).

        Awaiting this validates the key, the existence and the range (`BlobNotFound`,
        `RangeNotSatisfiable`) before any byte is produced, so a caller can still choose its status code.
        """

    @abstractmethod
    def local_file(self, key: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A local file holding the blob, for Tika and other readers of files, valid inside the block.

        The local store hands out its own file (no copy); a remote store downloads to a temp file and
        removes it when the block ends."""

    @abstractmethod
    async def stamp(self, key: str) -> int:
        """When the blob was stored or last claimed (`touch`), in nanoseconds since the epoch; `BlobNotFound`."""

    @abstractmethod
    async def touch(self, key: str) -> int:
        """Claim an existing blob: a fresh stamp keeps the orphan collector away; returns the new stamp."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def size(self, key: str) -> int: ...

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove a blob; True when it existed."""

    @abstractmethod
    def iter_keys(self) -> AsyncIterator[str]:
        """Every stored key, for orphan collection."""

    @abstractmethod
    async def cleanup_temp(self, older_than_seconds: float = 3600.0) -> int:
        """Remove temp files left by crashed uploads; returns how many were removed."""


class LocalBlobStore(BlobStore):
    def __init__(
        self,
        root: Path,
        *,
        read_chunk_size: int = 256 * 1024,
        write_buffer_size: int = 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.temp_dir = self.root / TEMP_DIR_NAME
        self.read_chunk_size = read_chunk_size
        self.write_buffer_size = write_buffer_size
        self.fsync = fsync

    def path_for(self, key: str) -> Path:
        validate_key(key)
        return self.root / key[0:2] / key[2:4] / key

    @contextlib.asynccontextmanager
    async def local_file(self, key: str) -> AsyncIterator[Path]:
        yield self.path_for(key)

    async def stamp(self, key: str) -> int:
        try:
            return (await anyio.Path(self.path_for(key)).stat()).st_mtime_ns
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def touch(self, key: str) -> int:
        path = self.path_for(key)
        try:
            await anyio.to_thread.run_sync(os.utime, path)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return await self.stamp(key)

    async def write_stream(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredBlob:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        fd, tmp_name = await anyio.to_thread.run_sync(self._make_temp)
        tmp_path = Path(tmp_name)
        hasher = hashlib.sha256()
        size = 0
        buf = bytearray()
        moved = False
        f = os.fdopen(fd, "wb", buffering=0)
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes, size)
                buf += chunk
                if len(buf) >= self.write_buffer_size:
                    data, buf = bytes(buf), bytearray()
                    await anyio.to_thread.run_sync(_write_and_hash, f, hasher, data)
            if buf:
                await anyio.to_thread.run_sync(_write_and_hash, f, hasher, bytes(buf))
                buf = bytearray()
            if self.fsync:
                await anyio.to_thread.run_sync(os.fsync, f.fileno())
            f.close()
            digest = hasher.hexdigest()
            created = await anyio.to_thread.run_sync(self._commit, tmp_path, digest, size)
            moved = True
            return StoredBlob(sha256=digest, size=size, key=digest, created=created)
        finally:
            # Also runs on BlobTooLarge, on an error raised by the source (client gone) and on cancellation.
            f.close()
            if not moved:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_unlink_quietly, tmp_path)

    def _make_temp(self) -> tuple[int, str]:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.temp_dir)

    def _commit(self, tmp_path: Path, digest: str, size: int) -> bool:
        final = self.path_for(digest)
        try:
            if final.stat().st_size == size:
                tmp_path.unlink()
                return False
        except FileNotFoundError:
            pass
        final.parent.mkdir(parents=True, exist_ok=True)
        # Same content under the same name: a concurrent upload of the same bytes may win the race harmlessly.
        os.replace(tmp_path, final)
        if self.fsync:
            _fsync_dir(final.parent)
        return True

    async def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        total = await self.size(key)
        last = check_range(start, end, total)
        return self._read(self.path_for(key), start, last - start + 1)

    async def _read(self, path: Path, start: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        async with await anyio.open_file(path, "rb") as f:
            await f.seek(start)
            remaining = length
            while remaining > 0:
                data = await f.read(min(self.read_chunk_size, remaining))
                if not data:
                    break  # the file shrank under us; never loop forever
                remaining -= len(data)
                yield data

    async def exists(self, key: str) -> bool:
        return await anyio.Path(self.path_for(key)).is_file()

    async def size(self, key: str) -> int:
        try:
            st = await anyio.Path(self.path_for(key)).stat()
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return st.st_size

    async def delete(self, key: str) -> bool:
        path = self.path_for(key)
        return await anyio.to_thread.run_sync(self._delete, path)

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        for parent in (path.parent, path.parent.parent):
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break
        return True

    async def iter_keys(self) -> AsyncIterator[str]:
        for level1 in await anyio.to_thread.run_sync(_subdirs, self.root):
            for level2 in await anyio.to_thread.run_sync(_subdirs, level1):
                names = await anyio.to_thread.run_sync(_file_names, level2)
                for name in names:
                    if _KEY_RE.fullmatch(name) and name[0:2] == level1.name and name[2:4] == level2.name:
                        yield name

    async def cleanup_temp(self, older_than_seconds: float = 3600.0) -> int:
        return await anyio.to_thread.run_sync(self._cleanup_temp, older_than_seconds)

    def _cleanup_temp(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            entries = list(os.scandir(self.temp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _write_and_hash(f: BinaryIO, hasher: hashlib._Hash, data: bytes) -> None:
    # hashlib releases the GIL for large buffers, so hashing here keeps the event loop free.
    hasher.update(data)
    view = memoryview(data)
    while view:
        written = f.write(view)
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(
            Path(e.path)
            for e in os.scandir(path)
            if e.is_dir(follow_symlinks=False) and len(e.name) == 2 and _is_hex(e.name)
        )
    except FileNotFoundError:
        return []


def _file_names(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return []


def _is_hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)


_STAMP = "kb-stamp"  # object metadata: nanoseconds of the last store or claim (S3 LastModified has seconds)


class S3BlobStore(BlobStore):
    """Blobs in an S3-compatible bucket (AWS S3, MinIO, ...), shared by every API host and worker.

    Blob ``<sha>`` is the object ``<prefix>blobs/<sha>``. The hash is only known at the end of the
    stream, so a file larger than one part is sent as a multipart upload to ``<prefix>tmp/<uuid>``,
    then copied server-side to its hash key and the temp object deleted; a smaller file is sent in one
    PUT straight to its hash key. Only one part (`part_size`) is held in memory. Any failure (too large,
    client gone, cancelled) aborts the multipart upload, so no object and no stored parts remain.
    """

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        create_bucket: bool = False,
        part_size: int = 8 * 1024 * 1024,
        read_chunk_size: int = 256 * 1024,
        temp_dir: Path | None = None,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts (except the last) must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.read_chunk_size = read_chunk_size
        self.temp_dir = temp_dir
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url or None,
            "region_name": region or None,
            "aws_access_key_id": access_key or None,
            "aws_secret_access_key": secret_key or None,
        }
        self._create_bucket = create_bucket
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = anyio.Lock()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    import aioboto3
                    from botocore.config import Config

                    stack = contextlib.AsyncExitStack()
                    config = Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"})
                    client = await stack.enter_async_context(
                        aioboto3.Session().client("s3", config=config, **self._client_args)
                    )
                    try:
                        if self._create_bucket:
                            await _ensure_bucket(client, self.bucket, self._client_args["region_name"])
                    except BaseException:
                        await stack.aclose()
                        raise
                    self._stack, self._client = stack, client
        return self._client

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def object_key(self, key: str) -> str:
        return f"{self.prefix}blobs/{validate_key(key)}"

    def _temp_prefix(self) -> str:
        return f"{self.prefix}tmp/"

    async def _head(self, key: str) -> dict[str, Any] | None:
        s3 = await self._s3()
        try:
            return await s3.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except s3.exceptions.ClientError as exc:
            if _is_missing(exc):
                return None
            raise

    async def write_stream(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredBlob:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        s3 = await self._s3()
        hasher = hashlib.sha256()
        size = 0
        buf = bytearray()
        temp_key = f"{self._temp_prefix()}{uuid.uuid4().hex}"
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        completed = False
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes, size)
                buf += chunk
                while len(buf) >= self.part_size:
                    with memoryview(buf) as view:
                        data = bytes(view[: self.part_size])
                    del buf[: self.part_size]
                    await anyio.to_thread.run_sync(hasher.update, data)
                    if upload_id is None:
                        started = await s3.create_multipart_upload(Bucket=self.bucket, Key=temp_key)
                        upload_id = started["UploadId"]
                    number = len(parts) + 1
                    sent = await s3.upload_part(
                        Bucket=self.bucket, Key=temp_key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            data = bytes(buf)
            buf = bytearray()
            await anyio.to_thread.run_sync(hasher.update, data)
            digest = hasher.hexdigest()
            final_key = self.object_key(digest)
            existing = await self._head(digest)
            if existing is not None and existing["ContentLength"] == size:
                created = False
            elif upload_id is None:
                await s3.put_object(Bucket=self.bucket, Key=final_key, Body=data, Metadata=_stamp_now())
                created = True
            else:
                if data:
                    number = len(parts) + 1
                    sent = await s3.upload_part(
                        Bucket=self.bucket, Key=temp_key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    parts.append({"PartNumber": number, "ETag": sent["ETag"]})
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=temp_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
                completed = True
                # Same content under the same key: a concurrent upload of the same bytes may win harmlessly.
                await s3.copy_object(
                    Bucket=self.bucket,
                    Key=final_key,
                    CopySource={"Bucket": self.bucket, "Key": temp_key},
                    Metadata=_stamp_now(),
                    MetadataDirective="REPLACE",
                )
                created = True
            return StoredBlob(sha256=digest, size=size, key=digest, created=created)
        finally:
            # Also runs on BlobTooLarge, on an error raised by the source (client gone) and on cancellation.
            if upload_id is not None:
                with anyio.CancelScope(shield=True):
                    await self._drop_temp(s3, temp_key, None if completed else upload_id)

    async def _drop_temp(self, s3: Any, temp_key: str, upload_id: str | None) -> None:
        try:
            if upload_id is not None:
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=temp_key, UploadId=upload_id)
            else:
                await s3.delete_object(Bucket=self.bucket, Key=temp_key)
        except Exception:  # cleanup_temp (the orphan collector) removes what is left
            log.warning("could not remove a temporary upload", extra={"key": temp_key}, exc_info=True)

    async def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        total = await self.size(key)
        last = check_range(start, end, total)
        return self._read(key, start, last)

    async def _read(self, key: str, start: int, last: int) -> AsyncIterator[bytes]:
        if last < start:
            return
        s3 = await self._s3()
        got = await s3.get_object(Bucket=self.bucket, Key=self.object_key(key), Range=f"bytes={start}-{last}")
        body = got["Body"]
        try:
            async for data in body.iter_chunks(self.read_chunk_size):
                yield data
        finally:
            body.close()

    @contextlib.asynccontextmanager
    async def local_file(self, key: str) -> AsyncIterator[Path]:
        chunks = await self.open_range(key)
        fd, name = await anyio.to_thread.run_sync(lambda: tempfile.mkstemp(prefix="blob-", dir=self.temp_dir))
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                async for data in chunks:
                    await anyio.to_thread.run_sync(f.write, data)
            yield path
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_unlink_quietly, path)

    async def stamp(self, key: str) -> int:
        head = await self._head(key)
        if head is None:
            raise BlobNotFound(key)
        return _stamp_of(head)

    async def touch(self, key: str) -> int:
        s3 = await self._s3()
        if await self._head(key) is None:
            raise BlobNotFound(key)
        metadata = _stamp_now()
        # A copy onto itself with new metadata: no bytes move, the object gets a fresh stamp.
        await s3.copy_object(
            Bucket=self.bucket,
            Key=self.object_key(key),
            CopySource={"Bucket": self.bucket, "Key": self.object_key(key)},
            Metadata=metadata,
            MetadataDirective="REPLACE",
        )
        return int(metadata[_STAMP])

    async def exists(self, key: str) -> bool:
        return await self._head(key) is not None

    async def size(self, key: str) -> int:
        head = await self._head(key)
        if head is None:
            raise BlobNotFound(key)
        return int(head["ContentLength"])

    async def delete(self, key: str) -> bool:
        if await self._head(key) is None:
            return False
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        return True

    async def _list(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj

    async def iter_keys(self) -> AsyncIterator[str]:
        prefix = f"{self.prefix}blobs/"
        async for obj in self._list(prefix):
            name = obj["Key"][len(prefix) :]
            if _KEY_RE.fullmatch(name):
                yield name

    async def cleanup_temp(self, older_than_seconds: float = 3600.0) -> int:
        """Temp objects and unfinished multipart uploads (their stored parts) of crashed uploads."""
        s3 = await self._s3()
        cutoff = time.time() - older_than_seconds
        removed = 0
        async for obj in self._list(self._temp_prefix()):
            if obj["LastModified"].timestamp() < cutoff:
                await s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
                removed += 1
        paginator = s3.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._temp_prefix()):
            for up in page.get("Uploads", []):
                if up["Initiated"].timestamp() < cutoff:
                    with contextlib.suppress(s3.exceptions.ClientError):  # finished meanwhile
                        await s3.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                        removed += 1
        return removed


def _stamp_now() -> dict[str, str]:
    return {_STAMP: str(time.time_ns())}


def _stamp_of(head: dict[str, Any]) -> int:
    raw = head.get("Metadata", {}).get(_STAMP)
    if raw is not None and raw.isdigit():
        return int(raw)
    return int(head["LastModified"].timestamp() * 1_000_000_000)  # written by something else


def _is_missing(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    return (
        error.get("Code") in {"404", "NoSuchKey", "NotFound"}
        or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
    )


async def _ensure_bucket(client: Any, bucket: str, region: str | None) -> None:
    try:
        await client.head_bucket(Bucket=bucket)
        return
    except client.exceptions.ClientError as exc:
        if not _is_missing(exc):
            raise
    args: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        await client.create_bucket(**args)


def build_blob_store(settings: Any) -> BlobStore:
    """`KB_BLOB_BACKEND`: ``local`` (a folder under the data dir) or ``s3`` (the `KB_S3_*` bucket)."""
    if settings.blob_backend == "s3":
        return S3BlobStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            prefix=settings.s3_prefix,
            create_bucket=settings.s3_create_bucket,
        )
    return LocalBlobStore(settings.data_dir / "blobs")
