"""Content-addressed blob storage for attachments.

A blob's key is the SHA-256 of its bytes (64 lowercase hex characters), so identical uploads are
stored once. `LocalBlobStore` keeps blob ``<sha>`` at ``root/ab/cd/<sha>`` and streams uploads into
``root/.tmp`` first: the final path only ever appears through an atomic rename of a complete,
fsync'ed file, so a crash or a client that disconnects mid-upload never leaves a half blob behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

_KEY_RE = re.compile(r"[0-9a-f]{64}")
TEMP_DIR_NAME = ".tmp"
_TEMP_PREFIX = "upload-"


def validate_key(key: str) -> str:
    """A key is exactly 64 lowercase hex characters; anything else (paths, dots, NULs) is refused."""
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise ValueError("blob key must be 64 lowercase hexadecimal characters")
    return key


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
    def path_for(self, key: str) -> Path:
        """A local file path for the blob (for Tika and other local readers)."""

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
        if start < 0 or (end is not None and (end < start or end >= total)) or (start >= total and total > 0):
            raise RangeNotSatisfiable(start, end, total)
        last = total - 1 if end is None else end
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
