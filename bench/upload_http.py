"""Upload throughput and memory through the real HTTP endpoint, in process.

    .venv/bin/python bench/upload_http.py [--mb 100] [--chunk-kb 64] [--mode both|http|asgi]

`http`: uvicorn on 127.0.0.1 (a real socket, HTTP/1.1 parsing, flow control) and an httpx client
streaming the multipart body; `asgi`: the same request through httpx.ASGITransport, no socket. Either
way it is the whole path: auth, permission and item checks, the streaming multipart parser, the blob
store (temp file, SHA-256, fsync, atomic rename), type detection and the rows of one transaction.

The body is generated on the fly, so the client holds no copy of the file. Memory is the process RSS
(client and server together), sampled every 5 ms during the upload, against the RSS just before it;
it must stay far below the size of the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from alembic import command
from alembic.config import Config

from app.core.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "benchBoundaryQ3k9Zx7LmP"
ADMIN, PASSWORD = "bench.admin", "Bench-Passw0rd-上传"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Body:
    """multipart/form-data with one file of `total` bytes, produced chunk by chunk; hashes as it goes."""

    def __init__(self, total: int, chunk: int, seed: int) -> None:
        self.total, self.chunk = total, chunk
        self.block = os.urandom(chunk)
        self.seed = seed
        self.head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="培训录像-{seed}.bin"\r\nContent-Type: video/mp4\r\n\r\n'
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.sha = hashlib.sha256()

    @property
    def length(self) -> int:
        return len(self.head) + self.total + len(self.tail)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        sent = 0
        counter = self.seed << 32
        while sent < self.total:
            n = min(self.chunk, self.total - sent)
            counter += 1
            data = (counter.to_bytes(8, "little") + self.block[8:n]) if n > 8 else self.block[:n]
            self.sha.update(data)
            sent += n
            yield data
        yield self.tail


class Sampler:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.005)

    def stop(self) -> None:
        self._stop.set()


async def one_upload(
    client: httpx.AsyncClient, headers: dict[str, str], item_id: int, total: int, chunk: int, seed: int
) -> dict[str, Any]:
    body = Body(total, chunk, seed)
    baseline = rss_bytes()
    sampler = Sampler()
    task = asyncio.create_task(sampler.run())
    started = time.perf_counter()
    r = await client.post(
        f"/api/v1/items/{item_id}/attachments",
        content=body.__aiter__(),
        headers={
            **headers,
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(body.length),
        },
    )
    elapsed = time.perf_counter() - started
    sampler.stop()
    await task
    if r.status_code != 201:
        raise SystemExit(f"upload failed: {r.status_code} {r.text[:500]}")
    att = r.json()["attachments"][0]
    assert att["size"] == total and att["sha256"] == body.sha.hexdigest(), "stored bytes differ from the sent ones"
    return {
        "seconds": round(elapsed, 3),
        "mb_per_s": round(total / (1024 * 1024) / elapsed, 1),
        "peak_rss_growth_mb": round((sampler.peak - baseline) / (1024 * 1024), 1),
    }


async def prepare(client: httpx.AsyncClient) -> tuple[dict[str, str], int]:
    r = await client.post(
        "/api/v1/auth/token", data={"grant_type": "password", "username": ADMIN, "password": PASSWORD}
    )
    r.raise_for_status()
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await client.post("/api/v1/items", headers=headers, json={"title": "上传基准测试"})
    r.raise_for_status()
    return headers, r.json()["id"]


async def run_asgi(app: Any, total: int, chunk: int) -> dict[str, Any]:
    from asgi_lifespan import LifespanManager

    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            headers, item_id = await prepare(client)
            await one_upload(client, headers, item_id, 4 * 1024 * 1024, chunk, seed=1)  # warm-up
            return await one_upload(client, headers, item_id, total, chunk, seed=2)


async def run_http(app: Any, total: int, chunk: int) -> dict[str, Any]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            headers, item_id = await prepare(client)
            await one_upload(client, headers, item_id, 4 * 1024 * 1024, chunk, seed=3)  # warm-up
            return await one_upload(client, headers, item_id, total, chunk, seed=4)
    finally:
        server.should_exit = True
        await serving


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--mode", choices=["both", "http", "asgi"], default="both")
    args = parser.parse_args()
    total = args.mb * 1024 * 1024
    chunk = args.chunk_kb * 1024

    with tempfile.TemporaryDirectory(prefix="kb-upload-bench-") as tmp:
        data = Path(tmp)
        url = f"sqlite+aiosqlite:///{data / 'kb.sqlite3'}"
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["url"] = url
        cfg.attributes["configure_logger"] = False
        await asyncio.to_thread(command.upgrade, cfg, "head")
        settings = Settings(
            _env_file=None,
            env="test",
            data_dir=data,
            database_url=url,
            worker_embedded=False,
            jwt_secret="bench-" + "x" * 40,
            bootstrap_admin_user=ADMIN,
            bootstrap_admin_password=PASSWORD,
            log_level="WARNING",
            max_upload_file_bytes=total + 1024,
            max_upload_request_bytes=total + 1024 * 1024,
        )
        modes = ["http", "asgi"] if args.mode == "both" else [args.mode]
        results: dict[str, Any] = {}
        for mode in modes:
            app = create_app(settings)
            runner = run_http if mode == "http" else run_asgi
            results[mode] = await runner(app, total, chunk)

    for mode, res in results.items():
        label = "uvicorn 127.0.0.1" if mode == "http" else "httpx ASGITransport"
        print(
            f"{label:22} {args.mb} MB in {res['seconds']:.2f} s = {res['mb_per_s']} MB/s, "
            f"peak RSS growth {res['peak_rss_growth_mb']} MB"
        )
    print(
        json.dumps(
            {
                "bench": "upload_http",
                "file_mb": args.mb,
                "chunk_kb": args.chunk_kb,
                **results,
                "maxrss_mb": round(maxrss_bytes() / (1024 * 1024), 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
