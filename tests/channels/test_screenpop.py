"""CTI screen pop: rules managed at /screen-pop/rules, the softphone's GET /channels/agent/screen-pop.

Items go through the real workflow and the outbox indexes them (real engine); the screen pop is
always checked against what the agent may read on the agent channel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.channels.screenpop import rule_cache
from app.core.db import utcnow
from app.taxonomy.models import Tag
from app.workers.worker import Worker
from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

RULES = "/api/v1/screen-pop/rules"
POP = "/api/v1/channels/agent/screen-pop"


@pytest.fixture(autouse=True)
def _fresh_rule_cache(app: Any) -> None:
    """The session's app outlives each test's emptied database: start without cached rules."""
    rule_cache(app).forget()


@pytest.fixture
async def manager(people: People) -> Actor:
    return await people.make("liu.yang", role="kb_manager")


async def drain(app: Any) -> int:
    return await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()


@pytest.fixture
async def world(kb: Kb, admin: Actor, app: Any) -> dict[str, int]:
    """A telecom hotline (10086, IVR 1/3 = 宽带故障) and a bank (95588, CARD_LOSS = 信用卡/挂失)."""
    n = kb.nodes

    async def pub(title: str, **fields: Any) -> int:
        return (await kb.publish(admin, title=title, question=title, similar_questions=[], **fields))["id"]

    out = {
        "offline": await pub(
            "宽带无法上网怎么办",
            category_ids=[n["宽带故障"]],
            tags=["故障"],
            visibility="public",
            body="<p>请先重启光猫和路由器。</p>",
            channel_answers={"agent": "<p>您好，请您先重启光猫，&nbsp;等待3分钟后再试。</p>"},
        ),
        "los": await pub(
            "光猫LOS灯红色闪烁", category_ids=[n["宽带故障"]], body="<p>LOS灯红色说明光纤中断，需派单报修。</p>"
        ),
        "install": await pub("宽带新装办理流程", category_ids=[n["宽带办理"]], body="<p>新装宽带请携带身份证。</p>"),
        "card_loss": await pub(
            "信用卡丢失如何挂失",
            category_ids=[n["挂失"]],
            tags=["挂失"],
            body="<p>信用卡丢失请立即挂失。</p>",
            channel_answers={"agent": "先生/女士您好，请核实身份后为您办理临时挂失。"},
        ),
        "card_fee": await pub("挂失手續費說明", category_ids=[n["挂失"]], body="<p>挂失手续费每卡10元。</p>"),
        "plan": await pub(
            "5G畅享套餐资费说明",
            category_ids=[n["套餐资费"]],
            tags=["资费"],
            body="<p>5G畅享套餐每月128元，含30GB国内流量。</p>",
        ),
        "web_only": await pub(
            "宽带故障自助排查（网站版）",
            category_ids=[n["宽带故障"]],
            channels=["web"],
            visibility="public",
            body="<p>网站自助排查。</p>",
        ),
    }
    await drain(app)
    return out


async def rule(client: httpx.AsyncClient, actor: Actor, **fields: Any) -> dict[str, Any]:
    r = await client.post(RULES, headers=actor.headers, json={"name": "规则", **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def pop(client: httpx.AsyncClient, actor: Actor, **params: Any) -> dict[str, Any]:
    r = await client.get(POP, headers=actor.headers, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "private, no-store"
    return r.json()


def ids(result: dict[str, Any]) -> list[int]:
    return [i["item_id"] for i in result["items"]]


def reasons(result: dict[str, Any]) -> list[tuple[int, str]]:
    return [(i["item_id"], i["reason"]) for i in result["items"]]


# ---------------------------------------------------------------- rules CRUD


async def test_rule_crud_is_audited_and_guarded_by_if_match(
    client: httpx.AsyncClient, manager: Actor, kb: Kb, session: Any
) -> None:
    h = manager.headers
    session.add(Tag(name="故障"))
    await session.commit()
    created = await rule(
        client,
        manager,
        name="400热线 宽带故障",
        called="4008-123-456",
        ivr_path="/1/3/",
        business_code="bb_fault",
        caller_tags=[" VIP ", "VIP"],
        category_ids=[kb.nodes["宽带故障"], kb.nodes["宽带故障"]],
        priority=10,
    )
    assert (created["called"], created["ivr_path"], created["business_code"]) == ("4008123456", "1/3", "BB_FAULT")
    assert created["caller_tags"] == ["VIP"] and created["category_ids"] == [kb.nodes["宽带故障"]]
    rid, etag = created["id"], created["etag"]
    got = await client.get(f"{RULES}/{rid}", headers=h)
    assert got.status_code == 200 and got.headers["etag"] == etag == got.json()["etag"]

    second = await rule(client, manager, name="95588 挂失", called="95588", category_ids=[kb.nodes["挂失"]])
    page = (await client.get(RULES, headers=h, params={"limit": 1})).json()
    assert [r["id"] for r in page["items"]] == [rid] and page["next_cursor"]
    page2 = (await client.get(RULES, headers=h, params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert [r["id"] for r in page2["items"]] == [second["id"]] and page2["next_cursor"] is None

    patch = {"priority": 20, "ivr_path": None, "tags": ["故障"]}
    assert_problem(await client.patch(f"{RULES}/{rid}", headers=h, json=patch), 428, "precondition_required")
    changed = await client.patch(f"{RULES}/{rid}", headers={**h, "If-Match": etag}, json=patch)
    assert changed.status_code == 200, changed.text
    new = changed.json()
    assert new["priority"] == 20 and new["ivr_path"] is None and new["tags"] == ["故障"]
    assert new["called"] == "4008123456" and changed.headers["etag"] == new["etag"] != etag
    stale = await client.patch(f"{RULES}/{rid}", headers={**h, "If-Match": etag}, json={"priority": 1})
    assert assert_problem(stale, 412, "precondition_failed")["current_etag"] == new["etag"]

    assert_problem(await client.delete(f"{RULES}/{rid}", headers=h), 428)
    assert_problem(await client.delete(f"{RULES}/{rid}", headers={**h, "If-Match": etag}), 412)
    assert (await client.delete(f"{RULES}/{rid}", headers={**h, "If-Match": new["etag"]})).status_code == 204
    assert_problem(await client.get(f"{RULES}/{rid}", headers=h), 404, "screen_pop_rule_not_found")

    entries = (
        await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == "screen_pop_rule", AuditEntry.target_id == str(rid))
            .order_by(AuditEntry.id)
        )
    ).all()
    assert [e.action for e in entries] == ["screen_pop.rule.create", "screen_pop.rule.update", "screen_pop.rule.delete"]
    assert all(e.actor == f"user:{manager.user.id}" for e in entries)
    assert entries[0].summary["after"]["called"] == "4008123456"
    assert entries[1].summary["before"] == {"priority": 10, "ivr_path": "1/3", "tags": []}
    assert entries[1].summary["after"] == {"priority": 20, "ivr_path": None, "tags": ["故障"]}
    assert entries[2].summary["before"]["name"] == "400热线 宽带故障"


async def test_rules_need_channels_manage(client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb) -> None:
    made = await rule(client, manager, called="10086", category_ids=[kb.nodes["宽带故障"]])
    path = f"{RULES}/{made['id']}"
    body = {"name": "x", "called": "10086", "category_ids": [kb.nodes["宽带故障"]]}
    attempts = [
        ("GET", RULES, None),
        ("POST", RULES, body),
        ("GET", path, None),
        ("PATCH", path, {"priority": 3}),
        ("DELETE", path, None),
    ]
    for method, url, payload in attempts:
        headers = {"If-Match": made["etag"]}
        assert_problem(
            await client.request(method, url, json=payload, headers={**agent.headers, **headers}),
            403,
            "permission_denied",
        )
        assert_problem(await client.request(method, url, json=payload, headers=headers), 401)
    assert (await client.get(path, headers=manager.headers)).json()["priority"] == 0  # nothing changed


async def test_rule_bad_input_names_the_fields(client: httpx.AsyncClient, manager: Actor, kb: Kb, admin: Actor) -> None:
    h = manager.headers
    cat = [kb.nodes["挂失"]]

    async def bad(code: str, **fields: Any) -> dict[str, Any]:
        return assert_problem(await client.post(RULES, headers=h, json={"name": "坏规则", **fields}), 422, code)

    body = await bad("rule_without_condition", category_ids=cat)
    assert {e["field"] for e in body["errors"]} == {"called", "ivr_path", "business_code", "caller_tags"}
    body = await bad("rule_without_target", called="95588")
    assert {e["field"] for e in body["errors"]} == {"category_ids", "tags", "pinned_item_ids"}
    assert (await bad("unknown_category", called="95588", category_ids=[*cat, 987654]))["unknown"] == [987654]
    assert (await bad("unknown_tag", called="95588", tags=["不存在的标签"]))["unknown"] == ["不存在的标签"]
    assert (await bad("unknown_item", called="95588", pinned_item_ids=[987654]))["unknown"] == [987654]
    for path in ("1//3", "1/a/2", "1 / 3", "/", "1/" * 40 + "1"):
        await bad("invalid_ivr_path", ivr_path=path, category_ids=cat)
    for number in ("客服", "12", "95588转1"):
        await bad("invalid_called", called=number, category_ids=cat)
    await bad("invalid_business_code", business_code="CARD LOSS", category_ids=cat)
    await bad("validation_error", called="95588", category_ids=cat, priority=10**12)
    await bad("validation_error", called="95588", category_ids=cat, unknown_field=1)
    await bad("validation_error", called="95588", category_ids=["x"])

    made = await rule(client, manager, called="95588", category_ids=cat)
    etag = {"If-Match": made["etag"]}
    r = await client.patch(f"{RULES}/{made['id']}", headers={**h, **etag}, json={"called": None})
    assert_problem(r, 422, "rule_without_condition")
    r = await client.patch(f"{RULES}/{made['id']}", headers={**h, **etag}, json={"category_ids": []})
    assert_problem(r, 422, "rule_without_target")
    assert (await client.get(f"{RULES}/{made['id']}", headers=h)).json()["called"] == "95588"


# ---------------------------------------------------------------- matching


async def test_telecom_hotline_pops_pinned_then_category_with_agent_script(
    client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb, world: dict[str, int]
) -> None:
    r = await rule(
        client,
        manager,
        name="10086 宽带故障",
        called="10086",
        ivr_path="1/3",
        category_ids=[kb.nodes["宽带故障"]],
        pinned_item_ids=[world["los"]],
    )
    out = await pop(client, agent, called="10086", ivr_path="1/3/2")
    assert [x["id"] for x in out["rules"]] == [r["id"]]
    # pinned first; then the category's other agent-channel item (the web-only one is not shown)
    assert reasons(out) == [(world["los"], "pinned"), (world["offline"], "category")]
    offline = out["items"][1]
    assert offline["rule_id"] == r["id"] and offline["category_id"] == kb.nodes["宽带故障"]
    assert offline["title"] == offline["question"] == "宽带无法上网怎么办" and offline["version"] == 1
    assert offline["agent_script"] == "您好，请您先重启光猫，\xa0等待3分钟后再试。"  # the agent's own answer, plain
    assert out["items"][0]["agent_script"] == "LOS灯红色说明光纤中断，需派单报修。"  # no agent answer: the body
    # the parent category covers its subtree
    await rule(client, manager, called="10086", ivr_path="1/4", category_ids=[kb.nodes["宽带业务"]])
    assert set(ids(await pop(client, agent, called="10086", ivr_path="1/4"))) == {
        world["offline"],
        world["los"],
        world["install"],
    }
    # another number, another IVR branch: nothing
    assert (await pop(client, agent, called="10010", ivr_path="1/3"))["items"] == []
    assert (await pop(client, agent, called="10086", ivr_path="2/3"))["rules"] == []


async def test_ivr_path_is_a_node_wise_prefix(client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb) -> None:
    made = await rule(client, manager, ivr_path="1/3/2", category_ids=[kb.nodes["宽带故障"]])
    for path, hit in (
        ("1/3/2", True),
        ("1/3/2/5", True),
        ("/1/3/2/", True),
        ("1/3/20", False),
        ("1/3", False),
        ("11/3/2", False),
        ("1/3/2*", False),
    ):
        out = await pop(client, agent, ivr_path=path)
        assert [x["id"] for x in out["rules"]] == ([made["id"]] if hit else []), path
    assert (await pop(client, agent, ivr_path="/1/3/2/5"))["ivr_path"] == "1/3/2/5"
    assert (await pop(client, agent))["rules"] == []  # a call without data matches no rule


async def test_called_numbers_are_compared_as_digits(
    client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb
) -> None:
    bank = await rule(client, manager, called="955 88", category_ids=[kb.nodes["挂失"]])
    hotline = await rule(client, manager, called="400-8123-456", category_ids=[kb.nodes["宽带故障"]])
    assert bank["called"] == "95588"
    for number in ("95588", "955-88", "+86 95588", "0086-95588", "９５５８８", "(955)88"):
        out = await pop(client, agent, called=number)
        assert [x["id"] for x in out["rules"]] == [bank["id"]] and out["called"] == "95588", number
    assert (await pop(client, agent, called="955880"))["rules"] == []
    assert [x["id"] for x in (await pop(client, agent, called="4008 123 456"))["rules"]] == [hotline["id"]]


async def test_bank_business_code_and_caller_tags(
    client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb, world: dict[str, int]
) -> None:
    loss = await rule(
        client,
        manager,
        name="95588 信用卡挂失",
        called="95588",
        business_code="CARD_LOSS",
        category_ids=[kb.nodes["挂失"]],
        pinned_item_ids=[world["card_loss"]],
    )
    vip = await rule(client, manager, name="VIP 资费", caller_tags=["VIP", "高端客户"], tags=["资费"])
    out = await pop(client, agent, called="95588", business_code="card_loss")
    assert [x["id"] for x in out["rules"]] == [loss["id"]] and out["business_code"] == "CARD_LOSS"
    assert reasons(out) == [(world["card_loss"], "pinned"), (world["card_fee"], "category")]
    assert out["items"][0]["agent_script"] == "先生/女士您好，请核实身份后为您办理临时挂失。"
    # the whole rule must hold: the bank's number without the business code is no match
    assert (await pop(client, agent, called="95588", business_code="CARD_OPEN"))["rules"] == []
    assert (await pop(client, agent, business_code="CARD_LOSS"))["rules"] == []
    # caller tags: any of them, case-insensitive, repeated or comma-separated
    for tags in (["vip"], ["投诉,VIP"], ["投诉", "高端客户"]):
        out = await pop(client, agent, caller_tags=tags)
        assert [x["id"] for x in out["rules"]] == [vip["id"]], tags
        assert reasons(out) == [(world["plan"], "tag")] and out["items"][0]["tag"] == "资费"
    assert (await pop(client, agent, caller_tags="投诉"))["rules"] == []


async def test_priority_orders_rules_and_each_item_appears_once(
    client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb, world: dict[str, int]
) -> None:
    low = await rule(
        client,
        manager,
        name="低",
        called="10086",
        priority=1,
        pinned_item_ids=[world["plan"], world["offline"]],
        category_ids=[kb.nodes["宽带故障"]],
    )
    high = await rule(
        client,
        manager,
        name="高",
        called="10086",
        ivr_path="1",
        priority=50,
        pinned_item_ids=[world["offline"], world["install"]],
    )
    out = await pop(client, agent, called="10086", ivr_path="1/3")
    assert [x["id"] for x in out["rules"]] == [high["id"], low["id"]]
    assert reasons(out) == [
        (world["offline"], "pinned"),
        (world["install"], "pinned"),
        (world["plan"], "pinned"),
        (world["los"], "category"),
    ]
    assert [i["rule_id"] for i in out["items"]] == [high["id"], high["id"], low["id"], low["id"]]
    assert len(set(ids(out))) == len(ids(out))
    assert ids(await pop(client, agent, called="10086", ivr_path="1/3", limit=2)) == [
        world["offline"],
        world["install"],
    ]
    # priority changed: the low rule's pins come first now, and a disabled rule no longer matches
    h = {**manager.headers, "If-Match": low["etag"]}
    assert (await client.patch(f"{RULES}/{low['id']}", headers=h, json={"priority": 100})).status_code == 200
    assert ids(await pop(client, agent, called="10086", ivr_path="1"))[:2] == [world["plan"], world["offline"]]
    h = {**manager.headers, "If-Match": high["etag"]}
    assert (await client.patch(f"{RULES}/{high['id']}", headers=h, json={"enabled": False})).status_code == 200
    assert [x["id"] for x in (await pop(client, agent, called="10086", ivr_path="1"))["rules"]] == [low["id"]]


async def test_items_the_agent_may_not_read_or_not_published_never_pop(
    client: httpx.AsyncClient,
    manager: Actor,
    agent: Actor,
    publisher: Actor,
    admin: Actor,
    people: People,
    kb: Kb,
    world: dict[str, int],
    app: Any,
) -> None:
    roles = await people.roles()
    secret = (
        await kb.publish(
            admin, title="內部：宽带故障工单升级流程", category_ids=[kb.nodes["宽带故障"]], body="<p>仅限二线。</p>"
        )
    )["id"]
    r = await client.put(
        f"/api/v1/items/{secret}/acl",
        headers=admin.headers,
        json={"grants": [{"subject": f"role:{roles['publisher'].id}", "access": "read"}]},
    )
    assert r.status_code == 200, r.text
    gone = (await kb.publish(admin, title="旧版宽带资费（已下线）", category_ids=[kb.nodes["宽带故障"]]))["id"]
    assert (await kb.act(admin, gone, 1, "unpublish")).status_code == 200
    archived = (await kb.publish(admin, title="2019年宽带提速公告", category_ids=[kb.nodes["宽带故障"]]))["id"]
    assert (await kb.act(admin, archived, 1, "archive")).status_code == 200
    expired = (
        await kb.publish(
            admin,
            title="双十一宽带优惠（已过期）",
            category_ids=[kb.nodes["宽带故障"]],
            valid_to=(utcnow() + timedelta(hours=1)).isoformat(),
        )
    )["id"]
    draft = (await kb.create(admin, title="宽带草稿"))["id"]
    await drain(app)
    pinned = [secret, gone, archived, draft, world["web_only"], world["los"]]
    await rule(client, manager, called="10086", pinned_item_ids=pinned, category_ids=[kb.nodes["宽带故障"]])

    seen = ids(await pop(client, agent, called="10086", q="宽带故障工单升级"))
    assert secret not in seen and gone not in seen and archived not in seen and draft not in seen
    assert world["web_only"] not in seen and seen[0] == world["los"]
    # the publisher role is granted the internal item: the same call pops it for them (pinned)
    assert ids(await pop(client, publisher, called="10086"))[:2] == [secret, world["los"]]
    # past its validity, an item leaves the screen pop without any job having run
    assert expired in ids(await pop(client, agent, called="10086"))
    async with app.state.sessionmaker() as s:
        from app.knowledge.models import Item

        item = await s.get(Item, expired)
        assert item is not None
        item.valid_to = utcnow() - timedelta(seconds=1)
        await s.commit()
    assert expired not in ids(await pop(client, agent, called="10086"))


async def test_search_results_for_q_come_after_the_rules(
    client: httpx.AsyncClient, manager: Actor, agent: Actor, kb: Kb, world: dict[str, int]
) -> None:
    await rule(client, manager, called="95588", business_code="CARD_LOSS", pinned_item_ids=[world["card_loss"]])
    out = await pop(client, agent, called="95588", business_code="CARD_LOSS", q="5G畅享套餐资费")
    assert reasons(out)[0] == (world["card_loss"], "pinned") and out["items"][0]["score"] is None
    searched = [i for i in out["items"] if i["reason"] == "search"]
    assert searched[0]["item_id"] == world["plan"] and searched[0]["score"] > 0 and out["search_id"]
    assert world["card_loss"] not in [i["item_id"] for i in searched]  # de-duplicated against the pins
    # the same engine and ranking as /search
    found = (await client.get("/api/v1/search", headers=agent.headers, params={"q": "5G畅享套餐资费"})).json()
    assert [i["item_id"] for i in searched] == [
        h["item_id"] for h in found["items"] if h["item_id"] != world["card_loss"]
    ]
    # no rule matches: search alone, traditional characters fold like in /search
    alone = await pop(client, agent, q="挂失手续费")
    assert alone["rules"] == [] and ids(alone)[0] == world["card_fee"]
    assert {i["reason"] for i in alone["items"]} == {"search"}


async def test_screen_pop_bad_input_and_callers(
    client: httpx.AsyncClient, manager: Actor, agent: Actor, people: People, kb: Kb, world: dict[str, int]
) -> None:
    await rule(client, manager, called="10086", category_ids=[kb.nodes["宽带故障"]])
    h = agent.headers
    for params, code in (
        ({"limit": 0}, "validation_error"),
        ({"limit": 51}, "validation_error"),
        ({"limit": "十"}, "validation_error"),
        ({"called": "客服热线"}, "invalid_called"),
        ({"ivr_path": "1/3/x"}, "invalid_ivr_path"),
        ({"ivr_path": "1//3"}, "invalid_ivr_path"),
        ({"business_code": "卡 挂失"}, "invalid_business_code"),
        ({"caller_tags": [f"t{i}" for i in range(21)]}, "validation_error"),
        ({"caller_tags": ",".join(f"t{i}" for i in range(21))}, "too_many_caller_tags"),
        ({"called": "1" * 41}, "validation_error"),
    ):
        assert_problem(await client.get(POP, headers=h, params=params), 422, code)
    long = await pop(client, agent, called="10086", q="宽带 wifi " * 125)  # 1,000 characters, cut to 200
    assert long["warnings"] and ids(long)[0] in (world["offline"], world["los"])
    odd = await pop(client, agent, q='宽带 "OR" AND (*) 😀 Wi-Fi\\ 上网', called="10086", limit=50)
    assert len(odd["items"]) >= 2
    assert (await pop(client, agent, q="   "))["search_id"] is None

    assert_problem(await client.get(POP, params={"called": "10086"}), 401)
    nobody = await people.make("wang.audit", role="auditor")  # no knowledge:read
    assert_problem(await client.get(POP, headers=nobody.headers), 403, "permission_denied")
    web = await kb.channel_client("web")
    assert_problem(await client.get(POP, headers=web.headers), 403, "channel_mismatch")
    softphone = await kb.channel_client("agent")
    out = await pop(client, softphone, called="10086")
    # a client reads public items only (internal ones are for staff), and the web-only one is off its channel
    assert ids(out) == [world["offline"]]
