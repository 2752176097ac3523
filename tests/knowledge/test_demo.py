from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from sqlalchemy import select

from app.knowledge.demo import ITEMS, seed_knowledge_demo
from app.knowledge.models import Item, ItemVersion
from app.seed import seed_demo
from app.workers.models import Job
from tests.conftest import People


async def test_demo_seed_is_complete_and_idempotent(app: Any, client: httpx.AsyncClient, people: People) -> None:
    async with app.state.sessionmaker() as s:
        lines = await seed_demo(s)  # users, then the knowledge demo
        assert any(x.startswith(f"Knowledge demo: {len(ITEMS)} items ({len(ITEMS)} added now)") for x in lines)
        again = await seed_knowledge_demo(s)
        assert again[0].startswith(f"Knowledge demo: {len(ITEMS)} items (0 added now)"), again
        items = (await s.scalars(select(Item))).all()
        assert len(items) == len(ITEMS) >= 30
        states = Counter((await s.scalars(select(ItemVersion.state))).all())
        assert {"published", "in_review", "draft", "approved", "rejected", "archived"} <= set(states)
        assert sum(1 for i in items if i.status == "published") >= 20
        assert await s.scalar(select(Job).where(Job.kind == "knowledge.publish_scheduled")) is not None
    agent = await people.make("demo.agent", role="agent")
    listed = (await client.get("/api/v1/items", params={"limit": 200}, headers=agent.headers)).json()["items"]
    titles = {x["title"] for x in listed}
    assert "携号转网需要满足什么条件？" in titles and "國際漫遊怎麼開通？" in titles
    assert "2025年宽带资费优惠政策" not in titles  # expired
    assert "宽带故障排查指南（坐席版）" in titles  # agents-only content, read by an agent
    r = await client.get("/api/v1/items", params={"q": "5G"}, headers=agent.headers)
    item = r.json()["items"][0]
    full = (await client.get(f"/api/v1/items/{item['id']}", headers=agent.headers)).json()
    assert full["version"]["answers"]["wechat"].startswith("5G畅享128元")
    assert full["version"]["similar_questions"] and "<table>" in full["version"]["body"]
