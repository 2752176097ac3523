"""公告: audience, validity, read receipts, who has not read a mandatory bulletin, the public channels."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.announcements.service import unread_for
from app.core.security import hash_secret
from app.identity.models import ApiClient, Role, User
from app.identity.service import load_principal
from tests.conftest import Actor, People, assert_problem

API = "/api/v1/announcements"


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


@pytest.fixture
async def manager(people: People) -> Actor:
    return await people.make("li.banzhang", role="publisher")


async def post(client: httpx.AsyncClient, who: Actor, **fields: Any) -> dict[str, Any]:
    body = {"title": "宽带报修电话调整", "body": "<p>报修请拨 10000 转 2。</p>", **fields}
    r = await client.post(API, json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == r.json()["etag"]
    return r.json()


async def titles_for(client: httpx.AsyncClient, who: Actor, **params: Any) -> list[str]:
    r = await client.get("/api/v1/me/announcements", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    return [a["title"] for a in r.json()["items"]]


async def channel_client(app: Any, channel: str) -> dict[str, str]:
    async with app.state.sessionmaker() as s:
        c = ApiClient(
            client_id=f"{channel}-ann-bot",
            name="渠道",
            secret_hash=hash_secret("x" * 12),
            scopes=["knowledge:read"],
            channel=channel,
        )
        s.add(c)
        await s.commit()
    codec = app.state.token_codec
    token, _ = codec.encode(
        {"sub": f"client:{c.id}", "typ": "access", "ver": c.token_version, "scope": "knowledge:read"}, codec.access_ttl
    )
    return {"Authorization": f"Bearer {token}"}


async def test_mandatory_bulletin_shows_who_has_not_read_it(
    client: httpx.AsyncClient, people: People, manager: Actor, app: Any
) -> None:
    agents = [await people.make(name, role="agent") for name in ("wang.fang", "zhao.lei", "chen.jing")]
    author = await people.make("sun.author", role="author")  # may read announcements, not an agent
    gone = await people.make("left.agent", role="agent")
    async with app.state.sessionmaker() as s:
        (await s.get(User, gone.user.id)).is_active = False  # type: ignore[union-attr]
        await s.commit()
    ann = await post(
        client,
        manager,
        title="【紧急】5G套餐资费调整通知",
        priority="urgent",
        mandatory=True,
        body="**即日起** 5G畅享套餐 129 元档调整为 139 元，老用户资费不变。",
        body_format="markdown",
        audience={"roles": ["agent"]},
    )
    assert ann["audience"] == {"roles": ["agent"], "departments": [], "channels": []}
    assert "<strong>即日起</strong>" in ann["html"] and ann["current"] and ann["state"] == "published"

    async def unread() -> dict[str, Any]:
        r = await client.get(f"{API}/{ann['id']}/unread", headers=manager.headers)
        assert r.status_code == 200, r.text
        return r.json()

    first = await unread()
    assert (first["total"], first["read"], first["unread"]) == (3, 0, 3)
    assert [u["username"] for u in first["items"]] == ["wang.fang", "zhao.lei", "chen.jing"]

    r = await client.post(f"{API}/{ann['id']}/read", headers=agents[0].headers)
    assert r.status_code == 200, r.text
    read_at = r.json()["read_at"]
    again = await client.post(f"{API}/{ann['id']}/read", headers=agents[0].headers)
    assert again.json()["read_at"] == read_at  # idempotent: the first read stays

    after = await unread()
    assert (after["total"], after["read"], after["unread"]) == (3, 1, 2)
    assert [u["username"] for u in after["items"]] == ["zhao.lei", "chen.jing"]
    paged = (await client.get(f"{API}/{ann['id']}/unread", params={"limit": 1}, headers=manager.headers)).json()
    assert [u["username"] for u in paged["items"]] == ["zhao.lei"]
    rest = (
        await client.get(
            f"{API}/{ann['id']}/unread", params={"limit": 1, "cursor": paged["next_cursor"]}, headers=manager.headers
        )
    ).json()
    assert [u["username"] for u in rest["items"]] == ["chen.jing"] and rest["next_cursor"] is None

    mine = (await client.get("/api/v1/me/announcements", headers=agents[0].headers)).json()["items"]
    assert [(a["title"], a["read"], a["read_at"]) for a in mine] == [("【紧急】5G套餐资费调整通知", True, read_at)]
    assert await titles_for(client, agents[0], unread="true") == []
    assert await titles_for(client, agents[1], unread="true") == ["【紧急】5G套餐资费调整通知"]
    # not in the audience: as if it did not exist
    assert await titles_for(client, author) == []
    assert_problem(await client.post(f"{API}/{ann['id']}/read", headers=author.headers), 404, "announcement_not_found")

    for agent in agents[1:]:
        assert (await client.post(f"{API}/{ann['id']}/read", headers=agent.headers)).status_code == 200
    done = await unread()
    assert (done["read"], done["unread"], done["items"]) == (3, 0, [])
    # agents cannot manage
    assert_problem(await client.get(f"{API}/{ann['id']}/unread", headers=agents[0].headers), 403, "permission_denied")


async def test_audience_by_department_and_role(
    client: httpx.AsyncClient, people: People, manager: Actor, admin: Actor
) -> None:
    async def dept(name: str, parent: int | None = None) -> int:
        r = await client.post("/api/v1/departments", json={"name": name, "parent_id": parent}, headers=admin.headers)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    center = await dept("上海呼叫中心")
    cards = await dept("信用卡组", center)
    beijing = await dept("北京呼叫中心")
    card_agent = await people.make("lin.xiaomei", role="agent", department_id=cards)
    bj_agent = await people.make("zhou.qiang", role="agent", department_id=beijing)
    bj_author = await people.make("he.bianji", role="author", department_id=beijing)
    await post(client, manager, title="關於信用卡年費減免的通知", mandatory=True, audience={"departments": [center]})
    await post(client, manager, title="北京坐席排班调整", audience={"departments": [beijing], "roles": ["agent"]})
    await post(client, manager, title="全员：系统升级停机窗口")  # empty audience: every staff member
    assert await titles_for(client, card_agent) == ["全员：系统升级停机窗口", "關於信用卡年費減免的通知"]
    assert await titles_for(client, bj_agent) == ["全员：系统升级停机窗口", "北京坐席排班调整"]
    assert await titles_for(client, bj_author) == ["全员：系统升级停机窗口"]  # right department, not an agent

    ann = (await client.get(API, params={"q": "年費"}, headers=manager.headers)).json()["items"][0]
    counts = (await client.get(f"{API}/{ann['id']}/unread", headers=manager.headers)).json()
    assert (counts["total"], [u["username"] for u in counts["items"]]) == (1, ["lin.xiaomei"])

    # unknown audience entries are refused, naming the field
    bad = assert_problem(
        await client.post(API, json={"title": "x", "audience": {"roles": ["agent", "班长"]}}, headers=manager.headers),
        422,
        "unknown_role",
    )
    assert bad["field"] == "audience.roles" and bad["unknown"] == ["班长"]
    bad = assert_problem(
        await client.post(API, json={"title": "x", "audience": {"departments": [9_999_999]}}, headers=manager.headers),
        422,
        "unknown_department",
    )
    assert bad["field"] == "audience.departments"
    bad = assert_problem(
        await client.post(API, json={"title": "x", "audience": {"channels": ["fax"]}}, headers=manager.headers),
        422,
        "validation_error",
    )
    assert bad["errors"][0]["field"].startswith("body.audience.channels")
    assert (await client.get(API, params={"q": "x"}, headers=manager.headers)).json()["items"] == []


async def test_validity_order_and_todo(client: httpx.AsyncClient, people: People, manager: Actor, app: Any) -> None:
    agent = await people.make("wu.kefu", role="agent")
    future = await post(client, manager, title="春节客服热线安排", valid_from=iso(timedelta(days=3)))
    await post(
        client,
        manager,
        title="已过期：国庆停机通知",
        valid_from=iso(-timedelta(days=9)),
        valid_to=iso(-timedelta(days=1)),
    )
    await post(client, manager, title="草稿：电费缴纳渠道变更", state="draft")
    await post(client, manager, title="水费账单延迟说明")
    await post(client, manager, title="信用卡盗刷处置流程（高）", priority="high")
    await post(client, manager, title="置顶：坐席行为规范", pinned=True)
    await post(client, manager, title="携号转网必读", mandatory=True, valid_to=iso(timedelta(days=30)))
    assert await titles_for(client, agent) == [
        "置顶：坐席行为规范",
        "信用卡盗刷处置流程（高）",
        "携号转网必读",
        "水费账单延迟说明",
    ]
    page = (await client.get("/api/v1/me/announcements", params={"limit": 3}, headers=agent.headers)).json()
    nxt = (
        await client.get(
            "/api/v1/me/announcements", params={"limit": 3, "cursor": page["next_cursor"]}, headers=agent.headers
        )
    ).json()
    assert [a["title"] for a in nxt["items"]] == ["水费账单延迟说明"] and nxt["next_cursor"] is None
    assert_problem(
        await client.get("/api/v1/me/announcements", params={"cursor": "bm9wZQ"}, headers=agent.headers),
        422,
        "invalid_cursor",
    )
    assert_problem(await client.post(f"{API}/{future['id']}/read", headers=agent.headers), 404)

    async with app.state.sessionmaker() as s:
        principal = await load_principal(s, {"sub": f"user:{agent.user.id}", "ver": agent.user.token_version})
        count, first = await unread_for(s, principal, 2)
    assert count == 4 and [a.title for a in first] == ["携号转网必读", "置顶：坐席行为规范"]

    current = (await client.get(API, params={"current": "true", "limit": 200}, headers=manager.headers)).json()
    assert len(current["items"]) == 4
    drafts = (await client.get(API, params={"state": "draft"}, headers=manager.headers)).json()["items"]
    assert [a["title"] for a in drafts] == ["草稿：电费缴纳渠道变更"] and not drafts[0]["current"]

    # publishing the draft and withdrawing it, with If-Match
    url = f"{API}/{drafts[0]['id']}"
    assert_problem(await client.patch(url, json={"state": "published"}, headers=manager.headers), 428)
    r = await client.patch(url, json={"state": "published"}, headers={**manager.headers, "If-Match": drafts[0]["etag"]})
    assert r.status_code == 200 and r.json()["current"], r.text
    assert "草稿：电费缴纳渠道变更" in await titles_for(client, agent)
    stale = assert_problem(
        await client.patch(url, json={"pinned": True}, headers={**manager.headers, "If-Match": drafts[0]["etag"]}), 412
    )
    assert stale["current_etag"] == r.headers["etag"]
    assert_problem(
        await client.patch(
            url,
            json={"valid_from": iso(timedelta(days=2)), "valid_to": iso(timedelta(1))},
            headers={**manager.headers, "If-Match": r.headers["etag"]},
        ),
        422,
        "invalid_validity",
    )
    assert_problem(
        await client.patch(url, json={"state": "draft"}, headers={**manager.headers, "If-Match": r.headers["etag"]}),
        409,
        "invalid_transition",
    )
    gone = await client.delete(url, headers={**manager.headers, "If-Match": r.headers["etag"]})
    assert gone.status_code == 200 and gone.json()["state"] == "withdrawn", gone.text
    assert "草稿：电费缴纳渠道变更" not in await titles_for(client, agent)
    assert_problem(await client.post(f"{url}/read", headers=agent.headers), 404)
    assert_problem(
        await client.post(
            API,
            json={"title": "窗口颠倒", "valid_from": iso(timedelta(2)), "valid_to": iso(timedelta(1))},
            headers=manager.headers,
        ),
        422,
        "invalid_validity",
    )
    assert_problem(await client.get(f"{API}/999999999", headers=manager.headers), 404, "announcement_not_found")


async def test_public_channels(client: httpx.AsyncClient, people: People, manager: Actor, app: Any) -> None:
    agent = await people.make("qian.zuoxi", role="agent")
    await post(client, manager, title="官网：宽带提速免费升级", audience={"channels": ["web", "app"]})
    await post(client, manager, title="微信：账单查询入口调整", audience={"channels": ["wechat"]})
    await post(client, manager, title="仅坐席：web 渠道内部口径", audience={"channels": ["web"], "roles": ["agent"]})
    await post(client, manager, title="坐席公告", body="<p onclick='x()'>内部<script>alert(1)</script></p>")
    await post(client, manager, title="未生效的官网公告", audience={"channels": ["web"]}, valid_from=iso(timedelta(1)))

    r = await client.get("/api/v1/channels/web/announcements")
    assert r.status_code == 200, r.text
    assert [a["title"] for a in r.json()["items"]] == ["官网：宽带提速免费升级"]
    assert r.headers["cache-control"].startswith("public") and r.headers["etag"]
    assert (
        await client.get("/api/v1/channels/web/announcements", headers={"If-None-Match": r.headers["etag"]})
    ).status_code == 304
    assert_problem(await client.get("/api/v1/channels/wechat/announcements"), 401)  # not a public channel
    assert_problem(await client.get("/api/v1/channels/agent/announcements"), 401)
    assert_problem(await client.get("/api/v1/channels/fax/announcements"), 404, "unknown_channel")
    wechat = await channel_client(app, "wechat")
    items = (await client.get("/api/v1/channels/wechat/announcements", headers=wechat)).json()["items"]
    assert [(a["title"], a["text"]) for a in items] == [("微信：账单查询入口调整", "报修请拨 10000 转 2。")]
    staff = (await client.get("/api/v1/channels/agent/announcements", headers=agent.headers)).json()["items"]
    assert [a["title"] for a in staff] == ["坐席公告"] and "script" not in staff[0]["html"]
    assert "onclick" not in staff[0]["html"]
    # a channel-only announcement is not on the staff's own list
    assert await titles_for(client, agent) == ["坐席公告"]

    app.state.settings.public_channels = ["web", "wechat"]
    items = (await client.get("/api/v1/channels/wechat/announcements")).json()["items"]
    assert [a["title"] for a in items] == ["微信：账单查询入口调整"]


async def test_concurrent_reads_and_who_may_read(
    client: httpx.AsyncClient, people: People, manager: Actor, app: Any
) -> None:
    agent = await people.make("zheng.kefu", role="agent")
    # access split over two roles still counts (as a principal's permissions combine); no access does not
    split = await people.make("split.access", permissions=["system:access", "module:knowledge"])
    auditor = await people.make("shen.audit", role="auditor")
    async with app.state.sessionmaker() as s:
        user = await s.get(User, split.user.id)
        extra = Role(name="r_split_read", permissions=["announcements:read"])
        user.roles = [*user.roles, extra]  # type: ignore[union-attr]
        await s.commit()
    ann = await post(client, manager, title="電費繳納系統維護公告", mandatory=True)
    answers = await asyncio.gather(*(client.post(f"{API}/{ann['id']}/read", headers=agent.headers) for _ in range(6)))
    assert {r.status_code for r in answers} == {200} and len({r.json()["read_at"] for r in answers}) == 1
    counts = (await client.get(f"{API}/{ann['id']}/unread", headers=manager.headers)).json()
    names = [u["username"] for u in counts["items"]]
    assert "split.access" in names and "shen.audit" not in names and "zheng.kefu" not in names
    assert counts["read"] == 1 and counts["total"] == counts["read"] + counts["unread"]
    assert_problem(await client.get("/api/v1/me/announcements", headers=auditor.headers), 403, "permission_denied")
