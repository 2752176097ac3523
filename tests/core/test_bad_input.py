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
    r = await client.post(
        "/api/v1/users",
        content=b'{"username": "li.na", "password": ',
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert_problem(r, 400, "malformed_json")
    assert await count_users(app) == before


async def test_non_utf8_body(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    r = await client.post(
        "/api/v1/users",
        content='{"username": "李娜"}'.encode("gbk"),
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code)
    assert await count_users(app) == before


async def test_wrong_types_and_unknown_fields(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    r = await client.post(
        "/api/v1/users", headers=admin.headers, json={"username": "li.na", "password": 12345678, "role_ids": "all"}
    )
    body = assert_problem(r, 422, "validation_error")
    fields = {e["field"] for e in body["errors"]}
    assert {"body.password", "body.role_ids"} <= fields
    r = await client.post(
        "/api/v1/users", headers=admin.headers, json={"username": "li.na", "password": "Passw0rd!x", "is_admin": True}
    )
    body = assert_problem(r, 422, "validation_error")
    assert any(e["field"] == "body.is_admin" for e in body["errors"])
    assert await count_users(app) == before


async def test_very_long_and_sql_looking_strings(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    r = await client.post(
        "/api/v1/users", headers=admin.headers, json={"username": "a" * 10_000, "password": "Passw0rd!x"}
    )
    assert_problem(r, 422, "validation_error")
    # SQL-looking text is data: stored verbatim where allowed, refused by the pattern elsewhere.
    r = await client.post(
        "/api/v1/users", headers=admin.headers, json={"username": "x'; DROP TABLE users;--", "password": "Passw0rd!x"}
    )
    assert_problem(r, 422, "validation_error")
    r = await client.post(
        "/api/v1/departments", headers=admin.headers, json={"name": "客服部'); DELETE FROM users; --"}
    )
    assert r.status_code == 201
    assert r.json()["name"] == "客服部'); DELETE FROM users; --"
    r = await client.get("/api/v1/users", params={"q": "%' OR 1=1 --"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["items"] == []
    assert await count_users(app) == 1


async def test_oversized_body_is_refused_before_reading(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    limit = app.state.settings.max_json_body_bytes
    r = await client.post("/api/v1/departments", headers=admin.headers, json={"name": "大" * limit})
    assert_problem(r, 413, "payload_too_large")

    async def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    r = await client.post(
        "/api/v1/departments", headers={**admin.headers, "content-type": "application/json"}, content=chunks()
    )
    assert_problem(r, 413, "payload_too_large")


async def test_unknown_route_and_method(client: httpx.AsyncClient, admin: Actor) -> None:
    assert_problem(await client.get("/api/v1/nothing-here", headers=admin.headers), 404, "not_found")
    assert_problem(await client.put("/api/v1/audit", headers=admin.headers), 405, "method_not_allowed")


async def test_bad_cursor_and_limits(client: httpx.AsyncClient, admin: Actor) -> None:
    assert_problem(
        await client.get("/api/v1/users", params={"cursor": "!!!"}, headers=admin.headers), 422, "invalid_cursor"
    )
    assert_problem(
        await client.get("/api/v1/users", params={"limit": 0}, headers=admin.headers), 422, "validation_error"
    )
    assert_problem(
        await client.get("/api/v1/users", params={"limit": 100000}, headers=admin.headers), 422, "validation_error"
    )
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


MAX_ID = 2**63 - 1


async def test_ids_outside_the_database_range_are_422_not_500(client: httpx.AsyncClient, admin: Actor) -> None:
    h = admin.headers
    # The fuzzer's find: the id overflowed the driver and answered 500.
    r = await client.post("/api/v1/items/99999999999999999999999/versions/1/reopen", headers=h, json={})
    assert_problem(r, 422, "validation_error")
    for bad in (MAX_ID + 1, 0, -1):
        for path in (
            f"/api/v1/items/{bad}",
            f"/api/v1/users/{bad}",
            f"/api/v1/attachments/{bad}",
            f"/api/v1/taxonomy-nodes/{bad}",
            f"/api/v1/jobs/{bad}",
        ):
            body = assert_problem(await client.get(path, headers=h), 422, "validation_error")
            assert body["errors"][0]["field"].startswith("path."), path
        r = await client.get("/api/v1/items", params={"owner_id": bad}, headers=h)
        assert_problem(r, 422, "validation_error")
    # The largest id the database holds is a valid id that does not exist.
    for path in (
        f"/api/v1/items/{MAX_ID}",
        f"/api/v1/users/{MAX_ID}",
        f"/api/v1/attachments/{MAX_ID}",
        f"/api/v1/taxonomy-nodes/{MAX_ID}",
        f"/api/v1/jobs/{MAX_ID}",
    ):
        assert_problem(await client.get(path, headers=h), 404)
    r = await client.get("/api/v1/items", params={"owner_id": MAX_ID}, headers=h)
    assert r.status_code == 200 and r.json()["items"] == []
    # Version numbers are INTEGER columns: 2**31-1 is the last one.
    r = await client.post("/api/v1/items", headers=h, json={"title": "宽带报装进度查询", "body": "登录营业厅APP查询。"})
    assert r.status_code == 201, r.text
    item_id = r.json()["id"]
    assert_problem(await client.get(f"/api/v1/items/{item_id}/versions/{2**31 - 1}", headers=h), 404)
    assert_problem(await client.get(f"/api/v1/items/{item_id}/versions/{2**31}", headers=h), 422, "validation_error")
    r = await client.get(f"/api/v1/items/{item_id}/diff", params={"from": 1, "to": 2**31}, headers=h)
    assert_problem(r, 422, "validation_error")


async def test_limits_beyond_the_maximum_are_refused(client: httpx.AsyncClient, admin: Actor) -> None:
    for path, limit in (("/api/v1/items", 201), ("/api/v1/search", 51), ("/api/v1/search/suggest", 21)):
        r = await client.get(path, params={"q": "话费", "limit": limit}, headers=admin.headers)
        body = assert_problem(r, 422, "validation_error")
        assert any(e["field"] == "query.limit" for e in body["errors"]), path


async def test_malformed_cursors(client: httpx.AsyncClient, admin: Actor) -> None:
    from app.core.pagination import encode_cursor

    for cursor in (
        "%%%",
        encode_cursor({"id": "12"}),
        encode_cursor({"id": MAX_ID + 1}),
        encode_cursor({"id": 0}),
        encode_cursor({"id": True}),
        "W10",
    ):  # "W10" is the base64 of [] (not an object)
        for path in ("/api/v1/items", "/api/v1/users", "/api/v1/audit"):
            r = await client.get(path, params={"cursor": cursor}, headers=admin.headers)
            assert_problem(r, 422, "invalid_cursor")
    r = await client.get(
        "/api/v1/search", params={"q": "话费", "cursor": encode_cursor({"offset": -3})}, headers=admin.headers
    )
    assert_problem(r, 422, "invalid_cursor")


async def test_long_queries_and_headers(client: httpx.AsyncClient, admin: Actor) -> None:
    q = "5G套餐" * 2500  # 10,000 characters (httpx caps an encoded URL at 64 KiB)
    r = await client.get("/api/v1/search", params={"q": q}, headers=admin.headers)  # documented: cut, and said so
    assert r.status_code == 200 and any("truncated" in w for w in r.json()["warnings"]), r.text
    for path in ("/api/v1/search/suggest", "/api/v1/items", "/api/v1/users"):
        r = await client.get(path, params={"q": q}, headers=admin.headers)
        assert_problem(r, 422, "validation_error")
    r = await client.get("/api/v1/items", headers={"Authorization": "Bearer " + "x" * 20_000})
    assert_problem(r, 401)
    r = await client.get("/api/v1/items/1", headers={**admin.headers, "If-None-Match": '"' + "9" * 20_000 + '"'})
    assert r.status_code in (200, 404)


async def test_nul_in_json_text_is_422_and_nothing_written(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    r = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"username": "wang.fang", "password": "Passw0rd!\u0000x", "display_name": "王芳"},
    )
    assert_problem(r, 422, "validation_error")
    r = await client.post("/api/v1/departments", headers=admin.headers, json={"name": "營業廳\u0000客服"})
    body = assert_problem(r, 422, "validation_error")
    assert body["errors"][0]["field"] == "body.name"
    r = await client.post(
        "/api/v1/items", headers=admin.headers, json={"title": "电费账单", "body": "峰谷电价", "tags": ["电费\u0000"]}
    )
    assert_problem(r, 422, "validation_error")
    assert await count_users(app) == before


async def test_ids_in_bodies_past_the_range_are_422(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    before = await count_users(app)
    for path, body in (
        ("/api/v1/departments", {"name": "客服二部", "parent_id": MAX_ID + 1}),
        ("/api/v1/users", {"username": "li.na", "password": "Passw0rd!x", "role_ids": [2**70]}),
        ("/api/v1/users", {"username": "li.na", "password": "Passw0rd!x", "department_id": 0}),
        ("/api/v1/items", {"title": "话费查询", "body": "发CXHF到10086", "category_ids": [MAX_ID + 1]}),
        ("/api/v1/items", {"title": "话费查询", "body": "发送CXHF到10086", "owner_id": -5}),
    ):
        r = await client.post(path, json=body, headers=admin.headers)
        assert_problem(r, 422, "validation_error")
    assert await count_users(app) == before
    r = await client.get("/api/v1/items", headers=admin.headers)
    assert r.json()["items"] == []


async def test_rename_and_move_of_a_department_in_one_patch(client: httpx.AsyncClient, admin: Actor) -> None:
    """Found by the fuzz stage: the rename was flushed before the move (an autoflush) and clashed with a
    sibling it was leaving, a 500. Now the patch applies whole, and a real clash is a 409."""
    h = admin.headers

    async def dept(name: str, parent_id: int | None = None) -> int:
        r = await client.post("/api/v1/departments", headers=h, json={"name": name, "parent_id": parent_id})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    center, cards = await dept("客服中心"), await dept("信用卡中心")
    await dept("投诉组", center)
    quality = await dept("质检组", center)
    r = await client.patch(f"/api/v1/departments/{quality}", headers=h, json={"name": "投诉组", "parent_id": cards})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["parent_id"]) == ("投诉组", cards)
    r = await client.patch(f"/api/v1/departments/{quality}", headers=h, json={"parent_id": center})
    assert_problem(r, 409, "department_exists")
