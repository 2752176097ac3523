"""Import tests: the knowledge fixtures (a 知识分类 tree, a FAQ template with a required 适用地区),
a sync source, and helpers that upload a file and let a real worker run the job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.knowledge.models import Item, ItemVersion
from app.workers.models import Job
from app.workers.worker import Worker
from tests.conftest import Actor, People
from tests.knowledge.conftest import Kb, agent, author, kb, publisher, reviewer

__all__ = ["Kb", "agent", "author", "kb", "publisher", "reviewer"]

NDJSON = "application/x-ndjson"

# Realistic rows of a telecom CRM's FAQ export (traditional characters in one, English and digits).
ROWS: list[dict[str, Any]] = [
    {
        "external_id": "CRM-1001",
        "title": "宽带无法上网怎么办",
        "question": "宽带连不上网怎么处理",
        "similar_questions": ["家里wifi上不了网", "光猫红灯闪烁"],
        "body": "<p>请先重启光猫和路由器，等待 3 分钟后重试。</p>",
        "categories": ["宽带业务/宽带故障"],
        "tags": ["宽带", "故障"],
        "attr.region": "全国",
        "answer.agent": "您好，请您先重启光猫，我这边帮您查询线路状态。",
    },
    {
        "external_id": "CRM-1002",
        "title": "如何办理携号转网",
        "question": "携号转网需要什么条件",
        "similar_questions": ["换运营商号码不变"],
        "body": "<p>发送短信 CXXZ#姓名#证件号 到 10086 查询资格。</p>",
        "categories": ["手机业务/携号转网"],
        "tags": ["携号转网"],
        "attr.region": "全国",
        "visibility": "public",
    },
    {
        "external_id": "CRM-1003",
        "title": "信用卡遗失如何挂失",
        "question": "信用卡丢了怎么办",
        "body": "<p>请立即拨打 95588 挂失，挂失后 24 小时内盗刷损失由银行承担。</p>",
        "categories": ["信用卡/挂失"],
        "attr.region": "全国",
    },
    {
        "external_id": "CRM-1004",
        "title": "帳戶凍結怎麼辦",
        "question": "帳戶被凍結如何解凍",
        "body": "<p>請攜帶身份證到任一營業廳辦理解凍。</p>",
        "categories": ["信用卡"],
        "attr.region": "广东",
    },
]


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


@dataclass
class Importer:
    app: Any
    client: httpx.AsyncClient
    manager: Actor

    async def source(self, name: str = "crm", **policy: Any) -> dict[str, Any]:
        body = {"name": name, "publish_mode": "publish", "create_tags": True, **policy}
        r = await self.client.post("/api/v1/sync-sources", json=body, headers=self.manager.headers)
        assert r.status_code == 201, r.text
        return r.json()

    async def post(
        self,
        data: bytes,
        *,
        actor: Actor | None = None,
        ctype: str = NDJSON,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> httpx.Response:
        params.setdefault("source", "crm")
        params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}
        return await self.client.post(
            "/api/v1/imports",
            params=params,
            content=data,
            headers={**(actor or self.manager).headers, "Content-Type": ctype, **(headers or {})},
        )

    async def run(self, data: bytes, **kw: Any) -> dict[str, Any]:
        """Upload, let the worker run everything due (the import, then its index jobs), return the job."""
        r = await self.post(data, **kw)
        assert r.status_code == 202, r.text
        await self.drain()
        return await self.job(r.json()["id"], actor=kw.get("actor"))

    async def job(self, import_id: int, actor: Actor | None = None) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/imports/{import_id}", headers=(actor or self.manager).headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def drain(self) -> int:
        return await Worker(
            self.app.state.sessionmaker, self.app.state.settings, services=self.app.state.services
        ).drain()

    async def items(self) -> dict[str, tuple[Item, list[ItemVersion]]]:
        """external id -> (item, versions) of every synced item."""
        async with self.app.state.sessionmaker() as s:
            items = (await s.scalars(select(Item).where(Item.source.is_not(None)))).all()
            out = {}
            for i in items:
                versions = (
                    await s.scalars(select(ItemVersion).where(ItemVersion.item_id == i.id).order_by(ItemVersion.number))
                ).all()
                out[i.external_id] = (i, list(versions))
            return out

    async def pending_jobs(self, kind: str) -> int:
        async with self.app.state.sessionmaker() as s:
            return (
                await s.scalar(select(func.count()).select_from(Job).where(Job.kind == kind, Job.status == "pending"))
                or 0
            )

    async def search(self, actor: Actor, q: str) -> list[dict[str, Any]]:
        r = await self.client.get("/api/v1/search", params={"q": q}, headers=actor.headers)
        assert r.status_code == 200, r.text
        return r.json()["items"]


@pytest.fixture
async def importer(app: Any, client: httpx.AsyncClient, people: People, kb: Kb) -> Importer:
    manager = await people.make("kbadmin", role="kb_manager")
    return Importer(app, client, manager)
