from __future__ import annotations

import httpx

from tests.conftest import Actor, People, assert_problem


async def test_user_lifecycle(client: httpx.AsyncClient, admin: Actor) -> None:
    roles = {r["name"]: r["id"] for r in (await client.get("/api/v1/roles", headers=admin.headers)).json()}
    dept = (await client.post("/api/v1/departments", headers=admin.headers, json={"name": "营业厅坐席组"})).json()
    r = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={
            "username": "li.na",
            "password": "Passw0rd!li",
            "display_name": "李娜",
            "department_id": dept["id"],
            "role_ids": [roles["author"]],
        },
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["roles"] == [{"id": roles["author"], "name": "author"}] and "password" not in r.text
    assert_problem(
        await client.post(
            "/api/v1/users", headers=admin.headers, json={"username": "li.na", "password": "Passw0rd!li"}
        ),
        409,
        "user_exists",
    )
    assert_problem(
        await client.post(
            "/api/v1/users",
            headers=admin.headers,
            json={"username": "wang", "password": "Passw0rd!li", "role_ids": [999]},
        ),
        422,
        "unknown_role",
    )
    r = await client.patch(
        f"/api/v1/users/{user['id']}",
        headers=admin.headers,
        json={"role_ids": [roles["reviewer"]], "display_name": "李娜（审核）"},
    )
    assert [x["name"] for x in r.json()["roles"]] == ["reviewer"]
    listed = (await client.get("/api/v1/users", params={"q": "李娜"}, headers=admin.headers)).json()["items"]
    assert [u["username"] for u in listed] == ["li.na"]
    by_role = (await client.get("/api/v1/users", params={"role_id": roles["reviewer"]}, headers=admin.headers)).json()[
        "items"
    ]
    assert [u["username"] for u in by_role] == ["li.na"]


async def test_admin_cannot_disable_self(client: httpx.AsyncClient, admin: Actor) -> None:
    assert_problem(
        await client.patch(f"/api/v1/users/{admin.user.id}", headers=admin.headers, json={"is_active": False}),
        409,
        "cannot_disable_self",
    )


async def test_roles_validate_permissions(client: httpx.AsyncClient, admin: Actor, people: People) -> None:
    body = assert_problem(
        await client.post(
            "/api/v1/roles", headers=admin.headers, json={"name": "bad_role", "permissions": ["knowledge:fly"]}
        ),
        422,
        "unknown_permission",
    )
    assert body["unknown"] == ["knowledge:fly"]
    catalog = (await client.get("/api/v1/permissions", headers=admin.headers)).json()
    levels = {p["name"]: p["level"] for p in catalog}
    assert levels["system:access"] == "system" and levels["module:knowledge"] == "module"
    assert levels["knowledge:publish"] == "operation"
    agent = await people.make("agent9", role="agent")
    agent_role = agent.user.roles[0].id
    assert_problem(await client.delete(f"/api/v1/roles/{agent_role}", headers=admin.headers), 409, "role_in_use")


async def test_granting_a_permission_takes_effect_immediately(
    client: httpx.AsyncClient, admin: Actor, people: People
) -> None:
    helper = await people.make("helper", permissions=["system:access", "module:admin"])
    assert_problem(await client.get("/api/v1/audit", headers=helper.headers), 403)
    role_id = helper.user.roles[0].id
    await client.patch(
        f"/api/v1/roles/{role_id}",
        headers=admin.headers,
        json={"permissions": ["system:access", "module:admin", "audit:read"]},
    )
    assert (await client.get("/api/v1/audit", headers=helper.headers)).status_code == 200


async def test_department_tree_moves_and_cycles(client: httpx.AsyncClient, admin: Actor) -> None:
    h = admin.headers
    center = (await client.post("/api/v1/departments", headers=h, json={"name": "客户服务中心"})).json()
    line1 = (
        await client.post("/api/v1/departments", headers=h, json={"name": "一线", "parent_id": center["id"]})
    ).json()
    team = (
        await client.post("/api/v1/departments", headers=h, json={"name": "宽带组", "parent_id": line1["id"]})
    ).json()
    assert team["path"] == f"/{center['id']}/{line1['id']}/{team['id']}/"
    assert_problem(
        await client.patch(f"/api/v1/departments/{center['id']}", headers=h, json={"parent_id": team["id"]}),
        409,
        "department_cycle",
    )
    assert_problem(
        await client.patch(f"/api/v1/departments/{line1['id']}", headers=h, json={"parent_id": line1["id"]}),
        409,
        "department_cycle",
    )
    r = await client.patch(f"/api/v1/departments/{line1['id']}", headers=h, json={"move_to_root": True})
    assert r.json()["parent_id"] is None and r.json()["path"] == f"/{line1['id']}/"
    tree = {d["id"]: d for d in (await client.get("/api/v1/departments", headers=h)).json()}
    assert tree[team["id"]]["path"] == f"/{line1['id']}/{team['id']}/"  # the subtree moved along
    assert_problem(await client.delete(f"/api/v1/departments/{line1['id']}", headers=h), 409, "department_not_empty")
    assert (await client.delete(f"/api/v1/departments/{team['id']}", headers=h)).status_code == 204
    assert_problem(
        await client.post("/api/v1/departments", headers=h, json={"name": "x", "parent_id": 9999}),
        404,
        "department_not_found",
    )


async def test_department_membership_reaches_acl_principals(
    client: httpx.AsyncClient, admin: Actor, people: People
) -> None:
    h = admin.headers
    center = (await client.post("/api/v1/departments", headers=h, json={"name": "银行卡中心"})).json()
    team = (
        await client.post("/api/v1/departments", headers=h, json={"name": "信用卡组", "parent_id": center["id"]})
    ).json()
    agent = await people.make("card.agent", role="agent", department_id=team["id"])
    me = (await client.get("/api/v1/auth/me", headers=agent.headers)).json()
    assert me["departments"] == [center["id"], team["id"]]
