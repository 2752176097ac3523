"""GET /me/todo: the caller's sections, counts and first entries; other domains add sections."""

from __future__ import annotations

import httpx

from tests.conftest import Actor, People, assert_problem
from tests.todo.conftest import Kb, report


async def test_reviews_and_error_reports_of_a_reviewer(
    client: httpx.AsyncClient, kb: Kb, agent: Actor, author: Actor, reviewer: Actor, publisher: Actor
) -> None:
    waiting = []
    for title in ("宽带提速申请流程", "手机套餐变更规则", "信用卡分期手续费"):
        item = await kb.create(author, title=title)
        await kb.ok(author, item["id"], 1, "submit")
        waiting.append(item["id"])
    owned = await kb.publish(publisher, title="审核员自己的知识", owner_id=reviewer.user.id)
    for category in ("wrong", "unclear"):
        assert (await report(client, agent, owned["id"], category)).status_code == 201

    r = await client.get("/api/v1/me/todo", params={"limit": 2}, headers=reviewer.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body["sections"]) == [
        "reviews",
        "error_reports",
        "review_due",
        "expiring",
        "announcements",
        "exams",
        "expert_questions",
        "answered_questions",
        "study",
        "case_proposals",
    ]
    reviews = body["sections"]["reviews"]
    assert reviews["count"] == 3 and [e["item_id"] for e in reviews["items"]] == waiting[:2]  # oldest first
    assert reviews["items"][0]["link"] == f"/api/v1/items/{waiting[0]}/versions/1"
    assert reviews["items"][0]["title"] == "宽带提速申请流程"
    assert body["sections"]["error_reports"]["count"] == 2
    assert body["total"] == 5
    # the same queue as GET /reviews
    queue = (await client.get("/api/v1/reviews", headers=reviewer.headers)).json()["items"]
    assert [q["item_id"] for q in queue] == waiting


async def test_bad_parameters_and_permissions(client: httpx.AsyncClient, people: People) -> None:
    agent = await people.make("wu.min", role="agent")
    for params in ({"expiring_within_days": 0}, {"expiring_within_days": 366}, {"limit": 51}, {"limit": "x"}):
        assert_problem(await client.get("/api/v1/me/todo", params=params, headers=agent.headers), 422)
    r = await client.get("/api/v1/me/todo", params={"expiring_within_days": 365}, headers=agent.headers)
    assert r.status_code == 200 and r.json()["total"] == 0 and "reviews" not in r.json()["sections"]
    nobody = await people.make("no.modules", permissions=["system:access"])
    assert_problem(await client.get("/api/v1/me/todo", headers=nobody.headers), 403, "permission_denied")


async def test_an_unread_mandatory_bulletin_waits_until_it_is_read(client: httpx.AsyncClient, people: People) -> None:
    manager = await people.make("gao.jing", role="publisher")
    agent = await people.make("zheng.yi", role="agent")
    r = await client.post(
        "/api/v1/announcements",
        headers=manager.headers,
        json={
            "title": "【紧急】全省宽带割接通知",
            "body": "<p>12月8日 0:00-6:00 全省FTTH割接，期间报障请安抚客户。</p>",
            "mandatory": True,
            "priority": "urgent",
            "state": "published",
            "audience": {"roles": ["agent"]},
        },
    )
    assert r.status_code == 201, r.text
    bulletin = r.json()["id"]
    section = (await client.get("/api/v1/me/todo", headers=agent.headers)).json()["sections"]["announcements"]
    assert section["count"] == 1
    assert section["items"][0] | {"created_at": None} == section["items"][0] | {
        "kind": "announcement",
        "id": bulletin,
        "title": "【紧急】全省宽带割接通知",
        "state": "mandatory",
        "created_at": None,
    }
    assert (await client.post(f"/api/v1/announcements/{bulletin}/read", headers=agent.headers)).status_code < 300
    body = (await client.get("/api/v1/me/todo", headers=agent.headers)).json()
    assert body["sections"]["announcements"] == {"count": 0, "items": []} and body["total"] == 0
