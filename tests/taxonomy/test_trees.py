from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.core.errors import InvalidInput
from app.knowledge.models import AclGrant, ItemReader, version_categories
from app.taxonomy import service
from app.taxonomy.models import TaxonomyNode
from tests.conftest import Actor, assert_problem
from tests.taxonomy.helpers import (
    API,
    SM,
    build_kb,
    count,
    make_item,
    node,
    placements,
    reindex_jobs,
    taxonomy,
)


async def tree(client: httpx.AsyncClient, h: dict[str, str], tid: int) -> list[dict[str, Any]]:
    r = await client.get(f"{API}/taxonomies/{tid}/tree", headers=h)
    assert r.status_code == 200, r.text
    return r.json()["nodes"]


def names(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["name"] for n in nodes]


async def get_node(client: httpx.AsyncClient, h: dict[str, str], nid: int) -> dict[str, Any]:
    r = await client.get(f"{API}/taxonomy-nodes/{nid}", headers=h)
    assert r.status_code == 200, r.text
    return r.json()


async def move(client: httpx.AsyncClient, h: dict[str, str], nid: int, **body: Any) -> httpx.Response:
    return await client.post(f"{API}/taxonomy-nodes/{nid}/move", json=body, headers=h)


async def test_taxonomy_crud_several_trees(client: httpx.AsyncClient, mgr: Actor, agent: Actor, sm: SM) -> None:
    h = mgr.headers
    dept = await taxonomy(client, h, "department", "所属部门", position=2)
    cat = await taxonomy(client, h, "category", "知识分类", position=1, description="坐席知识的主分类")
    scope = await taxonomy(client, h, "scope", "适用范围", position=3)
    r = await client.get(f"{API}/taxonomies", headers=agent.headers)  # readers see them
    assert r.status_code == 200
    assert [t["name"] for t in r.json()] == ["知识分类", "所属部门", "适用范围"]
    got = (await client.get(f"{API}/taxonomies/{cat}", headers=agent.headers)).json()
    assert got["code"] == "category" and got["description"] == "坐席知识的主分类"

    r = await client.patch(f"{API}/taxonomies/{scope}", json={"name": "适用地区", "position": 0}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "适用地区" and r.json()["code"] == "scope"
    assert [t["id"] for t in (await client.get(f"{API}/taxonomies", headers=h)).json()] == [scope, cat, dept]

    r = await client.post(f"{API}/taxonomies", json={"code": "category", "name": "另一个"}, headers=h)
    assert_problem(r, 409, "taxonomy_exists")
    r = await client.post(f"{API}/taxonomies", json={"code": "other", "name": "知识分类"}, headers=h)
    assert_problem(r, 409, "taxonomy_exists")
    assert_problem(
        await client.patch(f"{API}/taxonomies/{scope}", json={"name": "所属部门"}, headers=h), 409, "taxonomy_exists"
    )
    assert_problem(await client.patch(f"{API}/taxonomies/{scope}", json={"code": "x"}, headers=h), 422)
    assert_problem(await client.get(f"{API}/taxonomies/999999", headers=h), 404, "taxonomy_not_found")

    assert (await client.delete(f"{API}/taxonomies/{dept}", headers=h)).status_code == 204
    assert_problem(await client.get(f"{API}/taxonomies/{dept}", headers=h), 404, "taxonomy_not_found")
    assert_problem(await client.delete(f"{API}/taxonomies/{dept}", headers=h), 404, "taxonomy_not_found")

    # a taxonomy whose nodes hold items cannot go; once no item sits in it, it goes with its nodes
    broadband = (await node(client, h, cat, "宽带业务"))["id"]
    modem = (await node(client, h, cat, "光猫故障", broadband))["id"]
    _, (v,) = await make_item(sm, states=("archived",), node_ids=(modem,))
    body = assert_problem(await client.delete(f"{API}/taxonomies/{cat}", headers=h), 409, "taxonomy_in_use")
    assert body["placements"] == 1
    async with sm() as s:
        await s.execute(version_categories.delete().where(version_categories.c.version_id == v))
        await s.commit()
    assert (await client.delete(f"{API}/taxonomies/{cat}", headers=h)).status_code == 204
    assert await count(sm, select(TaxonomyNode.id)) == 0
    assert_problem(await client.get(f"{API}/taxonomy-nodes/{modem}", headers=h), 404, "node_not_found")

    async with sm() as s:
        upd = await s.scalar(select(AuditEntry).where(AuditEntry.action == "taxonomy.update"))
        assert upd is not None and upd.actor == f"user:{mgr.user.id}" and upd.target_id == str(scope)
        assert upd.summary["before"] == {"name": "适用范围", "position": 3}
        assert upd.summary["after"] == {"name": "适用地区", "position": 0}
        deleted = await s.scalar(
            select(AuditEntry).where(AuditEntry.action == "taxonomy.delete").order_by(AuditEntry.id)
        )
        assert deleted is not None and deleted.summary["before"]["name"] == "所属部门"


async def test_tree_nested_in_position_order(client: httpx.AsyncClient, mgr: Actor, agent: Actor, sm: SM) -> None:
    """Also the helpers other domains call: subtree_ids, ancestors_and_self, validate_node_ids."""
    h = mgr.headers
    ids = await build_kb(client, h)
    tid = ids["tax"]
    async with sm() as s:
        assert await service.subtree_ids(s, [ids["宽带业务"]]) == sorted(
            [ids["宽带业务"], ids["宽带故障"], ids["光猫故障"]]
        )
        assert await service.subtree_ids(s, [ids["宽带故障"], ids["信用卡"], 999999]) == sorted(
            [ids["宽带故障"], ids["光猫故障"], ids["信用卡"], ids["挂失"]]
        )
        assert await service.subtree_ids(s, []) == []
        assert await service.ancestors_and_self(s, [ids["光猫故障"], ids["挂失"]]) == sorted(
            [ids["宽带业务"], ids["宽带故障"], ids["光猫故障"], ids["信用卡"], ids["挂失"]]
        )
        assert await service.ancestors_and_self(s, [ids["電費"]]) == [ids["電費"]]
        got = await service.validate_node_ids(s, [ids["挂失"], ids["電費"], ids["挂失"]])
        assert [n.name for n in got] == ["挂失", "電費"]
        with pytest.raises(InvalidInput) as err:
            await service.validate_node_ids(s, [ids["挂失"], 999998, 999999])
        assert err.value.code == "unknown_category" and err.value.extra["unknown"] == [999998, 999999]
        assert err.value.status == 422

    first = await node(client, h, tid, "热点公告", position=0)  # inserted before every other root
    nodes = await tree(client, agent.headers, tid)
    assert names(nodes) == ["热点公告", "宽带业务", "手机业务", "信用卡", "電費"]
    assert [n["position"] for n in nodes] == [0, 1, 2, 3, 4]
    broadband = nodes[1]
    assert names(broadband["children"]) == ["宽带故障"]
    modem = broadband["children"][0]["children"][0]
    assert modem["name"] == "光猫故障" and modem["children"] == []
    assert modem["path"] == f"/{ids['宽带业务']}/{ids['宽带故障']}/{ids['光猫故障']}/"
    assert first["path"] == f"/{first['id']}/"

    # a child inserted in the middle of its siblings
    await node(client, h, tid, "宽带提速", ids["宽带业务"])
    await node(client, h, tid, "宽带报装", ids["宽带业务"], position=1)
    broadband = (await tree(client, h, tid))[1]
    assert names(broadband["children"]) == ["宽带故障", "宽带报装", "宽带提速"]

    # flat list: pages by id, filters by parent, top level and name
    r = await client.get(f"{API}/taxonomies/{tid}/nodes", params={"limit": 4}, headers=agent.headers)
    assert r.status_code == 200
    page1 = r.json()
    assert len(page1["items"]) == 4 and page1["next_cursor"]
    r = await client.get(
        f"{API}/taxonomies/{tid}/nodes", params={"limit": 4, "cursor": page1["next_cursor"]}, headers=h
    )
    ids_seen = [n["id"] for n in page1["items"] + r.json()["items"]]
    assert ids_seen == sorted(ids_seen) and len(set(ids_seen)) == 8
    r = await client.get(f"{API}/taxonomies/{tid}/nodes", params={"parent_id": ids["宽带业务"]}, headers=h)
    assert sorted(names(r.json()["items"])) == sorted(["宽带故障", "宽带报装", "宽带提速"])
    r = await client.get(f"{API}/taxonomies/{tid}/nodes", params={"top_level": True}, headers=h)
    assert len(r.json()["items"]) == 5
    r = await client.get(f"{API}/taxonomies/{tid}/nodes", params={"q": "故障"}, headers=h)
    assert sorted(names(r.json()["items"])) == ["光猫故障", "宽带故障"]
    assert_problem(await client.get(f"{API}/taxonomies/999999/tree", headers=h), 404, "taxonomy_not_found")
    assert_problem(await client.get(f"{API}/taxonomies/999999/nodes", headers=h), 404, "taxonomy_not_found")


async def test_move_updates_subtree_and_queues_reindex(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    ids = await build_kb(client, h)
    published, _ = await make_item(sm, node_ids=(ids["光猫故障"],))
    await make_item(sm, states=("draft",), node_ids=(ids["光猫故障"],))  # not in the index
    elsewhere, _ = await make_item(sm, node_ids=(ids["挂失"],))
    async with sm() as s:
        s.add(AclGrant(target_type="category", target_id=ids["手机业务"], subject="role:7"))
        await s.commit()

    r = await move(client, h, ids["宽带故障"], parent_id=ids["手机业务"])
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["parent_id"] == ids["手机业务"] and moved["position"] == 1  # last, after 携号转网
    assert moved["path"] == f"/{ids['手机业务']}/{ids['宽带故障']}/"
    modem = await get_node(client, h, ids["光猫故障"])
    assert modem["path"] == f"/{ids['手机业务']}/{ids['宽带故障']}/{ids['光猫故障']}/"
    mobile = (await tree(client, h, ids["tax"]))[1]
    assert names(mobile["children"]) == ["携号转网", "宽带故障"]
    assert names(mobile["children"][1]["children"]) == ["光猫故障"]
    assert await reindex_jobs(sm) == [[published]]
    assert elsewhere not in (await reindex_jobs(sm))[0]
    async with sm() as s:  # the read set now inherits the grant of 手机业务, its new ancestor
        readers = (await s.scalars(select(ItemReader.subject).where(ItemReader.item_id == published))).all()
        assert list(readers) == ["role:7"]

    # to the top level, at the front
    r = await move(client, h, ids["宽带故障"], parent_id=None, position=0)
    assert r.status_code == 200, r.text
    assert r.json()["parent_id"] is None and r.json()["path"] == f"/{ids['宽带故障']}/"
    assert (await get_node(client, h, ids["光猫故障"]))["path"] == f"/{ids['宽带故障']}/{ids['光猫故障']}/"
    assert names(await tree(client, h, ids["tax"])) == ["宽带故障", "宽带业务", "手机业务", "信用卡", "電費"]
    assert len(await reindex_jobs(sm)) == 2

    # a move of a subtree without published items queues nothing
    r = await move(client, h, ids["電費"], parent_id=ids["信用卡"])
    assert r.status_code == 200
    assert len(await reindex_jobs(sm)) == 2
    async with sm() as s:
        entry = await s.scalar(
            select(AuditEntry)
            .where(AuditEntry.action == "taxonomy_node.move", AuditEntry.target_id == str(ids["宽带故障"]))
            .order_by(AuditEntry.id)
        )
        assert entry is not None and entry.summary["before"]["parent_id"] == ids["宽带业务"]
        assert entry.summary["after"]["parent_id"] == ids["手机业务"] and entry.summary["reindexed_items"] == 1


async def test_move_refuses_cycles_and_other_taxonomies(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    ids = await build_kb(client, h)
    dept = await taxonomy(client, h, "department", "所属部门")
    center = (await node(client, h, dept, "客户服务中心"))["id"]
    await make_item(sm, node_ids=(ids["光猫故障"],))

    assert_problem(await move(client, h, ids["宽带业务"], parent_id=ids["光猫故障"]), 409, "taxonomy_cycle")
    assert_problem(await move(client, h, ids["宽带业务"], parent_id=ids["宽带故障"]), 409, "taxonomy_cycle")
    assert_problem(await move(client, h, ids["宽带业务"], parent_id=ids["宽带业务"]), 409, "taxonomy_cycle")
    assert_problem(await move(client, h, ids["宽带故障"], parent_id=center), 422, "taxonomy_mismatch")
    assert_problem(await move(client, h, ids["宽带故障"], parent_id=999999), 422, "unknown_parent")
    assert_problem(await move(client, h, 999999, parent_id=None), 404, "node_not_found")
    assert_problem(await move(client, h, ids["宽带故障"], parent_id=None, extra=1), 422, "validation_error")
    assert_problem(await move(client, h, ids["宽带故障"], position=-1), 422, "validation_error")
    # a sibling of the same name at the new place
    await node(client, h, ids["tax"], "宽带故障", ids["手机业务"])
    body = assert_problem(await move(client, h, ids["宽带故障"], parent_id=ids["手机业务"]), 409, "node_exists")
    assert body["name"] == "宽带故障"
    await node(client, h, ids["tax"], "光猫故障")  # the same name at the top level
    assert_problem(await move(client, h, ids["光猫故障"], parent_id=None), 409, "node_exists")

    # nothing changed, nothing queued
    assert (await get_node(client, h, ids["光猫故障"]))["path"] == (
        f"/{ids['宽带业务']}/{ids['宽带故障']}/{ids['光猫故障']}/"
    )
    assert (await get_node(client, h, ids["宽带业务"]))["parent_id"] is None
    assert await reindex_jobs(sm) == []


async def test_reorder_siblings(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    ids = await build_kb(client, h)
    tid = ids["tax"]
    r = await move(client, h, ids["電費"], position=0)
    assert r.status_code == 200, r.text
    assert r.json()["position"] == 0 and r.json()["parent_id"] is None
    assert names(await tree(client, h, tid)) == ["電費", "宽带业务", "手机业务", "信用卡"]
    await move(client, h, ids["宽带业务"], position=99)  # past the end: last
    nodes = await tree(client, h, tid)
    assert names(nodes) == ["電費", "手机业务", "信用卡", "宽带业务"]
    assert [n["position"] for n in nodes] == [0, 1, 2, 3]
    await move(client, h, ids["宽带业务"], position=2, parent_id=None)  # same parent, named explicitly
    assert names(await tree(client, h, tid)) == ["電費", "手机业务", "宽带业务", "信用卡"]
    # a move to another parent closes the gap it leaves
    await move(client, h, ids["手机业务"], parent_id=ids["信用卡"], position=0)
    nodes = await tree(client, h, tid)
    assert names(nodes) == ["電費", "宽带业务", "信用卡"] and [n["position"] for n in nodes] == [0, 1, 2]
    assert names(nodes[2]["children"]) == ["手机业务", "挂失"]
    assert [n["position"] for n in nodes[2]["children"]] == [0, 1]
    assert await reindex_jobs(sm) == []  # nothing published there


async def test_delete_node_only_when_empty(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    ids = await build_kb(client, h)
    dept = await taxonomy(client, h, "department", "所属部门")
    center = (await node(client, h, dept, "客户服务中心"))["id"]
    await make_item(sm, states=("superseded", "published"), node_ids=(ids["挂失"],))
    _, (v,) = await make_item(sm, node_ids=(ids["宽带业务"],))

    body = assert_problem(
        await client.delete(f"{API}/taxonomy-nodes/{ids['宽带业务']}", headers=h), 409, "node_not_empty"
    )
    assert body["children"] == 1 and body["placements"] == 1
    body = assert_problem(await client.delete(f"{API}/taxonomy-nodes/{ids['挂失']}", headers=h), 409, "node_not_empty")
    assert body["children"] == 0 and body["placements"] == 2  # history counts too
    r = await client.delete(f"{API}/taxonomy-nodes/{ids['挂失']}", params={"rehome_to": ids["挂失"]}, headers=h)
    assert_problem(r, 422, "invalid_rehome_target")
    r = await client.delete(f"{API}/taxonomy-nodes/{ids['宽带业务']}", params={"rehome_to": ids["光猫故障"]}, headers=h)
    assert_problem(r, 422, "invalid_rehome_target")
    r = await client.delete(f"{API}/taxonomy-nodes/{ids['挂失']}", params={"rehome_to": center}, headers=h)
    assert_problem(r, 422, "taxonomy_mismatch")
    r = await client.delete(f"{API}/taxonomy-nodes/{ids['挂失']}", params={"rehome_to": 999999}, headers=h)
    assert_problem(r, 422, "invalid_rehome_target")
    # the target already has a child of that name: refused, and nothing moved
    clash = (await node(client, h, ids["tax"], "宽带故障", ids["手机业务"]))["id"]
    r = await client.delete(f"{API}/taxonomy-nodes/{ids['宽带业务']}", params={"rehome_to": ids["手机业务"]}, headers=h)
    body = assert_problem(r, 409, "node_exists")
    assert body["names"] == ["宽带故障"]
    assert await placements(sm, v) == [ids["宽带业务"]]
    assert (await get_node(client, h, ids["宽带故障"]))["parent_id"] == ids["宽带业务"]
    assert (await client.delete(f"{API}/taxonomy-nodes/{clash}", headers=h)).status_code == 204

    assert (await client.delete(f"{API}/taxonomy-nodes/{ids['電費']}", headers=h)).status_code == 204
    assert_problem(await client.get(f"{API}/taxonomy-nodes/{ids['電費']}", headers=h), 404, "node_not_found")
    assert_problem(await client.delete(f"{API}/taxonomy-nodes/{ids['電費']}", headers=h), 404, "node_not_found")
    # the leaf below goes first, then its parent is empty
    assert (await client.delete(f"{API}/taxonomy-nodes/{ids['携号转网']}", headers=h)).status_code == 204
    assert (await client.delete(f"{API}/taxonomy-nodes/{ids['手机业务']}", headers=h)).status_code == 204
    nodes = await tree(client, h, ids["tax"])
    assert names(nodes) == ["宽带业务", "信用卡"] and [n["position"] for n in nodes] == [0, 1]
    assert await reindex_jobs(sm) == []


async def test_delete_with_rehome_moves_children_and_placements(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    ids = await build_kb(client, h)
    in_node, (v_in,) = await make_item(sm, node_ids=(ids["宽带业务"],))
    in_both, (v_both,) = await make_item(sm, node_ids=(ids["宽带业务"], ids["手机业务"]))
    below, (v_below,) = await make_item(sm, node_ids=(ids["光猫故障"],))
    draft, (v_draft,) = await make_item(sm, states=("draft",), node_ids=(ids["宽带业务"], ids["挂失"]))
    await make_item(sm, node_ids=(ids["挂失"],))  # untouched
    async with sm() as s:
        s.add(AclGrant(target_type="category", target_id=ids["宽带业务"], subject="role:1"))
        s.add(AclGrant(target_type="category", target_id=ids["手机业务"], subject="role:1"))
        await s.commit()

    r = await client.delete(f"{API}/taxonomy-nodes/{ids['宽带业务']}", params={"rehome_to": ids["手机业务"]}, headers=h)
    assert r.status_code == 204, r.text
    assert_problem(await client.get(f"{API}/taxonomy-nodes/{ids['宽带业务']}", headers=h), 404, "node_not_found")

    mobile = (await tree(client, h, ids["tax"]))[0]
    assert mobile["name"] == "手机业务"
    assert names(mobile["children"]) == ["携号转网", "宽带故障"]
    assert [c["position"] for c in mobile["children"]] == [0, 1]
    fault = await get_node(client, h, ids["宽带故障"])
    assert fault["parent_id"] == ids["手机业务"] and fault["path"] == f"/{ids['手机业务']}/{ids['宽带故障']}/"
    assert (await get_node(client, h, ids["光猫故障"]))["path"] == (
        f"/{ids['手机业务']}/{ids['宽带故障']}/{ids['光猫故障']}/"
    )

    assert await placements(sm, v_in) == [ids["手机业务"]]
    assert await placements(sm, v_both) == [ids["手机业务"]]  # one placement, not two
    assert await placements(sm, v_below) == [ids["光猫故障"]]
    assert await placements(sm, v_draft) == sorted([ids["手机业务"], ids["挂失"]])
    jobs = await reindex_jobs(sm)
    assert jobs == [sorted([in_node, in_both, below])]
    assert draft not in jobs[0]
    async with sm() as s:
        grants = (await s.scalars(select(AclGrant.target_id).where(AclGrant.target_type == "category"))).all()
        assert list(grants) == [ids["手机业务"]]  # the deleted node's grant went with it
        for item_id in (in_node, below, draft):  # read sets follow the new ancestors
            readers = (await s.scalars(select(ItemReader.subject).where(ItemReader.item_id == item_id))).all()
            assert list(readers) == ["role:1"], item_id
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "taxonomy_node.delete"))
        assert entry is not None and entry.summary["rehome_to"] == ids["手机业务"]
        assert entry.summary["moved_children"] == [ids["宽带故障"]] and entry.summary["moved_placements"] == 3


async def test_node_rename_bad_input_and_depth(client: httpx.AsyncClient, mgr: Actor) -> None:
    h = mgr.headers
    ids = await build_kb(client, h)
    tid = ids["tax"]
    dept = await taxonomy(client, h, "department", "所属部门")
    center = (await node(client, h, dept, "客户服务中心"))["id"]

    r = await client.patch(f"{API}/taxonomy-nodes/{ids['光猫故障']}", json={"name": " 光猫/路由器故障 "}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "光猫/路由器故障" and r.json()["path"].endswith(f"/{ids['光猫故障']}/")
    await node(client, h, tid, "网速慢", ids["宽带故障"])
    r = await client.patch(f"{API}/taxonomy-nodes/{ids['光猫故障']}", json={"name": "网速慢"}, headers=h)
    assert_problem(r, 409, "node_exists")
    assert_problem(
        await client.patch(f"{API}/taxonomy-nodes/999999", json={"name": "x"}, headers=h), 404, "node_not_found"
    )
    assert_problem(
        await client.patch(f"{API}/taxonomy-nodes/{ids['挂失']}", json={"parent_id": 1}, headers=h),
        422,
        "validation_error",
    )

    url = f"{API}/taxonomies/{tid}/nodes"
    assert_problem(await client.post(url, json={"name": "信用卡"}, headers=h), 409, "node_exists")  # top level
    assert_problem(
        await client.post(url, json={"name": "挂失", "parent_id": ids["信用卡"]}, headers=h), 409, "node_exists"
    )
    body = assert_problem(await client.post(url, json={"name": "长" * 101}, headers=h), 422, "validation_error")
    assert body["errors"][0]["field"] == "body.name"
    assert_problem(await client.post(url, json={"name": "   "}, headers=h), 422, "validation_error")
    assert_problem(await client.post(url, json={"name": "换行\n名称"}, headers=h), 422, "validation_error")
    assert_problem(
        await client.post(url, json={"name": "余额查询", "colour": "红"}, headers=h), 422, "validation_error"
    )
    body = assert_problem(
        await client.post(url, json={"name": "余额查询", "parent_id": 999999}, headers=h), 422, "unknown_parent"
    )
    assert body["unknown"] == [999999]
    assert_problem(
        await client.post(url, json={"name": "余额查询", "parent_id": center}, headers=h), 422, "taxonomy_mismatch"
    )
    assert_problem(
        await client.post(f"{API}/taxonomies/999999/nodes", json={"name": "余额查询"}, headers=h),
        404,
        "taxonomy_not_found",
    )
    assert_problem(await client.post(f"{API}/taxonomies", json={"code": "知识", "name": "x"}, headers=h), 422)
    assert_problem(await client.post(f"{API}/taxonomies", json={"code": "ok", "name": "名" * 101}, headers=h), 422)
    assert_problem(
        await client.post(url, content=b"{not json", headers={**h, "content-type": "application/json"}),
        400,
        "malformed_json",
    )

    # a tree is at most MAX_DEPTH levels deep
    tid = await taxonomy(client, h, "scope", "适用范围")
    parent = None
    chain = []
    for level in range(service.MAX_DEPTH):
        parent = (await node(client, h, tid, f"第{level + 1}级", parent))["id"]
        chain.append(parent)
    r = await client.post(f"{API}/taxonomies/{tid}/nodes", json={"name": "太深", "parent_id": parent}, headers=h)
    assert_problem(r, 422, "tree_too_deep")
    # a two-level subtree cannot hang below level 19 either
    other = (await node(client, h, tid, "分支"))["id"]
    await node(client, h, tid, "叶子", other)
    assert_problem(await move(client, h, other, parent_id=chain[-2]), 422, "tree_too_deep")
    assert (await move(client, h, other, parent_id=chain[-3])).status_code == 200
