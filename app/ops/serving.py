"""`serve` with several API processes, each with its own listening socket (SO_REUSEPORT).

Uvicorn's own `--workers` shares one socket: whichever process wakes first accepts every
waiting connection (asyncio accepts up to 100 per wake-up), so 16 connections opened together
(clients starting, a proxy reconnecting after a restart) measured 781 to 24 CPU ticks between
two processes. With a socket per process the kernel hashes each new connection to one of them.

The parent only supervises: it starts the processes, starts a new one when one dies, and on
SIGTERM or SIGINT passes the signal on and waits for their graceful shutdown.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("app.serve")
RESTART_PAUSE_SECONDS = 1.0


def listening_socket(host: str, port: int, share: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _serve_one(host: str, port: int) -> None:
    import uvicorn

    config = uvicorn.Config("app.main:app_factory", factory=True, host=host, port=port, log_config=None)
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def serve_processes(host: str, port: int, workers: int) -> None:
    # Fail here, once, when the port is taken, also by another `serve` still running: its
    # sockets share the port only with sockets that ask to share it, and this probe does not.
    listening_socket(host, port, share=False).close()
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        process = ctx.Process(target=_serve_one, args=(host, port), name="kb-api")
        process.start()
        return process

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes its requests and runs the shutdown

    processes = [start() for _ in range(workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                log.error("API process %s exited with %s; starting another", process.pid, process.exitcode)
                time.sleep(RESTART_PAUSE_SECONDS)
                processes[i] = start()
    for process in processes:
        process.join()
