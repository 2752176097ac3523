"""Generation with distractors from the search engine, duplicate options among them, the review flag
when an item is republished, short answers and the grader's queue, the migration's grants."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import insert

from app.core.db import make_engine, utcnow
from app.identity.models import Role
from tests.conftest import BACKENDS, Actor, People, alembic_config, assert_problem, create_database
from tests.feedback.test_migration import _permissions
from tests.learning.conftest import Kb, call, drain, faq, sweep
from tests.learning.helpers import API, exam, paper, question

ME = "/api/v1/me/exams"


async def test_distractors_come_from_similar_items_of_the_same_category(
    client: httpx.AsyncClient, kb: Kb, publisher: Actor, supervisor: Actor, app: Any
) -> None:
    target = await faq(
        kb,
        publisher,
        "宽带故障",
        "宽带无法上网怎么办",
        "宽带连不上网怎么处理",
        "请先重启光猫和路由器，等待 3 分钟后重试。",
    )
    similar = [
        await faq(kb, publisher, "宽带故障", t, q, a)
        for t, q, a in (
            ("宽带网速慢怎么办", "宽带网速慢怎么处理", "请用有线连接测速，低于签约速率可申请上门检测。"),
            ("宽带拨号 691 怎么办", "宽带拨号691怎么处理", "691 表示账号密码错误或欠费。"),
            ("宽带断线频繁怎么办", "宽带经常断线怎么处理", "检查网线水晶头并更换路由器位置。"),
            # the same answer as the target, written in full width and traditional characters: not a wrong option
            ("宽带上不了网", "宽带连不上网如何处理", "請先重啟光貓和路由器，等待 ３ 分鐘後重試。"),
        )
    ]
    # a card FAQ with a similar question: another category, never used
    card = await faq(
        kb, publisher, "挂失", "信用卡无法使用怎么办", "信用卡连不上网怎么处理", "请致电 95588 挂失并补卡。"
    )
    await drain(app)
    r = await call(
        client,
        "POST",
        f"{API}/questions/generate",
        supervisor,
        json={"item_ids": [target["id"], card["id"]], "distractors": 3},
    )
    assert r.status_code == 201, r.text
    (q,) = r.json()["created"]
    texts = [o["text"] for o in q["options"]]
    assert len(texts) == 4 and "请致电 95588 挂失并补卡。" not in texts
    assert not any("重啟" in t for t in texts)  # the folded duplicate of the right answer was passed over
    assert {lk["item_id"] for lk in q["items"] if lk["role"] == "distractor"} <= {s["id"] for s in similar[:3]}
    assert q["explanation"].startswith("依据知识《宽带无法上网怎么办》")
    # the card item's category holds nothing else: said so, skipped
    (skipped,) = r.json()["skipped"]
    assert (skipped["item_id"], skipped["reason"]) == (card["id"], "not_enough_distractors")
    r = await call(
        client, "POST", f"{API}/questions/generate", supervisor, json={"item_ids": [target["id"]], "distractors": 5}
    )
    assert r.json()["skipped"][0]["reason"] in ("already_generated", "not_enough_distractors")
    r = await call(client, "POST", f"{API}/questions/generate", supervisor, json={"item_ids": [999999]})
    assert r.json()["skipped"][0]["reason"] == "not_found"
    assert_problem(await call(client, "POST", f"{API}/questions/generate", supervisor, json={}), 422, "generate_source")


async def test_generation_reads_under_the_callers_acl(
    client: httpx.AsyncClient, kb: Kb, publisher: Actor, people: People, app: Any
) -> None:
    """A supervisor only sees what they may read: a restricted item is neither a source nor a distractor."""
    items = [
        await faq(kb, publisher, "宽带故障", f"宽带故障{i}怎么办", f"宽带故障{i}怎么处理", f"处理办法第 {i} 种。")
        for i in range(4)
    ]
    admin = await people.make("root", role="admin")
    risk = (await people.roles())["auditor"].id  # a role the supervisor does not hold
    r = await client.put(
        f"/api/v1/items/{items[3]['id']}/acl",
        headers={**admin.headers, "If-Match": await kb.etag(items[3]["id"])},
        json={"grants": [{"subject": f"role:{risk}", "access": "read"}]},
    )
    assert r.status_code in (200, 204), r.text
    await drain(app)
    sup = await people.make("zhou.banzhang", role="supervisor")
    r = await call(
        client,
        "POST",
        f"{API}/questions/generate",
        sup,
        json={"item_ids": [items[0]["id"], items[3]["id"]], "distractors": 2},
    )
    (q,) = r.json()["created"]
    assert "处理办法第 3 种。" not in [o["text"] for o in q["options"]]
    assert r.json()["skipped"][0]["reason"] == "not_found"
    # A question an administrator wrote on the restricted item: its answer is that item's content,
    # so the bank does not show it to the supervisor (404 like a missing one); the admin sees it.
    r = await call(
        client,
        "POST",
        f"{API}/questions",
        admin,
        json={
            "kind": "single_choice",
            "stem": "宽带故障3怎么处理？",
            "options": ["处理办法第 3 种。", "重启路由器"],
            "answer": ["A"],
            "items": [{"item_id": items[3]["id"]}],
        },
    )
    assert r.status_code == 201, r.text
    hidden = r.json()["id"]
    listed = (await call(client, "GET", f"{API}/questions", sup)).json()["items"]
    assert hidden not in [x["id"] for x in listed] and q["id"] in [x["id"] for x in listed]
    assert_problem(await call(client, "GET", f"{API}/questions/{hidden}", sup), 404, "question_not_found")
    assert_problem(await call(client, "POST", f"{API}/questions/{hidden}/retire", sup), 404, "question_not_found")
    assert (await call(client, "GET", f"{API}/questions/{hidden}", admin)).status_code == 200


async def test_republishing_an_item_flags_its_questions(
    client: httpx.AsyncClient, kb: Kb, publisher: Actor, supervisor: Actor, app: Any
) -> None:
    item = await faq(kb, publisher, "宽带办理", "宽带如何办理移机", "宽带搬家移机怎么处理", "移机费 100 元。")
    other = await faq(kb, publisher, "宽带办理", "宽带如何销户", "宽带销户怎么处理", "携带身份证到营业厅办理。")
    q = await question(
        client, supervisor, stem="宽带移机费是多少？", options=["100 元", "50 元"], items=[{"item_id": item["id"]}]
    )
    keep = await question(
        client, supervisor, stem="宽带销户需要带什么？", options=["身份证", "户口本"], items=[{"item_id": other["id"]}]
    )
    assert q["items"][0]["version"] == 1
    await sweep(app)
    r = await call(client, "GET", f"{API}/questions/{q['id']}", supervisor)
    assert r.json()["needs_review"] is False
    r = await kb.edit(publisher, item["id"], {"channel_answers": {"agent": "移机费调整为 80 元。"}})
    assert r.status_code == 200, r.text
    await kb.ok(publisher, item["id"], 2, "submit", "approve", "publish")
    await sweep(app)
    r = await call(client, "GET", f"{API}/questions", supervisor, params={"needs_review": True})
    flagged = r.json()["items"]
    assert [f["id"] for f in flagged] == [q["id"]] and "version 2" in flagged[0]["review_reason"]
    # a flagged question goes into no paper until someone checks it
    r = await call(
        client,
        "POST",
        f"{API}/papers",
        supervisor,
        json={"title": "移机", "questions": [{"question_id": q["id"], "score": 5}]},
    )
    assert_problem(r, 422, "question_not_approved")
    r = await call(
        client,
        "PATCH",
        f"{API}/questions/{q['id']}",
        supervisor,
        etag=flagged[0]["etag"],
        json={"options": ["80 元", "100 元"], "answer": ["A"], "needs_review": False},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["needs_review"], r.json()["items"][0]["version"], r.json()["state"]) == (False, 2, "draft")
    r = await call(client, "POST", f"{API}/questions/{q['id']}/approve", supervisor, etag=r.headers["etag"])
    assert r.json()["state"] == "approved"
    await sweep(app)  # nothing new: stays clear
    r = await call(client, "GET", f"{API}/questions", supervisor, params={"needs_review": True})
    assert r.json()["items"] == [] and keep["needs_review"] is False


async def test_short_answers_wait_for_the_grader(client: httpx.AsyncClient, supervisor: Actor, people: People) -> None:
    agent = await people.make("liu.xin", role="agent")
    qs = [
        await question(client, supervisor),
        await question(
            client,
            supervisor,
            kind="multiple_choice",
            stem="宽带报修前需要确认哪些信息？",
            options=["宽带账号", "装机地址", "客户的银行卡密码"],
            answer=["A", "B"],
        ),
        await question(
            client,
            supervisor,
            kind="fill_in",
            stem="宽带拨号错误 ____ 表示账号或密码错误。",
            options=[],
            answer=["691"],
        ),
        await question(
            client,
            supervisor,
            kind="short_answer",
            stem="客户投诉宽带反复断线，你如何安抚并处理？",
            options=[],
            answer=["致歉、核实地址、派单、告知上门时限"],
        ),
    ]
    p = await paper(client, supervisor, qs, scores=[10, 10, 10, 20], pass_score=30)
    e = await exam(client, supervisor, p["id"], {"roles": ["agent"]})
    await call(client, "POST", f"{ME}/{e['id']}/attempt", agent)
    r = await call(
        client,
        "POST",
        f"{ME}/{e['id']}/attempt/submit",
        agent,
        json={
            "answers": {
                str(qs[0]["id"]): "A",
                str(qs[1]["id"]): ["A"],
                str(qs[2]["id"]): " ６９１ ",
                str(qs[3]["id"]): "先向客户致歉，核实装机地址后派单，告知维修人员 24 小时内上门。",
            }
        },
    )
    result = r.json()
    assert (result["state"], result["score"], result["passed"]) == ("grading", 20, None)
    assert [w["question_id"] for w in result["wrong"]] == [qs[1]["id"]]  # all or nothing: one of two keys
    r = await call(client, "GET", "/api/v1/me/todo", supervisor)
    assert r.json()["sections"]["grading"]["count"] == 1
    r = await call(client, "GET", f"{API}/grading", supervisor)
    (entry,) = r.json()["items"]
    assert entry["questions"][0]["question_id"] == qs[3]["id"] and "致歉" in entry["questions"][0]["answer"]
    url = f"{API}/attempts/{entry['attempt_id']}/grades"
    assert_problem(
        await call(client, "POST", url, supervisor, json={"grades": [{"question_id": qs[3]["id"], "score": 25}]}),
        422,
        "score_too_high",
    )
    assert_problem(
        await call(client, "POST", url, supervisor, json={"grades": [{"question_id": qs[0]["id"], "score": 5}]}),
        422,
        "not_gradable",
    )
    r = await call(
        client,
        "POST",
        url,
        supervisor,
        json={"grades": [{"question_id": qs[3]["id"], "score": 15, "comment": "流程完整，缺少回访"}]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["score"], r.json()["passed"]) == ("completed", 35, True)
    r = await call(client, "GET", f"{ME}/{e['id']}/result", agent)
    assert (r.json()["score"], r.json()["passed"]) == (35, True)
    assert {w["question_id"]: w["grader_comment"] for w in r.json()["wrong"]}[qs[3]["id"]] == "流程完整，缺少回访"
    r = await call(client, "GET", "/api/v1/me/todo", supervisor)
    assert r.json()["sections"]["grading"]["count"] == 0
    r = await call(
        client, "GET", "/api/v1/audit", await people.make("root", role="admin"), params={"action": "attempt.grade"}
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 1


@pytest.mark.parametrize("kind", BACKENDS)
async def test_migration_grants_learning_to_existing_roles(kind: str, tmp_path: Path) -> None:
    url, drop = await create_database(kind, tmp_path)
    try:
        cfg = alembic_config(url)
        await asyncio.to_thread(command.upgrade, cfg, "0014")
        engine = make_engine(url)
        async with engine.begin() as conn:
            for name, perms in (
                ("agent", ["system:access", "knowledge:read"]),
                ("supervisor", ["system:access", "knowledge:read"]),
                ("质检组", ["system:access", "audit:read"]),
            ):
                await conn.execute(
                    insert(Role.__table__).values(
                        name=name, description="", permissions=perms, created_at=utcnow(), updated_at=utcnow()
                    )
                )
        await engine.dispose()
        await asyncio.to_thread(command.upgrade, cfg, "0015")
        roles = await _permissions(url)
        assert roles["agent"] == ["knowledge:read", "learning:study", "module:learning", "system:access"]
        assert roles["supervisor"] == [
            "knowledge:read",
            "learning:manage",
            "learning:study",
            "module:learning",
            "system:access",
        ]
        assert roles["质检组"] == ["audit:read", "system:access"]
        await asyncio.to_thread(command.downgrade, cfg, "0014")
        assert (await _permissions(url))["supervisor"] == ["knowledge:read", "system:access"]
    finally:
        await drop()
