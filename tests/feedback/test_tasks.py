"""Tasks: who sees and resolves them, state transitions, If-Match; bulk owner transfer."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from app.feedback.models import Task
from app.knowledge.models import Item
from tests.conftest import Actor, People, assert_problem
from tests.feedback.conftest import Kb, report, task_act


async def test_transitions_and_if_match(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor
) -> None:
    item = await kb.publish(publisher, title="手机停机保号怎么办理", owner_id=author.user.id)
    task = (await report(client, agent, item["id"], "missing", "缺少停机保号的收费标准")).json()
    assert task["allowed_actions"] == ["accept", "fix", "dismiss"]

    r = await client.get(f"/api/v1/tasks/{task['id']}", headers=author.headers)
    assert r.status_code == 200 and r.headers["etag"] == task["etag"]
    assert (
        await client.get(f"/api/v1/tasks/{task['id']}", headers={**author.headers, "If-None-Match": task["etag"]})
    ).status_code == 304

    assert (await task_act(client, author, task["id"], "accept", if_match=task["etag"])).status_code == 200
    assert_problem(await task_act(client, author, task["id"], "accept"), 409, "invalid_transition")
    # the ETag read before the accept is stale now
    body = assert_problem(
        await task_act(client, author, task["id"], "dismiss", {"reason": "重复"}, if_match=task["etag"]),
        412,
        "precondition_failed",
    )
    assert body["current_etag"] != task["etag"]
    current = (await client.get(f"/api/v1/tasks/{task['id']}", headers=author.headers)).json()
    assert current["allowed_actions"] == ["fix", "dismiss"] and current["etag"] == body["current_etag"]
    r = await task_act(
        client, author, task["id"], "dismiss", {"reason": "收费标准见另一条知识"}, if_match=current["etag"]
    )
    assert r.status_code == 200 and r.json()["allowed_actions"] == []
    body = assert_problem(await task_act(client, author, task["id"], "fix", {"version": 1}), 409, "invalid_transition")
    assert body["state"] == "dismissed" and body["allowed"] == []
    missing = await client.post("/api/v1/tasks/987654321/accept", headers={**author.headers, "If-Match": "*"})
    assert_problem(missing, 404, "task_not_found")


async def test_who_sees_and_acts(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor, people: People
) -> None:
    owned = await kb.publish(publisher, title="信用卡挂失流程", owner_id=author.user.id)
    orphan = await kb.create(publisher, title="電費繳納方式（繁體）")
    await kb.ok(publisher, orphan["id"], 1, "submit", "approve", "publish")
    async with kb.app.state.sessionmaker() as s:  # an item whose owner is gone
        item = await s.get(Item, orphan["id"])
        assert item is not None
        item.owner_id = None
        await s.commit()
    mine = (await report(client, agent, owned["id"], "wrong")).json()
    unassigned = (await report(client, agent, orphan["id"], "outdated")).json()
    assert unassigned["assignee_id"] is None

    other_author = await people.make("zhao.lei", role="author")
    # someone else's task is not found; the reporter is not the assignee either
    assert_problem(await client.get(f"/api/v1/tasks/{mine['id']}", headers=other_author.headers), 404, "task_not_found")
    assert_problem(await task_act(client, agent, mine["id"], "accept"), 404, "task_not_found")
    assert (await client.get("/api/v1/tasks", headers=other_author.headers)).json()["items"] == []
    own = (await client.get("/api/v1/tasks", headers=author.headers)).json()["items"]
    assert [t["id"] for t in own] == [mine["id"]]
    # the unassigned one only managers (feedback:manage: publishers) see
    assert (await client.get("/api/v1/tasks", params={"assignee": "unassigned"}, headers=author.headers)).json()[
        "items"
    ] == []
    r = await client.get("/api/v1/tasks", params={"assignee": "unassigned"}, headers=publisher.headers)
    assert [t["id"] for t in r.json()["items"]] == [unassigned["id"]]
    r = await client.get(
        "/api/v1/tasks",
        params={"assignee": str(author.user.id), "kind": "error_report", "state": "open", "item_id": owned["id"]},
        headers=publisher.headers,
    )
    assert [t["id"] for t in r.json()["items"]] == [mine["id"]]
    page = await client.get("/api/v1/tasks", params={"limit": 1}, headers=publisher.headers)
    assert len(page.json()["items"]) == 1 and page.json()["next_cursor"]
    rest = await client.get(
        "/api/v1/tasks", params={"limit": 1, "cursor": page.json()["next_cursor"]}, headers=publisher.headers
    )
    assert {page.json()["items"][0]["id"], rest.json()["items"][0]["id"]} == {mine["id"], unassigned["id"]}
    assert_problem(await client.get("/api/v1/tasks", params={"assignee": "everyone"}, headers=publisher.headers), 422)
    assert_problem(
        await client.get("/api/v1/tasks", params={"assignee": "99999999999999999999"}, headers=publisher.headers), 422
    )
    todo = (await client.get("/api/v1/me/todo", headers=publisher.headers)).json()["sections"]
    assert todo["unassigned"]["count"] == 1 and todo["unassigned"]["items"][0]["task_id"] == unassigned["id"]
    assert todo["unassigned"]["items"][0]["kind"] == "error_report"
    assert "unassigned" not in (await client.get("/api/v1/me/todo", headers=author.headers)).json()["sections"]
    r = await task_act(client, publisher, unassigned["id"], "dismiss", {"reason": "该条知识即将下线"})
    assert r.status_code == 200 and r.json()["resolved_by"] == publisher.user.id


async def test_owner_transfer(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor, people: People
) -> None:
    successor = await people.make("sun.li", role="author")
    items = [await kb.publish(publisher, title=f"宽带报装 FAQ {n}", owner_id=author.user.id) for n in range(3)]
    kept = await kb.publish(publisher, title="别人的知识", owner_id=publisher.user.id)
    open_task = (await report(client, agent, items[0]["id"], "wrong")).json()
    done = (await report(client, agent, items[1]["id"], "wrong")).json()
    assert (await task_act(client, author, done["id"], "dismiss", {"reason": "无误"})).status_code == 200
    before = await kb.etag(items[0]["id"])

    body = {"from_user_id": author.user.id, "to_user_id": successor.user.id, "dry_run": True}
    r = await client.post("/api/v1/items/owner-transfer", json=body, headers=publisher.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {**body, "items": 3, "tasks": 1}
    assert await kb.etag(items[0]["id"]) == before  # a dry run changes nothing

    r = await client.post("/api/v1/items/owner-transfer", json={**body, "dry_run": False}, headers=publisher.headers)
    assert r.json()["items"] == 3 and r.json()["tasks"] == 1
    async with kb.app.state.sessionmaker() as s:
        owners = {i: o for i, o in (await s.execute(select(Item.id, Item.owner_id))).all()}
        tasks = {t.id: t for t in (await s.scalars(select(Task))).all()}
    assert {owners[i["id"]] for i in items} == {successor.user.id} and owners[kept["id"]] == publisher.user.id
    assert tasks[open_task["id"]].assignee_id == successor.user.id
    assert tasks[done["id"]].assignee_id == author.user.id  # resolved tasks keep their history
    assert await kb.etag(items[0]["id"]) != before
    todo = (await client.get("/api/v1/me/todo", headers=successor.headers)).json()
    assert todo["sections"]["error_reports"]["count"] == 1

    gone = await people.make("left.company", role="author")
    async with kb.app.state.sessionmaker() as s:
        from app.identity.models import User

        user = await s.get(User, gone.user.id)
        assert user is not None
        user.is_active = False
        await s.commit()
    for bad, code in (
        ({"to_user_id": gone.user.id}, "inactive_user"),
        ({"to_user_id": 987654}, "unknown_user"),
        ({"from_user_id": 987654}, "unknown_user"),
        ({"to_user_id": successor.user.id}, "same_user"),
    ):
        payload = {"from_user_id": successor.user.id, "to_user_id": author.user.id, **bad}
        assert_problem(
            await client.post("/api/v1/items/owner-transfer", json=payload, headers=publisher.headers), 422, code
        )
    assert_problem(
        await client.post("/api/v1/items/owner-transfer", json=body, headers=author.headers), 403, "permission_denied"
    )
