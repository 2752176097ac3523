from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from app.audit.service import record
from app.core.db import get_or_404, utcnow
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, Conflict
from app.core.pagination import Page, Paging, paginate_by_id
from app.core.schemas import Id
from app.identity.deps import CurrentPrincipal, Require, deny
from app.workers.models import Job
from app.workers.schemas import JobOut

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=PROBLEMS)

JobsAdmin = Require("jobs:manage")


@router.get("", response_model=Page[JobOut])
async def list_jobs(
    session: DbSession,
    _: JobsAdmin,
    page: Paging,
    status: Literal["pending", "running", "done", "failed"] | None = None,
    kind: Annotated[str | None, Query(max_length=80)] = None,
) -> Page[JobOut]:
    stmt = select(Job)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    rows, nxt = await paginate_by_id(session, stmt, Job.id, page)
    return Page(items=[JobOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(request: Request, session: DbSession, principal: CurrentPrincipal, job_id: Id) -> Job:
    """Job administrators see every job; anyone sees the jobs they started (reindex, import)."""
    if principal.can("jobs:manage"):
        return await get_or_404(session, Job, job_id, "job")
    job = await session.get(Job, job_id)
    if job is None or job.created_by != principal.actor:
        raise await deny(request, principal, "jobs:manage", "job", job_id)
    return job


@router.post("/{job_id}/retry", response_model=JobOut)
async def retry_job(session: DbSession, actor: JobsAdmin, job_id: Id) -> Job:
    """Put a failed job back in the queue with a fresh set of attempts."""
    job = await get_or_404(session, Job, job_id, "job")
    if job.status != "failed":
        raise Conflict(f"Only failed jobs can be retried; this one is {job.status}", code="job_not_failed")
    job.status, job.attempts, job.run_after, job.finished_at = "pending", 0, utcnow(), None
    record(session, actor, "job.retry", "job", job.id, kind=job.kind, last_error=job.last_error)
    await session.commit()
    return job
