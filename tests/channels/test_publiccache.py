"""Anonymous `items/{id}` from the process's kept renderings (app/channels/publiccache.py): served
without the database while the change feed stands still, and never after a change is seen."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.channels import changes
from app.channels.publiccache import PublicCache
from app.core.db import utcnow
from app.knowledge.models import Item
from tests.conftest import Actor, assert_problem
from tests.knowledge.conftest import Kb


def cache_of(kb: Kb) -> PublicCache:
    return kb.app.state.public_cache


async def faq(kb: Kb, admin: Actor, title: str = "信用卡账单日怎么修改？") -> tuple[int, str]:
    item = await kb.publish(
        admin, title=title, visibility="public", body="<p>登录手机银行，进入“信用卡-账单设置”修改，每年可改2次。</p>"
    )
    return item["id"], f"/api/v1/channels/web/items/{item['id']}"


async def test_a_kept_answer_is_the_same_answer_and_costs_no_lookup(
    kb: Kb, admin: Actor, client: httpx.AsyncClient
) -> None:
    item_id, url = await faq(kb, admin)
    cache = cache_of(kb)
    first = await client.get(url)
    assert first.status_code == 200 and first.json()["item_id"] == item_id
    hits = cache.stats["hits"]
    again = await client.get(url)
    assert cache.stats["hits"] == hits + 1
    assert again.content == first.content
    for header in ("etag", "cache-control", "last-modified", "vary", "content-type"):
        assert again.headers[header] == first.headers[header], header
    unchanged = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert unchanged.status_code == 304 and not unchanged.content and cache.stats["hits"] == hits + 2
    # a caller with a token reads under its own ACL: never served from the anonymous entries
    web_client = await kb.channel_client("web")
    private = await client.get(url, headers=web_client.headers)
    assert private.headers["cache-control"] == "private, no-cache" and cache.stats["hits"] == hits + 2


async def test_every_change_made_in_this_process_is_seen_at_once(
    kb: Kb, admin: Actor, client: httpx.AsyncClient
) -> None:
    cache_of(kb).seconds = 3600  # no time-based look at the feed: only the commit hook can tell
    item_id, url = await faq(kb, admin)
    other_id, other_url = await faq(kb, admin, "信用卡年费怎么减免？")
    assert (await client.get(url)).json()["version"] == 1
    assert (await client.get(other_url)).status_code == 200
    # a new version
    r = await kb.edit(admin, item_id, {"body": "<p>登录手机银行或致电95588修改账单日。</p>"})
    assert r.status_code == 200, r.text
    await kb.ok(admin, item_id, 2, "submit", "approve", "publish")
    fresh = await client.get(url)
    assert fresh.json()["version"] == 2 and "95588" in fresh.text
    hits = cache_of(kb).stats["hits"]
    assert (await client.get(other_url)).status_code == 200
    assert cache_of(kb).stats["hits"] == hits + 1, "only the changed item was dropped"
    # unpublished, then the other one made internal: gone at once, the same 404 as a missing id
    await kb.ok(admin, item_id, 2, "unpublish")
    assert assert_problem(await client.get(url), 404, "item_not_found")["detail"] == f"No item with id {item_id}"
    headers = {**admin.headers, "If-Match": await kb.etag(other_id)}
    r = await client.patch(f"/api/v1/items/{other_id}", json={"visibility": "internal"}, headers=headers)
    assert r.status_code == 200, r.text
    assert_problem(await client.get(other_url), 404, "item_not_found")


async def changed_elsewhere(app: Any, item_id: int, **values: Any) -> None:
    """What another API process does: the same write and feed event, but its commit is not this
    process's, so no hook fires here."""
    async with app.state.sessionmaker() as s:
        await s.execute(update(Item).where(Item.id == item_id).values(**values))
        assert await changes.reconcile(s, [item_id]) or values.keys() == {"valid_to"}
        s.sync_session.info.clear()
        await s.commit()


async def test_another_process_change_is_seen_within_the_cache_seconds(
    kb: Kb, admin: Actor, client: httpx.AsyncClient
) -> None:
    cache = cache_of(kb)
    cache.seconds = 3600
    item_id, url = await faq(kb, admin)
    assert (await client.get(url)).status_code == 200
    await changed_elsewhere(kb.app, item_id, status="archived")
    # within KB_CHANNEL_CACHE_SECONDS the kept answer may still be served (documented) ...
    assert (await client.get(url)).status_code == 200
    # ... and once they have passed, the feed's head is read and the item is gone
    cache.checked -= 3600
    assert_problem(await client.get(url), 404, "item_not_found")


async def test_validity_is_checked_at_every_hit_and_a_moved_end_drops_everything(
    kb: Kb, admin: Actor, client: httpx.AsyncClient
) -> None:
    cache = cache_of(kb)
    cache.seconds = 3600
    item_id, url = await faq(kb, admin)
    _, other_url = await faq(kb, admin, "信用卡分期手续费怎么算？")
    assert (await client.get(url)).status_code == 200 and (await client.get(other_url)).status_code == 200
    # valid_to moved on a shown item (no feed event: a silent change), written by another process
    await changed_elsewhere(kb.app, item_id, valid_to=utcnow() + timedelta(seconds=1.5))
    cache.checked -= 3600
    dropped = cache.stats["dropped"]
    r = await client.get(url)
    assert r.status_code == 200 and cache.stats["dropped"] >= dropped + 2, "a silent change clears every entry"
    hits = cache.stats["hits"]
    assert (await client.get(url)).status_code == 200 and cache.stats["hits"] == hits + 1
    await asyncio.sleep(1.6)  # valid_to passes: no event yet (the sweep has not run), still never served
    assert_problem(await client.get(url), 404, "item_not_found")
