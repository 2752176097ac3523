from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.core.config import Settings
from app.main import create_app
from app.workers.worker import Worker
from tests.conftest import Actor, assert_problem


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_readyz_needs_a_live_worker(client: httpx.AsyncClient, app: Any) -> None:
    body = assert_problem(await client.get("/readyz"), 503, "not_ready")
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    assert body["checks"]["worker"] != "ok"
    await Worker(app.state.sessionmaker, app.state.settings).heartbeat()
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"


async def test_embedded_worker_runs_in_the_api_process(settings: Settings) -> None:
    from asgi_lifespan import LifespanManager

    application = create_app(settings.model_copy(update={"worker_embedded": True, "worker_poll_seconds": 0.05}))
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for _ in range(100):
                r = await c.get("/readyz")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200, r.text


async def test_readyz_reports_unreachable_database(settings: Settings) -> None:
    from asgi_lifespan import LifespanManager

    broken = settings.model_copy(update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"})
    application = create_app(broken)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = assert_problem(await c.get("/readyz"), 503, "not_ready")
    assert body["checks"]["database"].startswith("unreachable")


async def test_metrics_count_requests_by_route(client: httpx.AsyncClient, admin: Actor) -> None:
    await client.get(f"/api/v1/users/{admin.user.id}", headers=admin.headers)  # ids are not restarted between tests
    text = (await client.get("/metrics")).text
    assert 'kb_http_requests_total{method="GET",route="/api/v1/users/{user_id}",status="200"}' in text
    assert "kb_jobs{" in text


async def test_request_id_and_security_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "cti-7f3a"})
    assert r.headers["x-request-id"] == "cti-7f3a"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    r = await client.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32
    r = await client.get("/api/v1/auth/me")
    assert "default-src 'none'" in r.headers["content-security-policy"]


async def test_cors_allows_configured_origins_only(settings: Settings) -> None:
    from asgi_lifespan import LifespanManager

    application = create_app(settings.model_copy(update={"cors_origins": ["https://faq.example.cn"]}))
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ok = await c.options(
                "/api/v1/auth/me", headers={"origin": "https://faq.example.cn", "access-control-request-method": "GET"}
            )
            bad = await c.options(
                "/api/v1/auth/me", headers={"origin": "https://evil.example", "access-control-request-method": "GET"}
            )
    assert ok.headers.get("access-control-allow-origin") == "https://faq.example.cn"
    assert "access-control-allow-origin" not in bad.headers
