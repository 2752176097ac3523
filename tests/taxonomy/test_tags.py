from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from app.audit.models import AuditEntry
from app.core.errors import AppError
from app.knowledge.models import ItemVersion, version_tags
from app.taxonomy import service
from app.taxonomy.models import Tag
from tests.conftest import Actor, assert_problem
from tests.taxonomy.helpers import API, SM, count, make_item, reindex_jobs


async def tag(client: httpx.AsyncClient, h: dict[str, str], name: str) -> dict[str, Any]:
    r = await client.post(f"{API}/tags", json={"name": name}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def tag_list(client: httpx.AsyncClient, h: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await client.get(f"{API}/tags", params=params, headers=h)
    assert r.status_code == 200, r.text
    return r.json()


async def test_tags_with_usage_counts_prefix_and_duplicates(
    client: httpx.AsyncClient, mgr: Actor, agent: Actor, sm: SM
) -> None:
    h = mgr.headers
    broadband = await tag(client, h, "宽带")
    port = await tag(client, h, "携号转网")
    vip = await tag(client, h, "ＶＩＰ客户")  # full-width letters fold to ASCII
    assert vip["name"] == "VIP客户" and vip["usage_count"] == 0
    assert (await tag(client, h, "  信用卡 \n\t 挂失 "))["name"] == "信用卡 挂失"
    assert_problem(await client.post(f"{API}/tags", json={"name": " 宽带 "}, headers=h), 409, "tag_exists")
    assert_problem(await client.post(f"{API}/tags", json={"name": "VIP客户"}, headers=h), 409, "tag_exists")

    # one item with the tag on its published version and on a newer draft: counted once
    await make_item(sm, states=("published", "draft"), tag_ids=(broadband["id"],))
    await make_item(sm, states=("in_review",), tag_ids=(broadband["id"],))
    # only history carries 携号转网: not current usage
    await make_item(sm, states=("superseded", "published"), tag_ids=())
    async with sm() as s:
        old = await s.scalar(select(ItemVersion.id).where(ItemVersion.state == "superseded"))
        await s.execute(insert(version_tags).values(version_id=old, tag_id=port["id"]))
        await s.commit()
    await make_item(sm, states=("archived",), tag_ids=(port["id"],))

    page = await tag_list(client, agent.headers)
    usage = {t["name"]: t["usage_count"] for t in page["items"]}
    assert usage == {"宽带": 2, "携号转网": 0, "VIP客户": 0, "信用卡 挂失": 0}
    assert [t["id"] for t in page["items"]] == sorted(t["id"] for t in page["items"])
    assert (await client.get(f"{API}/tags/{broadband['id']}", headers=agent.headers)).json()["usage_count"] == 2

    assert [t["name"] for t in (await tag_list(client, h, q="vip"))["items"]] == ["VIP客户"]  # any case
    assert [t["name"] for t in (await tag_list(client, h, q="ＶＩＰ"))["items"]] == ["VIP客户"]
    assert [t["name"] for t in (await tag_list(client, h, q="宽"))["items"]] == ["宽带"]
    assert (await tag_list(client, h, q="带"))["items"] == []  # a prefix, not "contains"
    assert (await tag_list(client, h, q="%"))["items"] == []  # taken literally
    first = await tag_list(client, h, limit=3)
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = await tag_list(client, h, limit=3, cursor=first["next_cursor"])
    assert [t["name"] for t in rest["items"]] == ["信用卡 挂失"] and rest["next_cursor"] is None
    assert_problem(await client.get(f"{API}/tags", params={"cursor": "@@@"}, headers=h), 422, "invalid_cursor")
    assert_problem(await client.get(f"{API}/tags/999999", headers=h), 404, "tag_not_found")


async def test_tag_rename_delete_invalid_names_and_resolve(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    broadband = await tag(client, h, "宽带")
    other = await tag(client, h, "光猫")
    unused = await tag(client, h, "電費")
    published, _ = await make_item(sm, tag_ids=(broadband["id"],))
    await make_item(sm, states=("draft",), tag_ids=(broadband["id"],))

    assert_problem(await client.patch(f"{API}/tags/{other['id']}", json={"name": "宽带"}, headers=h), 409, "tag_exists")
    r = await client.patch(f"{API}/tags/{broadband['id']}", json={"name": "宽带业务"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "宽带业务" and r.json()["usage_count"] == 2
    assert await reindex_jobs(sm) == [[published]]  # the index holds tag names
    r = await client.patch(f"{API}/tags/{other['id']}", json={"name": "光猫设备"}, headers=h)
    assert r.status_code == 200 and await reindex_jobs(sm) == [[published]]  # unused: nothing to reindex

    body = assert_problem(await client.delete(f"{API}/tags/{broadband['id']}", headers=h), 409, "tag_in_use")
    assert body["versions"] == 2 and body["usage_count"] == 2
    assert (await client.delete(f"{API}/tags/{unused['id']}", headers=h)).status_code == 204
    assert_problem(await client.delete(f"{API}/tags/{unused['id']}", headers=h), 404, "tag_not_found")
    assert_problem(await client.patch(f"{API}/tags/999999", json={"name": "x"}, headers=h), 404, "tag_not_found")

    for bad in ("   ", "长" * 65, "响铃\x07标签", "ｘ" * 65):
        assert_problem(await client.post(f"{API}/tags", json={"name": bad}, headers=h), 422)
    assert_problem(await client.post(f"{API}/tags", json={"name": "长" * 65}, headers=h), 422, "invalid_tag")
    assert_problem(
        await client.post(f"{API}/tags", json={"name": "ok", "color": "red"}, headers=h), 422, "validation_error"
    )
    assert (await tag(client, h, "长" * 64))["name"] == "长" * 64
    assert await count(sm, select(Tag.id)) == 3
    async with sm() as s:
        entry = await s.scalar(
            select(AuditEntry).where(AuditEntry.action == "tag.rename", AuditEntry.target_id == str(broadband["id"]))
        )
        assert entry is not None and entry.summary["before"] == {"name": "宽带"}
        assert entry.summary["after"] == {"name": "宽带业务"} and entry.summary["reindexed_items"] == 1

    # resolve_tags, as the knowledge service calls it
    async with sm() as s:
        with pytest.raises(AppError) as err:
            await service.resolve_tags(s, ["宽带业务", "新装", "ｗｉｆｉ"], create_missing=False)
        assert err.value.code == "unknown_tag" and err.value.extra["unknown"] == ["新装", "wifi"]
        with pytest.raises(AppError) as err:
            await service.resolve_tags(s, ["宽带业务", "", "x" * 65], create_missing=True)
        assert err.value.code == "invalid_tag" and err.value.extra["invalid"] == ["", "x" * 65]

        names = ["ｗｉｆｉ", " 宽带业务 ", "新装", "wifi", "宽带业务"]
        tags = await service.resolve_tags(s, names, create_missing=True)
        assert [t.name for t in tags] == ["wifi", "宽带业务", "新装"]
        assert tags[1].id == broadband["id"] and all(t.id for t in tags)
        await s.commit()
        assert await service.resolve_tags(s, [], create_missing=False) == []
    assert await count(sm, select(Tag.id)) == 5
