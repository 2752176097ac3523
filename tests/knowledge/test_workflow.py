from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.core.db import utcnow
from app.knowledge.jobs import publish_scheduled
from app.knowledge.models import ItemVersion
from app.knowledge.workflow import ACTIONS, allowed_actions
from app.workers.models import Job
from app.workers.outbox import JobContext
from tests.conftest import Actor, People, assert_problem
from tests.knowledge.conftest import Kb

STATES = ["draft", "in_review", "approved", "rejected", "published", "superseded", "unpublished", "archived"]
# state -> {allowed action: resulting state of that version}; everything else is a 409.
EXPECTED: dict[str, dict[str, str]] = {
    "draft": {"submit": "in_review"},
    "in_review": {"withdraw": "draft", "approve": "approved", "reject": "rejected"},
    "approved": {"withdraw": "draft", "publish": "published"},
    "rejected": {"reopen": "draft"},
    "published": {"unpublish": "unpublished", "archive": "archived"},
    "superseded": {},
    "unpublished": {},
    "archived": {},
}
PATHS = {
    "draft": [],
    "in_review": ["submit"],
    "approved": ["submit", "approve"],
    "rejected": ["submit", "reject"],
    "published": ["submit", "approve", "publish"],
    "archived": ["submit", "approve", "publish", "archive"],
    "unpublished": ["submit", "approve", "publish", "unpublish"],
}


async def reach(kb: Kb, actor: Actor, state: str) -> tuple[int, int]:
    """A fresh item with a version in `state`: (item id, version number)."""
    item = await kb.create(actor, title=f"状态测试：{state}")
    if state == "superseded":
        await kb.ok(actor, item["id"], 1, *PATHS["published"])
        assert (await kb.edit(actor, item["id"], {"title": "携号转网办理条件（2026版）"})).status_code == 200
        await kb.ok(actor, item["id"], 2, *PATHS["published"])
        return item["id"], 1
    await kb.ok(actor, item["id"], 1, *PATHS[state])
    return item["id"], 1


async def version_state(kb: Kb, item_id: int, number: int) -> str:
    async with kb.app.state.sessionmaker() as s:
        v = await s.scalar(select(ItemVersion).where(ItemVersion.item_id == item_id, ItemVersion.number == number))
        assert v is not None
        return v.state


async def test_every_action_from_every_state(kb: Kb, admin: Actor) -> None:
    """8 states x 8 actions: the allowed ones lead where the table says, the others are 409 with
    the allowed list, and change nothing."""
    for state in STATES:
        expected = EXPECTED[state]
        assert allowed_actions(state) == list(expected)  # the table says the same as this test
        refused_on, n = await reach(kb, admin, state)
        for action in ACTIONS:
            if action in expected:
                item_id, number = await reach(kb, admin, state)
                r = await kb.act(admin, item_id, number, action)
                assert r.status_code == 200, f"{state} --{action}--> {r.text}"
                assert await version_state(kb, item_id, number) == expected[action]
            else:
                body = assert_problem(await kb.act(admin, refused_on, n, action), 409, "invalid_transition")
                assert body["allowed"] == list(expected), (state, action, body)
                assert body["state"] == state and body["action"] == action
                assert await version_state(kb, refused_on, n) == state  # nothing changed


async def test_types_without_review_publish_drafts_directly(kb: Kb, admin: Actor) -> None:
    item = await kb.create(admin, item_type="notice", title="95598 系统升级停机公告")
    assert item["allowed_actions"] == ["submit", "publish"]
    out = await kb.ok(admin, item["id"], 1, "publish")
    assert out["status"] == "published" and out["version"]["state"] == "published"
    # a type that needs review refuses the same shortcut
    faq = await kb.create(admin)
    body = assert_problem(await kb.act(admin, faq["id"], 1, "publish"), 409, "invalid_transition")
    assert body["allowed"] == ["submit"]


async def test_whole_life_is_audited_and_queued_for_indexing(
    kb: Kb, client: httpx.AsyncClient, author: Actor, reviewer: Actor, publisher: Actor, admin: Actor
) -> None:
    item = await kb.create(author, title="信用卡挂失流程")
    iid = item["id"]
    await kb.ok(author, iid, 1, "submit")
    await kb.ok(reviewer, iid, 1, "reject")
    await kb.ok(author, iid, 1, "reopen", "submit")
    await kb.ok(reviewer, iid, 1, "approve")
    await kb.ok(publisher, iid, 1, "publish")
    await kb.ok(publisher, iid, 1, "archive")
    steps = ["submit", "reject", "reopen", "submit", "approve", "publish", "archive"]
    r = await client.get(
        "/api/v1/audit", params={"target_type": "item", "target_id": str(iid), "limit": 50}, headers=admin.headers
    )
    entries = list(reversed(r.json()["items"]))
    assert [e["action"] for e in entries] == ["item.create"] + [f"item.{s}" for s in steps]
    by = {e["action"]: e for e in entries}
    assert by["item.reject"]["actor"] == f"user:{reviewer.user.id}"
    assert by["item.reject"]["summary"]["reason"] == "答案缺少办理渠道，请补充"
    assert by["item.publish"]["summary"] | {"superseded": None} == {
        "version": 1,
        "from_state": "approved",
        "to_state": "published",
        "superseded": None,
    }
    assert by["item.archive"]["summary"]["to_state"] == "archived"
    assert await kb.jobs("search.index_item") == [{"item_id": iid}] * len(steps)


async def test_permissions_per_action_and_who_may_withdraw(
    kb: Kb, people: People, author: Actor, reviewer: Actor, publisher: Actor
) -> None:
    item = await kb.create(author)
    iid = item["id"]
    await kb.ok(author, iid, 1, "submit")
    assert_problem(await kb.act(author, iid, 1, "approve"), 403, "permission_denied")
    other_author = await people.make("liu.yang", role="author")
    assert_problem(await kb.act(other_author, iid, 1, "withdraw"), 403, "permission_denied")
    await kb.ok(author, iid, 1, "withdraw", "submit")  # the author may
    assert (await kb.ok(reviewer, iid, 1, "withdraw"))["version"]["state"] == "draft"  # and a reviewer
    await kb.ok(author, iid, 1, "submit")
    await kb.ok(reviewer, iid, 1, "approve")
    body = assert_problem(await kb.act(reviewer, iid, 1, "publish"), 403, "permission_denied")
    assert body["required_permission"] == "knowledge:publish"
    await kb.ok(publisher, iid, 1, "publish")
    assert_problem(await kb.act(author, iid, 1, "archive"), 403, "permission_denied")
    assert await version_state(kb, iid, 1) == "published"


async def test_editing_rules_around_review(kb: Kb, author: Actor, reviewer: Actor) -> None:
    # required attributes are checked on submit
    item = await kb.create(author, attributes={})
    body = assert_problem(await kb.act(author, item["id"], 1, "submit"), 422, "invalid_attribute")
    assert body["errors"][0]["attribute"] == "region" and body["errors"][0]["type"] == "required"
    assert await version_state(kb, item["id"], 1) == "draft"
    assert (await kb.edit(author, item["id"], {"attributes": {"region": "北京"}})).status_code == 200
    await kb.ok(author, item["id"], 1, "submit")
    # in review, the version is locked
    body = assert_problem(await kb.edit(author, item["id"], {"title": "改标题"}), 409, "version_locked")
    assert body["state"] == "in_review"
    # a rejection needs a reason; the rejected version becomes a draft again on edit
    for bad in ({}, {"reason": "  "}):
        assert_problem(await kb.act(reviewer, item["id"], 1, "reject", bad), 422, "reason_required")
    await kb.ok(reviewer, item["id"], 1, "reject")
    r = await kb.edit(author, item["id"], {"body": "<p>补充：可通过营业厅、95588 热线或手机银行挂失。</p>"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "draft" and r.json()["number"] == 1
    assert r.json()["review_note"] == "答案缺少办理渠道，请补充"  # the author still sees why
    await kb.ok(author, item["id"], 1, "submit")
    await kb.ok(reviewer, item["id"], 1, "approve")
    assert_problem(await kb.edit(author, item["id"], {"title": "改标题"}), 409, "version_locked")


async def test_publishing_supersedes_and_archiving_ends_editing(
    kb: Kb, client: httpx.AsyncClient, admin: Actor, agent: Actor
) -> None:
    item = await kb.publish(admin, title="5G畅享套餐资费说明")
    iid = item["id"]
    assert (await kb.edit(admin, iid, {"title": "5G畅享套餐资费说明（2026年版）"})).status_code == 200
    # while v2 is a draft, readers still get v1
    assert (await kb.get(agent, iid)).json()["version"]["number"] == 1
    out = await kb.ok(admin, iid, 2, "submit", "approve", "publish")
    assert out["published_version_no"] == 2
    assert await version_state(kb, iid, 1) == "superseded"
    r = await kb.get(agent, iid)
    assert r.json()["version"]["title"] == "5G畅享套餐资费说明（2026年版）"
    # archiving the item from the published version removes it from readers, and ends editing
    await kb.ok(admin, iid, 2, "archive")
    assert_problem(await kb.get(agent, iid), 404, "item_not_found")
    assert_problem(await kb.edit(admin, iid, {"title": "再改一次"}), 409, "item_archived")
    etag = await kb.etag(iid)
    r = await client.patch(
        f"/api/v1/items/{iid}", json={"visibility": "public"}, headers={**admin.headers, "If-Match": etag}
    )
    assert_problem(r, 409, "item_archived")
    r = await client.post(f"/api/v1/items/{iid}/versions/1/restore", headers={**admin.headers, "If-Match": etag})
    assert_problem(r, 409, "item_archived")
    assert (await kb.get(admin, iid)).json()["allowed_actions"] == []


async def _run_scheduled(kb: Kb) -> list[dict[str, Any]]:
    results = []
    async with kb.app.state.sessionmaker() as s:
        jobs = (await s.scalars(select(Job).where(Job.kind == "knowledge.publish_scheduled"))).all()
        for job in jobs:
            ctx = JobContext(job.id, job.kind, dict(job.payload), 1, s, kb.app.state.sessionmaker, {})
            results.append(await publish_scheduled(ctx))
        await s.commit()
    return results


async def test_scheduled_publication(kb: Kb, admin: Actor, agent: Actor) -> None:
    item = await kb.create(admin, title="春节期间营业厅营业时间调整")
    iid = item["id"]
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    assert_problem(await kb.act(admin, iid, 1, "submit", {"publish_at": past}), 422, "publish_at_not_allowed")
    await kb.ok(admin, iid, 1, "submit", "approve")
    assert_problem(
        await kb.act(admin, iid, 1, "publish", {"publish_at": "2026-01-01T00:00:00"}),  # no zone
        422,
        "validation_error",
    )
    at = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    r = await kb.act(admin, iid, 1, "publish", {"publish_at": at.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["version"]["state"] == "approved" and r.json()["status"] == "draft"
    async with kb.app.state.sessionmaker() as s:
        job = await s.scalar(select(Job).where(Job.kind == "knowledge.publish_scheduled"))
        assert job is not None and job.run_after == at
        assert job.payload == {"item_id": iid, "version": 1, "publish_at": at.isoformat()}
    assert_problem(await kb.get(agent, iid), 404)
    assert await _run_scheduled(kb) == [{"published": 1, "item_id": iid}]
    assert (await kb.get(agent, iid)).json()["version"]["state"] == "published"

    # a schedule withdrawn meanwhile does nothing; publish_at in the past publishes at once
    other = await kb.create(admin)
    await kb.ok(admin, other["id"], 1, "submit", "approve")
    later = (utcnow() + timedelta(days=1)).isoformat()
    assert (await kb.act(admin, other["id"], 1, "publish", {"publish_at": later})).status_code == 200
    await kb.ok(admin, other["id"], 1, "withdraw")
    assert (await _run_scheduled(kb))[1] == {"skipped": "no longer scheduled"}
    assert await version_state(kb, other["id"], 1) == "draft"
    await kb.ok(admin, other["id"], 1, "submit", "approve")
    r = await kb.act(admin, other["id"], 1, "publish", {"publish_at": past})
    assert r.json()["version"]["state"] == "published"


async def test_review_queue(kb: Kb, client: httpx.AsyncClient, author: Actor, reviewer: Actor, agent: Actor) -> None:
    first = await kb.create(author, title="携号转网需要满足哪些条件？")
    second = await kb.create(author, title="宽带报修后多久上门？")
    await kb.create(author, title="未提交的草稿")
    for item in (first, second):
        await kb.ok(author, item["id"], 1, "submit")
    r = await client.get("/api/v1/reviews", params={"limit": 1}, headers=reviewer.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [x["title"] for x in page["items"]] == ["携号转网需要满足哪些条件？"] and page["next_cursor"]
    r = await client.get(
        "/api/v1/reviews", params={"limit": 1, "cursor": page["next_cursor"]}, headers=reviewer.headers
    )
    assert [x["item_id"] for x in r.json()["items"]] == [second["id"]]
    assert r.json()["items"][0]["state"] == "in_review" and r.json()["items"][0]["submitted_at"]
    await kb.ok(reviewer, first["id"], 1, "approve")
    r = await client.get("/api/v1/reviews", params={"state": "approved"}, headers=reviewer.headers)
    assert [x["item_id"] for x in r.json()["items"]] == [first["id"]]
    assert_problem(await client.get("/api/v1/reviews", headers=agent.headers), 403, "permission_denied")
    assert_problem(
        await client.get("/api/v1/reviews", params={"state": "published"}, headers=reviewer.headers),
        422,
        "validation_error",
    )


async def test_four_eyes_review_keeps_whoever_wrote_a_version_from_approving_it(
    kb: Kb, people: People, author: Actor, reviewer: Actor, publisher: Actor
) -> None:
    kb.app.state.settings = kb.app.state.settings.model_copy(update={"four_eyes": True})
    second_reviewer = await people.make("zhao.min", role="reviewer")
    item = await kb.create(author, title="信用卡挂失后多久能补卡？")
    iid = item["id"]
    # the reviewer corrects the author's draft: from now on both of them wrote version 1
    r = await kb.edit(reviewer, iid, {"body": "<p>挂失后 7 个工作日内寄出新卡，可拨打 95588 查询进度。</p>"})
    assert r.status_code == 200, r.text
    await kb.ok(author, iid, 1, "submit")
    other = await kb.create(author, title="信用卡年费怎么减免？")
    await kb.ok(author, other["id"], 1, "submit")

    async def queue(actor: Actor) -> list[int]:
        r = await kb.client.get("/api/v1/reviews", headers=actor.headers)
        assert r.status_code == 200, r.text
        return [x["item_id"] for x in r.json()["items"]]

    assert await queue(reviewer) == [other["id"]]  # what they wrote is someone else's to approve
    assert await queue(second_reviewer) == [iid, other["id"]]
    body = assert_problem(await kb.act(reviewer, iid, 1, "approve"), 403, "four_eyes")
    assert body["version"] == 1
    assert await version_state(kb, iid, 1) == "in_review"  # nothing changed
    await kb.ok(reviewer, iid, 1, "reject")  # rejecting one's own work is allowed: it publishes nothing
    assert (await kb.edit(author, iid, {"title": "信用卡掛失後多久能補卡？"})).status_code == 200
    await kb.ok(author, iid, 1, "submit")
    await kb.ok(second_reviewer, iid, 1, "approve")  # somebody who did not write it
    await kb.ok(publisher, iid, 1, "publish")
    # a publisher who may also review cannot approve a version they wrote themselves
    r = await kb.edit(publisher, iid, {"similar_questions": ["信用卡丢了补办要多久"]})
    assert r.status_code == 200 and r.json()["number"] == 2, r.text
    await kb.ok(publisher, iid, 2, "submit")
    assert await queue(publisher) == [other["id"]] and await queue(reviewer) == [other["id"], iid]
    assert_problem(await kb.act(publisher, iid, 2, "approve"), 403, "four_eyes")
    # what counts is who wrote THIS version: the first reviewer's edit was to version 1
    await kb.ok(reviewer, iid, 2, "approve")
    # and with the rule off (the default), an author who may review approves their own version
    kb.app.state.settings = kb.app.state.settings.model_copy(update={"four_eyes": False})
    await kb.ok(publisher, iid, 2, "withdraw", "submit", "approve")
    auditor = await people.make("audit.lin", role="auditor")

    async def actors(**params: str) -> list[str]:
        r = await kb.client.get("/api/v1/audit", params={"target_id": str(iid), **params}, headers=auditor.headers)
        assert r.status_code == 200, r.text
        return [e["actor"] for e in r.json()["items"]]  # newest first

    def who(actor: Actor) -> str:
        return f"user:{actor.user.id}"

    assert await actors(action="item.approve") == [who(publisher), who(reviewer), who(second_reviewer)]
    assert await actors(action="permission.denied") == [who(publisher), who(reviewer)]  # both refusals
