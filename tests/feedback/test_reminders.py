"""The review-reminder job: creates review_due / expiring tasks, never twice, and closes them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.db import utcnow
from app.feedback.jobs import REMINDER_JOB, schedule_reminders
from app.feedback.models import Task
from app.feedback.reminders import run_reminders
from app.knowledge.models import Item
from app.workers.models import Job
from app.workers.outbox import SCHEDULER, enqueue
from app.workers.worker import Worker
from tests.conftest import Actor
from tests.feedback.conftest import Kb


async def run(app: Any, **kw: Any) -> dict[str, Any]:
    async with app.state.sessionmaker() as s:
        report = await run_reminders(s, warning_days=14, **kw)
        await s.commit()
        return report


async def tasks(app: Any) -> list[Task]:
    async with app.state.sessionmaker() as s:
        return list((await s.scalars(select(Task).order_by(Task.id))).all())


async def patch(client: httpx.AsyncClient, kb: Kb, actor: Actor, item_id: int, body: dict[str, Any]) -> None:
    r = await client.patch(
        f"/api/v1/items/{item_id}", json=body, headers={**actor.headers, "If-Match": await kb.etag(item_id)}
    )
    assert r.status_code == 200, r.text


async def test_reminders_create_do_not_duplicate_and_close(
    client: httpx.AsyncClient, kb: Kb, author: Actor, publisher: Actor
) -> None:
    today = utcnow().date()
    soon = (utcnow() + timedelta(days=5)).isoformat()
    overdue = await kb.publish(
        publisher, title="宽带资费复核", owner_id=author.user.id, review_due=(today - timedelta(days=3)).isoformat()
    )
    expiring = await kb.publish(publisher, title="双十一话费优惠活动", owner_id=author.user.id, valid_to=soon)
    later = await kb.publish(
        publisher,
        title="信用卡年费政策",
        owner_id=author.user.id,
        review_due=(today + timedelta(days=30)).isoformat(),
        valid_to=(utcnow() + timedelta(days=60)).isoformat(),
    )
    draft = await kb.create(publisher, title="草稿不提醒", review_due=(today - timedelta(days=1)).isoformat())

    report = await run(kb.app)
    assert report["review_due_created"] == 1 and report["expiring_created"] == 1 and not report["more"]
    made = {(t.item_id, t.kind): t for t in await tasks(kb.app)}
    assert set(made) == {(overdue["id"], "review_due"), (expiring["id"], "expiring")}
    assert all(
        t.assignee_id == author.user.id and t.state == "open" and t.reporter_id is None and t.version_no == 1
        for t in made.values()
    )
    assert made[(overdue["id"], "review_due")].due_at is not None
    assert later["id"] not in {i for i, _ in made} and draft["id"] not in {i for i, _ in made}

    todo = (await client.get("/api/v1/me/todo", headers=author.headers)).json()["sections"]
    assert todo["review_due"]["count"] == 1 and todo["review_due"]["items"][0]["title"] == "宽带资费复核"
    assert todo["expiring"]["count"] == 1 and todo["expiring"]["items"][0]["item_id"] == expiring["id"]
    narrow = (await client.get("/api/v1/me/todo", params={"expiring_within_days": 2}, headers=author.headers)).json()[
        "sections"
    ]
    assert narrow["expiring"]["count"] == 0

    again = await run(kb.app)  # idempotent: nothing new
    assert again["review_due_created"] == again["expiring_created"] == 0
    assert len(await tasks(kb.app)) == 2

    # an accepted reminder is still unresolved: no second one either
    task_id = made[(overdue["id"], "review_due")].id
    r = await client.post(f"/api/v1/tasks/{task_id}/accept", headers=author.headers)
    assert r.status_code == 200
    assert (await run(kb.app))["review_due_created"] == 0

    # the owner reviews (review date moved on) and extends the validity: both close by themselves
    await patch(client, kb, publisher, overdue["id"], {"review_due": (today + timedelta(days=180)).isoformat()})
    await patch(client, kb, publisher, expiring["id"], {"valid_to": (utcnow() + timedelta(days=90)).isoformat()})
    report = await run(kb.app)
    assert report["review_due_closed"] == 1 and report["expiring_closed"] == 1
    closed = await tasks(kb.app)
    assert all(t.state == "fixed" and t.resolved_by is None and t.resolved_at is not None for t in closed)
    assert "review date" in (closed[0].resolution_note or "")
    todo = (await client.get("/api/v1/me/todo", headers=author.headers)).json()["sections"]
    assert todo["review_due"]["count"] == todo["expiring"]["count"] == 0

    # due again later: a new task, the closed one stays as history
    await patch(client, kb, publisher, overdue["id"], {"review_due": today.isoformat()})
    assert (await run(kb.app))["review_due_created"] == 1
    assert len(await tasks(kb.app)) == 3


async def test_reminders_follow_the_item(
    client: httpx.AsyncClient, kb: Kb, author: Actor, publisher: Actor, people: Any
) -> None:
    item = await kb.publish(
        publisher,
        title="携号转网办理条件",
        owner_id=author.user.id,
        valid_to=(utcnow() + timedelta(days=10)).isoformat(),
    )
    await run(kb.app)
    successor = await people.make("qian.hua", role="author")
    new_end = utcnow() + timedelta(days=3)
    await patch(client, kb, publisher, item["id"], {"owner_id": successor.user.id, "valid_to": new_end.isoformat()})
    report = await run(kb.app)
    assert report["reassigned"] == 1 and report["due_moved"] == 1 and report["expiring_closed"] == 0
    [task] = await tasks(kb.app)
    assert task.assignee_id == successor.user.id and task.state == "open"
    assert task.due_at is not None and abs((task.due_at - new_end).total_seconds()) < 1
    # archived: no longer published, the reminder closes
    await kb.ok(publisher, item["id"], 1, "archive")
    assert (await run(kb.app))["expiring_closed"] == 1


async def test_batches_and_the_job(kb: Kb, author: Actor, publisher: Actor) -> None:
    past = (utcnow().date() - timedelta(days=1)).isoformat()
    ids = [
        (await kb.publish(publisher, title=f"电费缴纳 FAQ {n}", owner_id=author.user.id, review_due=past))["id"]
        for n in range(5)
    ]
    first = await run(kb.app, batch=2)
    assert first["review_due_created"] == 2 and first["more"]
    async with kb.app.state.sessionmaker() as s:  # the rest through the worker, as the job
        enqueue(s, REMINDER_JOB, {}, created_by=SCHEDULER)
        await s.commit()
    await Worker(kb.app.state.sessionmaker, kb.app.state.settings, services=kb.app.state.services).drain()
    async with kb.app.state.sessionmaker() as s:
        count = await s.scalar(select(func.count()).select_from(Task).where(Task.kind == "review_due"))
        assert count == len(ids)
        job = await s.scalar(select(Job).where(Job.kind == REMINDER_JOB, Job.status == "done"))
        assert job is not None and job.result["review_due_created"] == 3
        nxt = await s.scalar(select(Job).where(Job.kind == REMINDER_JOB, Job.status == "pending"))
        assert nxt is not None and nxt.run_after > utcnow() + timedelta(hours=23)  # the next run, a day later
        assert not await schedule_reminders(s, 24)  # one queued is enough
        assert not await schedule_reminders(s, 0)  # 0 turns it off
        item = await s.get(Item, ids[0])
        assert item is not None
