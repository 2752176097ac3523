"""Building blocks for the taxonomy tests: a realistic 知识分类 tree and item versions placed in it."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.knowledge.models import Item, ItemVersion, version_categories, version_tags
from app.taxonomy.service import ensure_default_item_types
from app.workers.models import Job

API = "/api/v1"
SM = async_sessionmaker[AsyncSession]


async def taxonomy(client: httpx.AsyncClient, headers: dict[str, str], code: str, name: str, **extra: Any) -> int:
    r = await client.post(f"{API}/taxonomies", json={"code": code, "name": name, **extra}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def node(
    client: httpx.AsyncClient, headers: dict[str, str], tid: int, name: str, parent: int | None = None, **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        f"{API}/taxonomies/{tid}/nodes", json={"name": name, "parent_id": parent, **extra}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()


async def build_kb(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    """知识分类: 宽带业务 › 宽带故障 › 光猫故障; 手机业务 › 携号转网; 信用卡 › 挂失; 電費."""
    ids = {"tax": await taxonomy(client, headers, "category", "知识分类")}
    tid = ids["tax"]
    ids["宽带业务"] = (await node(client, headers, tid, "宽带业务"))["id"]
    ids["宽带故障"] = (await node(client, headers, tid, "宽带故障", ids["宽带业务"]))["id"]
    ids["光猫故障"] = (await node(client, headers, tid, "光猫故障", ids["宽带故障"]))["id"]
    ids["手机业务"] = (await node(client, headers, tid, "手机业务"))["id"]
    ids["携号转网"] = (await node(client, headers, tid, "携号转网", ids["手机业务"]))["id"]
    ids["信用卡"] = (await node(client, headers, tid, "信用卡"))["id"]
    ids["挂失"] = (await node(client, headers, tid, "挂失", ids["信用卡"]))["id"]
    ids["電費"] = (await node(client, headers, tid, "電費"))["id"]
    return ids


async def make_item(
    sm: SM,
    *,
    states: tuple[str, ...] = ("published",),
    node_ids: tuple[int, ...] = (),
    tag_ids: tuple[int, ...] = (),
    attributes: dict[str, Any] | None = None,
    title: str = "光猫红灯闪烁怎么办",
) -> tuple[int, list[int]]:
    """An item with one version per state (numbered 1..n), each placed in `node_ids` and tagged."""
    async with sm() as session:
        await ensure_default_item_types(session)
        item = Item(item_type="faq", status="published" if "published" in states else "draft")
        session.add(item)
        await session.flush()
        version_ids = []
        for number, state in enumerate(states, start=1):
            v = ItemVersion(item_id=item.id, number=number, state=state, title=title, attributes=attributes or {})
            session.add(v)
            await session.flush()
            version_ids.append(v.id)
            for n in node_ids:
                await session.execute(insert(version_categories).values(version_id=v.id, node_id=n))
            for t in tag_ids:
                await session.execute(insert(version_tags).values(version_id=v.id, tag_id=t))
        item.latest_version_no = len(states)
        await session.commit()
        return item.id, version_ids


async def placements(sm: SM, version_id: int) -> list[int]:
    async with sm() as session:
        rows = await session.scalars(
            select(version_categories.c.node_id).where(version_categories.c.version_id == version_id)
        )
        return sorted(rows.all())


async def reindex_jobs(sm: SM) -> list[list[int]]:
    """The item ids of each queued search.reindex_items job, oldest first."""
    async with sm() as session:
        rows = await session.scalars(select(Job).where(Job.kind == "search.reindex_items").order_by(Job.id))
        return [sorted(j.payload["item_ids"]) for j in rows.all()]


async def count(sm: SM, stmt: Any) -> int:
    async with sm() as session:
        return await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
