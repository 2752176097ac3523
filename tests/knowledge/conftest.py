"""A small 知识分类 tree, a template and helpers to drive items through the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.security import hash_secret
from app.identity.models import ApiClient
from app.taxonomy.models import AttributeDefinition, ItemType, Taxonomy, TaxonomyNode, Template
from app.taxonomy.service import ensure_default_item_types
from app.workers.models import Job
from tests.conftest import Actor, People

TREE = {
    "宽带业务": ["宽带故障", "宽带办理"],
    "手机业务": ["携号转网", "套餐资费"],
    "信用卡": ["挂失"],
    "电费缴纳": [],
}


@dataclass
class Kb:
    app: Any
    client: httpx.AsyncClient
    nodes: dict[str, int] = field(default_factory=dict)
    taxonomy_id: int = 0

    # ------------------------------------------------------------ items

    async def create(self, actor: Actor, *, item_type: str = "faq", **fields: Any) -> dict[str, Any]:
        body = {
            "item_type": item_type,
            "title": "宽带无法上网怎么办？",
            "question": "宽带连不上网怎么处理",
            "similar_questions": ["宽带断网了", "家里wifi上不了网"],
            "body": "<p>请先重启光猫和路由器，等待 3 分钟后重试。</p>",
            "attributes": {"region": "全国"} if item_type == "faq" else {},
            **fields,
        }
        r = await self.client.post("/api/v1/items", json=body, headers=actor.headers)
        assert r.status_code == 201, r.text
        assert r.headers["etag"] == r.json()["etag"]
        return r.json()

    async def get(self, actor: Actor, item_id: int) -> httpx.Response:
        return await self.client.get(f"/api/v1/items/{item_id}", headers=actor.headers)

    async def etag(self, item_id: int) -> str:
        from app.core.etag import make_etag
        from app.knowledge.models import Item

        async with self.app.state.sessionmaker() as s:
            item = await s.get(Item, item_id)
            assert item is not None
            return make_etag("item", item.id, item.row_version)

    async def act(
        self,
        actor: Actor,
        item_id: int,
        number: int,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        if_match: str | None = "auto",
    ) -> httpx.Response:
        headers = dict(actor.headers)
        if if_match == "auto":
            if_match = await self.etag(item_id)
        if if_match is not None:
            headers["If-Match"] = if_match
        if action == "reject" and body is None:
            body = {"reason": "答案缺少办理渠道，请补充"}
        return await self.client.post(f"/api/v1/items/{item_id}/versions/{number}/{action}", json=body, headers=headers)

    async def ok(self, actor: Actor, item_id: int, number: int, *actions: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for action in actions:
            r = await self.act(actor, item_id, number, action)
            assert r.status_code == 200, f"{action}: {r.text}"
            out = r.json()
        return out

    async def edit(self, actor: Actor, item_id: int, fields: dict[str, Any]) -> httpx.Response:
        headers = {**actor.headers, "If-Match": await self.etag(item_id)}
        return await self.client.patch(f"/api/v1/items/{item_id}/draft", json=fields, headers=headers)

    async def publish(self, actor: Actor, **fields: Any) -> dict[str, Any]:
        """A new item taken through review to published (actor needs every permission)."""
        item = await self.create(actor, **fields)
        return await self.ok(actor, item["id"], 1, "submit", "approve", "publish")

    # ------------------------------------------------------------ others

    async def jobs(self, kind: str) -> list[dict[str, Any]]:
        async with self.app.state.sessionmaker() as s:
            rows = (await s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))).all()
            return [dict(j.payload) for j in rows]

    async def channel_client(self, channel: str | None, scopes: list[str] | None = None) -> Actor:
        """A channel client (WeChat, website ...) with a real token."""
        scopes = scopes or ["knowledge:read"]
        async with self.app.state.sessionmaker() as s:
            c = ApiClient(
                client_id=f"{channel or 'sync'}-bot-{len(self.nodes)}-{id(s) % 9999}",
                name="渠道",
                secret_hash=hash_secret("x" * 12),
                scopes=scopes,
                channel=channel,
            )
            s.add(c)
            await s.commit()
            codec = self.app.state.token_codec
            token, _ = codec.encode(
                {"sub": f"client:{c.id}", "typ": "access", "ver": c.token_version, "scope": " ".join(scopes)},
                codec.access_ttl,
            )
            return Actor(c, {"Authorization": f"Bearer {token}"})  # type: ignore[arg-type]


async def add_faq_template(s: Any) -> None:
    """The FAQ type's template (a required 适用地区, a text and a number) and the 紧急通知 type."""
    region = AttributeDefinition(
        code="region", name="适用地区", type="enum", required=True, options=["全国", "北京", "上海", "广东"]
    )
    since = AttributeDefinition(code="since_version", name="生效版本", type="text")
    speed = AttributeDefinition(code="speed", name="带宽(M)", type="number")
    s.add_all([region, since, speed])
    await s.flush()
    tmpl = Template(name="FAQ模板", attributes=[region, since, speed])
    s.add(tmpl)
    await s.flush()
    faq = await s.get(ItemType, "faq")
    assert faq is not None
    faq.template_id = tmpl.id
    s.add(ItemType(code="notice", name="紧急通知", review_required=False))


async def _build(app: Any) -> tuple[int, dict[str, int]]:
    async with app.state.sessionmaker() as s:
        await ensure_default_item_types(s)
        tax = Taxonomy(code="kb_category", name="知识分类")
        s.add(tax)
        await s.flush()
        nodes: dict[str, int] = {}
        for parent, children in TREE.items():
            p = TaxonomyNode(taxonomy_id=tax.id, name=parent, path="/")
            s.add(p)
            await s.flush()
            p.path = f"/{p.id}/"
            nodes[parent] = p.id
            for i, child in enumerate(children):
                c = TaxonomyNode(taxonomy_id=tax.id, parent_id=p.id, name=child, position=i, path="/")
                s.add(c)
                await s.flush()
                c.path = f"{p.path}{c.id}/"
                nodes[child] = c.id
        await add_faq_template(s)
        await s.commit()
        return tax.id, nodes


@pytest.fixture
async def kb(app: Any, client: httpx.AsyncClient) -> Kb:
    tax_id, nodes = await _build(app)
    return Kb(app, client, nodes, tax_id)


@pytest.fixture
async def author(people: People) -> Actor:
    return await people.make("li.na", role="author")


@pytest.fixture
async def reviewer(people: People) -> Actor:
    return await people.make("wang.fang", role="reviewer")


@pytest.fixture
async def publisher(people: People) -> Actor:
    return await people.make("chen.jie", role="publisher")


@pytest.fixture
async def agent(people: People) -> Actor:
    return await people.make("zhang.wei", role="agent")
