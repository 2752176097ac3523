"""Writing jobs. A job row joins the caller's transaction, so the change and the work it
needs commit together or not at all (DESIGN.md: the outbox)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.workers.models import Job


class PermanentJobError(Exception):
    """The job can never succeed (bad payload, deleted target): park it without retrying."""


@dataclass
class JobContext:
    job_id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    session: AsyncSession  # the handler's transaction; the worker commits it with the job's state
    sessionmaker: async_sessionmaker[AsyncSession]
    services: dict[str, Any]  # shared outside systems: "search", "extractor", "blobs", "settings"

    async def report_progress(self, **progress: Any) -> None:
        """Visible at once to GET /jobs/{id}, independent of the handler's transaction. Renews the
        lease too: a long job that reports progress is not taken for a crashed worker's."""
        async with self.sessionmaker() as s:
            job = await s.get(Job, self.job_id)
            if job is not None:
                job.progress = {**job.progress, **progress}
                if job.status == "running":
                    job.locked_at = utcnow()
                await s.commit()


Handler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]
HANDLERS: dict[str, Handler] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


@dataclass
class BatchJob:
    job_id: int
    payload: dict[str, Any]
    attempt: int


@dataclass
class BatchContext:
    """Many jobs of one kind run in one transaction: the handler's writes and every job's state
    commit together (the worker commits)."""

    kind: str
    jobs: list[BatchJob]
    session: AsyncSession
    sessionmaker: async_sessionmaker[AsyncSession]
    services: dict[str, Any]


# job id -> its result (done) or the exception it failed with: PermanentJobError parks it, any other
# is retried with backoff. A job left out is done with an empty result. An exception raised by the
# handler fails the whole batch (every job retried, nothing written).
BatchOutcome = dict[int, dict[str, Any] | Exception]
BatchHandlerFn = Callable[[BatchContext], Awaitable[BatchOutcome]]


@dataclass(frozen=True)
class BatchHandler:
    fn: BatchHandlerFn
    max_batch: int


BATCH_HANDLERS: dict[str, BatchHandler] = {}


def batch_handler(kind: str, *, max_batch: int = 500) -> Callable[[BatchHandlerFn], BatchHandlerFn]:
    """Jobs of `kind` are claimed and run up to `max_batch` at a time. Keep a single-job `@handler`
    of the same kind too: a worker built without batch handlers (or the bench's baseline) uses it."""

    def register(fn: BatchHandlerFn) -> BatchHandlerFn:
        BATCH_HANDLERS[kind] = BatchHandler(fn, max_batch)
        return fn

    return register


def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_after: datetime | None = None,
    max_attempts: int | None = None,
    created_by: str | None = None,
) -> Job:
    job = Job(
        kind=kind,
        payload=payload or {},
        run_after=run_after or utcnow(),
        created_by=created_by,
    )
    if max_attempts is not None:
        job.max_attempts = max_attempts
    session.add(job)
    return job


async def enqueue_many(
    session: AsyncSession, kind: str, payloads: list[dict[str, Any]], *, created_by: str | None = None
) -> None:
    """Many jobs of one kind in one INSERT (bulk writers: an import batch queues an index job per item)."""
    if payloads:
        now = utcnow()
        await session.execute(
            insert(Job.__table__),
            [{"kind": kind, "payload": p, "run_after": now, "created_by": created_by} for p in payloads],
        )


SCHEDULER = "scheduler"  # created_by of recurring jobs


async def schedule_recurring(
    session: AsyncSession, kind: str, every_seconds: float, *, besides: int | None = None
) -> bool:
    """Keep one recurring `kind` job queued, `every_seconds` from now (0: off). `besides`: a running
    one that does not count (it is about to end and schedules the next)."""
    if every_seconds <= 0:
        return False
    stmt = select(Job.id).where(Job.kind == kind, Job.created_by == SCHEDULER, Job.status.in_(("pending", "running")))
    if besides is not None:
        stmt = stmt.where(Job.id != besides)
    if await session.scalar(stmt.limit(1)) is not None:
        return False
    enqueue(
        session, kind, {}, run_after=utcnow() + timedelta(seconds=every_seconds), created_by=SCHEDULER, max_attempts=3
    )
    return True
