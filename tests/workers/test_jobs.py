from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.db import utcnow
from app.workers.models import Job
from app.workers.outbox import JobContext, PermanentJobError, enqueue
from app.workers.worker import Worker, backoff_delay
from tests.conftest import Actor, Database, assert_problem


def make_worker(app: Any, handlers: dict[str, Any], worker_id: str | None = None) -> Worker:
    return Worker(app.state.sessionmaker, app.state.settings, handlers=handlers, worker_id=worker_id)


async def add_job(app: Any, kind: str, payload: dict[str, Any] | None = None, **kw: Any) -> int:
    async with app.state.sessionmaker() as s:
        job = enqueue(s, kind, payload or {}, **kw)
        await s.commit()
        return job.id


async def get_job(app: Any, job_id: int) -> Job:
    async with app.state.sessionmaker() as s:
        job = await s.get(Job, job_id)
        assert job is not None
        return job


async def test_job_commits_with_the_change_or_not_at_all(app: Any) -> None:
    async with app.state.sessionmaker() as s:
        enqueue(s, "search.index_item", {"item_id": 1})
        await s.rollback()  # the change failed: its job must vanish with it
    async with app.state.sessionmaker() as s:
        assert (await s.scalars(select(Job))).all() == []


async def test_successful_job_is_done_with_result(app: Any) -> None:
    seen: list[dict[str, Any]] = []

    async def ok(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx.payload)
        await ctx.report_progress(done=1, total=1)
        return {"indexed": 1}

    job_id = await add_job(app, "t.ok", {"item_id": 7})
    assert await make_worker(app, {"t.ok": ok}).drain() == 1
    job = await get_job(app, job_id)
    assert (job.status, job.attempts, job.result, job.progress) == ("done", 1, {"indexed": 1}, {"done": 1, "total": 1})
    assert seen == [{"item_id": 7}]


async def test_failing_job_is_retried_with_backoff_then_parked(app: Any) -> None:
    calls = 0

    async def flaky(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("Tika 暂时不可用")

    app.state.settings.job_backoff_seconds = 30
    job_id = await add_job(app, "t.flaky", max_attempts=3)
    worker = make_worker(app, {"t.flaky": flaky})
    assert await worker.run_once() == 1
    job = await get_job(app, job_id)
    assert job.status == "pending" and job.attempts == 1 and "Tika" in (job.last_error or "")
    assert job.run_after > utcnow() + timedelta(seconds=20)  # backed off, not hammered
    assert await worker.run_once() == 0  # not due yet
    for _ in range(2):  # pretend time passed
        async with app.state.sessionmaker() as s:
            j = await s.get(Job, job_id)
            j.run_after = utcnow()
            await s.commit()
        await worker.run_once()
    job = await get_job(app, job_id)
    assert (job.status, job.attempts, calls) == ("failed", 3, 3)
    assert job.finished_at is not None


def test_backoff_grows_exponentially() -> None:
    assert 1.8 <= backoff_delay(2, 1) <= 2.2
    assert 7.2 <= backoff_delay(2, 3) <= 8.8
    assert backoff_delay(2, 40) <= 3600 * 1.1


async def test_permanent_error_and_unknown_kind_are_parked_at_once(app: Any) -> None:
    async def bad(ctx: JobContext) -> None:
        raise PermanentJobError("item 99 no longer exists")

    a = await add_job(app, "t.bad")
    b = await add_job(app, "t.unknown-kind")
    await make_worker(app, {"t.bad": bad}).drain()
    ja, jb = await get_job(app, a), await get_job(app, b)
    assert (ja.status, ja.attempts) == ("failed", 1) and "99" in (ja.last_error or "")
    assert jb.status == "failed" and "no handler" in (jb.last_error or "")


async def test_handler_writes_roll_back_on_failure(app: Any) -> None:
    from app.identity.models import Department

    async def half(ctx: JobContext) -> None:
        ctx.session.add(Department(name="半写入", path="/"))
        await ctx.session.flush()
        raise ValueError("boom after a write")

    await add_job(app, "t.half", max_attempts=1)
    await make_worker(app, {"t.half": half}).drain()
    async with app.state.sessionmaker() as s:
        assert (await s.scalars(select(Department))).all() == []


async def test_crashed_workers_job_is_reclaimed_after_its_lease(app: Any) -> None:
    done: list[int] = []

    async def ok(ctx: JobContext) -> None:
        done.append(ctx.job_id)

    job_id = await add_job(app, "t.ok")
    crashed = make_worker(app, {"t.ok": ok}, worker_id="crashed")
    assert await crashed.claim() == [job_id]  # claimed, then the process died
    other = make_worker(app, {"t.ok": ok}, worker_id="other")
    assert await other.run_once() == 0  # still leased
    async with app.state.sessionmaker() as s:
        j = await s.get(Job, job_id)
        j.locked_at = utcnow() - timedelta(seconds=app.state.settings.job_lease_seconds + 1)
        await s.commit()
    assert await other.run_once() == 1
    assert done == [job_id] and (await get_job(app, job_id)).status == "done"


async def test_two_workers_never_run_the_same_job(app: Any, db: Database) -> None:
    if db.kind != "postgresql":
        pytest.skip("several workers share a job table only on PostgreSQL (SKIP LOCKED); SQLite runs one")
    runs: dict[int, list[str]] = {}

    def handler_for(name: str) -> Any:
        async def h(ctx: JobContext) -> None:
            runs.setdefault(ctx.job_id, []).append(name)
            await asyncio.sleep(0.002)

        return h

    async with app.state.sessionmaker() as s:
        for i in range(120):
            enqueue(s, "t.race", {"n": i})
        await s.commit()
    workers = [make_worker(app, {"t.race": handler_for(f"w{i}")}, worker_id=f"w{i}") for i in range(4)]
    await asyncio.gather(*(w.drain() for w in workers))
    assert len(runs) == 120
    assert all(len(v) == 1 for v in runs.values()), {k: v for k, v in runs.items() if len(v) > 1}
    assert len({w for v in runs.values() for w in v}) > 1  # the work really was shared


async def test_jobs_api_lists_and_retries(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    async def bad(ctx: JobContext) -> None:
        raise PermanentJobError("文件已损坏")

    job_id = await add_job(app, "t.bad")
    await make_worker(app, {"t.bad": bad}).drain()
    r = await client.get("/api/v1/jobs", params={"status": "failed"}, headers=admin.headers)
    assert [j["id"] for j in r.json()["items"]] == [job_id]
    assert r.json()["items"][0]["last_error"].endswith("文件已损坏")
    r = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin.headers)
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert_problem(await client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin.headers), 409, "job_not_failed")
    assert_problem(await client.get("/api/v1/jobs/999999", headers=admin.headers), 404, "job_not_found")
    audit = await client.get("/api/v1/audit", params={"action": "job.retry"}, headers=admin.headers)
    assert audit.json()["items"][0]["target_id"] == str(job_id)
