"""Throughput and memory of S3BlobStore.write_stream for a large upload, against a MOTO server.

    .venv/bin/python bench/blob_upload_s3.py [--mb 100] [--chunk-kb 64] [--part-mb 8]

The S3 server is moto (`python -m moto.server` in a child process on loopback), which keeps objects in
its own memory: the figures say what the client side costs (hashing, multipart parts, the server-side
copy to the hash key, a full ranged read back), not what AWS S3 or MinIO would do over a network. The
client's memory is measured as in bench/blob_upload.py: max RSS growth of this process during an
untraced run, and the tracemalloc peak of a second run. Neither may grow with the file size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.attachments.storage import S3BlobStore
from bench.blob_upload import source
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, moto_server


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


async def one_run(store: S3BlobStore, total: int, chunk: int, block: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    blob = await store.write_stream(source(total, chunk, block), max_bytes=total)
    upload = time.perf_counter() - started
    assert blob.size == total and blob.created
    started = time.perf_counter()
    got = 0
    async for data in await store.open_range(blob.key):
        got += len(data)
    download = time.perf_counter() - started
    assert got == total
    await store.delete(blob.key)
    return upload, download


async def run(endpoint: str, args: argparse.Namespace) -> dict[str, object]:
    total = args.mb * 1024 * 1024
    chunk = args.chunk_kb * 1024
    block = os.urandom(chunk)
    store = S3BlobStore(
        bucket="kb-bench",
        endpoint_url=endpoint,
        region=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        create_bucket=True,
        part_size=args.part_mb * 1024 * 1024,
    )
    try:
        await one_run(store, 10 * 1024 * 1024, chunk, block)  # warm up the client, threads and imports
        rss_before = maxrss_bytes()
        t_up, t_down = await one_run(store, total, chunk, block)
        rss_delta = maxrss_bytes() - rss_before
        tracemalloc.start()
        await one_run(store, total, chunk, block)
        _, peak_alloc = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        await store.aclose()
    mb = total / (1024 * 1024)
    return {
        "bench": "blob_upload_s3",
        "server": "moto (python -m moto.server, loopback, in-memory) - not AWS S3, not MinIO",
        "stream_mb": mb,
        "chunk_kb": args.chunk_kb,
        "part_mb": args.part_mb,
        "upload_mb_per_s": round(mb / t_up, 1),
        "upload_seconds": round(t_up, 3),
        "download_mb_per_s": round(mb / t_down, 1),
        "maxrss_delta_mb": round(rss_delta / (1024 * 1024), 2),
        "maxrss_mb": round(maxrss_bytes() / (1024 * 1024), 1),
        "tracemalloc_peak_mb": round(peak_alloc / (1024 * 1024), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--part-mb", type=int, default=8)
    args = parser.parse_args()
    with moto_server() as endpoint:
        result = asyncio.run(run(endpoint, args))
    print(f"S3 server: {result['server']}")
    print(f"stream: {result['stream_mb']:.0f} MB in {args.chunk_kb} KB chunks, {args.part_mb} MB parts")
    print(
        f"write_stream (multipart + copy to hash key): {result['upload_mb_per_s']} MB/s ({result['upload_seconds']} s)"
    )
    print(f"open_range, whole object:   {result['download_mb_per_s']} MB/s")
    print(f"process max RSS growth:     {result['maxrss_delta_mb']} MB (max RSS {result['maxrss_mb']} MB)")
    print(f"peak Python allocations:    {result['tracemalloc_peak_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
