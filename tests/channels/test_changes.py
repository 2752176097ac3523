"""The change feed: a front end's copy, kept from the feed alone, stays equal to what the channel
shows (the snapshot) through publish, edit, unpublish, archive, expiry and visibility changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, update

from app.channels.changes import purge, reconcile
from app.channels.jobs import SWEEP_JOB
from app.channels.models import ChannelChange
from app.core.db import utcnow
from app.core.pagination import encode_cursor
from app.knowledge.models import Item
from app.main import create_app
from app.workers.outbox import enqueue
from app.workers.worker import Worker
from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

ANON: dict[str, str] = {}


async def drain(app: Any) -> int:
    return await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()


async def sweep(app: Any) -> None:
    async with app.state.sessionmaker() as s:
        enqueue(s, SWEEP_JOB, {}, created_by="test")
        await s.commit()
    await drain(app)


async def changes(
    client: httpx.AsyncClient, channel: str, headers: dict[str, str], cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    params: dict[str, Any] = {"channel": channel, "limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    r = await client.get("/api/v1/changes", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def snapshot(
    client: httpx.AsyncClient, channel: str, headers: dict[str, str], limit: int = 100
) -> tuple[dict[int, int], str]:
    out: dict[int, int] = {}
    cursor, first = None, None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"/api/v1/channels/{channel}/snapshot", params=params, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        first = first or page["changes_cursor"]
        assert page["changes_cursor"] == first  # the position of the first page, carried along
        out.update({i["item_id"]: i["version"] for i in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out, first


class Replica:
    """A front end's copy of one channel: item id -> version, kept only from the feed."""

    def __init__(self, client: httpx.AsyncClient, channel: str, headers: dict[str, str]) -> None:
        self.client, self.channel, self.headers = client, channel, headers
        self.items: dict[int, int] = {}
        self.cursor: str | None = None
        self.events: list[dict[str, Any]] = []

    async def start(self) -> None:
        self.items, self.cursor = await snapshot(self.client, self.channel, self.headers)

    async def sync(self, limit: int = 50) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while True:
            page = await changes(self.client, self.channel, self.headers, self.cursor, limit)
            assert page["next_cursor"]
            self.cursor = page["next_cursor"]
            for e in page["items"]:
                assert e["channel"] == self.channel
                if e["shown"]:
                    self.items[e["item_id"]] = e["version"]
                else:
                    self.items.pop(e["item_id"], None)
            got += page["items"]
            if not page["has_more"]:
                break
        self.events += got
        return got

    async def check(self) -> list[dict[str, Any]]:
        got = await self.sync()
        view, _ = await snapshot(self.client, self.channel, self.headers, limit=2)  # several pages
        assert self.items == view, (self.channel, got)
        return got


def kinds(events: list[dict[str, Any]], item_id: int) -> list[str]:
    return [e["kind"] for e in events if e["item_id"] == item_id]


async def republish(kb: Kb, actor: Actor, item_id: int, fields: dict[str, Any]) -> int:
    r = await kb.edit(actor, item_id, fields)
    assert r.status_code == 200, r.text
    number = r.json()["number"]
    await kb.ok(actor, item_id, number, "submit", "approve", "publish")
    return number


async def patch_item(kb: Kb, actor: Actor, item_id: int, body: dict[str, Any]) -> None:
    r = await kb.client.patch(
        f"/api/v1/items/{item_id}", json=body, headers={**actor.headers, "If-Match": await kb.etag(item_id)}
    )
    assert r.status_code == 200, r.text


async def test_replicas_follow_every_channel_through_the_life_cycle(
    kb: Kb, admin: Actor, agent: Actor, client: httpx.AsyncClient, app: Any
) -> None:
    web_bot = await kb.channel_client("web")
    wechat_bot = await kb.channel_client("wechat")
    old = await kb.publish(admin, title="营业厅营业时间", visibility="public")  # before the front ends start
    replicas = {
        "anonymous web": Replica(client, "web", ANON),
        "web client": Replica(client, "web", web_bot.headers),
        "wechat client": Replica(client, "wechat", wechat_bot.headers),
        "agent": Replica(client, "agent", agent.headers),
    }
    for r in replicas.values():
        await r.start()
    assert replicas["anonymous web"].items == {old["id"]: 1}

    async def check_all() -> dict[str, list[dict[str, Any]]]:
        return {name: await r.check() for name, r in replicas.items()}

    faq = (await kb.publish(admin, title="宽带无法上网怎么办？", visibility="public"))["id"]
    internal = (await kb.publish(admin, title="坐席内部：携号转网挽留话术", visibility="internal"))["id"]
    seen = await check_all()
    assert kinds(seen["anonymous web"], faq) == ["published"] and kinds(seen["wechat client"], faq) == ["published"]
    assert kinds(seen["agent"], internal) == ["published"]
    for name in ("anonymous web", "web client", "wechat client"):  # never named on a customer channel
        assert internal not in {e["item_id"] for e in seen[name]}, name

    assert await republish(kb, admin, faq, {"body": "<p>請先重啟光貓，等待 3 分鐘後重試；仍不行請撥打10000。</p>"}) == 2
    seen = await check_all()
    assert kinds(seen["anonymous web"], faq) == ["updated"] and replicas["agent"].items[faq] == 2

    await republish(kb, admin, faq, {"channels": ["agent", "web", "app"]})  # version 3 leaves WeChat
    seen = await check_all()
    assert kinds(seen["wechat client"], faq) == ["unpublished"] and faq not in replicas["wechat client"].items
    assert kinds(seen["web client"], faq) == ["updated"] and replicas["web client"].items[faq] == 3

    await patch_item(kb, admin, faq, {"visibility": "internal"})  # now agents only
    seen = await check_all()
    anon = [e for e in seen["anonymous web"] if e["item_id"] == faq]
    assert [(e["kind"], e["shown"], e["visibility"]) for e in anon] == [("visibility_changed", False, "internal")]
    assert faq not in replicas["anonymous web"].items and faq in replicas["agent"].items
    assert [(e["kind"], e["shown"]) for e in seen["agent"] if e["item_id"] == faq] == [("visibility_changed", True)]
    await patch_item(kb, admin, faq, {"visibility": "public"})
    seen = await check_all()
    assert replicas["anonymous web"].items[faq] == 3

    await kb.ok(admin, faq, 3, "unpublish")
    seen = await check_all()
    assert kinds(seen["anonymous web"], faq) == ["unpublished"] and kinds(seen["agent"], faq) == ["unpublished"]
    await kb.ok(admin, old["id"], 1, "archive")
    seen = await check_all()
    assert kinds(seen["agent"], old["id"]) == ["archived"] and replicas["anonymous web"].items == {}

    # Expiry: valid_to passes while nothing writes the item; the scheduled sweep says so.
    bill = (
        await kb.publish(
            admin, title="电费账单查询", visibility="public", valid_to=(utcnow() + timedelta(days=1)).isoformat()
        )
    )["id"]
    later = (
        await kb.publish(
            admin,
            title="2027年春节营业安排",
            visibility="public",
            valid_from=(utcnow() + timedelta(days=1)).isoformat(),
        )
    )["id"]
    seen = await check_all()
    assert bill in replicas["wechat client"].items and later not in replicas["agent"].items
    async with app.state.sessionmaker() as s:
        await s.execute(update(Item).where(Item.id == bill).values(valid_to=utcnow() - timedelta(seconds=1)))
        await s.execute(update(Item).where(Item.id == later).values(valid_from=utcnow() - timedelta(seconds=1)))
        await s.commit()
    await sweep(app)
    seen = await check_all()
    for name in replicas:
        assert kinds(seen[name], bill) == ["expired"], name
        assert kinds(seen[name], later) == ["published"], name
    await sweep(app)  # nothing more to say
    assert all(e == [] for e in (await check_all()).values())
    # An expiry set through the API is reported by that write.
    await patch_item(kb, admin, later, {"valid_to": (utcnow() - timedelta(minutes=1)).isoformat(), "valid_from": None})
    seen = await check_all()
    assert kinds(seen["agent"], later) == ["expired"]

    # Every event of the anonymous feed names a public item only.
    public_ids = {old["id"], faq, bill, later}
    assert {e["item_id"] for e in replicas["anonymous web"].events} <= public_ids


async def test_acl_changes_reach_the_feed_and_reconcile_is_idempotent(
    kb: Kb, admin: Actor, agent: Actor, client: httpx.AsyncClient, app: Any
) -> None:
    item = (await kb.publish(admin, title="信用卡挂失流程", visibility="public", category_ids=[kb.nodes["挂失"]]))["id"]
    anon = Replica(client, "web", ANON)
    await anon.start()
    assert item in anon.items
    r = await client.put(
        f"/api/v1/items/{item}/acl",
        headers={**admin.headers, "If-Match": await kb.etag(item)},
        json={"grants": [{"subject": "internal", "access": "read"}]},
    )
    assert r.status_code == 200, r.text
    got = await anon.check()
    assert [(e["kind"], e["shown"]) for e in got] == [("visibility_changed", False)] and item not in anon.items
    async with app.state.sessionmaker() as s:
        assert await reconcile(s, [item]) == []
        await s.commit()
    # The search index job reconciles too (the safety net), and has nothing to add.
    await drain(app)
    assert await anon.sync() == []


async def test_cursor_rules(
    kb: Kb, admin: Actor, client: httpx.AsyncClient, app: Any, settings: Any, people: People
) -> None:
    ids = [(await kb.publish(admin, title=f"5G套餐资费说明 第{i}版", visibility="public"))["id"] for i in range(3)]
    first = await changes(client, "web", ANON, limit=2)
    assert [e["item_id"] for e in first["items"]] == ids[:2] and first["has_more"] is True
    seqs = [e["seq"] for e in first["items"]]
    assert seqs == sorted(seqs)

    # Another API process (its own app, engine and sessions) resumes from the same cursor.
    other = create_app(settings.model_copy(update={"data_dir": settings.data_dir / "other"}))
    async with (
        LifespanManager(other),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://testserver") as c2,
    ):
        there = await changes(c2, "web", ANON, first["next_cursor"], limit=2)
    assert [e["item_id"] for e in there["items"]] == ids[2:]
    again = await changes(client, "web", ANON, first["next_cursor"], limit=2)
    assert [e["item_id"] for e in again["items"]] == ids[2:] and again["has_more"] is False
    empty = await changes(client, "web", ANON, again["next_cursor"])
    assert empty["items"] == [] and empty["next_cursor"] == again["next_cursor"] and empty["has_more"] is False

    for bad in (
        "not-a-cursor!",
        encode_cursor({"s": "7"}),
        encode_cursor({"s": -1}),
        encode_cursor({"id": 3}),
        "W10",
    ):  # "W10" is the JSON list []
        assert_problem(
            await client.get("/api/v1/changes", params={"channel": "web", "cursor": bad}), 400, "invalid_cursor"
        )
        assert_problem(await client.get("/api/v1/channels/web/snapshot", params={"cursor": bad}), 400, "invalid_cursor")
    assert_problem(
        await client.get("/api/v1/changes", params={"channel": "web", "cursor": encode_cursor({"s": 10**9})}),
        410,
        "resync_required",
    )  # ahead of the feed: not from this database
    for limit in (0, 201, -1):
        assert_problem(await client.get("/api/v1/changes", params={"channel": "web", "limit": limit}), 422)
    assert_problem(await client.get("/api/v1/changes", params={"channel": "fax"}), 404, "unknown_channel")
    assert_problem(await client.get("/api/v1/changes"), 422)
    assert_problem(await client.get("/api/v1/changes", params={"channel": "agent"}), 401)
    nobody = await people.make("no.read", permissions=[])
    assert_problem(await client.get("/api/v1/changes", params={"channel": "agent"}, headers=nobody.headers), 403)
    assert_problem(await client.get("/api/v1/channels/fax/snapshot"), 404, "unknown_channel")
    for limit in (0, 201):
        assert_problem(await client.get("/api/v1/channels/web/snapshot", params={"limit": limit}), 422)
    wechat_bot = await kb.channel_client("wechat")
    assert_problem(
        await client.get("/api/v1/changes", params={"channel": "web"}, headers=wechat_bot.headers),
        403,
        "channel_mismatch",
    )

    # Retention: events older than KB_CHANGES_RETENTION_DAYS go; a cursor from before them answers 410.
    async with app.state.sessionmaker() as s:
        await s.execute(
            update(ChannelChange)
            .where(ChannelChange.seq <= seqs[-1])
            .values(at=utcnow() - timedelta(days=settings.changes_retention_days + 1))
        )
        await s.commit()
    await sweep(app)
    assert_problem(
        await client.get("/api/v1/changes", params={"channel": "web", "cursor": encode_cursor({"s": seqs[-1] - 1})}),
        410,
        "resync_required",
    )
    assert (await changes(client, "web", ANON, first["next_cursor"]))["items"][0]["item_id"] == ids[2]
    start = await changes(client, "web", ANON)  # no cursor: from the oldest event kept
    assert [e["item_id"] for e in start["items"]] == ids[2:]
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.min(ChannelChange.seq))) == seqs[-1] + 1
        assert await purge(s, settings.changes_retention_days) == seqs[-1]  # the floor stays


async def test_a_slower_writer_that_started_first_is_not_skipped(
    kb: Kb, admin: Actor, client: httpx.AsyncClient, app: Any, db: Any
) -> None:
    """PostgreSQL: transaction A reconciles first (takes the feed's lock) and commits late; B waits
    for that lock, so it takes its seq only after A committed, and a reader never sees B's event
    (a higher seq) while A's is still invisible: nobody skips A."""
    if db.kind != "postgresql":
        pytest.skip(
            "SQLite has one writer at a time, so commit order is seq order by construction: this runs in the "
            "PostgreSQL leg of every run"
        )
    a_item = (await kb.create(admin, title="宽带报装进度查询", visibility="public"))["id"]
    b_item = (await kb.create(admin, title="手机停机保号办理", visibility="public"))["id"]
    maker = app.state.sessionmaker
    for item_id in (a_item, b_item):
        await kb.ok(admin, item_id, 1, "submit", "approve")
    cursor = (await changes(client, "web", ANON))["next_cursor"]

    from app.knowledge import workflow
    from app.knowledge.models import ItemVersion
    from app.knowledge.schemas import TransitionIn

    async def publish(item_id: int, hold: asyncio.Event | None, ready: asyncio.Event) -> None:
        async with maker() as s:
            item = await s.get(Item, item_id)
            version = await s.scalar(select(ItemVersion).where(ItemVersion.item_id == item_id))
            assert item is not None and version is not None
            await workflow._apply(s, workflow.SCHEDULER, item, version, "publish", TransitionIn(), False)
            ready.set()
            if hold is not None:
                await hold.wait()  # slow: commits only when told
            await s.commit()

    hold, a_ready, b_ready = asyncio.Event(), asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(publish(a_item, hold, a_ready))
    await a_ready.wait()  # A holds seq N and the lock, uncommitted
    b = asyncio.create_task(publish(b_item, None, b_ready))
    await asyncio.sleep(0.3)
    assert not b_ready.is_set()  # B is queued behind A's lock, before it could take a number
    page = await changes(client, "web", ANON, cursor)
    assert page["items"] == []  # nothing committed yet: the reader does not move past A
    hold.set()
    await asyncio.gather(a, b)
    page = await changes(client, "web", ANON, page["next_cursor"])
    assert [e["item_id"] for e in page["items"]] == [a_item, b_item]
