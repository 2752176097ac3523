from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.knowledge.models import Item, ItemVersion
from tests.conftest import Actor, Database, assert_problem
from tests.knowledge.conftest import Kb


async def test_writes_need_a_current_etag(kb: Kb, client: httpx.AsyncClient, author: Actor) -> None:
    item = await kb.create(author)
    iid, first_etag = item["id"], item["etag"]
    url = f"/api/v1/items/{iid}"
    # 428 without If-Match: item fields, draft, workflow action, restore
    body = assert_problem(
        await client.patch(url, json={"review_due": "2026-12-31"}, headers=author.headers), 428, "precondition_required"
    )
    assert body["current_etag"] == first_etag
    assert_problem(await client.patch(f"{url}/draft", json={"title": "x"}, headers=author.headers), 428)
    assert_problem(await kb.act(author, iid, 1, "submit", if_match=None), 428, "precondition_required")
    assert_problem(await client.post(f"{url}/versions/1/restore", headers=author.headers), 428)
    # a current one works and changes the ETag
    r = await client.patch(url, json={"review_due": "2026-12-31"}, headers={**author.headers, "If-Match": first_etag})
    assert r.status_code == 200, r.text
    new_etag = r.headers["etag"]
    assert new_etag != first_etag and r.json()["etag"] == new_etag and r.json()["review_due"] == "2026-12-31"
    # the old one is stale now: 412 with the current version, for every kind of write
    stale = {**author.headers, "If-Match": first_etag}
    body = assert_problem(
        await client.patch(url, json={"visibility": "public"}, headers=stale), 412, "precondition_failed"
    )
    assert body["current_etag"] == new_etag and body["current_version"] == r.json()["row_version"]
    assert_problem(await client.patch(f"{url}/draft", json={"title": "x"}, headers=stale), 412)
    assert_problem(await kb.act(author, iid, 1, "submit", if_match=first_etag), 412)
    # weak validators and lists of tags are understood
    ok = await client.patch(
        f"{url}/draft",
        json={"question": "宽带断网如何报修"},
        headers={**author.headers, "If-Match": f'"nope", W/{new_etag}'},
    )
    assert ok.status_code == 200, ok.text
    # reads: ETag and 304
    got = await kb.get(author, iid)
    assert got.headers["etag"] == ok.headers["etag"]
    r304 = await client.get(url, headers={**author.headers, "If-None-Match": got.headers["etag"]})
    assert r304.status_code == 304 and r304.headers["etag"] == got.headers["etag"]


async def test_two_editors_never_overwrite_each_other(
    kb: Kb, client: httpx.AsyncClient, author: Actor, reviewer: Actor
) -> None:
    item = await kb.create(author, title="携号转网办理条件")
    iid = item["id"]
    # both open the draft and get the same ETag
    a = await client.get(f"/api/v1/items/{iid}/draft", headers=author.headers)
    b = await client.get(f"/api/v1/items/{iid}/draft", headers=reviewer.headers)
    assert a.headers["etag"] == b.headers["etag"]
    r1 = await client.patch(
        f"/api/v1/items/{iid}/draft",
        json={"body": "<p>在网满 6 个月，无欠费。</p>"},
        headers={**author.headers, "If-Match": a.headers["etag"]},
    )
    assert r1.status_code == 200, r1.text
    r2 = await client.patch(
        f"/api/v1/items/{iid}/draft",
        json={"body": "<p>号码无合约限制即可。</p>"},
        headers={**reviewer.headers, "If-Match": b.headers["etag"]},
    )
    body = assert_problem(r2, 412, "precondition_failed")
    assert body["current_etag"] == r1.headers["etag"]
    final = await client.get(f"/api/v1/items/{iid}/draft", headers=author.headers)
    assert final.json()["body"] == "<p>在网满 6 个月，无欠费。</p>"


async def test_concurrent_edits_of_one_draft(kb: Kb, client: httpx.AsyncClient, author: Actor) -> None:
    """Sent at the same moment with the same ETag: exactly one edit wins, the other gets 412."""
    item = await kb.create(author)
    etag = item["etag"]
    results = await asyncio.gather(
        *[
            client.patch(
                f"/api/v1/items/{item['id']}/draft",
                json={"title": f"版本{i}"},
                headers={**author.headers, "If-Match": etag},
            )
            for i in range(2)
        ]
    )
    assert sorted(r.status_code for r in results) == [200, 412], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()["title"]
    assert (await client.get(f"/api/v1/items/{item['id']}/draft", headers=author.headers)).json()["title"] == winner


async def test_concurrent_publishes_leave_one_published_version(
    kb: Kb, client: httpx.AsyncClient, db: Database, admin: Actor, publisher: Actor
) -> None:
    if db.kind != "postgresql":
        pytest.skip(
            "needs real concurrent writers (row locks): SQLite serializes every writer, "
            "which test_concurrent_edits_of_one_draft covers; runs on PostgreSQL"
        )
    for _ in range(3):  # a few rounds: the race must be lost the same way every time
        item = await kb.publish(admin, title="iPhone 15 合约机办理")
        iid = item["id"]
        assert (await kb.edit(admin, iid, {"title": "iPhone 15 合约机办理（新版）"})).status_code == 200
        await kb.ok(admin, iid, 2, "submit", "approve")
        etag = await kb.etag(iid)
        results = await asyncio.gather(
            *[
                client.post(f"/api/v1/items/{iid}/versions/2/publish", headers={**who.headers, "If-Match": etag})
                for who in (admin, publisher)
            ]
        )
        codes = sorted(r.status_code for r in results)
        assert codes[0] == 200 and codes[1] in (409, 412), [r.text for r in results]
        async with kb.app.state.sessionmaker() as s:
            published = (
                await s.scalars(
                    select(ItemVersion.number).where(ItemVersion.item_id == iid, ItemVersion.state == "published")
                )
            ).all()
            assert published == [2]
            row = await s.get(Item, iid)
            assert row is not None and row.published_version_id is not None
            superseded = await s.scalar(
                select(func.count()).where(ItemVersion.item_id == iid, ItemVersion.state == "superseded")
            )
            assert superseded == 1


async def test_the_database_refuses_two_published_versions(kb: Kb, admin: Actor) -> None:
    item = await kb.publish(admin)
    assert (await kb.edit(admin, item["id"], {"title": "第二版"})).status_code == 200
    async with kb.app.state.sessionmaker() as s:
        with pytest.raises(IntegrityError):
            await s.execute(
                update(ItemVersion)
                .where(ItemVersion.item_id == item["id"], ItemVersion.number == 2)
                .values(state="published")
            )
        await s.rollback()
