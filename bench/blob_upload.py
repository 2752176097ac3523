"""Throughput and memory of LocalBlobStore.write_stream for a large upload.

    .venv/bin/python bench/blob_upload.py [--mb 100] [--chunk-kb 64]

Memory is measured twice: the process high-water mark (ru_maxrss) before/after an untraced run, and
the peak of Python allocations (tracemalloc) during a second run. Both must stay far below the size
of the stream: the store hashes and writes in bounded buffers and never holds the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.attachments.storage import LocalBlobStore


async def source(total: int, chunk: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    counter = 0
    while sent < total:
        n = min(chunk, total - sent)
        counter += 1
        # vary the first bytes so each run's content (and hash) differs from the last
        yield counter.to_bytes(8, "little") + block[8:n] if n > 8 else block[:n]
        sent += n


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


async def one_run(root: Path, total: int, chunk: int, block: bytes, fsync: bool) -> tuple[float, int]:
    store = LocalBlobStore(root, fsync=fsync)
    started = time.perf_counter()
    blob = await store.write_stream(source(total, chunk, block), max_bytes=total)
    elapsed = time.perf_counter() - started
    assert blob.size == total
    await store.delete(blob.key)
    return elapsed, blob.size


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--chunk-kb", type=int, default=64)
    args = parser.parse_args()
    total = args.mb * 1024 * 1024
    chunk = args.chunk_kb * 1024
    block = os.urandom(chunk)

    with tempfile.TemporaryDirectory(prefix="kb-blob-bench-") as tmp:
        root = Path(tmp)
        await one_run(root, 4 * 1024 * 1024, chunk, block, fsync=False)  # warm up threads and imports

        rss_before = maxrss_bytes()
        t_fsync, _ = await one_run(root, total, chunk, block, fsync=True)
        rss_delta = maxrss_bytes() - rss_before

        t_nofsync, _ = await one_run(root, total, chunk, block, fsync=False)

        tracemalloc.start()
        await one_run(root, total, chunk, block, fsync=False)
        _, peak_alloc = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    mb = total / (1024 * 1024)
    result = {
        "bench": "blob_upload",
        "stream_mb": mb,
        "chunk_kb": args.chunk_kb,
        "mb_per_s_fsync": round(mb / t_fsync, 1),
        "mb_per_s_no_fsync": round(mb / t_nofsync, 1),
        "seconds_fsync": round(t_fsync, 3),
        "maxrss_delta_mb": round(rss_delta / (1024 * 1024), 2),
        "maxrss_mb": round(maxrss_bytes() / (1024 * 1024), 1),
        "tracemalloc_peak_mb": round(peak_alloc / (1024 * 1024), 2),
    }
    print(f"stream: {mb:.0f} MB in {args.chunk_kb} KB chunks")
    print(f"write_stream with fsync:    {result['mb_per_s_fsync']} MB/s ({t_fsync:.2f} s)")
    print(f"write_stream without fsync: {result['mb_per_s_no_fsync']} MB/s ({t_nofsync:.2f} s)")
    print(f"process max RSS growth:     {result['maxrss_delta_mb']} MB (max RSS {result['maxrss_mb']} MB)")
    print(f"peak Python allocations:    {result['tracemalloc_peak_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
