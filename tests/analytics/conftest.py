"""Analytics tests reuse the knowledge fixtures, and seed a week of call-center use through the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.analytics.rollup import rollup
from app.core.db import utcnow
from app.workers.worker import Worker
from tests.conftest import Actor, People
from tests.knowledge.conftest import Kb, agent, author, kb, publisher, reviewer

__all__ = ["Kb", "Seeded", "agent", "author", "kb", "publisher", "reviewer", "seeded", "supervisor"]

XSS_QUERY = "<script>alert(1)</script>"
XSS_TITLE = '账单查询<img src=x onerror="window.pwned=true">'
WEB = "/api/v1/channels/web"


@dataclass
class Seeded:
    items: dict[str, int]  # title -> item id


async def _publish(kb: Kb, admin: Actor, title: str, **fields: Any) -> int:
    item = await kb.publish(admin, title=title, question=f"{title}？", visibility="public", **fields)
    return int(item.get("item_id") or item["id"])


async def _view(client: httpx.AsyncClient, item_id: int, times: int) -> None:
    for _ in range(times):
        assert (await client.get(f"{WEB}/items/{item_id}")).status_code == 200


async def _vote(client: httpx.AsyncClient, item_id: int, helpful: bool, visitor: str) -> None:
    r = await client.post(
        f"{WEB}/items/{item_id}/feedback", json={"helpful": helpful}, headers={"X-Visitor-Id": visitor}
    )
    assert r.status_code == 202, r.text


async def _search(client: httpx.AsyncClient, actor: Actor, q: str) -> None:
    r = await client.get("/api/v1/search", params={"q": q}, headers=actor.headers)
    assert r.status_code == 200, r.text


@pytest.fixture
async def seeded(app: Any, kb: Kb, admin: Actor, agent: Actor, client: httpx.AsyncClient) -> Seeded:
    """Five published FAQs, four of them read on the website; agent searches (some finding nothing),
    website votes; one FAQ past its review date, one expiring next week."""
    today = utcnow().date()
    items = {
        "宽带无法上网怎么办？": await _publish(kb, admin, "宽带无法上网怎么办？"),
        "信用卡挂失流程": await _publish(kb, admin, "信用卡挂失流程", review_due=str(today - timedelta(days=3))),
        "携號轉網辦理條件": await _publish(
            kb, admin, "携號轉網辦理條件", valid_to=(utcnow() + timedelta(days=7)).isoformat()
        ),
        XSS_TITLE: await _publish(kb, admin, XSS_TITLE),
        "电费缴纳渠道": await _publish(kb, admin, "电费缴纳渠道"),
    }
    await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()  # index them
    await _view(client, items["宽带无法上网怎么办？"], 5)
    await _view(client, items["信用卡挂失流程"], 3)
    await _view(client, items["携號轉網辦理條件"], 2)
    await _view(client, items[XSS_TITLE], 1)
    for q in ["宽带", "宽带", "信用卡挂失", XSS_QUERY, XSS_QUERY, "燃气表读数异常"]:
        await _search(client, agent, q)
    for i, helpful in enumerate([False, False, False, True]):
        await _vote(client, items["信用卡挂失流程"], helpful, f"visitor-a{i:04d}")
    for i in range(2):
        await _vote(client, items["宽带无法上网怎么办？"], True, f"visitor-b{i:04d}")
    for writer in (app.state.search_log, app.state.channel_events):
        await writer.flush()
    await rollup(app.state.sessionmaker)  # the report shows the figures as of the last rollup, like the JSON
    return Seeded(items)


@pytest.fixture
async def supervisor(people: People) -> Actor:
    return await people.make("zhao.min", role="supervisor")
