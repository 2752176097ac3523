"""Learning paths: completion from real agent-channel views, "what changed" after a republish,
the item ACL, and the bad inputs (unknown items, stale If-Match ...)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

ITEMS = [
    ("宽带无法上网怎么办？", "宽带连不上网怎么处理", "<p>请先重启光猫和路由器，等待 3 分钟后重试。</p>"),
    (
        "携号转网需要什么条件？",
        "怎么办理携号转网",
        "<p>在网满 120 天、无欠费、无合约限制即可申请，发送 CXXZ 到 10086 查询。</p>",
    ),
    ("信用卡丢失如何挂失？", "信用卡丢了怎么办", "<p>请立即拨打 95588 转人工挂失，挂失后 24 小时内免责。</p>"),
]


async def publish_items(kb: Kb, publisher: Actor) -> list[int]:
    out = []
    for title, question, body in ITEMS:
        item = await kb.publish(
            publisher, title=title, question=question, body=body, category_ids=[kb.nodes["宽带业务"]]
        )
        out.append(item["id"])
    return out


async def read(client: httpx.AsyncClient, actor: Actor, item_id: int) -> None:
    """A real view on the agent channel (the softphone's screen), the only way reading is counted."""
    r = await client.get(f"/api/v1/channels/agent/items/{item_id}", headers=actor.headers)
    assert r.status_code == 200, r.text


async def create_path(client: httpx.AsyncClient, actor: Actor, item_ids: list[int], **extra: Any) -> httpx.Response:
    body = {
        "title": "新员工入职必读：宽带与携号转网",
        "description": "上岗前两周内读完",
        "roles": ["agent"],
        "item_ids": item_ids,
        "due_at": (datetime.now(UTC) + timedelta(days=14)).isoformat(),
        **extra,
    }
    return await client.post("/api/v1/study/paths", json=body, headers=actor.headers)


async def my_study(client: httpx.AsyncClient, actor: Actor) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/me/study", headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def republish(kb: Kb, publisher: Actor, item_id: int, body: str) -> None:
    r = await kb.edit(publisher, item_id, {"body": body, "change_note": "资费与办理条件调整"})
    assert r.status_code == 200, r.text
    await kb.ok(publisher, item_id, r.json()["number"], "submit", "approve", "publish")


async def test_completion_comes_from_real_views(
    kb: Kb, client: httpx.AsyncClient, people: People, publisher: Actor
) -> None:
    ids = await publish_items(kb, publisher)
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    new_agent = await people.make("xiao.liu", role="agent")
    other_agent = await people.make("xiao.wang", role="agent")
    r = await create_path(client, supervisor, ids)
    assert r.status_code == 201, r.text
    path = r.json()
    assert [i["item_id"] for i in path["items"]] == ids and path["roles"] == ["agent"]
    assert r.headers["etag"] == path["etag"]

    [mine] = await my_study(client, new_agent)
    assert (mine["total"], mine["read"], mine["completed"]) == (3, 0, False)
    assert mine["next_item"]["item_id"] == ids[0]
    todo = (await client.get("/api/v1/me/todo", headers=new_agent.headers)).json()["sections"]
    assert todo["study"]["count"] == 1 and todo["study"]["items"][0]["item_id"] == ids[0]

    await read(client, new_agent, ids[0])
    [mine] = await my_study(client, new_agent)
    assert mine["read"] == 1 and mine["next_item"]["item_id"] == ids[1]
    assert mine["items"][0]["read"] and mine["items"][0]["read_version"] == 1

    r = await client.get(f"/api/v1/study/paths/{path['id']}/progress", headers=supervisor.headers)
    assert r.status_code == 200, r.text
    rows = {a["username"]: a for a in r.json()["items"]}
    assert (rows["xiao.liu"]["read"], rows["xiao.liu"]["total"]) == (1, 3)
    assert rows["xiao.wang"]["read"] == 0 and not rows["xiao.wang"]["completed"]
    assert "chen.jie" not in rows  # the publisher is not in the agent role's audience

    for item_id in ids[1:]:
        await read(client, new_agent, item_id)
    [mine] = await my_study(client, new_agent)
    assert mine["completed"] and mine["next_item"] is None
    todo = (await client.get("/api/v1/me/todo", headers=new_agent.headers)).json()["sections"]
    assert todo["study"]["count"] == 0
    rows = {
        a["username"]: a
        for a in (await client.get(f"/api/v1/study/paths/{path['id']}/progress", headers=supervisor.headers)).json()[
            "items"
        ]
    }
    assert rows["xiao.liu"]["completed"] and rows["xiao.liu"]["last_read_at"] is not None
    assert (await my_study(client, other_agent))[0]["read"] == 0  # one agent's reading is not another's


async def test_what_changed_after_a_republish(
    kb: Kb, client: httpx.AsyncClient, people: People, publisher: Actor
) -> None:
    ids = await publish_items(kb, publisher)
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    agent = await people.make("xiao.liu", role="agent")
    assert (await create_path(client, supervisor, ids[:2])).status_code == 201
    await read(client, agent, ids[0])
    await read(client, agent, ids[1])
    r = await client.get("/api/v1/me/study/changes", headers=agent.headers)
    assert r.status_code == 200 and r.json()["items"] == []

    await republish(kb, publisher, ids[1], "<p>在网满 90 天、无欠费即可申请（2026年12月起）。</p>")
    [mine] = await my_study(client, agent)
    assert mine["read"] == 1 and not mine["completed"]  # the new version asks for a re-read
    changed = next(i for i in mine["items"] if i["item_id"] == ids[1])
    assert changed["changed"] and not changed["read"] and changed["current_version"] == 2

    [change] = (await client.get("/api/v1/me/study/changes", headers=agent.headers)).json()["items"]
    assert (change["item_id"], change["read_version"], change["current_version"]) == (ids[1], 1, 2)
    assert change["change_note"] == "资费与办理条件调整"
    diff = await client.get(change["diff"], headers=agent.headers)
    assert diff.status_code == 200, diff.text
    body = next(c for c in diff.json()["changed"] if c["field"] == "body")
    assert "120 天" in body["before"] and "90 天" in body["after"] and "+" in body["diff"]
    # An agent may not fetch the old version through the editors' diff: this is their way to see it.
    assert (await client.get(f"/api/v1/items/{ids[1]}/diff?from=1&to=2", headers=agent.headers)).status_code == 404

    await read(client, agent, ids[1])
    assert (await client.get("/api/v1/me/study/changes", headers=agent.headers)).json()["items"] == []
    assert_problem(await client.get(change["diff"], headers=agent.headers), 404, "no_change")
    assert (await my_study(client, agent))[0]["completed"]


async def test_item_acl_is_respected(
    kb: Kb, client: httpx.AsyncClient, people: People, publisher: Actor, admin: Actor
) -> None:
    ids = await publish_items(kb, publisher)
    roles = await people.roles()
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    agent = await people.make("xiao.liu", role="agent")
    # 信用卡挂失 is for publishers only: a path for agents may not hold it.
    r = await client.put(
        f"/api/v1/items/{ids[2]}/acl",
        json={"grants": [{"subject": f"role:{roles['publisher'].id}"}]},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    body = assert_problem(await create_path(client, supervisor, ids), 422, "items_not_readable")
    assert body["items"] == [ids[2]] and body["field"] == "item_ids"
    r = await create_path(client, supervisor, ids[:2])
    assert r.status_code == 201
    # Tightened later: the item disappears from the agent's path entirely (no title, not counted).
    r = await client.put(
        f"/api/v1/items/{ids[1]}/acl",
        json={"grants": [{"subject": f"role:{roles['publisher'].id}"}]},
        headers=admin.headers,
    )
    assert r.status_code == 200
    [mine] = await my_study(client, agent)
    assert [i["item_id"] for i in mine["items"]] == [ids[0]] and mine["total"] == 1
    assert ITEMS[1][0] not in str(mine)
    await read(client, agent, ids[0])
    assert (await my_study(client, agent))[0]["completed"]


async def test_audience_by_role_and_department(
    kb: Kb, client: httpx.AsyncClient, people: People, publisher: Actor, admin: Actor
) -> None:
    ids = await publish_items(kb, publisher)
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    r = await client.post("/api/v1/departments", json={"name": "广州呼叫中心"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    gz = r.json()["id"]
    r = await client.post("/api/v1/departments", json={"name": "宽带组", "parent_id": gz}, headers=admin.headers)
    assert r.status_code == 201, r.text
    in_gz = await people.make("gz.agent", role="agent", department_id=r.json()["id"])
    elsewhere = await people.make("bj.agent", role="agent")
    author = await people.make("gz.author", role="author", department_id=gz)
    path = (await create_path(client, supervisor, ids[:1], departments=[gz])).json()
    assert len(await my_study(client, in_gz)) == 1  # a sub-department is inside
    assert await my_study(client, elsewhere) == []
    assert await my_study(client, author) == []  # the path is for agents
    assert_problem(
        await client.get(f"/api/v1/me/study/paths/{path['id']}", headers=elsewhere.headers), 404, "study_path_not_found"
    )
    rows = (await client.get(f"/api/v1/study/paths/{path['id']}/progress", headers=supervisor.headers)).json()
    assert [a["username"] for a in rows["items"]] == ["gz.agent"]


async def test_bad_inputs_and_if_match(
    kb: Kb, client: httpx.AsyncClient, people: People, publisher: Actor, agent: Actor
) -> None:
    ids = await publish_items(kb, publisher)
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    body = assert_problem(await create_path(client, supervisor, [ids[0], 999_999_999]), 422, "unknown_items")
    assert body["unknown"] == [999_999_999] and body["field"] == "item_ids"
    assert_problem(await create_path(client, supervisor, [ids[0], ids[0]]), 422, "duplicate_items")
    assert (
        assert_problem(await create_path(client, supervisor, ids, roles=["值班长"]), 422, "unknown_role")["field"]
        == "roles"
    )
    assert_problem(await create_path(client, supervisor, ids, departments=[424242]), 422, "unknown_department")
    assert_problem(await create_path(client, supervisor, []), 422)
    assert_problem(await create_path(client, agent, ids), 403, "permission_denied")  # agents do not write paths

    r = await create_path(client, supervisor, ids)
    path, etag = r.json(), r.headers["etag"]
    url = f"/api/v1/study/paths/{path['id']}"
    assert_problem(await client.patch(url, json={"title": "入职必读（第二版）"}, headers=supervisor.headers), 428)
    r = await client.patch(
        url,
        json={"title": "入职必读（第二版）", "item_ids": [ids[2], ids[0]]},
        headers={**supervisor.headers, "If-Match": etag},
    )
    assert r.status_code == 200, r.text
    assert [i["item_id"] for i in r.json()["items"]] == [ids[2], ids[0]]
    body = assert_problem(
        await client.patch(url, json={"title": "旧的"}, headers={**supervisor.headers, "If-Match": etag}), 412
    )
    assert body["current_etag"] == r.headers["etag"]
    assert_problem(
        await client.patch(
            url, json={"item_ids": [ids[0], 888_888_888]}, headers={**supervisor.headers, "If-Match": r.headers["etag"]}
        ),
        422,
        "unknown_items",
    )
    assert_problem(
        await client.patch(url, json={"title": None}, headers={**supervisor.headers, "If-Match": r.headers["etag"]}),
        422,
    )
    # Withdrawn: no longer assigned.
    r = await client.patch(url, json={"active": False}, headers={**supervisor.headers, "If-Match": r.headers["etag"]})
    assert r.status_code == 200 and await my_study(client, agent) == []
    assert_problem(await client.delete(url, headers={**supervisor.headers, "If-Match": etag}), 412)
    assert (await client.delete(url, headers={**supervisor.headers, "If-Match": r.headers["etag"]})).status_code == 204
    assert_problem(await client.get(url, headers=supervisor.headers), 404, "study_path_not_found")
    audit = (
        await client.get(
            "/api/v1/audit",
            params={"target_type": "study_path"},
            headers=(await people.make("audit.admin", role="admin")).headers,
        )
    ).json()["items"]
    assert {"study_path.create", "study_path.update", "study_path.delete"} <= {e["action"] for e in audit}
