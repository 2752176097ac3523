from __future__ import annotations

import httpx

from tests.conftest import Actor, People, assert_problem


async def test_writes_are_audited_with_before_and_after(client: httpx.AsyncClient, admin: Actor) -> None:
    r = await client.post(
        "/api/v1/roles",
        headers={**admin.headers, "x-request-id": "req-role-1"},
        json={"name": "night_shift", "description": "夜班坐席", "permissions": ["knowledge:read"]},
    )
    role_id = r.json()["id"]
    await client.patch(
        f"/api/v1/roles/{role_id}", headers=admin.headers, json={"permissions": ["knowledge:read", "search:query"]}
    )
    r = await client.get(
        "/api/v1/audit", params={"target_type": "role", "target_id": str(role_id)}, headers=admin.headers
    )
    entries = r.json()["items"]
    assert [e["action"] for e in entries] == ["role.update", "role.create"]  # newest first
    update, create = entries
    assert create["actor"] == f"user:{admin.user.id}" and create["request_id"] == "req-role-1"
    assert update["summary"]["before"] == {"permissions": ["knowledge:read"]}
    assert update["summary"]["after"] == {"permissions": ["knowledge:read", "search:query"]}


async def test_filters_and_cursor_pagination(client: httpx.AsyncClient, admin: Actor) -> None:
    for i in range(5):
        await client.post("/api/v1/departments", headers=admin.headers, json={"name": f"坐席{i}组"})
    seen: list[int] = []
    cursor = None
    while True:
        params = {"action": "department.", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/audit", params=params, headers=admin.headers)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    r = await client.get("/api/v1/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin.headers)
    assert r.json()["items"] == []


async def test_audit_is_append_only_and_admin_only(client: httpx.AsyncClient, admin: Actor, people: People) -> None:
    for method in ("put", "patch", "delete"):
        r = await client.request(method, "/api/v1/audit", headers=admin.headers)
        assert r.status_code == 405
    auditor = await people.make("auditor1", role="auditor")
    assert (await client.get("/api/v1/audit", headers=auditor.headers)).status_code == 200
    agent = await people.make("agent1", role="agent")
    assert_problem(await client.get("/api/v1/audit", headers=agent.headers), 403, "permission_denied")


async def test_failed_write_leaves_no_audit_entry(client: httpx.AsyncClient, admin: Actor) -> None:
    await client.post("/api/v1/roles", headers=admin.headers, json={"name": "dup_role"})
    r = await client.post("/api/v1/roles", headers=admin.headers, json={"name": "dup_role"})
    assert_problem(r, 409, "role_exists")
    r = await client.get("/api/v1/audit", params={"action": "role.create"}, headers=admin.headers)
    assert len(r.json()["items"]) == 1
