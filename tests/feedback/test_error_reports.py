"""Error reports (纠错): from an agent's click to the owner's task and back to the agent's outcome."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.audit.models import AuditEntry
from tests.conftest import Actor, People, assert_problem
from tests.feedback.conftest import Kb, report, task_act


async def published(kb: Kb, publisher: Actor, owner: Actor | None, **fields: Any) -> dict[str, Any]:
    fields = {"title": "宽带套餐资费标准（2026版）", "question": "宽带包月多少钱", **fields}
    return await kb.publish(publisher, owner_id=owner.user.id if owner else None, **fields)


async def new_version(kb: Kb, publisher: Actor, item_id: int, number: int, body: str) -> None:
    r = await kb.edit(publisher, item_id, {"body": body, "change_note": "按纠错更新资费"})
    assert r.status_code == 200, r.text
    await kb.ok(publisher, item_id, number, "submit", "approve", "publish")


async def test_report_reaches_the_owner_and_the_fix_reaches_the_agent(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor
) -> None:
    item = await published(kb, publisher, author)
    r = await report(client, agent, item["id"], "outdated", "宽带 100M 包月已从 99 元调整为 79 元，\x07页面仍是旧价")
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["kind"] == "error_report" and task["state"] == "open" and task["version_no"] == 1
    assert task["assignee_id"] == author.user.id and task["reporter_id"] == agent.user.id
    assert task["comment"] == "宽带 100M 包月已从 99 元调整为 79 元，页面仍是旧价"  # the BEL is stripped
    assert r.headers["etag"] == task["etag"]

    todo = (await client.get("/api/v1/me/todo", headers=author.headers)).json()
    section = todo["sections"]["error_reports"]
    assert section["count"] == 1 and section["items"][0]["task_id"] == task["id"]
    assert section["items"][0]["title"] == "宽带套餐资费标准（2026版）"
    assert "reviews" not in todo["sections"]  # authors do not review
    assert (await client.get("/api/v1/me/todo", headers=agent.headers)).json()["sections"]["error_reports"][
        "count"
    ] == 0

    r = await task_act(client, author, task["id"], "accept", {"note": "已核实，本周更新"}, if_match=task["etag"])
    assert r.status_code == 200, r.text
    accepted = r.json()
    assert accepted["state"] == "accepted" and accepted["etag"] != task["etag"]

    # the fix must name a published version newer than the reported one
    assert_problem(await task_act(client, author, task["id"], "fix", {"version": 1}), 422, "version_not_newer")
    assert_problem(await task_act(client, author, task["id"], "fix", {"version": 9}), 422, "version_not_found")
    assert (await kb.edit(publisher, item["id"], {"body": "<p>宽带 100M 包月 79 元</p>"})).status_code == 200
    assert_problem(await task_act(client, author, task["id"], "fix", {"version": 2}), 422, "version_not_published")
    await kb.ok(publisher, item["id"], 2, "submit", "approve", "publish")

    r = await task_act(
        client, author, task["id"], "fix", {"version": 2, "note": "已更新为 79 元"}, if_match=accepted["etag"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "fixed" and r.json()["resolved_by"] == author.user.id

    mine = (await client.get("/api/v1/me/error-reports", headers=agent.headers)).json()["items"]
    assert len(mine) == 1
    assert mine[0]["state"] == "fixed" and mine[0]["fixed_version"] == 2
    assert mine[0]["fixed_version_url"] == f"/api/v1/items/{item['id']}/versions/2"
    assert mine[0]["resolution_note"] == "已更新为 79 元"
    assert (await client.get(mine[0]["fixed_version_url"], headers=agent.headers)).status_code == 200
    todo = (await client.get("/api/v1/me/todo", headers=author.headers)).json()
    assert todo["sections"]["error_reports"]["count"] == 0

    async with kb.app.state.sessionmaker() as s:
        actions = (await s.scalars(select(AuditEntry.action).where(AuditEntry.target_type == "task"))).all()
    assert sorted(actions) == ["error_report.create", "task.accept", "task.fix"]


async def test_dismissal_reason_reaches_the_reporter(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor
) -> None:
    item = await published(kb, publisher, author)
    task = (await report(client, agent, item["id"], "unclear", "携号转网的条件写得不清楚")).json()
    assert_problem(await task_act(client, author, task["id"], "dismiss", {"reason": "  \x01 "}), 422)
    assert_problem(await task_act(client, author, task["id"], "dismiss", {}), 422)
    r = await task_act(client, author, task["id"], "dismiss", {"reason": "条件已在第二段列明，无需修改"})
    assert r.status_code == 200 and r.json()["state"] == "dismissed"
    mine = (await client.get("/api/v1/me/error-reports", params={"state": "dismissed"}, headers=agent.headers)).json()[
        "items"
    ]
    assert [m["resolution_note"] for m in mine] == ["条件已在第二段列明，无需修改"]
    assert mine[0]["fixed_version"] is None
    # resolved: a new report of the same kind is a new task
    again = await report(client, agent, item["id"], "unclear", "还是看不懂")
    assert again.status_code == 201 and again.json()["id"] != task["id"]


async def test_unreadable_item_answers_404(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor, people: People
) -> None:
    admin = await people.make("acl.admin", role="admin")
    secret = await published(kb, publisher, author, title="信用卡风控内部口径")
    r = await client.put(
        f"/api/v1/items/{secret['id']}/acl",
        headers=admin.headers,
        json={"grants": [{"subject": f"user:{author.user.id}", "access": "read"}]},
    )
    assert r.status_code == 200, r.text
    assert_problem(await report(client, agent, secret["id"]), 404, "item_not_found")
    assert_problem(await report(client, agent, 987654321), 404, "item_not_found")
    draft = await kb.create(publisher, title="未发布的草稿")  # nothing of it is served to an agent
    assert_problem(await report(client, agent, draft["id"]), 404, "item_not_found")
    # a caller without feedback:report is refused before anything is looked up
    reader = await people.make("only.reader", permissions=["system:access", "module:knowledge", "knowledge:read"])
    assert_problem(await report(client, reader, secret["id"]), 403, "permission_denied")


async def test_one_open_report_per_reporter_item_and_category(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor
) -> None:
    item = await published(kb, publisher, author)
    first = await report(client, agent, item["id"], "wrong", "挂失电话写错了，应为 95588")
    assert first.status_code == 201
    repeat = await report(client, agent, item["id"], "wrong", "又点了一次")
    assert repeat.status_code == 200
    assert repeat.json()["id"] == first.json()["id"] and repeat.json()["comment"] == "挂失电话写错了，应为 95588"
    other = await report(client, agent, item["id"], "missing", "缺少境外挂失的说明")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    items = (await client.get("/api/v1/me/error-reports", headers=agent.headers)).json()["items"]
    assert len(items) == 2


async def test_bad_reports_are_refused(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor
) -> None:
    item = await published(kb, publisher, author)
    body = assert_problem(await report(client, agent, item["id"], comment="繁體字很長" * 401), 422, "validation_error")
    assert any(e["field"].endswith("comment") for e in body["errors"])
    assert (await report(client, agent, item["id"], comment="長" * 2000)).status_code == 201
    assert_problem(await report(client, agent, item["id"], category="rude"), 422, "validation_error")
    assert_problem(await report(client, agent, item["id"], category="wrong", version=7), 422, "version_not_found")
    r = await client.post(
        f"/api/v1/items/{item['id']}/error-reports", headers=agent.headers, json={"category": "wrong", "extra": 1}
    )
    assert_problem(r, 422, "validation_error")


async def test_spam_is_throttled(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, publisher: Actor, app: Any
) -> None:
    app.state.settings.error_report_max_per_hour = 3
    items = [await published(kb, publisher, author, title=f"电费缴纳渠道 {n}") for n in range(2)]
    for item in items:
        assert (await report(client, agent, item["id"], "outdated")).status_code == 201
    assert (await report(client, agent, items[0]["id"], "wrong")).status_code == 201
    r = await report(client, agent, items[1]["id"], "wrong")
    body = assert_problem(r, 429, "too_many_reports")
    assert 3500 <= int(r.headers["retry-after"]) <= 3600 and body["retry_after"] == int(r.headers["retry-after"])
    # a repeat of an open report is answered, not counted
    assert (await report(client, agent, items[0]["id"], "wrong")).status_code == 200
    mine = (await client.get("/api/v1/me/error-reports", headers=agent.headers)).json()["items"]
    assert len(mine) == 3
