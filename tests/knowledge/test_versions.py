from __future__ import annotations

import httpx

from tests.conftest import Actor, assert_problem
from tests.knowledge.conftest import Kb


async def test_versions_and_diff(kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor) -> None:
    item = await kb.publish(
        admin, title="电费缴纳方式", question="怎么交电费", similar_questions=["电费在哪交", "交电费的渠道"],
        body="<p>可通过网上国网APP缴纳。</p><p>也可拨打95598查询。</p>",
        channel_answers={"wechat": "关注国网公众号即可缴费"}, category_ids=[kb.nodes["电费缴纳"]],
        tags=["电费"], attributes={"region": "全国", "since_version": "v1"})
    iid = item["id"]
    r = await kb.edit(admin, iid, {
        "title": "电费缴纳方式（含自动扣费）", "similar_questions": ["电费在哪交", "怎么设置自动扣费"],
        "body": "<p>可通过网上国网APP缴纳。</p><p>支持银行卡自动扣费。</p><p>也可拨打95598查询。</p>",
        "channel_answers": {"wechat": "关注国网公众号即可缴费", "app": "首页-交费"},
        "category_ids": [kb.nodes["电费缴纳"], kb.nodes["信用卡"]], "tags": ["电费", "自动扣费"],
        "attributes": {"region": "北京", "speed": 50}, "change_note": "补充自动扣费"})
    assert r.status_code == 200, r.text
    d = (await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1, "to": 2}, headers=admin.headers)).json()
    assert (d["from_version"], d["to_version"]) == (1, 2)
    changed = {c["field"]: c for c in d["changed"]}
    assert set(changed) == {"title", "similar_questions", "body", "answers.app", "change_note"}
    assert "-电费缴纳方式\n+电费缴纳方式（含自动扣费）" in changed["title"]["diff"]
    assert changed["title"]["diff"].startswith("--- v1/title\n+++ v2/title")
    assert "+<p>支持银行卡自动扣费。</p>" in changed["body"]["diff"]
    assert "-<p>也可拨打95598查询。</p>" not in changed["body"]["diff"]  # unchanged lines are context
    assert changed["similar_questions"]["before"] == ["电费在哪交", "交电费的渠道"]
    assert "+怎么设置自动扣费" in changed["similar_questions"]["diff"]
    assert changed["answers.app"]["before"] == "" and changed["answers.app"]["after"] == "首页-交费"
    assert {"question", "answers.wechat", "body_format", "channels"} <= set(d["unchanged"])
    assert [c["name"] for c in d["categories"]["added"]] == ["信用卡"]
    assert d["categories"]["removed"] == []
    assert d["tags"] == {"added": ["自动扣费"], "removed": []}
    assert d["attributes"] == {"added": {"speed": 50}, "removed": {"since_version": "v1"},
                               "changed": {"region": {"before": "全国", "after": "北京"}}}
    # the reverse direction
    back = (await client.get(f"/api/v1/items/{iid}/diff", params={"from": 2, "to": 1}, headers=admin.headers)).json()
    assert back["tags"] == {"added": [], "removed": ["自动扣费"]}
    assert_problem(await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1, "to": 9},
                                    headers=admin.headers), 404, "version_not_found")
    assert_problem(await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1}, headers=admin.headers), 422)

    # version lists: editors see all, readers only what is served to them
    lst = (await client.get(f"/api/v1/items/{iid}/versions", headers=admin.headers)).json()
    assert [(v["number"], v["state"]) for v in lst["items"]] == [(2, "draft"), (1, "published")]
    lst = (await client.get(f"/api/v1/items/{iid}/versions", headers=agent.headers)).json()
    assert [v["number"] for v in lst["items"]] == [1]
    v1 = await client.get(f"/api/v1/items/{iid}/versions/1", headers=agent.headers)
    assert v1.status_code == 200 and v1.json()["answers"]["wechat"] == "关注国网公众号即可缴费"
    assert_problem(await client.get(f"/api/v1/items/{iid}/versions/2", headers=agent.headers),
                   404, "version_not_found")
    assert_problem(await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1, "to": 2},
                                    headers=agent.headers), 404, "version_not_found")


async def test_restore(kb: Kb, client: httpx.AsyncClient, admin: Actor) -> None:
    item = await kb.publish(admin, title="套餐变更规则", tags=["套餐"], category_ids=[kb.nodes["套餐资费"]])
    iid = item["id"]
    assert (await kb.edit(admin, iid, {"title": "套餐变更规则（错误版本）", "tags": []})).status_code == 200
    await kb.ok(admin, iid, 2, "submit", "approve", "publish")

    async def restore(number: int, **params: str) -> httpx.Response:
        return await client.post(f"/api/v1/items/{iid}/versions/{number}/restore", params=params,
                                 json={"change_note": "回滚到正确版本"} if not params else None,
                                 headers={**admin.headers, "If-Match": await kb.etag(iid)})

    r = await restore(1)
    assert r.status_code == 201, r.text
    v3 = r.json()
    assert (v3["number"], v3["state"], v3["restored_from"]) == (3, "draft", 1)
    assert v3["title"] == "套餐变更规则" and v3["tags"] == ["套餐"] and v3["change_note"] == "回滚到正确版本"
    assert [c["name"] for c in v3["categories"]] == ["套餐资费"]
    # a draft is open now: refuse, unless told to replace it
    assert_problem(await restore(2), 409, "draft_open")
    r = await restore(2, replace="true")
    assert r.status_code == 201 and r.json()["number"] == 3 and r.json()["restored_from"] == 2
    assert r.json()["title"] == "套餐变更规则（错误版本）" and r.json()["change_note"].startswith("恢复自版本 2")
    await kb.ok(admin, iid, 3, "submit")
    assert_problem(await restore(1, replace="true"), 409, "version_locked")
    assert_problem(await restore(7), 404, "version_not_found")
    # the published version is untouched by all this
    assert (await kb.get(admin, iid)).json()["published_version_no"] == 2
