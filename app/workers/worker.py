"""Claiming and running jobs. Several workers may share one PostgreSQL job table
(`FOR UPDATE SKIP LOCKED`); on SQLite one worker runs (SQLite serializes writers)."""

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

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.workers.models import Job, WorkerHeartbeat
from app.workers.outbox import HANDLERS, Handler, JobContext, PermanentJobError

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
        worker_id: str | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.services = services if services is not None else {}
        self.handlers = handlers if handlers is not None else HANDLERS
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"
        self.jobs_done = 0

    async def claim(self, limit: int = 10) -> list[int]:
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
        async with self.sessionmaker() as s:
            ids = list((await s.scalars(due)).all())
            if not ids:
                await s.rollback()
                return []
            await s.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(status="running", locked_by=self.worker_id, locked_at=now,
                        attempts=Job.attempts + 1, updated_at=now)
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
                    log.warning("job failed", extra={"job_id": job_id, "kind": kind, "attempt": attempt,
                                                     "trace": traceback.format_exc(limit=5)})
        return await self._fail(job_id, error or "unknown error", permanent)

    async def _fail(self, job_id: int, error: str, permanent: bool) -> str:
        async with self.sessionmaker() as s:
            job = await s.get(Job, job_id)
            if job is None:
                return "lost"
            job.last_error = error[:4000]
            job.locked_by = None
            if permanent or job.attempts >= job.max_attempts:
                job.status, job.finished_at = "failed", utcnow()
            else:
                job.status = "pending"
                job.run_after = utcnow() + timedelta(
                    seconds=backoff_delay(self.settings.job_backoff_seconds, job.attempts))
            state = job.status
            await s.commit()
        return "failed" if state == "failed" else "retry"

    async def run_once(self, limit: int = 10) -> int:
        ids = await self.claim(limit)
        for job_id in ids:
            await self.run_job(job_id)
        return len(ids)

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
