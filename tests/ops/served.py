"""A real `python -m app serve` for tests: started on a free port, waited for, killed or stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from app.core.config import Settings


def api_processes(parent: int) -> list[int]:
    """The API processes `serve` started (multiprocessing spawn children)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(settings: Settings, data: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a `serve` on the test's database, with its own data folder."""
    return {
        **os.environ,
        "KB_ENV": "test",
        "KB_DATABASE_URL": settings.database_url,
        "KB_DATA_DIR": str(data),
        "KB_JWT_SECRET": settings.jwt_secret,
        "KB_PORT": str(port),
        "KB_WORKER_POLL_SECONDS": "0.2",
        "KB_LOG_LEVEL": "WARNING",
        "KB_EMBEDDER": "off",  # 1.7 s of model loading per API process; no test here searches by meaning
        **extra,
    }


async def wait_ready(base: str, server: asyncio.subprocess.Process, seconds: float = 90, path: str = "/readyz") -> None:
    """`path` answers 200 (`/healthz` for processes that run no worker: readyz wants one)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=5) as c:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await c.get(path)).status_code == 200:
                    return
            assert server.returncode is None, "the server exited"
            assert time.monotonic() < deadline, f"not ready within {seconds} s"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def served(env: dict[str, str], cwd: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app serve` in its own process group (so a SIGKILL can take every process of
    it at once), ready when entered; stopped with SIGTERM on exit unless already killed."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "serve", cwd=cwd, env=env, start_new_session=True
    )
    try:
        await wait_ready(f"http://127.0.0.1:{env['KB_PORT']}", server)
        yield server
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 30)
            except TimeoutError:
                kill_all(server)
                await server.wait()


def kill_all(server: asyncio.subprocess.Process) -> None:
    """SIGKILL to the supervisor and every API process: no shutdown code runs anywhere."""
    os.killpg(server.pid, signal.SIGKILL)
