"""The expert network: an agent's question reaches the experts of its category (routing, to-do),
is answered and accepted, and the answer becomes a reviewed knowledge item; fallback routing;
who sees what; wrong transitions and bad inputs; the audit trail."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

QUESTION = {
    "title": "光猫 LOS 灯红色闪烁，重启无效怎么办？",
    "text": "客户报宽带断网，光猫 LOS 灯一直红闪，已指导重启两次，仍无法上网。是否需要派单上门？",
}
ANSWER = (
    "LOS 红灯闪烁表示光信号中断，重启无效时：\n1. 确认光纤尾纤未弯折、接头未松动；\n"
    "2. 查询该地址是否有区域性故障（故障公告）；\n3. 以上均无则直接派单装维上门，时限 24 小时。"
)


async def make_expert(client: httpx.AsyncClient, manager: Actor, expert: Actor, **profile: Any) -> dict[str, Any]:
    body = {"bio": "十年宽带装维经验，熟悉光猫与 FTTH 故障", "available": True, **profile}
    r = await client.put(f"/api/v1/experts/{expert.user.id}", json=body, headers=manager.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def ask(client: httpx.AsyncClient, actor: Actor, **fields: Any) -> httpx.Response:
    return await client.post("/api/v1/questions", json={**QUESTION, **fields}, headers=actor.headers)


async def todo(client: httpx.AsyncClient, actor: Actor) -> dict[str, Any]:
    r = await client.get("/api/v1/me/todo", headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()["sections"]


async def test_question_reaches_an_expert_and_becomes_a_reviewed_item(
    kb: Kb, client: httpx.AsyncClient, people: People, reviewer: Actor, publisher: Actor, admin: Actor
) -> None:
    manager = await people.make("kb.guanli", role="kb_manager")
    expert = await people.make("lao.zhou", role="agent")  # a senior agent: experts need no editor role
    phone_expert = await people.make("xiao.mei", role="agent")
    asker = await people.make("xin.ren", role="agent")
    bystander = await people.make("pang.ren", role="agent")
    await make_expert(client, manager, expert, category_ids=[kb.nodes["宽带业务"]])
    await make_expert(client, manager, phone_expert, category_ids=[kb.nodes["携号转网"]])

    r = await ask(client, asker, category_ids=[kb.nodes["宽带故障"]])  # a child of 宽带业务
    assert r.status_code == 201, r.text
    q = r.json()
    assert q["state"] == "open" and q["routing"] == "experts" and q["routed_to"] == [expert.user.id]

    section = (await todo(client, expert))["expert_questions"]
    assert section["count"] == 1 and section["items"][0]["id"] == q["id"]
    assert (await todo(client, phone_expert))["expert_questions"]["count"] == 0
    assigned = (await client.get("/api/v1/questions", params={"scope": "assigned"}, headers=expert.headers)).json()
    assert [x["id"] for x in assigned["items"]] == [q["id"]]
    # Someone it was not routed to neither sees nor answers it.
    assert_problem(
        await client.get(f"/api/v1/questions/{q['id']}", headers=bystander.headers), 404, "question_not_found"
    )
    assert_problem(
        await client.post(f"/api/v1/questions/{q['id']}/answers", json={"body": "不知道"}, headers=bystander.headers),
        404,
        "question_not_found",
    )
    assert (await client.get("/api/v1/questions", headers=bystander.headers)).json()["items"] == []

    r = await client.post(f"/api/v1/questions/{q['id']}/answers", json={"body": ANSWER}, headers=expert.headers)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert (await todo(client, expert))["expert_questions"]["count"] == 0
    waiting = (await todo(client, asker))["answered_questions"]
    assert waiting["count"] == 1 and waiting["items"][0]["id"] == q["id"]
    q = (await client.get(f"/api/v1/questions/{q['id']}", headers=asker.headers)).json()
    assert q["state"] == "answered" and [a["body"] for a in q["answers"]] == [ANSWER]

    # Only the asker accepts.
    url = f"/api/v1/questions/{q['id']}/answers/{answer['id']}"
    assert_problem(await client.post(f"{url}/accept", headers=expert.headers), 403, "not_asker")
    r = await client.post(f"{url}/accept", headers=asker.headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "resolved" and r.json()["accepted_answer_id"] == answer["id"]
    assert (await todo(client, asker))["answered_questions"]["count"] == 0

    # The knowledge manager turns the answer into a draft in one call; the normal review follows.
    r = await client.post(
        f"{url}/draft", json={"attributes": {"region": "全国"}, "submit": True}, headers=manager.headers
    )
    assert r.status_code == 201, r.text
    draft = r.json()
    assert draft["state"] == "in_review" and draft["version"] == 1
    item = (await client.get(f"/api/v1/items/{draft['item_id']}", headers=manager.headers)).json()
    v = item["version"]
    assert (v["title"], v["question"], v["body"], v["body_format"]) == (
        QUESTION["title"],
        QUESTION["title"],
        ANSWER,
        "markdown",
    )
    assert v["author_id"] == manager.user.id and [c["id"] for c in v["categories"]] == [kb.nodes["宽带故障"]]
    assert (await client.get(f"/api/v1/questions/{q['id']}", headers=asker.headers)).json()["draft_item_id"] == draft[
        "item_id"
    ]
    assert_problem(await client.post(f"{url}/draft", headers=manager.headers), 409, "draft_exists")

    # Not yet published: agents do not see it; a reviewer and a publisher (not its author) take it out.
    assert (await kb.get(asker, draft["item_id"])).status_code == 404
    await kb.ok(reviewer, draft["item_id"], 1, "approve")
    await kb.ok(publisher, draft["item_id"], 1, "publish")
    r = await client.get(f"/api/v1/channels/agent/items/{draft['item_id']}", headers=bystander.headers)
    assert r.status_code == 200 and "派单装维上门" in r.text

    audit = (await client.get("/api/v1/audit", params={"target_type": "question"}, headers=admin.headers)).json()
    actions = {e["action"] for e in audit["items"]}
    assert {"question.create", "question.answer", "question.accept", "question.draft", "question.link_item"} <= actions
    created = next(e for e in audit["items"] if e["action"] == "question.create")
    assert created["summary"]["routed_to"] == [expert.user.id]


async def test_tags_route_and_fallback_goes_to_managers(
    kb: Kb, client: httpx.AsyncClient, people: People, admin: Actor
) -> None:
    manager = await people.make("kb.guanli", role="kb_manager")
    publisher = await people.make("fa.bu", role="publisher")  # holds experts:manage too
    expert = await people.make("lao.zhou", role="agent")
    on_leave = await people.make("lao.li", role="agent")
    asker = await people.make("xin.ren", role="agent")
    for name in ("FTTH", "5G套餐"):
        assert (await client.post("/api/v1/tags", json={"name": name}, headers=admin.headers)).status_code == 201
    await make_expert(client, manager, expert, tags=["FTTH"])
    await make_expert(client, manager, on_leave, tags=["5G套餐"], available=False)

    r = await ask(client, asker, tags=["FTTH"])
    assert r.status_code == 201 and r.json()["routed_to"] == [expert.user.id]
    # The only 5G expert is on leave: nobody matches, the managers get it and the answer says so.
    r = await ask(client, asker, title="5G 套餐降档有违约金吗？", tags=["5G套餐"])
    q = r.json()
    assert q["routing"] == "fallback" and sorted(q["routed_to"]) == sorted([manager.user.id, publisher.user.id])
    assert (await todo(client, manager))["expert_questions"]["count"] == 1
    assert (await todo(client, on_leave))["expert_questions"]["count"] == 0
    # A manager answers without being an expert; the asker closes instead of accepting.
    r = await client.post(
        f"/api/v1/questions/{q['id']}/answers",
        json={"body": "降档次月生效，合约期内按协议收取违约金。"},
        headers=manager.headers,
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/api/v1/questions/{q['id']}/close", json={"reason": "已在营业厅解决"}, headers=asker.headers
    )
    assert r.status_code == 200 and r.json()["state"] == "closed"
    experts = (await client.get("/api/v1/experts", params={"available": "true"}, headers=asker.headers)).json()
    assert [e["username"] for e in experts["items"]] == ["lao.zhou"]


async def test_wrong_transitions(kb: Kb, client: httpx.AsyncClient, people: People) -> None:
    manager = await people.make("kb.guanli", role="kb_manager")
    expert = await people.make("lao.zhou", role="agent")
    asker = await people.make("xin.ren", role="agent")
    await make_expert(client, manager, expert, category_ids=[kb.nodes["信用卡"]])
    q = (await ask(client, asker, title="信用卡被盗刷，挂失后还要还款吗？", category_ids=[kb.nodes["挂失"]])).json()
    base = f"/api/v1/questions/{q['id']}"
    # Nothing to accept yet: an answer id of another question is 404, and open → resolved is not a move.
    assert_problem(await client.post(f"{base}/answers/999999/accept", headers=asker.headers), 404, "answer_not_found")
    answer = (
        await client.post(
            f"{base}/answers",
            headers=expert.headers,
            json={"body": "挂失前 48 小时内的盗刷可申请调查，调查期间暂缓还款。"},
        )
    ).json()
    assert (await client.post(f"{base}/answers/{answer['id']}/accept", headers=asker.headers)).status_code == 200
    body = assert_problem(
        await client.post(f"{base}/answers/{answer['id']}/accept", headers=asker.headers), 409, "invalid_transition"
    )
    assert body["state"] == "resolved" and body["allowed"] == []
    assert_problem(
        await client.post(f"{base}/answers", json={"body": "补充"}, headers=expert.headers), 409, "invalid_transition"
    )
    assert_problem(await client.post(f"{base}/close", headers=asker.headers), 409, "invalid_transition")

    other = (await ask(client, asker, title="信用卡挂失后多久补卡？", category_ids=[kb.nodes["挂失"]])).json()
    assert_problem(
        await client.post(f"/api/v1/questions/{other['id']}/close", headers=expert.headers), 403, "not_asker"
    )
    assert (await client.post(f"/api/v1/questions/{other['id']}/close", headers=asker.headers)).status_code == 200
    assert_problem(
        await client.post(
            f"/api/v1/questions/{other['id']}/answers", json={"body": "7 个工作日"}, headers=expert.headers
        ),
        409,
        "invalid_transition",
    )


async def test_bad_inputs(kb: Kb, client: httpx.AsyncClient, people: People, publisher: Actor, admin: Actor) -> None:
    manager = await people.make("kb.guanli", role="kb_manager")
    asker = await people.make("xin.ren", role="agent")
    expert = await people.make("lao.zhou", role="agent")
    roles = await people.roles()
    secret = await kb.publish(publisher, title="内部：宽带提速限速名单处理口径")
    r = await client.put(
        f"/api/v1/items/{secret['id']}/acl",
        json={"grants": [{"subject": f"role:{roles['publisher'].id}"}]},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    readable = await kb.publish(publisher, title="宽带提速怎么办理？")

    # An item the asker may not read is 404, exactly like one that does not exist.
    hidden = assert_problem(await ask(client, asker, item_id=secret["id"]), 404, "item_not_found")
    missing = assert_problem(await ask(client, asker, item_id=987654321), 404, "item_not_found")
    assert hidden["detail"].replace(str(secret["id"]), "N") == missing["detail"].replace("987654321", "N")
    assert (await ask(client, asker, item_id=readable["id"])).status_code == 201
    body = assert_problem(
        await ask(client, asker, category_ids=[kb.nodes["宽带故障"], 777777]), 422, "unknown_category"
    )
    assert body["unknown"] == [777777] and body["field"] == "category_ids"
    assert_problem(await ask(client, asker, tags=["不存在的标签"]), 422, "unknown_tag")
    assert_problem(await ask(client, asker, title=""), 422, "validation_error")

    # Profiles: unknown user or category, If-Match on replace, only managers write them.
    assert_problem(await client.put("/api/v1/experts/987654", json={}, headers=manager.headers), 404, "user_not_found")
    assert_problem(
        await client.put(f"/api/v1/experts/{expert.user.id}", json={"category_ids": [777777]}, headers=manager.headers),
        422,
        "unknown_category",
    )
    assert_problem(
        await client.put(f"/api/v1/experts/{expert.user.id}", json={}, headers=asker.headers), 403, "permission_denied"
    )
    auditor = await people.make("shen.ji", role="auditor")  # may not answer: never routed questions
    assert_problem(
        await client.put(f"/api/v1/experts/{auditor.user.id}", json={}, headers=manager.headers), 422, "not_an_answerer"
    )
    profile = await make_expert(client, manager, expert, category_ids=[kb.nodes["宽带业务"]])
    url = f"/api/v1/experts/{expert.user.id}"
    assert_problem(await client.put(url, json={"bio": "新简介"}, headers=manager.headers), 428)
    r = await client.put(url, json={"bio": "新简介"}, headers={**manager.headers, "If-Match": profile["etag"]})
    assert r.status_code == 200 and r.json()["bio"] == "新简介" and r.json()["category_ids"] == []
    assert_problem(
        await client.put(url, json={"bio": "旧"}, headers={**manager.headers, "If-Match": profile["etag"]}), 412
    )
    assert (await client.delete(url, headers=manager.headers)).status_code == 204
    assert_problem(await client.get(url, headers=asker.headers), 404, "expert_not_found")
    # An answer cannot be drafted by someone without knowledge:create.
    q = (await ask(client, asker)).json()
    assert_problem(
        await client.post(f"/api/v1/questions/{q['id']}/answers/1/draft", headers=asker.headers),
        403,
        "permission_denied",
    )
