from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from tests.conftest import Actor, assert_problem
from tests.knowledge.conftest import Kb


async def test_versions_and_diff(kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor) -> None:
    item = await kb.publish(
        admin,
        title="电费缴纳方式",
        question="怎么交电费",
        similar_questions=["电费在哪交", "交电费的渠道"],
        body="<p>可通过网上国网APP缴纳。</p><p>也可拨打95598查询。</p>",
        channel_answers={"wechat": "关注国网公众号即可缴费"},
        category_ids=[kb.nodes["电费缴纳"]],
        tags=["电费"],
        attributes={"region": "全国", "since_version": "v1"},
    )
    iid = item["id"]
    r = await kb.edit(
        admin,
        iid,
        {
            "title": "电费缴纳方式（含自动扣费）",
            "similar_questions": ["电费在哪交", "怎么设置自动扣费"],
            "body": "<p>可通过网上国网APP缴纳。</p><p>支持银行卡自动扣费。</p><p>也可拨打95598查询。</p>",
            "channel_answers": {"wechat": "关注国网公众号即可缴费", "app": "首页-交费"},
            "category_ids": [kb.nodes["电费缴纳"], kb.nodes["信用卡"]],
            "tags": ["电费", "自动扣费"],
            "attributes": {"region": "北京", "speed": 50},
            "change_note": "补充自动扣费",
        },
    )
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
    assert d["attributes"] == {
        "added": {"speed": 50},
        "removed": {"since_version": "v1"},
        "changed": {"region": {"before": "全国", "after": "北京"}},
    }
    # the reverse direction
    back = (await client.get(f"/api/v1/items/{iid}/diff", params={"from": 2, "to": 1}, headers=admin.headers)).json()
    assert back["tags"] == {"added": [], "removed": ["自动扣费"]}
    assert_problem(
        await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1, "to": 9}, headers=admin.headers),
        404,
        "version_not_found",
    )
    assert_problem(await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1}, headers=admin.headers), 422)

    # version lists: editors see all, readers only what is served to them
    lst = (await client.get(f"/api/v1/items/{iid}/versions", headers=admin.headers)).json()
    assert [(v["number"], v["state"]) for v in lst["items"]] == [(2, "draft"), (1, "published")]
    lst = (await client.get(f"/api/v1/items/{iid}/versions", headers=agent.headers)).json()
    assert [v["number"] for v in lst["items"]] == [1]
    v1 = await client.get(f"/api/v1/items/{iid}/versions/1", headers=agent.headers)
    assert v1.status_code == 200 and v1.json()["answers"]["wechat"] == "关注国网公众号即可缴费"
    assert_problem(await client.get(f"/api/v1/items/{iid}/versions/2", headers=agent.headers), 404, "version_not_found")
    assert_problem(
        await client.get(f"/api/v1/items/{iid}/diff", params={"from": 1, "to": 2}, headers=agent.headers),
        404,
        "version_not_found",
    )


async def test_restore(kb: Kb, client: httpx.AsyncClient, admin: Actor) -> None:
    item = await kb.publish(admin, title="套餐变更规则", tags=["套餐"], category_ids=[kb.nodes["套餐资费"]])
    iid = item["id"]
    assert (await kb.edit(admin, iid, {"title": "套餐变更规则（错误版本）", "tags": []})).status_code == 200
    await kb.ok(admin, iid, 2, "submit", "approve", "publish")

    async def restore(number: int, **params: str) -> httpx.Response:
        return await client.post(
            f"/api/v1/items/{iid}/versions/{number}/restore",
            params=params,
            json={"change_note": "回滚到正确版本"} if not params else None,
            headers={**admin.headers, "If-Match": await kb.etag(iid)},
        )

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


async def _delete(kb: Kb, actor: Actor, url: str, item_id: int, if_match: str | None = "auto") -> httpx.Response:
    headers = dict(actor.headers)
    if if_match is not None:
        headers["If-Match"] = await kb.etag(item_id) if if_match == "auto" else if_match
    return await kb.client.delete(url, headers=headers)


async def test_discarding_a_draft_brings_back_the_version_before_it(
    kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor
) -> None:
    item = await kb.publish(admin, title="宽带报修后多久上门？", body="<p>报修后 24 小时内上门。</p>")
    iid, url = item["id"], f"/api/v1/items/{item['id']}/draft"
    assert_problem(await _delete(kb, admin, url, iid), 404, "no_draft")
    stale = await kb.etag(iid)
    r = await kb.edit(admin, iid, {"title": "寬帶報修後多久上門？（草稿）", "body": "<p>写到一半的草稿</p>"})
    assert r.status_code == 200 and r.json()["number"] == 2
    assert_problem(await _delete(kb, admin, url, iid, if_match=None), 428, "precondition_required")
    assert_problem(await _delete(kb, admin, url, iid, if_match=stale), 412, "precondition_failed")
    assert_problem(await _delete(kb, agent, url, iid), 403, "permission_denied")
    r = await _delete(kb, admin, url, iid)
    assert r.status_code == 200, r.text
    assert r.json()["number"] == 1 and r.json()["state"] == "published"
    assert r.headers["etag"] == await kb.etag(iid)
    got = (await kb.get(admin, iid)).json()
    assert got["latest_version_no"] == 1 and got["status"] == "published"
    assert got["version"]["title"] == "宽带报修后多久上门？"
    listed = await client.get(f"/api/v1/items/{iid}/versions", headers=admin.headers)
    assert [v["number"] for v in listed.json()["items"]] == [1]
    # the next edit starts a fresh draft from the published version
    r = await kb.edit(admin, iid, {"similar_questions": ["报修多久有人来"]})
    assert r.status_code == 200 and r.json()["number"] == 2 and r.json()["body"] == "<p>报修后 24 小时内上门。</p>"
    # in review it is locked; rejected it may be thrown away
    await kb.ok(admin, iid, 2, "submit")
    assert_problem(await _delete(kb, admin, url, iid), 409, "version_locked")
    await kb.ok(admin, iid, 2, "reject")
    assert (await _delete(kb, admin, url, iid)).json()["number"] == 1
    entries = (
        await client.get("/api/v1/audit", params={"action": "item.draft_discard"}, headers=admin.headers)
    ).json()["items"]
    assert [(e["summary"]["version"], e["summary"]["title"]) for e in entries] == [
        (2, "宽带报修后多久上门？"),
        (2, "寬帶報修後多久上門？（草稿）"),
    ]


async def test_an_item_created_by_mistake_can_be_deleted_until_it_is_submitted(
    kb: Kb, client: httpx.AsyncClient, admin: Actor, people: Any
) -> None:
    author = await people.make("sun.li", role="author")
    item = await kb.create(author, title="测试条目，请忽略")
    iid, url = item["id"], f"/api/v1/items/{item['id']}"
    r = await client.put(
        f"{url}/acl",
        json={"grants": [{"subject": "public", "access": "read"}]},
        headers={**admin.headers, "If-Match": await kb.etag(iid)},
    )
    assert r.status_code == 200, r.text
    assert_problem(await _delete(kb, author, f"{url}/draft", iid), 409, "only_version")
    await kb.ok(author, iid, 1, "submit")
    assert_problem(await _delete(kb, author, url, iid), 409, "version_locked")
    await kb.ok(author, iid, 1, "withdraw")
    assert (await _delete(kb, author, url, iid)).status_code == 204
    assert_problem(await kb.get(admin, iid), 404, "item_not_found")
    async with kb.app.state.sessionmaker() as s:
        left = (
            await s.execute(
                text(
                    "SELECT (SELECT count(*) FROM item_versions WHERE item_id = :i),"
                    " (SELECT count(*) FROM acl_grants WHERE target_type = 'item' AND target_id = :i),"
                    " (SELECT count(*) FROM item_readers WHERE item_id = :i)"
                ),
                {"i": iid},
            )
        ).one()
    assert tuple(left) == (0, 0, 0)
    entries = (await client.get("/api/v1/audit", params={"action": "item.delete"}, headers=admin.headers)).json()
    assert [(e["target_id"], e["summary"]["title"]) for e in entries["items"]] == [(str(iid), "测试条目，请忽略")]
    # a published item is never deleted: unpublish or archive it
    published = await kb.publish(admin)
    assert_problem(
        await _delete(kb, admin, f"/api/v1/items/{published['id']}", published["id"]), 409, "item_not_deletable"
    )
    await kb.edit(admin, published["id"], {"title": "新草稿"})
    assert_problem(
        await _delete(kb, admin, f"/api/v1/items/{published['id']}", published["id"]), 409, "item_not_deletable"
    )
