"""`serve` with several processes: the port probe, and the balancing of keep-alive connections.

The processes themselves are started for real in tests/search/test_search_api.py (KB_WORKERS=2)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import PlainTextResponse

from app.ops import serving
from app.ops.serving import ConnectionBalancer, listening_socket, serve_processes

OK = PlainTextResponse("已受理")


async def _request(app: ConnectionBalancer, method: str = "GET") -> list[tuple[bytes, bytes]]:
    """One request through the balancer; the response headers."""
    scope: dict[str, Any] = {"type": "http", "method": method, "path": "/api/v1/search", "headers": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200 and sent[1]["body"] == "已受理".encode()
    return sent[0]["headers"]


def _closes(headers: list[tuple[bytes, bytes]]) -> bool:
    return (b"connection", b"close") in headers


def test_a_port_held_by_another_serve_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    running = listening_socket("127.0.0.1", 0)  # what an earlier `serve` process holds (shared socket)
    running.listen()
    port = running.getsockname()[1]
    try:
        with pytest.raises(OSError):
            serve_processes("127.0.0.1", port, 2, tmp_path / "metrics")
        assert not (tmp_path / "metrics").exists()  # refused before anything was touched
        # A process of the same `serve` may still share it: that is how the processes divide the work.
        sibling = listening_socket("127.0.0.1", port)
        sibling.close()
    finally:
        running.close()


def test_a_free_port_is_probed_and_released() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listening_socket("127.0.0.1", port, share=False).close()
    again = listening_socket("127.0.0.1", port, share=False)  # nothing kept it
    again.close()


async def test_a_process_holding_more_than_its_share_closes_one_connection_per_interval(monkeypatch) -> None:
    counts = [0, 4]  # the other process holds 4 connections
    balancer = ConnectionBalancer(OK, counts, 0, lambda: 12)  # this one 12: share is 8
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    assert _closes(await _request(balancer))
    assert counts == [12, 4]  # this process's slot is refreshed for the others
    assert not _closes(await _request(balancer))  # one at a time: the counts must catch up first
    now[0] += serving.REBALANCE_INTERVAL_SECONDS + 0.001
    assert _closes(await _request(balancer))
    assert not _closes(await _request(balancer, "POST"))  # only idempotent requests end a connection
    now[0] += serving.REBALANCE_INTERVAL_SECONDS + 0.001
    assert _closes(await _request(balancer, "HEAD"))


@pytest.mark.parametrize(("mine", "other", "closes"), [(8, 8, False), (9, 7, True), (5, 11, False), (1, 0, False)])
async def test_connections_close_only_above_the_even_share(mine: int, other: int, closes: bool) -> None:
    balancer = ConnectionBalancer(OK, [0, other], 0, lambda: mine)
    assert _closes(await _request(balancer)) is closes


async def test_lifespan_and_other_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    balancer = ConnectionBalancer(app, [0, 0], 0, lambda: 99)
    await balancer({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await balancer({"type": "websocket", "method": "GET"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]
