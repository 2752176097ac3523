from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from app.core.db import utcnow
from app.knowledge.models import ItemVersion
from app.knowledge.service import MAX_BODY_CHARS, answer_for, sanitize_html
from tests.conftest import Actor, assert_problem
from tests.knowledge.conftest import Kb


async def test_create_and_read_an_item(
    kb: Kb, client: httpx.AsyncClient, author: Actor, admin: Actor, agent: Actor
) -> None:
    item = await kb.create(
        author,
        title="宽带無法上網怎麼辦？",
        question="寬頻斷線了怎麼處理",
        similar_questions=["  宽带断网了 ", "宽带断网了", "", "寬頻斷線了怎麼處理", "家里 WiFi 连不上"],
        channel_answers={"wechat": "请重启光猫后重试，仍不行回复【报修】。", "agent": "  "},
        category_ids=[kb.nodes["宽带故障"]],
        attributes={"region": "广东", "speed": "300"},
        valid_from=(utcnow() - timedelta(days=1)).isoformat(),
        review_due="2026-12-31",
    )
    v = item["version"]
    assert item["status"] == "draft" and item["item_type"] == "faq" and item["owner_id"] == author.user.id
    assert item["latest_version_no"] == 1 and item["published_version_no"] is None
    assert item["allowed_actions"] == ["submit"] and item["review_due"] == "2026-12-31"
    assert v["number"] == 1 and v["state"] == "draft" and v["author_id"] == author.user.id
    # similar questions: trimmed, blanks, duplicates and the standard question itself dropped
    assert v["similar_questions"] == ["宽带断网了", "家里 WiFi 连不上"]
    assert v["channel_answers"] == {"wechat": "请重启光猫后重试，仍不行回复【报修】。"}
    assert v["answers"]["wechat"] == "请重启光猫后重试，仍不行回复【报修】。"
    assert v["answers"]["web"] == v["answers"]["agent"] == v["body"]  # falling back to the body
    assert v["attributes"] == {"region": "广东", "speed": 300}
    assert [c["name"] for c in v["categories"]] == ["宽带故障"]
    # readers (knowledge:read only) see nothing until it is published
    assert_problem(await kb.get(agent, item["id"]), 404, "item_not_found")
    await kb.ok(admin, item["id"], 1, "submit", "approve", "publish")
    r = await kb.get(agent, item["id"])
    assert r.status_code == 200, r.text
    assert r.json()["version"]["title"] == "宽带無法上網怎麼辦？" and r.json()["allowed_actions"] == []
    assert r.headers["etag"] == r.json()["etag"] and "no-cache" in r.headers["cache-control"]
    # an editor starts v2; the reader still sees v1, the editor v2
    assert (await kb.edit(author, item["id"], {"title": "宽带无法上网怎么办（新版）"})).status_code == 200
    assert (await kb.get(agent, item["id"])).json()["version"]["number"] == 1
    mine = (await kb.get(author, item["id"])).json()
    assert mine["version"]["number"] == 2 and mine["published_version_no"] == 1
    assert mine["version"]["similar_questions"] == ["宽带断网了", "家里 WiFi 连不上"]  # copied forward
    assert_problem(await client.get("/api/v1/items/999999", headers=agent.headers), 404, "item_not_found")


async def test_html_is_sanitized_and_markdown_kept(kb: Kb, author: Actor) -> None:
    dirty = (
        '<p onclick="steal()">挂失请拨打 <a href="javascript:alert(1)">95588</a>'
        '<script>alert("x")</script><img src="/a.png" onerror="alert(1)" alt="流程图"></p>'
        '<table><tr><td colspan="2"><strong>步骤</strong></td></tr></table>'
        '<a href="https://www.icbc.com.cn" target="_blank">官网</a><style>p{}</style>'
    )
    item = await kb.create(author, body=dirty, channel_answers={"web": '<b onmouseover="x()">网页版</b>'})
    body = item["version"]["body"]
    for bad in ("<script", "onclick", "onerror", "javascript:", "<style", "alert("):
        assert bad not in body, (bad, body)
    for kept in (
        '<img src="/a.png" alt="流程图">',
        "<table>",
        'colspan="2"',
        "<strong>步骤</strong>",
        'href="https://www.icbc.com.cn"',
        "挂失请拨打",
    ):
        assert kept in body, (kept, body)
    assert item["version"]["channel_answers"]["web"] == "<b>网页版</b>"
    md = await kb.create(author, body_format="markdown", body="# 标题\n\n<b>原样保存</b> & **加粗**")
    assert md["version"]["body"] == "# 标题\n\n<b>原样保存</b> & **加粗**"
    # switching a draft to HTML sanitizes what is there
    r = await kb.edit(author, md["id"], {"body_format": "html", "body": "<p>ok</p><script>x</script>"})
    assert r.json()["body"] == "<p>ok</p>" and r.json()["body_format"] == "html"
    assert (
        sanitize_html('<a href="tel:95598" onclick="x">95598</a>')
        == '<a href="tel:95598" rel="noopener noreferrer">95598</a>'
    )


async def test_answer_for_falls_back_to_the_body() -> None:
    v = ItemVersion(body="<p>正文</p>", channel_answers={"wechat": "短答案", "app": ""})
    assert answer_for(v, "wechat") == "短答案"
    assert answer_for(v, "app") == answer_for(v, "agent") == "<p>正文</p>"


async def test_bad_input(kb: Kb, client: httpx.AsyncClient, author: Actor, admin: Actor) -> None:
    async def bad(actor: Actor, body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
        r = await client.post("/api/v1/items", json={"title": "测试", **body}, headers=actor.headers)
        return assert_problem(r, status, code)

    await bad(author, {"category_ids": [kb.nodes["挂失"], 987654]}, 422, "unknown_category")
    await bad(author, {"tags": ["从没见过的标签"]}, 422, "unknown_tag")  # only taxonomy managers create tags
    err = await bad(author, {"attributes": {"region": "火星"}}, 422, "invalid_attribute")
    assert err["errors"][0]["type"] == "not_in_options"
    err = await bad(author, {"attributes": {"no_such": 1}}, 422, "invalid_attribute")
    assert err["errors"][0]["type"] == "unknown_attribute"
    await bad(author, {"item_type": "poem"}, 422, "unknown_item_type")
    await bad(author, {"owner_id": 999999}, 422, "unknown_owner")
    await bad(
        author,
        {"valid_from": "2026-06-01T00:00:00+08:00", "valid_to": "2026-05-01T00:00:00+08:00"},
        422,
        "invalid_validity",
    )
    await bad(author, {"source": "crm"}, 422, "incomplete_external_ref")
    await bad(author, {"similar_questions": [f"问法{i}" for i in range(51)]}, 422, "too_many_similar_questions")
    await bad(author, {"body": "长" * (MAX_BODY_CHARS + 1)}, 413, "body_too_large")
    await bad(author, {"title": ""}, 422, "validation_error")
    await bad(author, {"channels": ["fax"]}, 422, "validation_error")
    await bad(author, {"unknown_field": 1}, 422, "validation_error")
    # nothing was half-written
    r = await client.get("/api/v1/items", headers=author.headers)
    assert r.json()["items"] == []
    # a taxonomy manager's new tags are created on the fly
    item = await kb.create(admin, tags=["携号转网", "5G"])
    assert item["version"]["tags"] == ["5G", "携号转网"]
    # duplicate (source, external_id)
    await kb.create(author, source="crm", external_id="FAQ-0001")
    err = await bad(author, {"source": "crm", "external_id": "FAQ-0001"}, 409, "duplicate_external_id")
    assert err["item_id"]
    await kb.create(author, source="bss", external_id="FAQ-0001")  # another source is another id space
    # PATCH: nulls that make no sense, validity window against the stored value
    etag = await kb.etag(item["id"])
    r = await client.patch(
        f"/api/v1/items/{item['id']}",
        json={"valid_from": "2026-06-01T00:00:00Z"},
        headers={**admin.headers, "If-Match": etag},
    )
    assert r.status_code == 200, r.text
    r = await client.patch(
        f"/api/v1/items/{item['id']}",
        json={"valid_to": "2026-05-01T00:00:00Z"},
        headers={**admin.headers, "If-Match": r.headers["etag"]},
    )
    assert_problem(r, 422, "invalid_validity")
    r = await kb.edit(admin, item["id"], {"title": None})
    assert_problem(r, 422, "field_required")


async def test_item_fields_and_type_change(kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor) -> None:
    item = await kb.create(admin, attributes={"region": "上海", "since_version": "v2.1"})
    url = f"/api/v1/items/{item['id']}"
    r = await client.patch(
        url,
        json={"owner_id": agent.user.id, "visibility": "public", "review_due": "2027-01-31"},
        headers={**admin.headers, "If-Match": item["etag"]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["owner_id"], r.json()["visibility"]) == (agent.user.id, "public")
    # the open draft must fit the new type's template: announcement has none, so attributes do not fit
    r2 = await client.patch(
        url, json={"item_type": "announcement"}, headers={**admin.headers, "If-Match": r.headers["etag"]}
    )
    assert_problem(r2, 422, "invalid_attribute")
    assert (await kb.edit(admin, item["id"], {"attributes": None})).status_code == 200
    r3 = await client.patch(
        url, json={"item_type": "announcement"}, headers={**admin.headers, "If-Match": await kb.etag(item["id"])}
    )
    assert r3.status_code == 200 and r3.json()["item_type"] == "announcement"
    assert any(j == {"item_id": item["id"]} for j in await kb.jobs("search.index_item"))


async def test_list_filters_and_pages(kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor) -> None:
    a = await kb.publish(
        admin,
        title="携号转网办理条件",
        category_ids=[kb.nodes["携号转网"]],
        tags=["携号转网"],
        attributes={"region": "北京", "speed": 100},
    )
    b = await kb.publish(
        admin, title="5G畅享套餐资费", category_ids=[kb.nodes["套餐资费"]], tags=["5G"], attributes={"region": "全国"}
    )
    c = await kb.create(admin, title="宽带报修时效", category_ids=[kb.nodes["宽带故障"]], item_type="article")
    expired = await kb.publish(admin, title="2025年双十一宽带优惠", category_ids=[kb.nodes["宽带办理"]])
    past = (utcnow() - timedelta(days=1)).isoformat()
    r = await client.patch(
        f"/api/v1/items/{expired['id']}",
        json={"valid_to": past},
        headers={**admin.headers, "If-Match": await kb.etag(expired["id"])},
    )
    assert r.status_code == 200, r.text

    async def ids(actor: Actor, **params: Any) -> list[int]:
        r = await client.get("/api/v1/items", params=params, headers=actor.headers)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert await ids(admin) == [expired["id"], c["id"], b["id"], a["id"]]  # newest first
    assert await ids(agent) == [b["id"], a["id"]]  # readers: published and valid only
    assert await ids(admin, category=kb.nodes["手机业务"]) == [b["id"], a["id"]]  # the whole subtree
    assert await ids(admin, category=kb.nodes["携号转网"]) == [a["id"]]
    assert await ids(admin, tag="5G") == [b["id"]]
    assert await ids(admin, type="article") == [c["id"]]
    assert await ids(admin, status="draft") == [c["id"]]
    assert await ids(admin, state="draft") == [c["id"]]
    assert await ids(admin, q="套餐") == [b["id"]]
    assert await ids(admin, q="%") == []  # LIKE wildcards are literal
    assert await ids(admin, **{"attr.region": "北京"}) == [a["id"]]
    assert await ids(agent, **{"attr.speed": "100"}) == [a["id"]]
    assert await ids(admin, **{"attr.region": "北京", "tag": "5G"}) == []
    assert await ids(admin, owner_id=admin.user.id) == await ids(admin)
    assert await ids(admin, owner_id=agent.user.id) == []
    assert await ids(admin, valid_at=utcnow().isoformat()) == [c["id"], b["id"], a["id"]]
    assert await ids(admin, updated_since=(utcnow() + timedelta(minutes=1)).isoformat()) == []
    r = await client.get("/api/v1/items", params={"attr.nope": "1"}, headers=admin.headers)
    assert_problem(r, 422, "unknown_attribute")
    r = await client.get("/api/v1/items", params={"category": 424242}, headers=admin.headers)
    assert_problem(r, 422, "unknown_category")
    # pages
    first = (await client.get("/api/v1/items", params={"limit": 3}, headers=admin.headers)).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = (
        await client.get("/api/v1/items", params={"limit": 3, "cursor": first["next_cursor"]}, headers=admin.headers)
    ).json()
    assert [x["id"] for x in rest["items"]] == [a["id"]] and rest["next_cursor"] is None
    assert_problem(
        await client.get("/api/v1/items", params={"cursor": "!!"}, headers=admin.headers), 422, "invalid_cursor"
    )
    summary = first["items"][1]
    assert summary["title"] == "宽带报修时效" and summary["state"] == "draft" and summary["version_no"] == 1
