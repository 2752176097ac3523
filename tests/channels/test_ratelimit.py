"""Rate limits of the channel read API: per client or user, per address for anonymous callers,
429 problem + Retry-After, and one count across the API processes of a machine."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.channels.ratelimit import parse_limit
from app.core.config import Settings
from tests.channels.ratelimit_app import with_probe
from tests.conftest import assert_problem, skip_outside_ci
from tests.ops.served import free_port, serve_env, wait_ready

ROOT = Path(__file__).resolve().parents[2]
PROBE = "/api/v1/channels/web/probe"


@contextlib.asynccontextmanager
async def limited_app(settings: Settings, **limits: Any) -> AsyncIterator[Any]:
    """A fresh app (its own limiter and store) with the probe route, under its lifespan."""
    app = with_probe(settings.model_copy(update=limits))
    async with LifespanManager(app):
        yield app


def client_at(app: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://kb.test")


async def statuses(c: httpx.AsyncClient, n: int, path: str = PROBE, **kw: Any) -> list[int]:
    return [(await c.get(path, **kw)).status_code for _ in range(n)]


def test_limit_strings_use_the_rate_units() -> None:
    assert (parse_limit("1200/minute").limit, parse_limit("1200/minute").interval) == (1200, 60_000)
    assert parse_limit("10 per 5 minutes").interval == 300_000
    assert parse_limit("3/second").interval == 1000
    for bad in ("", "lots", "0/minute", "5/fortnight", "-1/second"):
        with pytest.raises(ValueError):
            parse_limit(bad)
    with pytest.raises(ValueError, match="rate limit"):
        Settings(_env_file=None, rate_limit_anonymous="每分钟100次")


async def test_an_address_is_limited_at_its_limit_and_another_is_not(settings: Settings) -> None:
    async with (
        limited_app(settings, rate_limit_anonymous="5/minute") as app,
        client_at(app, "198.51.100.7") as visitor,
        client_at(app, "203.0.113.20") as neighbour,
    ):
        first = await visitor.get(PROBE)
        assert first.json() == {"key": "ip:198.51.100.7", "channel": "web"}
        assert first.headers["RateLimit-Policy"] == "5;w=60"
        assert await statuses(visitor, 4) == [200] * 4
        r = await visitor.get(PROBE)
        body = assert_problem(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert body["limit"] == 5 and body["window_seconds"] == 60 and body["retry_after"] >= 1
        assert r.headers["RateLimit-Policy"] == "5;w=60"
        assert await statuses(neighbour, 5) == [200] * 5


async def test_the_6th_request_of_5_per_minute_is_429(settings: Settings) -> None:
    async with limited_app(settings, rate_limit_anonymous="5/minute") as app, client_at(app, "10.8.0.3") as c:
        assert await statuses(c, 7) == [200] * 5 + [429, 429]


async def test_a_client_is_limited_apart_from_anonymous_callers(settings: Settings, kb: Any) -> None:
    web_bot = await kb.channel_client("web")
    async with limited_app(settings, rate_limit_anonymous="3/minute", rate_limit_client="6/minute") as app:
        async with client_at(app, "192.0.2.44") as c:
            assert await statuses(c, 4) == [200, 200, 200, 429]  # the address is spent ...
            first = await c.get(PROBE, headers=web_bot.headers)  # ... the client behind it is not
            assert first.status_code == 200 and first.json()["key"].startswith("client:")
            assert first.headers["RateLimit-Policy"] == "6;w=60"
            assert await statuses(c, 5, headers=web_bot.headers) == [200] * 5
            r = await c.get(PROBE, headers=web_bot.headers)
            assert_problem(r, 429, "rate_limited")
            assert "this client" in r.json()["detail"] and r.json()["limit"] == 6
        async with client_at(app, "192.0.2.45") as other:  # the client's count follows it to any address
            assert_problem(await other.get(PROBE, headers=web_bot.headers), 429, "rate_limited")
            assert (await other.get(PROBE)).status_code == 200


async def test_the_change_feed_and_the_screen_pop_count_against_the_same_limit(settings: Settings, kb: Any) -> None:
    """The routes that resolve their caller themselves are limited too, on the caller's one count: a
    web visitor's feed polling, an agent softphone's screen pops."""
    softphone = await kb.channel_client("agent")
    async with (
        limited_app(settings, rate_limit_anonymous="3/minute", rate_limit_client="4/minute") as app,
        client_at(app, "198.51.100.60") as c,
    ):
        first = await c.get("/api/v1/changes", params={"channel": "web"})
        assert first.status_code == 200 and first.headers["RateLimit-Policy"] == "3;w=60"
        assert (await c.get(PROBE)).status_code == 200  # the channel reads share the count
        assert (await c.get("/api/v1/changes", params={"channel": "web"})).status_code == 200
        r = await c.get("/api/v1/changes", params={"channel": "web"})
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        pops = [
            await c.get("/api/v1/channels/agent/screen-pop", params={"called": "10086"}, headers=softphone.headers)
            for _ in range(5)
        ]
        assert [p.status_code for p in pops] == [200] * 4 + [429]
        assert pops[0].headers["RateLimit-Policy"] == "4;w=60"
        assert_problem(pops[-1], 429, "rate_limited")


async def test_requests_are_allowed_again_once_the_wait_passes(settings: Settings) -> None:
    async with limited_app(settings, rate_limit_anonymous="3/second") as app, client_at(app, "172.16.5.5") as c:
        assert await statuses(c, 4) == [200, 200, 200, 429]
        r = await c.get(PROBE)
        assert_problem(r, 429, "rate_limited")
        assert r.headers["Retry-After"] == "1"  # one request refills in 1/3 s: never "0"
        await asyncio.sleep(0.4)
        assert (await c.get(PROBE)).status_code == 200
        assert (await c.get(PROBE)).status_code == 429  # one came back, not the whole burst
        await asyncio.sleep(1.05)
        assert await statuses(c, 3) == [200, 200, 200]


async def test_switched_off_nothing_is_limited(settings: Settings) -> None:
    async with (
        limited_app(settings, rate_limit_enabled=False, rate_limit_anonymous="1/minute") as app,
        client_at(app, "198.51.100.8") as c,
    ):
        r = await c.get(PROBE)
        assert r.status_code == 200 and "RateLimit-Policy" not in r.headers
        assert await statuses(c, 3) == [200] * 3


async def test_the_limit_holds_across_api_processes(settings: Settings, tmp_path: Path) -> None:
    """Two API processes (uvicorn, the probe app) on one data folder: a caller alternating
    between them gets the configured total, not twice it."""
    data = tmp_path / "served"
    ports = [free_port(), free_port()]
    procs = []
    for port in ports:
        env = serve_env(
            settings, data, port, KB_RATE_LIMIT_ANONYMOUS="8/minute", KB_WORKER_EMBEDDED="false", PYTHONPATH=str(ROOT)
        )
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "uvicorn",
                "tests.channels.ratelimit_app:factory",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                cwd=ROOT,
                env=env,
            )
        )
    try:
        await asyncio.gather(
            *(wait_ready(f"http://127.0.0.1:{p}", proc, path="/healthz") for p, proc in zip(ports, procs, strict=True))
        )
        async with httpx.AsyncClient(timeout=10) as c:
            got = [(await c.get(f"http://127.0.0.1:{ports[i % 2]}{PROBE}")).status_code for i in range(12)]
            assert got == [200] * 8 + [429] * 4, got
            for port in ports:  # both processes refuse it now
                assert_problem(await c.get(f"http://127.0.0.1:{port}{PROBE}"), 429, "rate_limited")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 15)
            if proc.returncode is None:
                proc.kill()


@pytest.fixture
def redis_url(tmp_path: Path) -> Any:
    """A throwaway redis-server (the Debian package) on a free port; skipped where it is not installed."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        skip_outside_ci(
            "redis-server is not installed: the shared Redis store runs wherever it is (apt-get install "
            "redis-server; CI has it); the SQLite store tests above run everywhere"
        )
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_hosts_sharing_redis_share_the_limit(settings: Settings, redis_url: str, tmp_path: Path) -> None:
    """KB_RATE_LIMIT_STORAGE=redis://...: two limiters (two hosts, their own data folders) count together."""
    from redis.exceptions import ConnectionError as RedisDown

    from app.channels.ratelimit import RateLimiter

    hosts = [
        RateLimiter(
            settings.model_copy(
                update={
                    "rate_limit_storage": redis_url,
                    "data_dir": tmp_path / f"h{n}",
                    "rate_limit_client": "6/minute",
                }
            )
        )
        for n in range(2)
    ]
    try:
        for _ in range(100):  # the server is starting
            try:
                await hosts[0].factory.redis.ping()
                break
            except RedisDown:
                await asyncio.sleep(0.05)
        got = [await hosts[i % 2].check("client:7", False) for i in range(8)]
        assert got[:6] == [None] * 6 and all(wait is not None and wait > 0 for wait in got[6:])
        assert await hosts[0].check("client:8", False) is None
    finally:
        for limiter in hosts:
            await limiter.aclose()
