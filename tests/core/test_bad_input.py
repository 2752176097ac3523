"""Bad input gets a problem answer with the right status, and nothing is written."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.config import Settings
from app.identity.models import User
from app.main import create_app
from tests.conftest import Actor, assert_problem


async def count_users(app: Any) -> int:
    async with app.state.sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(User)) or 0


async def test_malformed_json(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    r = await client.post("/api/v1/users", content=b'{"username": "li.na", "password": ',
                          headers={**admin.headers, "content-type": "application/json"})
    assert_problem(r, 400, "malformed_json")
    assert await count_users(app) == before


async def test_non_utf8_body(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    r = await client.post("/api/v1/users", content='{"username": "李娜"}'.encode("gbk"),
                          headers={**admin.headers, "content-type": "application/json"})
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code)
    assert await count_users(app) == before


async def test_wrong_types_and_unknown_fields(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    r = await client.post("/api/v1/users", headers=admin.headers,
                          json={"username": "li.na", "password": 12345678, "role_ids": "all"})
    body = assert_problem(r, 422, "validation_error")
    fields = {e["field"] for e in body["errors"]}
    assert {"body.password", "body.role_ids"} <= fields
    r = await client.post("/api/v1/users", headers=admin.headers,
                          json={"username": "li.na", "password": "Passw0rd!x", "is_admin": True})
    body = assert_problem(r, 422, "validation_error")
    assert any(e["field"] == "body.is_admin" for e in body["errors"])
    assert await count_users(app) == before


async def test_very_long_and_sql_looking_strings(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    r = await client.post("/api/v1/users", headers=admin.headers,
                          json={"username": "a" * 10_000, "password": "Passw0rd!x"})
    assert_problem(r, 422, "validation_error")
    # SQL-looking text is data: stored verbatim where allowed, refused by the pattern elsewhere.
    r = await client.post("/api/v1/users", headers=admin.headers,
                          json={"username": "x'; DROP TABLE users;--", "password": "Passw0rd!x"})
    assert_problem(r, 422, "validation_error")
    r = await client.post("/api/v1/departments", headers=admin.headers,
                          json={"name": "客服部'); DELETE FROM users; --"})
    assert r.status_code == 201
    assert r.json()["name"] == "客服部'); DELETE FROM users; --"
    r = await client.get("/api/v1/users", params={"q": "%' OR 1=1 --"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["items"] == []
    assert await count_users(app) == 1


async def test_oversized_body_is_refused_before_reading(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    limit = app.state.settings.max_json_body_bytes
    r = await client.post("/api/v1/departments", headers=admin.headers,
                          json={"name": "大" * limit})
    assert_problem(r, 413, "payload_too_large")

    async def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    r = await client.post("/api/v1/departments", headers={**admin.headers, "content-type": "application/json"},
                          content=chunks())
    assert_problem(r, 413, "payload_too_large")


async def test_unknown_route_and_method(client: httpx.AsyncClient, admin: Actor) -> None:
    assert_problem(await client.get("/api/v1/nothing-here", headers=admin.headers), 404, "not_found")
    assert_problem(await client.put("/api/v1/audit", headers=admin.headers), 405, "method_not_allowed")


async def test_bad_cursor_and_limits(client: httpx.AsyncClient, admin: Actor) -> None:
    assert_problem(await client.get("/api/v1/users", params={"cursor": "!!!"}, headers=admin.headers),
                   422, "invalid_cursor")
    assert_problem(await client.get("/api/v1/users", params={"limit": 0}, headers=admin.headers),
                   422, "validation_error")
    assert_problem(await client.get("/api/v1/users", params={"limit": 100000}, headers=admin.headers),
                   422, "validation_error")
    assert_problem(await client.get("/api/v1/users/abc", headers=admin.headers), 422, "validation_error")


async def test_internal_errors_do_not_leak(settings: Settings) -> None:
    application = create_app(settings)  # its own app: the test adds a failing route

    @application.get("/api/v1/_boom_for_test")
    async def boom() -> None:
        raise RuntimeError("secret connection string postgres://user:pw@db")

    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/api/v1/_boom_for_test", headers={"x-request-id": "req-123"})
    body = assert_problem(r, 500, "internal_error")
    assert "secret" not in r.text and "Traceback" not in r.text
    assert body["request_id"] == "req-123"
