"""Index jobs run in batches: every writer's `search.index_item` jobs are claimed up to 500 at a
time, coalesced by item and written to the engine (real Tantivy) in one commit, on SQLite and
PostgreSQL; failures of the batch, of one document or of one payload each end as they should."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.core.db import utcnow
from app.identity.principal import Principal
from app.identity.service import load_principal
from app.knowledge import service as knowledge
from app.knowledge import workflow
from app.knowledge.models import Item
from app.knowledge.schemas import DraftUpdate, ItemCreate, ItemUpdate, TransitionIn
from app.search.backends import es_bodies
from app.search.jobs import INDEX_BATCH, index_outcomes
from app.taxonomy import service as taxonomy
from app.taxonomy.models import ItemType
from app.taxonomy.schemas import ItemTypeCreate
from app.workers.models import Job
from app.workers.outbox import (
    HANDLERS,
    BatchContext,
    BatchHandler,
    BatchOutcome,
    JobContext,
    PermanentJobError,
    enqueue,
)
from app.workers.worker import Worker
from tests.conftest import Actor, Database

INDEX_JOB = "search.index_item"
ITEM_TYPE = "hotline_faq"  # published without review: one call per version


def worker(app: Any, **kw: Any) -> Worker:
    return Worker(app.state.sessionmaker, app.state.settings, services=app.state.services, **kw)


async def principal_of(app: Any, actor: Actor) -> Principal:
    claims = app.state.token_codec.decode(actor.headers["Authorization"].split()[1], "access")
    async with app.state.sessionmaker() as s:
        return await load_principal(s, claims)


async def publish_items(app: Any, actor: Principal, n: int, *, versions: int = 1) -> list[int]:
    """`n` items through the real writers: each published version and each item update queues one
    index job (`versions` published versions, then a visibility change: versions + 1 jobs per item)."""
    ids: list[int] = []
    async with app.state.sessionmaker() as s:
        if await s.get(ItemType, ITEM_TYPE) is None:
            await taxonomy.create_item_type(
                s, actor, ItemTypeCreate(code=ITEM_TYPE, name="热线FAQ", review_required=False)
            )
            await s.commit()
    publish = TransitionIn()
    async with app.state.sessionmaker() as s:
        for k in range(n):
            item, version = await knowledge.create_item(
                s,
                actor,
                ItemCreate(
                    item_type=ITEM_TYPE,
                    title=f"宽带无法上网怎么办 B{k:03d}",
                    question="家里宽带断网了怎么处理",
                    body=f"请先重启光猫，LOS灯红色闪烁请报修。工单号 GD-{k:05d}",
                    visibility="internal",
                ),
            )
            await workflow.transition(s, actor, item, version, "publish", publish)
            for number in range(2, versions + 1):
                draft = await knowledge.save_draft(
                    s,
                    actor,
                    item,
                    DraftUpdate(
                        title=f"携号转网办理条件 第{number}版 B{k:03d}",
                        question="携号转网需要什么条件",
                        body=f"携号转网需在网满 90 天且无欠费，發送短信 CXXZ 到 10086 查询。版本 {number}",
                    ),
                )
                await workflow.transition(s, actor, item, draft, "publish", publish)
            await knowledge.update_item(s, actor, item, ItemUpdate(visibility="public"))
            ids.append(item.id)
    return ids


async def jobs_of(app: Any, kind: str = INDEX_JOB) -> list[Job]:
    async with app.state.sessionmaker() as s:
        return list((await s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))).all())


async def search(client: httpx.AsyncClient, actor: Actor, q: str, limit: int = 50) -> dict[str, Any]:
    r = await client.get("/api/v1/search", params={"q": q, "limit": limit}, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_jobs_of_one_item_are_coalesced_into_one_commit(
    client: httpx.AsyncClient, admin: Actor, app: Any
) -> None:
    actor = await principal_of(app, admin)
    ids = await publish_items(app, actor, 100, versions=2)
    queued = await jobs_of(app)
    assert len(queued) == 300 and {j.status for j in queued} == {"pending"}  # 3 writers' jobs per item
    backend = app.state.services["search"]
    commits = backend.commits

    assert await worker(app).drain() >= 300

    assert backend.commits - commits <= 2  # 300 jobs: one build, one upsert, one Tantivy commit
    done = await jobs_of(app)
    assert {j.status for j in done} == {"done"} and all(j.attempts == 1 for j in done)
    assert {j.result["coalesced"] for j in done} == {3} and {j.result["batch_items"] for j in done} == {100}
    assert await backend.indexed_versions() == {item_id: 2 for item_id in ids}  # the newest published version
    newest = await search(client, admin, "携号转网")
    assert newest["total"] == 100 and {hit["item_id"] for hit in newest["items"]} <= set(ids)
    assert (await search(client, admin, "光猫"))["total"] == 0  # only version 1 said that


async def test_a_bad_payload_fails_alone_and_a_vanished_item_is_removed(
    client: httpx.AsyncClient, admin: Actor, app: Any
) -> None:
    actor = await principal_of(app, admin)
    ids = await publish_items(app, actor, 3)
    backend = app.state.services["search"]
    await worker(app).drain()
    async with app.state.sessionmaker() as s:  # drafts deleted after their job was queued, bad payloads
        gone = enqueue(s, INDEX_JOB, {"item_id": 987654})
        bad = [enqueue(s, INDEX_JOB, p) for p in ({"item_id": "12"}, {}, {"item_id": True})]
        item = await s.get(Item, ids[0])
        assert item is not None
        unpublish = await workflow.transition(
            s, actor, item, await knowledge.published_version(s, item), "unpublish", TransitionIn(reason="套餐已下线")
        )
        assert unpublish.state != "published"
        fresh = [enqueue(s, INDEX_JOB, {"item_id": i}) for i in ids[1:]]
        await s.commit()

    await worker(app).drain()

    async with app.state.sessionmaker() as s:
        for job in bad:
            row = await s.get(Job, job.id)
            assert row is not None and (row.status, row.attempts) == ("failed", 1)
            assert "integer item_id" in (row.last_error or "")
        for job in [gone, *fresh]:
            row = await s.get(Job, job.id)
            assert row is not None and row.status == "done", row.last_error
        assert (await s.get(Job, gone.id)).result["removed"] == 1  # type: ignore[union-attr]
    assert set(await backend.indexed_versions()) == set(ids[1:])
    assert ids[0] not in {hit["item_id"] for hit in (await search(client, admin, "宽带"))["items"]}


async def test_engine_down_sends_the_whole_batch_back_then_it_succeeds(
    client: httpx.AsyncClient, admin: Actor, app: Any
) -> None:
    actor = await principal_of(app, admin)
    ids = await publish_items(app, actor, 40)
    app.state.settings.job_backoff_seconds = 30
    backend = app.state.services["search"]
    await backend.close()  # the engine is gone
    try:
        assert await worker(app).run_once() == 80
        jobs = await jobs_of(app)
        assert {(j.status, j.attempts) for j in jobs} == {("pending", 1)}
        assert all("SearchUnavailable" in (j.last_error or "") for j in jobs)
        assert all(j.run_after > utcnow() + timedelta(seconds=20) for j in jobs)  # backed off, not hammered
        assert await worker(app).run_once() == 0
    finally:
        await backend.open()  # it is back
    async with app.state.sessionmaker() as s:  # pretend the backoff passed
        await s.execute(update(Job).values(run_after=utcnow()))
        await s.commit()
    assert await worker(app).drain() == 80
    jobs = await jobs_of(app)
    assert {(j.status, j.attempts, j.last_error) for j in jobs} == {("done", 2, None)}
    assert set(await backend.indexed_versions()) == set(ids)
    assert (await search(client, admin, "光猫"))["total"] == 40


async def test_engine_down_until_max_attempts_parks_every_job(admin: Actor, app: Any) -> None:
    actor = await principal_of(app, admin)
    await publish_items(app, actor, 5)
    async with app.state.sessionmaker() as s:
        await s.execute(update(Job).values(max_attempts=2))
        await s.commit()
    backend = app.state.services["search"]
    await backend.close()
    try:
        await worker(app).drain()  # backoff is 0 in the tests: both attempts run now
    finally:
        await backend.open()
    jobs = await jobs_of(app)
    assert {(j.status, j.attempts) for j in jobs} == {("failed", 2)} and len(jobs) == 10
    assert all(j.finished_at is not None and "not open" in (j.last_error or "") for j in jobs)


async def test_other_kinds_keep_their_turn_during_an_index_flood(admin: Actor, app: Any) -> None:
    actor = await principal_of(app, admin)
    ids = await publish_items(app, actor, 20)
    async with app.state.sessionmaker() as s:  # a bulk import's flood, queued before the other work
        for k in range(2960):
            enqueue(s, INDEX_JOB, {"item_id": ids[k % len(ids)]})
        await s.commit()
        other = [enqueue(s, "t.extract", {"attachment": n}) for n in range(3)]
        await s.commit()
    seen: list[tuple[int, int]] = []

    async def extract(ctx: JobContext) -> dict[str, Any]:
        waiting = await ctx.session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == INDEX_JOB, Job.status == "pending")
        )
        seen.append((ctx.payload["attachment"], int(waiting or 0)))
        return {"chars": 1200}

    w = worker(app, handlers={**HANDLERS, "t.extract": extract})
    assert await w.drain() == 3000 + 3
    assert sorted(n for n, _ in seen) == [0, 1, 2]
    assert all(waiting >= 3000 - INDEX_BATCH for _, waiting in seen)  # ran in the first round, not after the flood
    assert {j.status for j in await jobs_of(app)} == {"done"}
    assert {j.status for j in await jobs_of(app, "t.extract")} == {"done"} and len(other) == 3
    assert set(await app.state.services["search"].indexed_versions()) == set(ids)


async def test_without_batch_handlers_index_jobs_run_one_by_one(admin: Actor, app: Any) -> None:
    actor = await principal_of(app, admin)
    ids = await publish_items(app, actor, 4)
    backend = app.state.services["search"]
    commits = backend.commits
    assert await worker(app, batch_handlers={}).drain() == 8
    assert backend.commits - commits == 8  # the old path: a commit per job
    assert {j.status for j in await jobs_of(app)} == {"done"}
    assert set(await backend.indexed_versions()) == set(ids)


async def test_a_batch_commits_its_writes_with_its_done_jobs_only(app: Any) -> None:
    """The worker's contract with a batch handler: per-job outcomes, in the handler's transaction."""
    from app.identity.models import Department

    async def handle(ctx: BatchContext) -> BatchOutcome:
        ctx.session.add(Department(name="话务一部", path="/"))
        out: BatchOutcome = {}
        for job in ctx.jobs:
            n = job.payload["n"]
            out[job.job_id] = (
                PermanentJobError("工单不存在")
                if n == 0
                else ConnectionError("Tika 暂时不可用")
                if n == 1
                else {"n": n}
            )
        return out

    async with app.state.sessionmaker() as s:
        jobs = [enqueue(s, "t.batch", {"n": n}) for n in range(5)]
        await s.commit()
    app.state.settings.job_backoff_seconds = 30
    w = worker(app, handlers={}, batch_handlers={"t.batch": BatchHandler(handle, max_batch=3)})
    assert await w.run_once() == 3  # max_batch
    assert await w.run_once() == 2
    rows = {j.id: j for j in await jobs_of(app, "t.batch")}
    assert (rows[jobs[0].id].status, rows[jobs[0].id].last_error) == ("failed", "PermanentJobError: 工单不存在")
    assert rows[jobs[1].id].status == "pending" and "Tika" in (rows[jobs[1].id].last_error or "")
    assert [(rows[j.id].status, rows[j.id].result) for j in jobs[2:]] == [("done", {"n": n}) for n in (2, 3, 4)]
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Department).where(Department.name == "话务一部")) == 2

    async def broken(ctx: BatchContext) -> BatchOutcome:
        ctx.session.add(Department(name="话务二部", path="/"))
        raise ConnectionError("数据库连接中断")

    async with app.state.sessionmaker() as s:
        more = [enqueue(s, "t.batch", {"n": n}) for n in range(2)]
        await s.commit()
    await worker(app, handlers={}, batch_handlers={"t.batch": BatchHandler(broken, 10)}).run_once()
    rows = {j.id: j for j in await jobs_of(app, "t.batch")}
    assert all((rows[j.id].status, rows[j.id].attempts) == ("pending", 1) for j in more)
    async with app.state.sessionmaker() as s:  # nothing of the failed batch was written
        assert await s.scalar(select(func.count()).select_from(Department).where(Department.name == "话务二部")) == 0


def test_elasticsearch_per_document_errors_fail_only_their_items_jobs() -> None:
    """What Elasticsearch's bulk answers per document, through the backend's outcome mapping, to job outcomes:
    a rejected document retries its item's jobs; a superseded write (409) and a success are done."""
    answers = [
        (True, {"index": {"_id": es_bodies.document_id(11), "status": 201, "result": "created"}}),
        (
            False,
            {
                "index": {
                    "_id": es_bodies.document_id(12),
                    "status": 400,
                    "error": {
                        "type": "document_parsing_exception",
                        "reason": "[attrs] failed to parse field of type keyword",
                        "caused_by": {"type": "illegal_argument_exception", "reason": "繁體欄位長度超限"},
                    },
                }
            },
        ),
        (
            False,
            {
                "index": {
                    "_id": es_bodies.document_id(13),
                    "status": 409,
                    "error": {"type": "version_conflict_engine_exception", "reason": "current version [5] is higher"},
                }
            },
        ),
    ]
    by_doc = {doc_id: error for doc_id, _, error in (es_bodies.bulk_item_outcome(ok, item) for ok, item in answers)}
    errors = {item_id: by_doc[es_bodies.document_id(item_id)] for item_id in (11, 12, 13)}
    out = index_outcomes({11: [1, 2], 12: [3, 4, 5], 13: [6], 14: [7]}, errors, removed={14}, feed_events={11: 2})
    for job_id in (3, 4, 5):
        assert isinstance(out[job_id], RuntimeError) and "document_parsing_exception" in str(out[job_id])
        assert "item 12" in str(out[job_id])
    assert (
        out[1]
        == out[2]
        == {
            "item_id": 11,
            "indexed": 1,
            "removed": 0,
            "feed_events": 2,
            "coalesced": 2,
            "batch_jobs": 7,
            "batch_items": 4,
        }
    )
    assert out[6]["indexed"] == 1 and out[7]["removed"] == 1  # type: ignore[index]


async def test_workers_sharing_an_index_flood_never_run_a_job_twice(admin: Actor, app: Any, db: Database) -> None:
    if db.kind != "postgresql":
        pytest.skip("several workers share a job table only on PostgreSQL (SKIP LOCKED); SQLite runs one")
    actor = await principal_of(app, admin)
    ids = await publish_items(app, actor, 30)
    async with app.state.sessionmaker() as s:
        for k in range(1440):
            enqueue(s, INDEX_JOB, {"item_id": ids[k % len(ids)]})
        await s.commit()
    workers = [worker(app, worker_id=f"w{n}") for n in range(3)]
    ran = await asyncio.gather(*(w.drain() for w in workers))
    assert sum(ran) == 1500  # each job claimed once
    jobs = await jobs_of(app)
    assert {(j.status, j.attempts) for j in jobs} == {("done", 1)} and len(jobs) == 1500
    assert set(await app.state.services["search"].indexed_versions()) == set(ids)
