from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.core.errors import InvalidInput
from app.taxonomy import service
from app.taxonomy.models import ItemType
from tests.conftest import Actor, assert_problem
from tests.taxonomy.helpers import API, SM, make_item


async def attribute(
    client: httpx.AsyncClient, h: dict[str, str], code: str, name: str, type_: str, **extra: Any
) -> dict[str, Any]:
    r = await client.post(f"{API}/attributes", json={"code": code, "name": name, "type": type_, **extra}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def test_attribute_definitions_and_templates(client: httpx.AsyncClient, mgr: Actor, agent: Actor, sm: SM) -> None:
    h = mgr.headers
    fee = await attribute(client, h, "fee", "资费（元/月）", "number", required=True)
    assert fee["options"] == [] and fee["required"] is True
    await attribute(client, h, "effective_date", "生效日期", "date")
    await attribute(client, h, "handling_note", "处理说明", "text", description="坐席口径")
    region = await attribute(client, h, "region", "适用地区", "enum", options=[" 北京 ", "上海", "广东"])
    assert region["options"] == ["北京", "上海", "广东"]
    await attribute(client, h, "channels", "适用渠道", "multi_enum", options=["电话", "微信"])

    url = f"{API}/attributes"
    assert_problem(
        await client.post(url, json={"code": "level", "name": "级别", "type": "enum"}, headers=h),
        422,
        "invalid_options",
    )
    assert_problem(
        await client.post(url, json={"code": "level", "name": "级别", "type": "enum", "options": []}, headers=h),
        422,
        "invalid_options",
    )
    body = assert_problem(
        await client.post(
            url, json={"code": "level", "name": "级别", "type": "multi_enum", "options": ["高", "低", "高 "]}, headers=h
        ),
        422,
        "invalid_options",
    )
    assert body["duplicates"] == ["高"]
    assert_problem(
        await client.post(url, json={"code": "note2", "name": "备注", "type": "text", "options": ["a"]}, headers=h),
        422,
        "invalid_options",
    )
    assert_problem(
        await client.post(url, json={"code": "fee", "name": "资费", "type": "number"}, headers=h),
        409,
        "attribute_exists",
    )
    for bad in (
        {"code": "资费", "name": "资费", "type": "number"},
        {"code": "Fee-1", "name": "资费", "type": "number"},
        {"code": "x" * 65, "name": "资费", "type": "number"},
        {"code": "level", "name": "级别", "type": "boolean"},
        {"code": "level", "name": "级" * 101, "type": "text"},
        {"code": "level", "name": "级别", "type": "text", "unit": "元"},
    ):
        assert_problem(await client.post(url, json=bad, headers=h), 422, "validation_error")

    page = (await client.get(url, headers=agent.headers)).json()
    # oldest first: the best-practice case type's own attributes (app/cases/defaults.py) come from start-up
    assert [a["code"] for a in page["items"]] == [
        "case_situation",
        "case_handling",
        "case_outcome",
        "fee",
        "effective_date",
        "handling_note",
        "region",
        "channels",
    ]
    assert [a["code"] for a in (await client.get(url, params={"q": "地区"}, headers=h)).json()["items"]] == ["region"]
    assert (await client.get(f"{url}/{region['id']}", headers=agent.headers)).json()["name"] == "适用地区"
    assert_problem(await client.get(f"{url}/999999", headers=h), 404, "attribute_not_found")

    r = await client.patch(
        f"{url}/{region['id']}", json={"name": "适用省份", "options": ["北京", "广东", "浙江"]}, headers=h
    )
    assert r.status_code == 200, r.text
    assert r.json()["options"] == ["北京", "广东", "浙江"] and r.json()["code"] == "region"
    assert_problem(
        await client.patch(f"{url}/{region['id']}", json={"code": "province"}, headers=h), 422, "validation_error"
    )
    assert_problem(await client.patch(f"{url}/{region['id']}", json={"options": []}, headers=h), 422, "invalid_options")
    # unused: the type may change; options go away with the enum type, and come with it
    r = await client.patch(f"{url}/{fee['id']}", json={"type": "enum", "options": ["10", "20"]}, headers=h)
    assert r.status_code == 200 and r.json()["type"] == "enum"
    r = await client.patch(f"{url}/{fee['id']}", json={"type": "text"}, headers=h)
    assert r.status_code == 200 and r.json()["options"] == []
    assert_problem(
        await client.patch(f"{url}/{fee['id']}", json={"type": "multi_enum"}, headers=h), 422, "invalid_options"
    )

    # templates: an ordered list of attribute definitions
    date_ = (await client.get(f"{API}/attributes", params={"q": "effective_date"}, headers=h)).json()["items"][0]
    r = await client.post(
        f"{API}/templates",
        headers=h,
        json={
            "name": "资费政策模板",
            "description": "政策制度类知识的字段",
            "attribute_ids": [region["id"], fee["id"], date_["id"]],
        },
    )
    assert r.status_code == 201, r.text
    tmpl = r.json()
    assert [a["code"] for a in tmpl["attributes"]] == ["region", "fee", "effective_date"]
    assert tmpl["attributes"][0]["options"] == ["北京", "广东", "浙江"]

    r = await client.patch(
        f"{API}/templates/{tmpl['id']}", json={"attribute_ids": [date_["id"], region["id"]]}, headers=h
    )
    assert r.status_code == 200, r.text
    assert [a["code"] for a in r.json()["attributes"]] == ["effective_date", "region"]
    got = await client.get(f"{API}/templates/{tmpl['id']}", headers=agent.headers)
    assert [a["code"] for a in got.json()["attributes"]] == ["effective_date", "region"]
    names = [t["name"] for t in (await client.get(f"{API}/templates", headers=agent.headers)).json()]
    assert names == ["最佳实践案例 / best-practice case", "资费政策模板"]  # the first from app/cases/defaults.py

    body = assert_problem(
        await client.post(
            f"{API}/templates", headers=h, json={"name": "公告模板", "attribute_ids": [fee["id"], 999999, 999998]}
        ),
        422,
        "unknown_attribute",
    )
    assert body["unknown"] == [999999, 999998]
    assert_problem(
        await client.post(
            f"{API}/templates", headers=h, json={"name": "公告模板", "attribute_ids": [fee["id"], fee["id"]]}
        ),
        422,
        "duplicate_attribute",
    )
    assert_problem(
        await client.post(f"{API}/templates", headers=h, json={"name": "资费政策模板"}), 409, "template_exists"
    )
    assert_problem(
        await client.patch(f"{API}/templates/{tmpl['id']}", json={"attribute_ids": [424242]}, headers=h),
        422,
        "unknown_attribute",
    )
    assert [a["code"] for a in (await client.get(f"{API}/templates/{tmpl['id']}", headers=h)).json()["attributes"]] == [
        "effective_date",
        "region",
    ]  # the refused change left nothing behind
    assert_problem(await client.get(f"{API}/templates/999999", headers=h), 404, "template_not_found")
    other = (await client.post(f"{API}/templates", headers=h, json={"name": "公告模板"})).json()
    assert other["attributes"] == []
    assert_problem(
        await client.patch(f"{API}/templates/{other['id']}", json={"name": "资费政策模板"}, headers=h),
        409,
        "template_exists",
    )

    async with sm() as s:
        entry = await s.scalar(
            select(AuditEntry).where(AuditEntry.action == "attribute.update", AuditEntry.target_id == str(region["id"]))
        )
        assert entry is not None
        assert entry.summary["before"] == {"name": "适用地区", "options": ["北京", "上海", "广东"]}
        assert entry.summary["after"] == {"name": "适用省份", "options": ["北京", "广东", "浙江"]}


async def test_used_attributes_keep_their_type_and_options(client: httpx.AsyncClient, mgr: Actor, sm: SM) -> None:
    h = mgr.headers
    url = f"{API}/attributes"
    region = await attribute(client, h, "region", "适用地区", "enum", options=["北京", "上海", "广东", "香港"])
    channels = await attribute(client, h, "channels", "适用渠道", "multi_enum", options=["电话", "微信", "APP", "网站"])
    fee = await attribute(client, h, "fee", "资费", "number")
    note = await attribute(client, h, "note", "备注", "text")
    # history counts: the old version of a published item still holds 上海 and 微信
    await make_item(
        sm,
        states=("superseded", "published"),
        attributes={"region": "上海", "channels": ["电话", "微信"], "fee": 0, "note": None},
    )

    body = assert_problem(
        await client.patch(f"{url}/{region['id']}", json={"type": "text"}, headers=h), 409, "attribute_in_use"
    )
    assert body["versions"] == 2
    assert_problem(
        await client.patch(f"{url}/{fee['id']}", json={"type": "text"}, headers=h), 409, "attribute_in_use"
    )  # 0 is a value
    r = await client.patch(f"{url}/{note['id']}", json={"type": "date"}, headers=h)  # only nulls stored
    assert r.status_code == 200, r.text

    body = assert_problem(
        await client.patch(f"{url}/{region['id']}", json={"options": ["北京", "广东"]}, headers=h), 409, "option_in_use"
    )
    assert body["options"] == ["上海"]
    r = await client.patch(f"{url}/{region['id']}", json={"options": ["上海", "北京", "广东", "浙江"]}, headers=h)
    assert r.status_code == 200, r.text  # 香港 was never used; 浙江 is new; the order may change
    body = assert_problem(
        await client.patch(f"{url}/{channels['id']}", json={"options": ["电话", "APP"]}, headers=h),
        409,
        "option_in_use",
    )
    assert body["options"] == ["微信"]
    r = await client.patch(f"{url}/{channels['id']}", json={"options": ["电话", "微信"], "required": True}, headers=h)
    assert r.status_code == 200 and r.json()["options"] == ["电话", "微信"] and r.json()["required"] is True

    tmpl = (
        await client.post(f"{API}/templates", json={"name": "政策模板", "attribute_ids": [fee["id"]]}, headers=h)
    ).json()
    body = assert_problem(await client.delete(f"{url}/{fee['id']}", headers=h), 409, "attribute_in_template")
    assert body["templates"] == ["政策模板"]
    assert (
        await client.patch(f"{API}/templates/{tmpl['id']}", json={"attribute_ids": []}, headers=h)
    ).status_code == 200
    assert_problem(await client.delete(f"{url}/{fee['id']}", headers=h), 409, "attribute_in_use")
    assert (await client.delete(f"{url}/{note['id']}", headers=h)).status_code == 204
    assert_problem(await client.delete(f"{url}/{note['id']}", headers=h), 404, "attribute_not_found")


async def test_item_types_and_their_templates(client: httpx.AsyncClient, mgr: Actor, agent: Actor, sm: SM) -> None:
    h = mgr.headers
    async with sm() as s:
        first = await service.ensure_default_item_types(s)
        again = await service.ensure_default_item_types(s)  # idempotent, also before a commit
        await s.commit()
        assert [t.code for t in first] == [t.code for t in again] == ["faq", "article", "policy", "announcement"]
        assert (await service.ensure_default_item_types(s))[2].name == "政策制度"
        await s.commit()
        assert len((await s.scalars(select(ItemType))).all()) == 5  # and `case` (app/cases/defaults.py)
    types = (await client.get(f"{API}/item-types", headers=agent.headers)).json()
    assert {t["code"]: t["name"] for t in types} == {
        "faq": "常见问题",
        "article": "文章",
        "policy": "政策制度",
        "announcement": "公告",
        "case": "最佳实践案例",
    }

    fee = await attribute(client, h, "fee", "资费", "number", required=True)
    region = await attribute(client, h, "region", "适用地区", "enum", options=["北京", "上海"])
    tmpl = (
        await client.post(
            f"{API}/templates", headers=h, json={"name": "资费政策模板", "attribute_ids": [region["id"], fee["id"]]}
        )
    ).json()
    r = await client.patch(f"{API}/item-types/policy", json={"template_id": tmpl["id"]}, headers=h)
    assert r.status_code == 200 and r.json()["template_id"] == tmpl["id"]
    r = await client.post(
        f"{API}/item-types",
        headers=h,
        json={"code": "tariff_notice", "name": "资费公告", "template_id": tmpl["id"], "review_required": False},
    )
    assert r.status_code == 201, r.text
    assert r.json()["review_required"] is False
    assert (await client.get(f"{API}/item-types/tariff_notice", headers=agent.headers)).json()["name"] == "资费公告"

    async with sm() as s:
        defs = await service.template_for_type(s, "policy")
        assert [d.code for d in defs] == ["region", "fee"]
        assert await service.template_for_type(s, "faq") == []
        assert (await service.get_item_type(s, "policy")).name == "政策制度"
        with pytest.raises(InvalidInput) as err:
            await service.get_item_type(s, "memo")
        assert err.value.code == "unknown_item_type"
        with pytest.raises(InvalidInput):
            await service.template_for_type(s, "memo")
        out = service.validate_attribute_values(defs, {"region": "北京", "fee": "30"}, for_publish=True)
        assert out == {"region": "北京", "fee": 30}

    assert_problem(
        await client.post(f"{API}/item-types", headers=h, json={"code": "faq", "name": "问答"}), 409, "item_type_exists"
    )
    assert_problem(
        await client.post(f"{API}/item-types", headers=h, json={"code": "memo", "name": "备忘", "template_id": 999999}),
        422,
        "unknown_template",
    )
    assert_problem(
        await client.post(f"{API}/item-types", headers=h, json={"code": "备忘", "name": "备忘"}),
        422,
        "validation_error",
    )
    assert_problem(await client.get(f"{API}/item-types/memo", headers=h), 404, "item_type_not_found")
    assert_problem(
        await client.patch(f"{API}/item-types/memo", json={"name": "x"}, headers=h), 404, "item_type_not_found"
    )

    body = assert_problem(await client.delete(f"{API}/templates/{tmpl['id']}", headers=h), 409, "template_in_use")
    assert body["item_types"] == ["policy", "tariff_notice"]
    await make_item(sm)  # an faq
    assert_problem(await client.delete(f"{API}/item-types/faq", headers=h), 409, "item_type_in_use")
    assert (await client.delete(f"{API}/item-types/tariff_notice", headers=h)).status_code == 204
    r = await client.patch(f"{API}/item-types/policy", json={"template_id": None}, headers=h)
    assert r.status_code == 200 and r.json()["template_id"] is None
    assert (await client.delete(f"{API}/templates/{tmpl['id']}", headers=h)).status_code == 204
    async with sm() as s:
        entry = await s.scalar(
            select(AuditEntry).where(AuditEntry.action == "item_type.update").order_by(AuditEntry.id)
        )
        assert entry is not None and entry.target_id == "policy"
        assert entry.summary == {"before": {"template_id": None}, "after": {"template_id": tmpl["id"]}}
