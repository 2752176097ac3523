"""Channel events: views written in batches, the daily rollup behind `hot`, one counted vote per voter."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, update
from starlette.requests import Request

from app.channels.access import ChannelCaller, anonymous
from app.channels.events import helpfulness, record_view
from app.channels.events import hot as channel_hot
from app.channels.models import ChannelFeedback, ChannelView, ChannelViewDay
from app.core.config import Settings
from app.core.db import utcnow
from app.identity.principal import Principal
from app.knowledge.models import Item
from app.main import create_app
from tests.channels.conftest import Kb
from tests.conftest import Actor, assert_problem

WEB = "/api/v1/channels/web"


def request_to(app: Any) -> Request:
    return Request({"type": "http", "app": app, "headers": [], "method": "GET", "path": "/"})


def visitor(address: str = "203.0.113.7", channel: str = "web") -> ChannelCaller:
    return ChannelCaller(channel, anonymous(channel), address)


def staff(actor: Actor) -> ChannelCaller:
    return ChannelCaller(
        "agent",
        Principal(kind="user", id=actor.user.id, name="zhang.wei", permissions=frozenset({"knowledge:read"})),
        "10.0.0.5",
    )


async def faq(kb: Kb, admin: Actor, title: str, **fields: Any) -> int:
    item = await kb.publish(
        admin, title=title, question=f"{title}？", visibility=fields.pop("visibility", "public"), **fields
    )
    return int(item["item_id"] if "item_id" in item else item["id"])


async def views(app: Any, item_id: int, n: int, caller: ChannelCaller | None = None) -> None:
    for _ in range(n):
        record_view(request_to(app), caller or visitor(), item_id, 1)


async def hot(
    client: httpx.AsyncClient, path: str = WEB, headers: dict[str, str] | None = None, **params: Any
) -> list[tuple[int, int]]:
    r = await client.get(f"{path}/hot", params=params, headers=headers or {})
    assert r.status_code == 200, r.text
    return [(i["item_id"], i["views"]) for i in r.json()["items"]]


async def test_views_are_written_in_one_batch_and_rolled_up_per_day(
    app: Any, kb: Kb, admin: Actor, agent: Actor
) -> None:
    item = await faq(kb, admin, "宽带无法上网怎么办")
    events = app.state.channel_events
    record_view(request_to(app), visitor(), item, 1, query="  家里宽带断网了 ", search_id="a" * 32)
    record_view(request_to(app), visitor("2001:db8::1"), item, 1, query="寬頻報修" * 100)
    record_view(request_to(app), staff(agent), item, 1)
    assert events.pending == 3
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(ChannelView)) == 0  # behind the response
    assert await events.flush() == 3 and events.pending == 0
    async with app.state.sessionmaker() as s:
        rows = (await s.scalars(select(ChannelView).order_by(ChannelView.id))).all()
        days = (
            await s.execute(
                select(ChannelViewDay.channel, ChannelViewDay.day, ChannelViewDay.views).order_by(
                    ChannelViewDay.channel
                )
            )
        ).all()
    assert [(r.channel, r.actor, r.address, r.query, r.search_id) for r in rows] == [
        ("web", None, "203.0.113.7", "家里宽带断网了", "a" * 32),
        ("web", None, "2001:db8::1", ("寬頻報修" * 100)[:200], None),
        ("agent", f"user:{agent.user.id}", None, None, None),
    ]
    today = utcnow().date()
    assert days == [("agent", today, 1), ("web", today, 2)]
    await views(app, item, 3)  # the next batch adds to the day's row
    await events.flush()
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(ChannelViewDay.views).where(ChannelViewDay.channel == "web")) == 5


async def test_hot_ranks_by_views_over_the_window(app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor) -> None:
    broadband = await faq(kb, admin, "宽带无法上网怎么办")
    roaming = await faq(kb, admin, "国际漫游如何开通")
    card = await faq(kb, admin, "信用卡丢失如何挂失")
    await views(app, broadband, 2)
    await views(app, roaming, 3)
    await views(app, card, 1, visitor(channel="wechat"))  # another channel's views do not count on web
    await app.state.channel_events.flush()
    async with app.state.sessionmaker() as s:  # three weeks ago: the credit card answer was the hot one
        s.add(ChannelViewDay(channel="web", day=utcnow().date() - timedelta(days=20), item_id=card, views=9))
        s.add(ChannelViewDay(channel="web", day=utcnow().date() - timedelta(days=6), item_id=broadband, views=2))
        await s.commit()
    r = await client.get(f"{WEB}/hot")
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=60"
    body = r.json()
    assert body["channel"] == "web" and body["days"] == 7
    assert body["items"] == [
        {
            "item_id": broadband,
            "version": 1,
            "title": "宽带无法上网怎么办",
            "question": "宽带无法上网怎么办？",
            "views": 4,
        },
        {"item_id": roaming, "version": 1, "title": "国际漫游如何开通", "question": "国际漫游如何开通？", "views": 3},
    ]
    assert await hot(client, days=6) == [(roaming, 3), (broadband, 2)]  # today and the 5 days before
    assert await hot(client, days=30) == [(card, 9), (broadband, 4), (roaming, 3)]
    assert await hot(client, days=30, limit=1) == [(card, 9)]


async def test_the_ranking_is_cached_for_its_ttl(app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor) -> None:
    broadband = await faq(kb, admin, "宽带无法上网怎么办")
    roaming = await faq(kb, admin, "国际漫游如何开通")
    await views(app, broadband, 2)
    await app.state.channel_events.flush()
    assert await hot(client) == [(broadband, 2)]
    await views(app, roaming, 3)
    await app.state.channel_events.flush()
    assert await hot(client) == [(broadband, 2)]  # within hot_ttl: the same ranking ...
    async with app.state.sessionmaker() as s:
        await s.execute(update(Item).where(Item.id == broadband).values(valid_to=utcnow() - timedelta(minutes=1)))
        await s.commit()
    assert await hot(client) == []  # ... but what the caller sees (expired now) is checked on every request
    app.state.channel_events.hot_ttl = 0
    try:
        assert await hot(client) == [(roaming, 3)]
    finally:
        app.state.channel_events.hot_ttl = 30.0


async def test_days_and_limit_are_bounded(client: httpx.AsyncClient) -> None:
    for params in ({"days": 0}, {"days": 91}, {"days": "一周"}, {"limit": 0}, {"limit": 51}):
        assert_problem(await client.get(f"{WEB}/hot", params=params), 422, "validation_error")
    assert (await client.get(f"{WEB}/hot", params={"days": 90, "limit": 50})).json()["items"] == []
    assert_problem(await client.get("/api/v1/channels/fax/hot"), 404, "unknown_channel")


async def test_hot_never_lists_what_the_caller_does_not_see_now(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor
) -> None:
    shown = await faq(kb, admin, "电费怎么缴纳")
    internal = await faq(kb, admin, "坐席内部：停电补偿口径", visibility="internal")
    offline = await faq(kb, admin, "老套餐资费说明")
    app_only = await faq(kb, admin, "APP专享流量包", channels=["app", "agent"])
    expired = await faq(kb, admin, "双十一宽带优惠活动")
    for item, n in ((shown, 1), (internal, 50), (offline, 40), (app_only, 30), (expired, 20)):
        await views(app, item, n)
        await views(app, item, n, staff(agent))
    await app.state.channel_events.flush()
    assert (await kb.act(admin, offline, 1, "unpublish")).status_code == 200
    async with app.state.sessionmaker() as s:
        await s.execute(update(Item).where(Item.id == expired).values(valid_to=utcnow() - timedelta(hours=1)))
        await s.commit()
    assert await hot(client) == [(shown, 1)]
    async with app.state.sessionmaker() as s:  # the full query (no cached ranking) says the same
        assert [(h.item_id, h.views) for h in await channel_hot(s, visitor(), 7, 10)] == [(shown, 1)]
    wechat = await kb.channel_client("wechat")
    assert await hot(client, "/api/v1/channels/wechat", wechat.headers) == []  # its views were on web
    # staff see internal items on the agent channel, never the unpublished or expired one
    r = await client.get("/api/v1/channels/agent/hot", headers=agent.headers)
    assert r.headers["cache-control"] == "private, max-age=60"
    assert [(i["item_id"], i["views"]) for i in r.json()["items"]] == [(internal, 50), (app_only, 30), (shown, 1)]


async def test_anonymous_callers_are_refused_on_a_channel_that_is_not_public(
    client: httpx.AsyncClient, kb: Kb, admin: Actor
) -> None:
    item = await faq(kb, admin, "携号转网办理条件")
    for channel in ("agent", "wechat"):
        assert_problem(await client.get(f"/api/v1/channels/{channel}/hot"), 401)
        assert_problem(
            await client.post(f"/api/v1/channels/{channel}/items/{item}/feedback", json={"helpful": True}), 401
        )


async def vote(
    client: httpx.AsyncClient,
    item: int,
    helpful: bool,
    visitor_id: str | bytes | None = None,
    path: str = WEB,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    h: dict[str, str | bytes] = dict(headers or {})
    if visitor_id:
        h["X-Visitor-Id"] = visitor_id
    return await client.post(f"{path}/items/{item}/feedback", json={"helpful": helpful, **extra}, headers=h)


async def test_one_vote_per_voter_counts_and_a_revote_replaces_it(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor
) -> None:
    item = await faq(kb, admin, "信用卡年费怎么免除")
    r = await vote(client, item, True, "visitor-0001", comment="  讲得很清楚，谢谢 ")
    assert r.status_code == 202 and r.json() == {"item_id": item, "version": 1, "helpful": True}
    assert (await vote(client, item, False, "visitor-0001", comment="   ")).status_code == 202  # same batch
    events = app.state.channel_events
    await events.flush()
    async with app.state.sessionmaker() as s:
        assert (await helpfulness(s, item)).model_dump() == {
            "item_id": item,
            "helpful": 0,
            "not_helpful": 1,
            "comments": 0,
            "channels": [{"channel": "web", "helpful": 0, "not_helpful": 1, "comments": 0}],
        }
    await vote(client, item, True, "visitor-0001", comment="讲得很清楚")  # a later batch: the upsert replaces
    await vote(client, item, True, "Visitor_0002")  # another visitor counts apart
    await vote(client, item, False)  # no visitor id: the address is the voter ...
    await vote(client, item, False)  # ... once
    wechat = await kb.channel_client("wechat")
    wechat_path = "/api/v1/channels/wechat"
    await vote(client, item, True, path=wechat_path, headers=wechat.headers)
    await vote(client, item, True, path=wechat_path, headers=wechat.headers)  # the client itself: once
    await vote(client, item, False, "oFz3x5Jq-wx-openid", path=wechat_path, headers=wechat.headers)  # its user
    await vote(client, item, True, "ignored-for-staff", path="/api/v1/channels/agent", headers=agent.headers)
    await vote(client, item, True, "other-id-staff", path="/api/v1/channels/agent", headers=agent.headers)
    await events.flush()
    async with app.state.sessionmaker() as s:
        summary = await helpfulness(s, item)
        comment = await s.scalar(select(ChannelFeedback.comment).where(ChannelFeedback.voter == "visitor:visitor-0001"))
        voters = set((await s.scalars(select(ChannelFeedback.voter))).all())
    assert (summary.helpful, summary.not_helpful, summary.comments) == (4, 2, 1)
    assert [(c.channel, c.helpful, c.not_helpful) for c in summary.channels] == [
        ("agent", 1, 0),
        ("web", 2, 1),
        ("wechat", 1, 1),
    ]
    assert comment == "讲得很清楚"
    client_id = wechat.user.id
    assert voters == {
        "visitor:visitor-0001",
        "visitor:Visitor_0002",
        "ip:127.0.0.1",
        f"client:{client_id}",
        f"client:{client_id}/visitor:oFz3x5Jq-wx-openid",
        f"user:{agent.user.id}",
    }


async def test_feedback_on_an_item_not_shown_is_the_missing_items_404(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor
) -> None:
    internal = await faq(kb, admin, "内部：大客户资费折扣权限", visibility="internal")
    missing = internal + 1000
    hidden = assert_problem(await vote(client, internal, True, "visitor-0001"), 404, "item_not_found")
    absent = assert_problem(await vote(client, missing, True, "visitor-0001"), 404, "item_not_found")
    assert hidden["detail"] == f"No item with id {internal}" and absent["detail"] == f"No item with id {missing}"
    assert {k: v for k, v in hidden.items() if k not in {"detail", "instance", "request_id"}} == {
        k: v for k, v in absent.items() if k not in {"detail", "instance", "request_id"}
    }
    assert app.state.channel_events.pending == 0  # nothing recorded


async def test_bad_feedback_is_refused(app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor) -> None:
    item = await faq(kb, admin, "燃气报装需要哪些材料")
    assert (await vote(client, item, True, "visitor-0001", comment="办" * 500)).status_code == 202
    assert_problem(await vote(client, item, True, "visitor-0001", comment="办" * 501), 422, "validation_error")
    for bad in ("short", "x" * 65, "访客编号12345678".encode(), "abc def ghij", "id;drop-table"):
        assert_problem(await vote(client, item, True, bad), 422, "validation_error")
    for body in ({}, {"helpful": "也许"}, {"helpful": True, "rating": 5}, {"helpful": True, "search_id": "不是编号"}):
        r = await client.post(f"{WEB}/items/{item}/feedback", json=body, headers={"X-Visitor-Id": "visitor-0001"})
        assert_problem(r, 422, "validation_error")
    assert_problem(await client.post(f"{WEB}/items/abc/feedback", json={"helpful": True}), 422)
    await app.state.channel_events.flush()  # the background flush may have written it already
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(ChannelFeedback)) == 1  # only the good vote


async def test_the_background_flush_and_the_shutdown_flush(settings: Settings, app: Any) -> None:
    application = create_app(settings.model_copy(update={"data_dir": settings.data_dir / "own"}))

    async def count() -> int:
        async with app.state.sessionmaker() as s:
            return int(await s.scalar(select(func.count()).select_from(ChannelView)) or 0)

    async with LifespanManager(application):
        events = application.state.channel_events
        record_view(request_to(application), visitor(), 42, 3, query="停电查询")
        for _ in range(40):  # written within the interval without anyone asking
            if await count() == 1:
                break
            await asyncio.sleep(0.05)
        assert await count() == 1
        events.interval = 3600  # nothing more happens on its own ...
        await asyncio.sleep(0.6)
        record_view(request_to(application), visitor(), 42, 3)
    assert await count() == 2  # ... but shutdown writes what is left
