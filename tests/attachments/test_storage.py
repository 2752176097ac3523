from __future__ import annotations

import asyncio
import hashlib
import os
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.attachments.storage import (
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    LocalBlobStore,
    RangeNotSatisfiable,
    S3BlobStore,
    validate_key,
)
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY

MIB = 1024 * 1024

CONTENT = ("宽带无法上网时，请先重启光猫，再检查指示灯。\n" * 5000).encode()


async def stream(data: bytes, chunk: int = 7919) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def s3_store(endpoint: str, **kw: object) -> S3BlobStore:
    """A store under its own prefix in the test bucket, so tests never see each other's objects."""
    return S3BlobStore(
        bucket="kb-test-blobs",
        endpoint_url=endpoint,
        region=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        prefix=f"t-{uuid.uuid4().hex[:12]}/",
        create_bucket=True,
        part_size=5 * MIB,
        **kw,
    )  # type: ignore[arg-type]


async def leftovers(store: BlobStore) -> list[str]:
    """What a failed upload could leave behind: temp files, or temp objects and unfinished multipart uploads."""
    if isinstance(store, LocalBlobStore):
        return [p.name for p in store.temp_dir.iterdir()] if store.temp_dir.exists() else []
    assert isinstance(store, S3BlobStore)
    s3 = await store._s3()
    temp = store._temp_prefix()
    objects = (await s3.list_objects_v2(Bucket=store.bucket, Prefix=temp)).get("Contents", [])
    uploads = (await s3.list_multipart_uploads(Bucket=store.bucket, Prefix=temp)).get("Uploads", [])
    return [o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads]


async def blob_count(store: BlobStore) -> int:
    return len([k async for k in store.iter_keys()])


async def plant(store: BlobStore, key: str, data: bytes) -> None:
    """Put bytes under a blob's name behind the store's back (a damaged or foreign object)."""
    if isinstance(store, LocalBlobStore):
        path = store.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert isinstance(store, S3BlobStore)
    await (await store._s3()).put_object(Bucket=store.bucket, Key=store.object_key(key), Body=data)


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs", write_buffer_size=64 * 1024)
        return
    s3 = s3_store(request.getfixturevalue("s3_endpoint"), temp_dir=tmp_path)
    yield s3
    await s3.aclose()


@pytest.mark.parametrize("size", [len(CONTENT), 12 * MIB + 3])  # one PUT; three multipart parts on S3
async def test_write_is_content_addressed_and_readable(store: BlobStore, size: int) -> None:
    data = (CONTENT * (size // len(CONTENT) + 1))[:size]
    blob = await store.write_stream(stream(data, 64 * 1024), max_bytes=size)
    digest = hashlib.sha256(data).hexdigest()
    assert (blob.sha256, blob.key, blob.size, blob.created) == (digest, digest, size, True)
    if isinstance(store, LocalBlobStore):
        path = store.path_for(digest)
        assert path == store.root / digest[:2] / digest[2:4] / digest
    else:
        assert isinstance(store, S3BlobStore)
        assert store.object_key(digest) == f"{store.prefix}blobs/{digest}"
    async with store.local_file(digest) as path:
        assert path.read_bytes() == data
    assert await read_all(await store.open_range(digest)) == data
    assert await store.exists(digest)
    assert await store.size(digest) == size
    assert [k async for k in store.iter_keys()] == [digest]
    assert await leftovers(store) == []


async def test_a_downloaded_copy_is_removed_after_use(store: BlobStore) -> None:
    blob = await store.write_stream(stream(CONTENT), max_bytes=10**9)
    async with store.local_file(blob.key) as path:
        assert path.read_bytes() == CONTENT
    assert path.exists() is isinstance(store, LocalBlobStore)  # the local store's own file; S3's temp copy is gone
    if isinstance(store, S3BlobStore):  # (the local store hands out the path; its reader finds no file)
        with pytest.raises(BlobNotFound):
            async with store.local_file(hashlib.sha256(b"never stored").hexdigest()):
                pass


async def test_touch_gives_a_fresh_stamp(store: BlobStore) -> None:
    blob = await store.write_stream(stream(CONTENT), max_bytes=10**9)
    before = await store.stamp(blob.key)
    assert abs(before - time.time_ns()) < 60 * 10**9
    await asyncio.sleep(0.01)
    after = await store.touch(blob.key)
    assert after > before and await store.stamp(blob.key) == after
    assert await read_all(await store.open_range(blob.key)) == CONTENT  # the bytes are untouched
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound):
        await store.stamp(missing)
    with pytest.raises(BlobNotFound):
        await store.touch(missing)


@pytest.mark.parametrize("size", [len(CONTENT), 6 * MIB])
async def test_same_content_is_stored_once(store: BlobStore, size: int) -> None:
    data = (CONTENT * (size // len(CONTENT) + 1))[:size]
    first = await store.write_stream(stream(data, 64 * 1000), max_bytes=10**9)
    stamp = await store.stamp(first.key)
    second = await store.write_stream(stream(data, 64 * 1024), max_bytes=10**9)
    assert second.key == first.key
    assert (first.created, second.created) == (True, False)
    assert await blob_count(store) == 1
    assert await store.stamp(first.key) == stamp  # the existing blob was kept, not rewritten
    assert await leftovers(store) == []


async def test_a_damaged_existing_blob_is_replaced(store: BlobStore) -> None:
    digest = hashlib.sha256(CONTENT).hexdigest()
    await plant(store, digest, CONTENT[:100])  # e.g. left by a crash of an older, non-atomic writer
    blob = await store.write_stream(stream(CONTENT), max_bytes=10**9)
    assert blob.created is True
    assert await read_all(await store.open_range(digest)) == CONTENT


async def test_too_large_raises_mid_stream_and_leaves_nothing(store: BlobStore) -> None:
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
    assert await leftovers(store) == []
    assert await blob_count(store) == 0


async def test_too_large_after_parts_were_sent_aborts_the_upload(store: BlobStore) -> None:
    consumed = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(1000):
            consumed += 1
            yield b"x" * MIB

    with pytest.raises(BlobTooLarge):
        await store.write_stream(counting(), max_bytes=11 * MIB)  # two 5 MiB parts are on S3 by then
    assert consumed == 12
    assert await leftovers(store) == []  # the multipart upload was aborted: no stored parts remain
    assert await blob_count(store) == 0


async def test_exact_limit_is_allowed(store: BlobStore) -> None:
    blob = await store.write_stream(stream(b"a" * 4096), max_bytes=4096)
    assert blob.size == 4096


async def test_client_disconnect_in_source_leaves_no_temp_file(store: BlobStore) -> None:
    async def disconnecting() -> AsyncIterator[bytes]:
        yield b"a" * (3 * MIB)  # more than the write buffer and one S3 part: data is stored in temp
        yield b"b" * (3 * MIB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.write_stream(disconnecting(), max_bytes=10**9)
    assert await leftovers(store) == []
    assert await blob_count(store) == 0


async def test_cancelled_upload_leaves_no_temp_file(store: BlobStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (6 * MIB)
        yield b"b"  # the first part is sent before this is asked for
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.write_stream(slow(), max_bytes=10**9))
    await started.wait()
    assert len(await leftovers(store)) == 1  # the temp file, or the multipart upload in progress
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leftovers(store) == []


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
async def test_keys_that_are_not_sha256_hex_are_refused(store: BlobStore, key: str) -> None:
    if isinstance(store, LocalBlobStore):
        with pytest.raises(ValueError):
            store.path_for(key)
    with pytest.raises(ValueError):
        await store.stamp(key)
    with pytest.raises(ValueError):
        await store.touch(key)
    with pytest.raises(ValueError):
        async with store.local_file(key):
            pass
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


async def test_range_reads(store: BlobStore) -> None:
    store.read_chunk_size = 1000  # type: ignore[attr-defined]
    data = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
    blob = await store.write_stream(stream(data), max_bytes=10**6)
    assert await read_all(await store.open_range(blob.key)) == data
    assert await read_all(await store.open_range(blob.key, 0, 0)) == data[:1]
    assert await read_all(await store.open_range(blob.key, 100, 4999)) == data[100:5000]
    assert await read_all(await store.open_range(blob.key, 10000)) == data[10000:]
    assert await read_all(await store.open_range(blob.key, 10239, 10239)) == data[-1:]
    chunks = [c async for c in await store.open_range(blob.key, 0, 2999)]
    assert sum(map(len, chunks)) == 3000 and max(map(len, chunks)) <= 1000  # streamed in bounded chunks


@pytest.mark.parametrize(("start", "end"), [(10240, None), (-1, None), (0, 10240), (500, 499)])
async def test_unsatisfiable_ranges(store: BlobStore, start: int, end: int | None) -> None:
    blob = await store.write_stream(stream(bytes(10240)), max_bytes=10**6)
    with pytest.raises(RangeNotSatisfiable):
        await store.open_range(blob.key, start, end)


async def test_missing_blob(store: BlobStore) -> None:
    key = hashlib.sha256(b"never stored").hexdigest()
    assert not await store.exists(key)
    with pytest.raises(BlobNotFound):
        await store.open_range(key)
    with pytest.raises(BlobNotFound):
        await store.size(key)
    assert await store.delete(key) is False


async def test_empty_blob(store: BlobStore) -> None:
    blob = await store.write_stream(stream(b""), max_bytes=10)
    assert blob.key == hashlib.sha256(b"").hexdigest()
    assert await read_all(await store.open_range(blob.key)) == b""


async def test_iter_keys_and_delete(store: BlobStore) -> None:
    keys = set()
    for i in range(5):
        keys.add((await store.write_stream(stream(f"附件 {i}".encode()), max_bytes=100)).key)
    # junk that must never be reported as a blob
    if isinstance(store, LocalBlobStore):
        (store.root / "ab").mkdir(exist_ok=True)
        (store.root / "ab" / "README").write_text("x")
        (store.root / "zz" / "yy").mkdir(parents=True)
        (store.root / "zz" / "yy" / ("f" * 64)).write_text("misplaced")
        store.temp_dir.mkdir(exist_ok=True)
        (store.temp_dir / "upload-crashed").write_bytes(b"half")
    else:
        assert isinstance(store, S3BlobStore)
        s3 = await store._s3()
        for junk in ("blobs/README", f"blobs/{'F' * 64}", f"tmp/{'f' * 64}", f"{'f' * 64}"):
            await s3.put_object(Bucket=store.bucket, Key=store.prefix + junk, Body=b"x")
        other = s3_store(store._client_args["endpoint_url"])
        await plant(other, "e" * 64, b"another prefix")
        await other.aclose()
    assert {k async for k in store.iter_keys()} == keys
    victim = sorted(keys)[0]
    assert await store.delete(victim) is True
    assert not await store.exists(victim)
    assert await store.delete(victim) is False
    assert {k async for k in store.iter_keys()} == keys - {victim}


async def test_cleanup_removes_only_stale_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
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


async def test_s3_cleanup_removes_temp_objects_and_unfinished_uploads_of_crashed_processes(s3_endpoint: str) -> None:
    store = s3_store(s3_endpoint)
    s3 = await store._s3()
    temp = store._temp_prefix()
    await s3.put_object(Bucket=store.bucket, Key=f"{temp}crashed-after-complete", Body=b"half")
    await s3.create_multipart_upload(Bucket=store.bucket, Key=f"{temp}crashed-mid-upload")
    blob = await store.write_stream(stream(CONTENT), max_bytes=10**9)
    assert len(await leftovers(store)) == 2
    # moto reports every multipart upload as initiated on 2010-11-10, so only the temp object shows that
    # what is younger than the grace period (an upload in flight) is kept.
    assert await store.cleanup_temp(older_than_seconds=3600) == 1
    assert await leftovers(store) == [f"{temp}crashed-after-complete"]
    assert await store.cleanup_temp(older_than_seconds=-60) == 1  # (S3 times cannot be set back; move the cutoff)
    assert await leftovers(store) == []
    assert [k async for k in store.iter_keys()] == [blob.key]  # blobs are never temp files
    await store.aclose()


async def test_s3_memory_stays_bounded_while_streaming(s3_endpoint: str) -> None:
    store = s3_store(s3_endpoint)
    total = 32 * MIB
    block = os.urandom(64 * 1024)

    async def big() -> AsyncIterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    await store._s3()
    tracemalloc.start()
    try:
        blob = await store.write_stream(big(), max_bytes=total)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await store.aclose()
    assert blob.size == total
    assert peak < 4 * store.part_size, f"peak Python allocation {peak} bytes for a {total} byte stream"
