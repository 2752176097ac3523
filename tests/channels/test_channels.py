"""The channel read API: who sees what on which channel (the state × channel matrix), one answer in
four formats, caching, categories, related items and bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.core.db import utcnow
from app.knowledge.models import Item
from app.workers.worker import Worker
from tests.conftest import Actor, assert_problem
from tests.knowledge.conftest import Kb

ALL = ["agent", "web", "wechat", "app"]
CALLERS = ["anon_web", "web", "wechat", "app", "agent"]


async def drain(app: Any) -> int:
    return await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()


async def make_callers(kb: Kb, agent: Actor) -> dict[str, dict[str, str]]:
    return {
        "anon_web": {},
        "web": (await kb.channel_client("web")).headers,
        "wechat": (await kb.channel_client("wechat")).headers,
        "app": (await kb.channel_client("app")).headers,
        "agent": agent.headers,
    }


def channel_of(caller: str) -> str:
    return "web" if caller == "anon_web" else caller


async def build_states(kb: Kb, admin: Actor) -> tuple[dict[str, int], dict[str, set[str]]]:
    """One item per life-cycle state; returns state -> item id and state -> the callers that see it."""
    node = kb.nodes["宽带故障"]
    base = {"category_ids": [node], "visibility": "public"}
    ids: dict[str, int] = {}
    ids["published"] = (await kb.publish(admin, title="宽带无法上网怎么办？", **base))["id"]
    ids["internal"] = (
        await kb.publish(admin, title="宽带内部折扣码怎么申请", category_ids=[node], visibility="internal")
    )["id"]
    ids["draft"] = (await kb.create(admin, title="宽带提速草稿", **base))["id"]
    ids["unpublished"] = (await kb.publish(admin, title="寬帶舊套餐下線說明", **base))["id"]
    await kb.ok(admin, ids["unpublished"], 1, "unpublish")
    ids["archived"] = (await kb.publish(admin, title="宽带2019年资费（已归档）", **base))["id"]
    await kb.ok(admin, ids["archived"], 1, "archive")
    ids["expired"] = (await kb.publish(admin, title="宽带双十一优惠活动", **base))["id"]
    ids["future"] = (
        await kb.publish(admin, title="宽带新春优惠活动", valid_from=(utcnow() + timedelta(days=3)).isoformat(), **base)
    )["id"]
    ids["off_web"] = (
        await kb.publish(admin, title="宽带报修APP专享通道", channels=["agent", "wechat", "app"], **base)
    )["id"]
    ids["wechat_only"] = (await kb.publish(admin, title="宽带微信报修指引", channels=["wechat"], **base))["id"]
    with_draft = await kb.publish(admin, title="宽带安装需要多久", **base)
    ids["published_with_draft"] = with_draft["id"]
    r = await kb.edit(admin, with_draft["id"], {"title": "宽带安装需要多久（草稿修改中）"})
    assert r.status_code == 200, r.text
    async with kb.app.state.sessionmaker() as s:
        await s.execute(update(Item).where(Item.id == ids["expired"]).values(valid_to=utcnow() - timedelta(hours=1)))
        await s.commit()
    sees = {state: set() for state in ids}
    sees["published"] = set(CALLERS)
    sees["published_with_draft"] = set(CALLERS)
    sees["internal"] = {"agent"}
    sees["off_web"] = {"wechat", "app", "agent"}
    sees["wechat_only"] = {"wechat"}
    return ids, sees


async def test_every_state_on_every_channel(kb: Kb, admin: Actor, agent: Actor, client: httpx.AsyncClient) -> None:
    ids, sees = await build_states(kb, admin)
    await drain(kb.app)
    callers = await make_callers(kb, agent)
    node, parent = kb.nodes["宽带故障"], kb.nodes["宽带业务"]
    for who, headers in callers.items():
        ch = channel_of(who)
        expected = {ids[state] for state, seen_by in sees.items() if who in seen_by}
        for state, item_id in ids.items():
            r = await client.get(f"/api/v1/channels/{ch}/items/{item_id}", headers=headers)
            if item_id in expected:
                assert r.status_code == 200, (who, state, r.text)
                assert r.json()["item_id"] == item_id
            else:
                body = assert_problem(r, 404, "item_not_found")
                assert body["detail"] == f"No item with id {item_id}", (who, state)  # as for a missing id
        # the navigation tree counts only what this caller sees, at the node and its parent
        tree = (await client.get(f"/api/v1/channels/{ch}/categories", headers=headers)).json()
        assert tree["total"] == len(expected), who
        [top] = [n for n in tree["nodes"] if n["id"] == parent]
        assert top["count"] == len(expected) and [c["count"] for c in top["children"] if c["id"] == node] == [
            len(expected)
        ], (who, tree)
        assert all(n["id"] == parent for n in tree["nodes"]), "nodes without visible items are left out"
        listed = (await client.get(f"/api/v1/channels/{ch}/categories/{parent}/items?limit=50", headers=headers)).json()
        assert {i["item_id"] for i in listed["items"]} == expected, who
        found = (
            await client.get(f"/api/v1/channels/{ch}/answers", params={"q": "宽带", "limit": 20}, headers=headers)
        ).json()
        assert {a["item_id"] for a in found["items"]} == expected, (who, found)
    # the published version is served, not the draft on top of it
    r = await client.get(f"/api/v1/channels/web/items/{ids['published_with_draft']}")
    assert r.json()["title"] == "宽带安装需要多久" and r.json()["version"] == 1


async def test_access_rules(kb: Kb, admin: Actor, agent: Actor, client: httpx.AsyncClient) -> None:
    item = await kb.publish(admin, title="信用卡丢失如何挂失？", visibility="public")
    url = "/api/v1/channels/{}/items/" + str(item["id"])
    assert_problem(await client.get(url.format("fax")), 404, "unknown_channel")
    assert_problem(await client.get(url.format("wechat")), 401, "unauthenticated")  # not public by default
    assert_problem(await client.get(url.format("agent")), 401, "unauthenticated")  # never public
    wechat = await kb.channel_client("wechat")
    assert_problem(await client.get(url.format("web"), headers=wechat.headers), 403, "channel_mismatch")
    assert_problem(await client.get(url.format("web"), headers=agent.headers), 403, "channel_mismatch")
    no_read = await kb.channel_client("web", scopes=["search:query"])
    assert_problem(await client.get(url.format("web"), headers=no_read.headers), 403, "permission_denied")
    kb.app.state.settings.public_channels = ["web", "wechat"]
    assert (await client.get(url.format("wechat"))).status_code == 200


async def test_four_channels_one_answer(kb: Kb, admin: Actor, agent: Actor, client: httpx.AsyncClient) -> None:
    """The same question from the website, WeChat, the APP and the softphone: one item and version,
    each in its own format."""
    await kb.publish(
        admin,
        title="如何办理携号转网？",
        question="携号转网怎么办理",
        visibility="public",
        category_ids=[kb.nodes["携号转网"]],
        similar_questions=["我想换运营商但保留号码"],
        body="<h2>办理条件</h2><ul><li>入网满120天</li><li>无欠费</li></ul>"
        "<p>发送短信 SQXZ#姓名#证件号 到 10086 查询资格。办理后24小时内生效。</p>",
        channel_answers={
            "agent": "您好，携号转网需要入网满120天且无欠费，我帮您查询资格。",
            "wechat": "携号转网需入网满120天且无欠费。发送SQXZ到10086查询资格！",
        },
    )
    item = await kb.publish(admin, title="宽带安装预约", visibility="public")
    await drain(kb.app)
    callers = await make_callers(kb, agent)
    seen = {}
    for who in ("anon_web", "wechat", "app", "agent"):
        found = (
            await client.get(
                f"/api/v1/channels/{channel_of(who)}/answers",
                params={"q": "我想保留号码换运营商"},
                headers=callers[who],
            )
        ).json()
        top = found["items"][0]
        assert top["matched_question"] == "我想换运营商但保留号码" and found["search_id"]
        r = await client.get(top["url"].removeprefix("http://testserver"), headers=callers[who])
        assert r.status_code == 200, r.text
        seen[who] = (top["item_id"], top["version"], r.json()["item_id"], r.json()["version"], r.json()["format"])
        if who == "agent":
            assert top["answer"].startswith("您好，携号转网") and top["attachments"] == []
            assert top["related"] is not None
        if who == "wechat":
            assert top["answer"] == "携号转网需入网满120天且无欠费。发送SQXZ到10086查询资格！"
    assert len({v[:4] for v in seen.values()}) == 1 and seen["anon_web"][0] != item["id"]
    assert {v[4] for v in seen.values()} == {"html", "text", "blocks", "agent"}


async def test_caching_headers_and_304(kb: Kb, admin: Actor, client: httpx.AsyncClient) -> None:
    item = await kb.publish(
        admin, title="电费账单怎么查询", visibility="public", body="<p>登录网上国网APP，进入“账单”查看。</p>"
    )
    url = f"/api/v1/channels/web/items/{item['id']}"
    r = await client.get(url)
    etag = r.headers["etag"]
    assert r.status_code == 200 and not etag.startswith("W/")
    assert r.headers["cache-control"].startswith("public, max-age=") and r.headers["last-modified"]
    assert r.headers["vary"] == "Authorization"
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    assert (await client.get(url, headers={"If-None-Match": '"garbage", W/"x"'})).status_code == 200
    assert (await client.get(url, headers={"If-None-Match": "\x7f;;"})).status_code == 200
    web_client = await kb.channel_client("web")
    private = await client.get(url, headers=web_client.headers)
    assert private.headers["cache-control"] == "private, no-cache"
    # a new published version: a new ETag, so the cached copy is no longer current
    r = await kb.edit(admin, item["id"], {"body": "<p>登录网上国网APP或拨打95598查询。</p>"})
    assert r.status_code == 200, r.text
    await kb.ok(admin, item["id"], 2, "submit", "approve", "publish")
    fresh = await client.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag and fresh.json()["version"] == 2


async def test_by_external_id_and_related(kb: Kb, admin: Actor, client: httpx.AsyncClient) -> None:
    node = kb.nodes["挂失"]
    lost = await kb.publish(
        admin,
        title="信用卡丢失怎么挂失",
        visibility="public",
        category_ids=[node],
        source="crm",
        external_id="CARD-LOSS-001",
        tags=["信用卡"],
    )
    near = await kb.publish(admin, title="挂失后如何补办新卡", visibility="public", category_ids=[node])
    tagged = await kb.publish(admin, title="信用卡年费怎么减免", visibility="public", tags=["信用卡"])
    hidden = await kb.publish(admin, title="挂失内部处理流程", visibility="internal", category_ids=[node])
    await drain(kb.app)
    r = await client.get("/api/v1/channels/web/items/by-external/crm/CARD-LOSS-001")
    assert r.status_code == 200 and r.json()["item_id"] == lost["id"]
    assert_problem(await client.get("/api/v1/channels/web/items/by-external/crm/NOPE"), 404, "item_not_found")
    related = (await client.get(f"/api/v1/channels/web/related/{lost['id']}")).json()
    ids = [r["item_id"] for r in related]
    assert lost["id"] not in ids and hidden["id"] not in ids
    assert set(ids[:2]) == {near["id"], tagged["id"]} and related[0]["reason"] == "categories"
    assert_problem(await client.get(f"/api/v1/channels/web/related/{hidden['id']}"), 404, "item_not_found")


@pytest.mark.parametrize(
    "q", ["", "宽带故障" * 250, "宽带故障" * 251, "😀😀", '宽带 AND (OR "*', "Wi-Fi密碼忘記了 123"]
)
async def test_answers_take_any_query(kb: Kb, admin: Actor, client: httpx.AsyncClient, q: str) -> None:
    await kb.publish(admin, title="Wi-Fi密码忘记了怎么办", visibility="public")
    await drain(kb.app)
    r = await client.get("/api/v1/channels/web/answers", params={"q": q})
    if not q or len(q) > 1_000:
        assert_problem(r, 422)
        return
    assert r.status_code == 200, r.text
    if q.startswith("Wi-Fi"):
        assert r.json()["items"][0]["title"] == "Wi-Fi密码忘记了怎么办"


async def test_bad_parameters(kb: Kb, admin: Actor, client: httpx.AsyncClient) -> None:
    item = await kb.publish(admin, title="停电了怎么报修", visibility="public", category_ids=[kb.nodes["宽带故障"]])
    assert_problem(await client.get("/api/v1/channels/web/items/99999999999999999999"), 422)
    assert_problem(await client.get("/api/v1/channels/web/categories?taxonomy=nope"), 404, "taxonomy_not_found")
    assert_problem(await client.get("/api/v1/channels/web/categories?include_empty=true"), 403)
    assert_problem(
        await client.get(f"/api/v1/channels/web/categories/{kb.nodes['挂失']}/items"), 404, "category_not_found"
    )
    parent = kb.nodes["宽带业务"]
    assert_problem(
        await client.get(f"/api/v1/channels/web/categories/{parent}/items?cursor=%%%"), 422, "invalid_cursor"
    )
    kb.app.state.settings.public_channels = ["web", "wechat"]
    assert_problem(await client.get(f"/api/v1/channels/wechat/items/{item['id']}?max_bytes=10"), 422)
