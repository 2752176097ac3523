"""`serve` with several API processes, each with its own listening socket (SO_REUSEPORT).

Uvicorn's own `--workers` shares one socket: whichever process wakes first accepts every
waiting connection (asyncio accepts up to 100 per wake-up), so 16 connections opened together
(clients starting, a proxy reconnecting after a restart) measured 781 to 24 CPU ticks between
two processes. With a socket per process the kernel hashes each new connection to one of them.

The kernel's hash spreads many connections evenly, but few long-lived ones (a CTI gateway or
a proxy keeping a small upstream pool, a load test's 16 clients) can land 12 to 4, and then one
process queues while the other idles. `ConnectionBalancer` evens that out.

The parent only supervises: it starts the processes, starts a new one when one dies, and on
SIGTERM or SIGINT passes the signal on and waits for their graceful shutdown.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, MutableSequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app.serve")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_PAUSE_SECONDS = 1.0
# A process holding more than its share of connections closes at most one per this interval,
# so that it does not close many at once and overshoot before the counts catch up.
REBALANCE_INTERVAL_SECONDS = 0.05


def listening_socket(host: str, port: int, share: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class ConnectionBalancer:
    """ASGI wrapper keeping keep-alive connections spread evenly over the API processes.

    `counts` is shared by all processes (one slot each); every request refreshes this process's
    slot with its open connections. A process holding more than its share (the total divided by
    the processes, rounded up) answers a GET with `Connection: close`, at most one per
    REBALANCE_INTERVAL_SECONDS: the client opens a new connection, which the kernel hashes
    again. Measured with bench/search_http.py at 200 searches/s over 16 connections split 12 to
    4: p99 134 ms; split evenly: 48-51 ms.
    """

    def __init__(self, app: ASGIApp, counts: MutableSequence[int], index: int, open_connections: Callable[[], int]):
        self.app, self.counts, self.index, self.open_connections = app, counts, index, open_connections
        self._last_close = 0.0

    def _should_close(self) -> bool:
        mine = self.open_connections()
        self.counts[self.index] = mine
        share = math.ceil(sum(self.counts) / len(self.counts))
        now = time.monotonic()
        if mine <= share or now - self._last_close < REBALANCE_INTERVAL_SECONDS:
            return False
        self._last_close = now
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not self._should_close():
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def _serve_one(host: str, port: int, counts: MutableSequence[int], index: int) -> None:
    import uvicorn

    from app.main import app_factory

    server: uvicorn.Server | None = None

    def open_connections() -> int:
        return len(server.server_state.connections) if server is not None else 0

    app = ConnectionBalancer(app_factory(), counts, index, open_connections)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None))
    server.run(sockets=[listening_socket(host, port)])


def serve_processes(host: str, port: int, workers: int, metrics_dir: Path) -> None:
    # Fail here, once, when the port is taken, also by another `serve` still running: its
    # sockets share the port only with sockets that ask to share it, and this probe does not.
    listening_socket(host, port, share=False).close()
    # prometheus_client's multiprocess mode: every process writes its metrics to files here and
    # /metrics, whichever process answers, adds them up (app/ops/router.py). Emptied at each start.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)  # the spawned processes inherit it
    ctx = multiprocessing.get_context("spawn")
    counts = ctx.Array("i", workers, lock=False)  # open connections per process (ConnectionBalancer)
    stopping = False

    def start(index: int) -> BaseProcess:
        counts[index] = 0
        process = ctx.Process(target=_serve_one, args=(host, port, counts, index), name="kb-api")
        process.start()
        return process

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes its requests and runs the shutdown

    processes = [start(i) for i in range(workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                log.error("API process %s exited with %s; starting another", process.pid, process.exitcode)
                if process.pid is not None:
                    multiprocess.mark_process_dead(process.pid, str(metrics_dir))
                time.sleep(RESTART_PAUSE_SECONDS)
                processes[i] = start(i)
    for process in processes:
        process.join()
