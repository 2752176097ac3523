from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.core.db import utcnow
from app.identity.models import Department, Role
from app.identity.permissions import DEFAULT_ROLES
from app.knowledge import acl
from app.knowledge.models import Item
from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

AGENT_PERMISSIONS = DEFAULT_ROLES["agent"][1]


class Readers:
    """One reader per kind of subject, plus an unrelated staff member and an anonymous visitor."""

    def __init__(self, kb: Kb, people: People) -> None:
        self.kb, self.people = kb, people

    async def build(self) -> Readers:
        async with self.kb.app.state.sessionmaker() as s:
            center = Department(name="客户服务中心", path="/")
            s.add(center)
            await s.flush()
            center.path = f"/{center.id}/"
            team = Department(name="一线坐席组", parent_id=center.id, path="/")
            s.add(team)
            await s.flush()
            team.path = f"{center.path}{team.id}/"
            await s.commit()
            self.center_id = center.id
        self.role_user = await self.people.make("hotline.agent", permissions=AGENT_PERMISSIONS)
        async with self.kb.app.state.sessionmaker() as s:
            self.role_id = await s.scalar(select(Role.id).where(Role.name == "r_hotline.agent"))
        self.dept_user = await self.people.make("team.agent", role="agent", department_id=team.id)
        self.other = await self.people.make("other.agent", role="agent")
        self.web = await self.kb.channel_client("web")
        self.subject = {
            "role": f"role:{self.role_id}",
            "dept": f"dept:{self.center_id}",  # the parent dept
            "client": f"client:{self.web.user.id}",
            "public": "public",
        }
        return self

    @property
    def callers(self) -> dict[str, Actor]:
        return {"role": self.role_user, "dept": self.dept_user, "other": self.other, "client": self.web}

    async def who_reads(self, item_id: int) -> set[str]:
        """Which readers get the item: by GET (404 otherwise), cross-checked with can_read."""
        out = set()
        for name, actor in self.callers.items():
            r = await self.kb.get(actor, item_id)
            assert r.status_code in (200, 404), r.text
            if r.status_code == 200:
                out.add(name)
        async with self.kb.app.state.sessionmaker() as s:
            item = await s.get(Item, item_id)
            assert item is not None
            if await acl.can_read(s, None, item):
                out.add("anonymous")
        return out

    async def listed(self) -> dict[str, set[int]]:
        out = {}
        for name, actor in self.callers.items():
            r = await self.kb.client.get("/api/v1/items", params={"limit": 200}, headers=actor.headers)
            assert r.status_code == 200, r.text
            out[name] = {x["id"] for x in r.json()["items"]}
        return out


async def put_acl(client: httpx.AsyncClient, actor: Actor, url: str, grants: list[Any]) -> httpx.Response:
    grants = [{"subject": g, "access": "read"} if isinstance(g, str) else g for g in grants]
    return await client.put(url, json={"grants": grants}, headers=actor.headers)


async def test_read_matrix(kb: Kb, client: httpx.AsyncClient, people: People, admin: Actor) -> None:
    """subject (role, dept, client, public) x where granted (category, item, nowhere) x reader."""
    rd = await Readers(kb, people).build()
    everyone = {"role", "dept", "other", "client", "anonymous"}
    expected_for = {"role": {"role"}, "dept": {"dept"}, "client": {"client"}, "public": everyone}
    category_for = {"role": "宽带故障", "dept": "携号转网", "client": "套餐资费", "public": "挂失"}
    cases: list[tuple[str, int, set[str]]] = []
    none = await kb.publish(
        admin, title="未设权限：营业厅营业时间", visibility="public", category_ids=[kb.nodes["宽带办理"]]
    )
    cases.append(("nowhere", none["id"], everyone))
    for kind, node in category_for.items():
        r = await put_acl(client, admin, f"/api/v1/taxonomy-nodes/{kb.nodes[node]}/acl", [rd.subject[kind]])
        assert r.status_code == 200, r.text
        item = await kb.publish(admin, title=f"分类授权 {kind}", visibility="public", category_ids=[kb.nodes[node]])
        cases.append((f"category/{kind}", item["id"], expected_for[kind]))
    for kind in category_for:
        item = await kb.publish(
            admin, title=f"条目授权 {kind}", visibility="public", category_ids=[kb.nodes["宽带办理"]]
        )
        r = await put_acl(client, admin, f"/api/v1/items/{item['id']}/acl", [rd.subject[kind]])
        assert r.status_code == 200, r.text
        cases.append((f"item/{kind}", item["id"], expected_for[kind]))
    listed = await rd.listed()
    for name, item_id, expected in cases:
        assert await rd.who_reads(item_id) == expected, name
        for reader in rd.callers:
            assert (item_id in listed[reader]) == (reader in expected), (name, reader)


async def test_inheritance_overrides_and_visibility(
    kb: Kb, client: httpx.AsyncClient, people: People, admin: Actor
) -> None:
    rd = await Readers(kb, people).build()
    parent, child = kb.nodes["手机业务"], kb.nodes["携号转网"]
    item = await kb.publish(admin, title="携号转网办理条件", visibility="public", category_ids=[child])
    iid = item["id"]
    node_url = "/api/v1/taxonomy-nodes/{}/acl"
    # a grant on the parent reaches the child's items
    r = await put_acl(client, admin, node_url.format(parent), [rd.subject["role"]])
    assert r.json()["effective"][0]["from_node_id"] == parent
    assert await rd.who_reads(iid) == {"role"}
    r = await client.get(node_url.format(child), headers=admin.headers)
    assert r.json()["grants"] == [] and r.json()["effective"] == [
        {"node_id": child, "from_node_id": parent, "subject": rd.subject["role"], "access": "read"}
    ]
    # the child's own grants replace the inherited ones
    await put_acl(client, admin, node_url.format(child), [rd.subject["dept"]])
    assert await rd.who_reads(iid) == {"dept"}
    # item grants override the categories; an empty list hands control back
    await put_acl(client, admin, f"/api/v1/items/{iid}/acl", [rd.subject["client"], f"user:{rd.other.user.id}"])
    assert await rd.who_reads(iid) == {"client", "other"}
    got = (await client.get(f"/api/v1/items/{iid}/acl", headers=admin.headers)).json()
    assert got["readers"] == sorted([rd.subject["client"], f"user:{rd.other.user.id}"])
    assert got["inherited"] == [
        {"node_id": child, "from_node_id": child, "subject": rd.subject["dept"], "access": "read"}
    ]
    await put_acl(client, admin, f"/api/v1/items/{iid}/acl", [])
    assert await rd.who_reads(iid) == {"dept"}
    # several categories: the union of what each contributes (a node without grants adds nothing)
    assert (
        await kb.edit(admin, iid, {"category_ids": [child, kb.nodes["宽带故障"], kb.nodes["宽带办理"]]})
    ).status_code == 200
    await kb.ok(admin, iid, 2, "submit", "approve", "publish")
    await put_acl(client, admin, node_url.format(kb.nodes["宽带故障"]), [rd.subject["client"]])
    assert await rd.who_reads(iid) == {"dept", "client"}
    # agents only: clients are struck, public narrows to all staff
    await put_acl(client, admin, f"/api/v1/items/{iid}/acl", ["public", rd.subject["client"]])
    assert await rd.who_reads(iid) == {"role", "dept", "other", "client", "anonymous"}
    r = await client.patch(
        f"/api/v1/items/{iid}",
        json={"visibility": "internal"},
        headers={**admin.headers, "If-Match": await kb.etag(iid)},
    )
    assert r.status_code == 200, r.text
    assert await rd.who_reads(iid) == {"role", "dept", "other"}
    async with kb.app.state.sessionmaker() as s:
        assert await acl.readers_of(s, iid) == ["internal"]
    # reindexing was queued for the items each change touched
    reindex = await kb.jobs("search.reindex_items")
    assert {"item_ids": [iid]} in reindex and all(j["item_ids"] for j in reindex)


async def test_default_visibility_and_channels(kb: Kb, client: httpx.AsyncClient, people: People, admin: Actor) -> None:
    rd = await Readers(kb, people).build()
    internal = await kb.publish(admin, title="内部：投诉升级处理口径")  # visibility defaults to internal
    assert await rd.who_reads(internal["id"]) == {"role", "dept", "other"}
    agents_only = await kb.publish(admin, title="坐席专用话术", visibility="public", channels=["agent"])
    assert await rd.who_reads(agents_only["id"]) == {"role", "dept", "other", "anonymous"}  # web: not its channel
    assert agents_only["id"] not in (await rd.listed())["client"]
    web = await kb.publish(admin, title="网页版电费缴纳指南", visibility="public", channels=["web", "wechat"])
    assert await rd.who_reads(web["id"]) == {"client", "anonymous"}  # agents read on the agent channel


async def test_validity_windows(kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor) -> None:
    now = utcnow()
    current = await kb.publish(
        admin,
        title="当前有效",
        valid_from=(now - timedelta(days=1)).isoformat(),
        valid_to=(now + timedelta(days=1)).isoformat(),
    )
    future = await kb.publish(admin, title="下月生效：新资费", valid_from=(now + timedelta(days=30)).isoformat())
    expired = await kb.publish(admin, title="已过期：2025年优惠", valid_to=(now - timedelta(seconds=1)).isoformat())
    assert (await kb.get(agent, current["id"])).status_code == 200
    for item in (future, expired):
        assert_problem(await kb.get(agent, item["id"]), 404, "item_not_found")
        assert (await kb.get(admin, item["id"])).status_code == 200  # editors still see it
    assert (await kb.get(admin, expired["id"])).json()["expired"] is True
    assert (await kb.get(admin, future["id"])).json()["expired"] is False
    listed = (await client.get("/api/v1/items", headers=agent.headers)).json()["items"]
    assert [x["id"] for x in listed] == [current["id"]]
    r = await client.get(
        "/api/v1/items", params={"valid_at": (now + timedelta(days=31)).isoformat()}, headers=admin.headers
    )
    assert [x["id"] for x in r.json()["items"]] == [future["id"]]  # `current` ends before then


async def test_denials_are_404_and_audited(
    kb: Kb, client: httpx.AsyncClient, people: People, admin: Actor, agent: Actor
) -> None:
    item = await kb.publish(admin, title="信用卡挂失：内部核身口径")
    await put_acl(client, admin, f"/api/v1/items/{item['id']}/acl", [f"user:{admin.user.id}"])
    for path in ("", "/versions", "/versions/1", "/diff?from=1&to=1"):
        assert_problem(
            await client.get(f"/api/v1/items/{item['id']}{path}", headers=agent.headers), 404, "item_not_found"
        )
    r = await client.get("/api/v1/audit", params={"outcome": "denied", "target_type": "item"}, headers=admin.headers)
    denied = [e for e in r.json()["items"] if e["actor"] == f"user:{agent.user.id}"]
    assert len(denied) == 4 and denied[0]["target_id"] == str(item["id"])
    assert denied[0]["summary"]["permission"] == "knowledge:read"
    assert (await client.get("/api/v1/items", headers=agent.headers)).json()["items"] == []
    # an ACL manager reaches the item all the same, and opens it again
    manager = await people.make("kb.manager", role="kb_manager")
    assert_problem(await kb.get(manager, item["id"]), 404)
    r = await client.get(f"/api/v1/items/{item['id']}/acl", headers=manager.headers)
    assert r.json()["readers"] == [f"user:{admin.user.id}"]
    assert (await put_acl(client, manager, f"/api/v1/items/{item['id']}/acl", [])).json()["readers"] == ["internal"]
    assert (await kb.get(agent, item["id"])).status_code == 200


async def test_edit_grants(kb: Kb, client: httpx.AsyncClient, people: People, admin: Actor) -> None:
    senior = await people.make("senior.author", permissions=[*DEFAULT_ROLES["author"][1]])
    plain = await people.make("plain.author", role="author")
    async with kb.app.state.sessionmaker() as s:
        senior_role = await s.scalar(select(Role.id).where(Role.name == "r_senior.author"))
    node = kb.nodes["信用卡"]
    item = await kb.create(plain, title="信用卡挂失", category_ids=[kb.nodes["挂失"]])
    r = await put_acl(
        client, admin, f"/api/v1/taxonomy-nodes/{node}/acl", [{"subject": f"role:{senior_role}", "access": "edit"}]
    )
    assert r.status_code == 200, r.text
    # still readable by all staff (no read grants), but only the senior role may edit
    assert (await kb.get(plain, item["id"])).status_code == 200
    assert_problem(await kb.edit(plain, item["id"], {"title": "改"}), 403, "permission_denied")
    assert (await kb.edit(senior, item["id"], {"title": "信用卡挂失（补充）"})).status_code == 200
    r = await client.post(
        "/api/v1/items", json={"title": "新建", "category_ids": [kb.nodes["挂失"]]}, headers=plain.headers
    )
    assert_problem(r, 403, "category_not_editable")
    acl_view = (await client.get(f"/api/v1/items/{item['id']}/acl", headers=admin.headers)).json()
    assert acl_view["editors"] == [f"role:{senior_role}"] and acl_view["readers"] == ["internal"]


async def test_acl_endpoints_bad_input(kb: Kb, client: httpx.AsyncClient, admin: Actor, author: Actor) -> None:
    item = await kb.create(admin)
    url = f"/api/v1/items/{item['id']}/acl"
    body = assert_problem(
        await put_acl(client, admin, url, ["role:424242", "dept:7", "internal"]), 422, "unknown_subject"
    )
    assert body["unknown"] == ["dept:7", "role:424242"]
    assert_problem(await put_acl(client, admin, url, ["everyone"]), 422, "validation_error")
    assert_problem(await put_acl(client, admin, url, [{"subject": "public", "access": "delete"}]), 422)
    assert_problem(await put_acl(client, admin, "/api/v1/taxonomy-nodes/424242/acl", []), 404, "node_not_found")
    assert_problem(await put_acl(client, author, url, []), 403, "permission_denied")
    r = await client.put(url, json={"grants": []}, headers={**admin.headers, "If-Match": '"item-1-0"'})
    assert_problem(r, 412, "precondition_failed")
    r = await client.get(url, headers=admin.headers)
    assert r.json()["grants"] == [] and r.json()["readers"] == ["internal"]
