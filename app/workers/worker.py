"""Claiming and running jobs. Several workers may share one PostgreSQL job table
(`FOR UPDATE SKIP LOCKED`); on SQLite one worker runs (SQLite serializes writers).

A round (`run_once`) claims up to `limit` due jobs of the single-job kinds and runs them one by one,
then, for each kind with a batch handler (`search.index_item`), claims up to its `max_batch` due
jobs and runs them together in one transaction. A flood of one batchable kind is eaten a batch per
round while every other kind keeps its share of each round; a batch is claimed just before it runs,
so its lease starts then."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import traceback
from contextlib import suppress
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.workers.models import Job, WorkerHeartbeat
from app.workers.outbox import (
    BATCH_HANDLERS,
    HANDLERS,
    BatchContext,
    BatchHandler,
    BatchJob,
    Handler,
    JobContext,
    PermanentJobError,
)

log = logging.getLogger("app.worker")

MAX_BACKOFF_SECONDS = 3600


def backoff_delay(base: float, attempt: int) -> float:
    delay = min(base * (2 ** max(attempt - 1, 0)), MAX_BACKOFF_SECONDS)
    return delay * random.uniform(0.9, 1.1)


class Worker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        services: dict[str, Any] | None = None,
        handlers: dict[str, Handler] | None = None,
        batch_handlers: dict[str, BatchHandler] | None = None,
        worker_id: str | None = None,
    ) -> None:
        """`batch_handlers={}` runs every kind through its single-job handler (the old path)."""
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.services = services if services is not None else {}
        self.handlers = handlers if handlers is not None else HANDLERS
        self.batch_handlers = batch_handlers if batch_handlers is not None else BATCH_HANDLERS
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"
        self.jobs_done = 0

    async def claim(self, limit: int = 10) -> list[int]:
        """Due jobs of the kinds run one by one (every kind without a batch handler)."""
        return await self._claim(limit, Job.kind.not_in(list(self.batch_handlers)) if self.batch_handlers else None)

    async def claim_batch(self, kind: str, limit: int | None = None) -> list[int]:
        """Due jobs of one batchable kind, up to its `max_batch`."""
        return await self._claim(limit or self.batch_handlers[kind].max_batch, Job.kind == kind)

    async def _claim(self, limit: int, only: ColumnElement[bool] | None) -> list[int]:
        now = utcnow()
        stale = now - timedelta(seconds=self.settings.job_lease_seconds)
        due = (
            select(Job.id)
            .where(
                or_(
                    (Job.status == "pending") & (Job.run_after <= now),
                    (Job.status == "running") & (Job.locked_at < stale),  # a crashed worker's job
                )
            )
            .order_by(Job.run_after, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered as nothing on SQLite
        )
        if only is not None:
            due = due.where(only)
        async with self.sessionmaker() as s:
            ids = list((await s.scalars(due)).all())
            if not ids:
                await s.rollback()
                return []
            await s.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    status="running", locked_by=self.worker_id, locked_at=now, attempts=Job.attempts + 1, updated_at=now
                )
            )
            await s.commit()
        return ids

    async def run_job(self, job_id: int) -> str:
        async with self.sessionmaker() as s:
            job = await s.get(Job, job_id)
            if job is None or job.locked_by != self.worker_id or job.status != "running":
                return "lost"
            kind, payload, attempt = job.kind, dict(job.payload), job.attempts
        fn = self.handlers.get(kind)
        error: str | None = None
        permanent = False
        result: dict[str, Any] | None = None
        if fn is None:
            error, permanent = f"no handler for job kind {kind!r}", True
        else:
            async with self.sessionmaker() as s:
                ctx = JobContext(job_id, kind, payload, attempt, s, self.sessionmaker, self.services)
                try:
                    result = await fn(ctx)
                    job = await s.get(Job, job_id)
                    if job is not None:
                        job.status, job.finished_at, job.last_error = "done", utcnow(), None
                        job.locked_by = None
                        job.result = result or {}
                    await s.commit()
                    self.jobs_done += 1
                    return "done"
                except PermanentJobError as e:
                    await s.rollback()
                    error, permanent = f"{type(e).__name__}: {e}", True
                except Exception as e:  # a handler's failure must never stop the worker
                    await s.rollback()
                    error = f"{type(e).__name__}: {e}"
                    log.warning(
                        "job failed",
                        extra={
                            "job_id": job_id,
                            "kind": kind,
                            "attempt": attempt,
                            "trace": traceback.format_exc(limit=5),
                        },
                    )
        return await self._fail(job_id, error or "unknown error", permanent)

    async def run_batch(self, kind: str, job_ids: list[int]) -> dict[str, int]:
        """Run claimed jobs of a batchable kind in one transaction. Returns how many ended done,
        retry, failed (parked) and lost (no longer ours)."""
        async with self.sessionmaker() as s:
            rows = (
                await s.execute(
                    select(Job.id, Job.payload, Job.attempts)
                    .where(Job.id.in_(job_ids), Job.locked_by == self.worker_id, Job.status == "running")
                    .order_by(Job.id)
                )
            ).all()
        jobs = [BatchJob(job_id, dict(payload or {}), attempts) for job_id, payload, attempts in rows]
        counts = {"done": 0, "retry": 0, "failed": 0, "lost": len(job_ids) - len(jobs)}
        if not jobs:
            return counts
        failures: dict[int, tuple[str, bool]] = {}
        done: dict[int, dict[str, Any]] = {}
        async with self.sessionmaker() as s:
            ctx = BatchContext(kind, jobs, s, self.sessionmaker, self.services)
            try:
                outcome = await self.batch_handlers[kind].fn(ctx)
                for job in jobs:
                    out = outcome.get(job.job_id)
                    if isinstance(out, Exception):
                        failures[job.job_id] = (f"{type(out).__name__}: {out}", isinstance(out, PermanentJobError))
                    else:
                        done[job.job_id] = out or {}
                now = utcnow()
                if done:  # marked done in the handler's transaction: its writes and the jobs' state together
                    for row in (await s.scalars(select(Job).where(Job.id.in_(list(done))))).all():
                        row.status, row.finished_at, row.last_error = "done", now, None
                        row.locked_by, row.result = None, done[row.id]
                await s.commit()
            except Exception as e:  # the batch as a whole (engine down, database error): every job retries
                await s.rollback()
                error = f"{type(e).__name__}: {e}"
                log.warning(
                    "job batch failed", extra={"kind": kind, "jobs": len(jobs), "trace": traceback.format_exc(limit=5)}
                )
                failures = {job.job_id: (error, isinstance(e, PermanentJobError)) for job in jobs}
                done = {}
        self.jobs_done += len(done)
        counts["done"] = len(done)
        for state in (await self._fail_many(failures)).values():
            counts[state] += 1
        return counts

    async def _fail(self, job_id: int, error: str, permanent: bool) -> str:
        return (await self._fail_many({job_id: (error, permanent)})).get(job_id, "lost")

    async def _fail_many(self, failures: dict[int, tuple[str, bool]]) -> dict[int, str]:
        """job id -> (error, permanent): retried with backoff, or parked as failed; returns their new state."""
        if not failures:
            return {}
        states: dict[int, str] = {job_id: "lost" for job_id in failures}
        async with self.sessionmaker() as s:
            for job in (await s.scalars(select(Job).where(Job.id.in_(list(failures))))).all():
                error, permanent = failures[job.id]
                job.last_error = error[:4000]
                job.locked_by = None
                if permanent or job.attempts >= job.max_attempts:
                    job.status, job.finished_at = "failed", utcnow()
                else:
                    job.status = "pending"
                    job.run_after = utcnow() + timedelta(
                        seconds=backoff_delay(self.settings.job_backoff_seconds, job.attempts)
                    )
                states[job.id] = "failed" if job.status == "failed" else "retry"
            await s.commit()
        return states

    async def run_once(self, limit: int = 10) -> int:
        """One round: up to `limit` single jobs, then one batch of each batchable kind."""
        ids = await self.claim(limit)
        for job_id in ids:
            await self.run_job(job_id)
        ran = len(ids)
        for kind in self.batch_handlers:
            batch = await self.claim_batch(kind)
            if batch:
                await self.run_batch(kind, batch)
            ran += len(batch)
        return ran

    async def drain(self, max_rounds: int = 1000) -> int:
        """Run due jobs until none is left (for CLI and tests; retries wait for their time)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            if not n:
                break
            total += n
        return total

    async def heartbeat(self) -> None:
        async with self.sessionmaker() as s:
            hb = await s.get(WorkerHeartbeat, self.worker_id)
            if hb is None:
                s.add(WorkerHeartbeat(worker_id=self.worker_id))
            else:
                hb.seen_at, hb.jobs_done = utcnow(), self.jobs_done
            await s.commit()

    async def run_forever(self, stop: asyncio.Event) -> None:
        log.info("worker started", extra={"worker_id": self.worker_id})
        last_beat = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if loop.time() - last_beat > 5:
                    await self.heartbeat()
                    last_beat = loop.time()
                n = await self.run_once()
            except Exception:  # database hiccup: keep the loop alive
                log.exception("worker loop error")
                n = 0
            if not n:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.worker_poll_seconds)
        async with self.sessionmaker() as s:
            hb = await s.get(WorkerHeartbeat, self.worker_id)
            if hb is not None:
                await s.delete(hb)
                await s.commit()
        log.info("worker stopped", extra={"worker_id": self.worker_id})
