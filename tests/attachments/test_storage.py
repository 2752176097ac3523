from __future__ import annotations

import asyncio
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.attachments.storage import (
    BlobNotFound,
    BlobTooLarge,
    LocalBlobStore,
    RangeNotSatisfiable,
    validate_key,
)

CONTENT = ("宽带无法上网时，请先重启光猫，再检查指示灯。\n" * 5000).encode()


async def stream(data: bytes, chunk: int = 7919) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def temp_files(store: LocalBlobStore) -> list[Path]:
    return list(store.temp_dir.iterdir()) if store.temp_dir.exists() else []


def blob_files(store: LocalBlobStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file() and store.temp_dir not in p.parents]


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", write_buffer_size=64 * 1024)


async def test_write_is_content_addressed_and_readable(store: LocalBlobStore) -> None:
    blob = await store.write_stream(stream(CONTENT), max_bytes=len(CONTENT))
    digest = hashlib.sha256(CONTENT).hexdigest()
    assert (blob.sha256, blob.key, blob.size, blob.created) == (digest, digest, len(CONTENT), True)
    path = store.path_for(digest)
    assert path == store.root / digest[:2] / digest[2:4] / digest
    assert path.read_bytes() == CONTENT
    assert await store.exists(digest)
    assert await store.size(digest) == len(CONTENT)
    assert temp_files(store) == []


async def test_same_content_is_stored_once(store: LocalBlobStore) -> None:
    first = await store.write_stream(stream(CONTENT, 1000), max_bytes=10**9)
    mtime = store.path_for(first.key).stat().st_mtime_ns
    second = await store.write_stream(stream(CONTENT, 4096), max_bytes=10**9)
    assert second.key == first.key
    assert (first.created, second.created) == (True, False)
    assert len(blob_files(store)) == 1
    assert store.path_for(first.key).stat().st_mtime_ns == mtime  # the existing file was kept
    assert temp_files(store) == []


async def test_a_damaged_existing_blob_is_replaced(store: LocalBlobStore) -> None:
    digest = hashlib.sha256(CONTENT).hexdigest()
    path = store.path_for(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(CONTENT[:100])  # e.g. left by a crash of an older, non-atomic writer
    blob = await store.write_stream(stream(CONTENT), max_bytes=10**9)
    assert blob.created is True
    assert path.read_bytes() == CONTENT


async def test_too_large_raises_mid_stream_and_leaves_nothing(store: LocalBlobStore) -> None:
    consumed = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(1000):
            consumed += 1
            yield b"x" * 1024

    with pytest.raises(BlobTooLarge) as info:
        await store.write_stream(counting(), max_bytes=10 * 1024)
    assert info.value.limit == 10 * 1024
    assert consumed == 11  # stopped at the first chunk past the limit, not after reading everything
    assert temp_files(store) == []
    assert blob_files(store) == []


async def test_exact_limit_is_allowed(store: LocalBlobStore) -> None:
    blob = await store.write_stream(stream(b"a" * 4096), max_bytes=4096)
    assert blob.size == 4096


async def test_client_disconnect_in_source_leaves_no_temp_file(store: LocalBlobStore) -> None:
    async def disconnecting() -> AsyncIterator[bytes]:
        yield b"a" * 300_000  # more than the write buffer: a temp file with data exists
        yield b"b" * 300_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.write_stream(disconnecting(), max_bytes=10**9)
    assert temp_files(store) == []
    assert blob_files(store) == []


async def test_cancelled_upload_leaves_no_temp_file(store: LocalBlobStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 200_000
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.write_stream(slow(), max_bytes=10**9))
    await started.wait()
    assert len(temp_files(store)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert temp_files(store) == []


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "../" + "a" * 61,
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "g" * 64,
        "ab/cd/" + "a" * 58,
        "a" * 63 + "\x00",
        "",
        "/" + "a" * 63,
        "..",
    ],
)
async def test_keys_that_are_not_sha256_hex_are_refused(store: LocalBlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.path_for(key)
    with pytest.raises(ValueError):
        await store.exists(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        await store.open_range(key)
    with pytest.raises(ValueError):
        await store.size(key)


def test_validate_key_accepts_a_real_digest() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert validate_key(digest) == digest


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in it])


async def test_range_reads(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, read_chunk_size=1000)
    data = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
    blob = await store.write_stream(stream(data), max_bytes=10**6)
    assert await read_all(await store.open_range(blob.key)) == data
    assert await read_all(await store.open_range(blob.key, 0, 0)) == data[:1]
    assert await read_all(await store.open_range(blob.key, 100, 4999)) == data[100:5000]
    assert await read_all(await store.open_range(blob.key, 10000)) == data[10000:]
    assert await read_all(await store.open_range(blob.key, 10239, 10239)) == data[-1:]
    chunks = [c async for c in await store.open_range(blob.key, 0, 2999)]
    assert [len(c) for c in chunks] == [1000, 1000, 1000]  # streamed in bounded chunks


@pytest.mark.parametrize(("start", "end"), [(10240, None), (-1, None), (0, 10240), (500, 499)])
async def test_unsatisfiable_ranges(tmp_path: Path, start: int, end: int | None) -> None:
    store = LocalBlobStore(tmp_path)
    blob = await store.write_stream(stream(bytes(10240)), max_bytes=10**6)
    with pytest.raises(RangeNotSatisfiable):
        await store.open_range(blob.key, start, end)


async def test_missing_blob(store: LocalBlobStore) -> None:
    key = hashlib.sha256(b"never stored").hexdigest()
    assert not await store.exists(key)
    with pytest.raises(BlobNotFound):
        await store.open_range(key)
    with pytest.raises(BlobNotFound):
        await store.size(key)
    assert await store.delete(key) is False


async def test_empty_blob(store: LocalBlobStore) -> None:
    blob = await store.write_stream(stream(b""), max_bytes=10)
    assert blob.key == hashlib.sha256(b"").hexdigest()
    assert await read_all(await store.open_range(blob.key)) == b""


async def test_iter_keys_and_delete(store: LocalBlobStore) -> None:
    keys = set()
    for i in range(5):
        keys.add((await store.write_stream(stream(f"附件 {i}".encode()), max_bytes=100)).key)
    # junk that must never be reported as a blob
    (store.root / "ab").mkdir(exist_ok=True)
    (store.root / "ab" / "README").write_text("x")
    (store.root / "zz" / "yy").mkdir(parents=True)
    (store.root / "zz" / "yy" / ("f" * 64)).write_text("misplaced")
    store.temp_dir.mkdir(exist_ok=True)
    (store.temp_dir / "upload-crashed").write_bytes(b"half")
    assert {k async for k in store.iter_keys()} == keys
    victim = sorted(keys)[0]
    assert await store.delete(victim) is True
    assert not store.path_for(victim).exists()
    assert {k async for k in store.iter_keys()} == keys - {victim}


async def test_cleanup_removes_only_stale_temp_files(store: LocalBlobStore) -> None:
    store.temp_dir.mkdir(parents=True)
    stale = store.temp_dir / "upload-stale"
    fresh = store.temp_dir / "upload-fresh"
    stale.write_bytes(b"old half upload")
    fresh.write_bytes(b"upload in progress")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert await store.cleanup_temp(older_than_seconds=3600) == 1
    assert not stale.exists()
    assert fresh.exists()


async def test_memory_stays_bounded_while_streaming(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    total = 32 * 1024 * 1024
    block = os.urandom(64 * 1024)

    async def big() -> AsyncIterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    tracemalloc.start()
    try:
        blob = await store.write_stream(big(), max_bytes=total)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blob.size == total
    assert peak < 4 * 1024 * 1024, f"peak Python allocation {peak} bytes for a {total} byte stream"
