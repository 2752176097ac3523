"""The best-practice base (最佳实践案例): any agent proposes a case (create, edit, attach the call
recording, submit), a supervisor approves and publishes it through the normal workflow; agents
create nothing else, never review or publish, and nobody publishes a case they wrote."""

from __future__ import annotations

from typing import Any

import httpx

from tests.attachments.api_helpers import CTYPE, drain, multipart
from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

CASE = {
    "item_type": "case",
    "title": "老人误开国际漫游被扣费 368 元，安抚并申请退费",
    "body": "<p>一次成功化解投诉的通话。</p>",
    "attributes": {
        "case_situation": "78 岁客户来电质疑话费，情绪激动，称从未出国。查询为误触开通国际漫游包。",
        "case_handling": "先致歉安抚，逐条解释扣费明细；确认非本人意愿后关闭漫游，提交特殊退费工单。",
        "case_outcome": "当日退费 368 元，客户致谢；建议为老年用户默认关闭国际漫游。",
    },
}


async def propose(client: httpx.AsyncClient, agent: Actor, **fields: Any) -> httpx.Response:
    return await client.post("/api/v1/items", json={**CASE, **fields}, headers=agent.headers)


async def test_an_agents_case_is_published_after_a_supervisors_approval(
    kb: Kb, client: httpx.AsyncClient, people: People
) -> None:
    agent = await people.make("xiao.chen", role="agent")
    colleague = await people.make("xiao.lin", role="agent")
    supervisor = await people.make("zhao.banzhang", role="supervisor")

    r = await propose(client, agent, category_ids=[kb.nodes["套餐资费"]])
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["item_type"] == "case" and case["version"]["state"] == "draft"
    assert case["allowed_actions"] == ["submit"]  # never approve or publish
    # The proposer edits their draft and attaches the call recording.
    r = await kb.edit(agent, case["id"], {"change_note": "补充通话录音"})
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/api/v1/items/{case['id']}/attachments",
        headers={**agent.headers, "Content-Type": CTYPE, "If-Match": await kb.etag(case["id"])},
        content=multipart([("通话录音-20261207.mp3", b"ID3\x03\x00" + b"\x00" * 64)]),
    )
    assert r.status_code == 201, r.text
    # Colleagues do not see a proposal; its proposer does.
    assert (await kb.get(colleague, case["id"])).status_code == 404
    assert (await kb.get(agent, case["id"])).json()["version"]["change_note"] == "补充通话录音"

    r = await kb.act(agent, case["id"], 1, "submit")
    assert r.status_code == 200, r.text
    assert r.json()["version"]["state"] == "in_review" and r.json()["allowed_actions"] == ["withdraw"]
    for action in ("approve", "publish"):
        assert_problem(await kb.act(agent, case["id"], 1, action), 403, "permission_denied")

    # The supervisor's queue and to-do list hold it; they see the version in review and its recording.
    queue = (await client.get("/api/v1/reviews", headers=supervisor.headers)).json()["items"]
    assert [x["item_id"] for x in queue] == [case["id"]]
    assert (await client.get("/api/v1/me/todo", headers=supervisor.headers)).json()["sections"]["reviews"]["count"] == 1
    seen = (await kb.get(supervisor, case["id"])).json()
    assert seen["version"]["state"] == "in_review" and seen["allowed_actions"] == ["approve", "reject"]
    files = (await client.get(f"/api/v1/items/{case['id']}/attachments", headers=supervisor.headers)).json()["items"]
    assert [f["file_name"] for f in files] == ["通话录音-20261207.mp3"]

    await kb.ok(supervisor, case["id"], 1, "approve", "publish")
    r = await client.get(f"/api/v1/channels/agent/items/{case['id']}", headers=colleague.headers)
    assert r.status_code == 200 and "老人误开国际漫游" in r.text
    # The softphone shows the whole case, and search finds it by what happened on the call.
    assert "<h3>处理</h3>" in r.json()["html"] and "提交特殊退费工单" in r.json()["html"]
    await drain(kb.app)
    hits = (await client.get("/api/v1/search", params={"q": "误触开通国际漫游"}, headers=colleague.headers)).json()
    assert case["id"] in [h["item_id"] for h in hits["items"]]
    published = (await kb.get(colleague, case["id"])).json()
    assert published["status"] == "published" and published["version"]["attributes"] == CASE["attributes"]
    # Published, the case belongs to the knowledge base: its proposer no longer edits it.
    assert_problem(await kb.edit(agent, case["id"], {"title": "改个标题"}), 403, "permission_denied")


async def test_agents_create_nothing_but_cases(
    kb: Kb, client: httpx.AsyncClient, people: People, author: Actor
) -> None:
    agent = await people.make("xiao.chen", role="agent")
    other = await people.make("xiao.lin", role="agent")
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    for item_type in ("faq", "article", "policy"):
        body = assert_problem(await propose(client, agent, item_type=item_type), 403, "permission_denied")
        assert body["required_permission"] == "knowledge:create"
    case = (await propose(client, agent)).json()
    # Someone else's proposal: no edits, no submit.
    assert_problem(await kb.edit(other, case["id"], {"title": "别人的案例"}), 403, "permission_denied")
    assert_problem(await kb.act(other, case["id"], 1, "submit"), 403, "permission_denied")
    # Incomplete cases do not go to review: the template's attributes are required.
    r = await kb.edit(agent, case["id"], {"attributes": {"case_situation": "客户投诉网速慢"}})
    assert r.status_code == 200, r.text
    body = assert_problem(await kb.act(agent, case["id"], 1, "submit"), 422, "invalid_attribute")
    assert {e["attribute"] for e in body["errors"]} == {"case_handling", "case_outcome"}
    # Editors' FAQ drafts are not the agent's to touch, and not the supervisor's to approve.
    faq = await kb.create(author)
    assert_problem(await kb.edit(agent, faq["id"], {"title": "改"}), 403, "permission_denied")
    await kb.ok(author, faq["id"], 1, "submit")
    assert_problem(await kb.act(supervisor, faq["id"], 1, "approve"), 403, "permission_denied")
    assert (await client.get("/api/v1/reviews", headers=supervisor.headers)).json()["items"] == []
    # Rejected by the supervisor: back on the proposer's to-do list with the reason, reworked, resubmitted.
    r = await kb.edit(agent, case["id"], {"attributes": {**CASE["attributes"]}})
    assert r.status_code == 200, r.text
    await kb.ok(agent, case["id"], 1, "submit")
    r = await kb.act(supervisor, case["id"], 1, "reject", {"reason": "请补充退费工单号"})
    assert r.status_code == 200, r.text
    section = (await client.get("/api/v1/me/todo", headers=agent.headers)).json()["sections"]["case_proposals"]
    assert [(e["item_id"], e["state"]) for e in section["items"]] == [(case["id"], "rejected")]
    assert (await kb.get(agent, case["id"])).json()["version"]["review_note"] == "请补充退费工单号"
    await kb.ok(agent, case["id"], 1, "reopen", "submit")
    section = (await client.get("/api/v1/me/todo", headers=agent.headers)).json()["sections"]["case_proposals"]
    assert section["count"] == 0
    # The proposer may withdraw their submitted case again and delete it while it was never published.
    other_case = (await propose(client, agent, title="宽带报障一次解决的沟通话术")).json()
    await kb.ok(agent, other_case["id"], 1, "submit", "withdraw")
    r = await client.delete(
        f"/api/v1/items/{other_case['id']}", headers={**agent.headers, "If-Match": await kb.etag(other_case["id"])}
    )
    assert r.status_code == 204, r.text


async def test_nobody_publishes_a_case_they_wrote(kb: Kb, client: httpx.AsyncClient, people: People) -> None:
    # A supervisor proposes too (they hold the agent's permissions): another supervisor approves.
    supervisor = await people.make("zhao.banzhang", role="supervisor")
    other = await people.make("qian.banzhang", role="supervisor")
    admin = await people.make("root.admin", role="admin")
    case = (await propose(client, supervisor)).json()
    await kb.ok(supervisor, case["id"], 1, "submit")
    assert_problem(await kb.act(supervisor, case["id"], 1, "approve"), 403, "four_eyes")
    await kb.ok(other, case["id"], 1, "approve")
    assert_problem(await kb.act(supervisor, case["id"], 1, "publish"), 403, "four_eyes")
    await kb.ok(other, case["id"], 1, "publish")
    # Even an administrator's own case needs someone else's approval.
    mine = (await propose(client, admin, title="停电报修高峰期的排队安抚")).json()
    await kb.ok(admin, mine["id"], 1, "submit")
    assert_problem(await kb.act(admin, mine["id"], 1, "approve"), 403, "four_eyes")
    await kb.ok(other, mine["id"], 1, "approve", "publish")
