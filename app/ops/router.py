from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest, multiprocess
from sqlalchemy import func, select, text

from app.core.db import utcnow
from app.core.errors import PROBLEMS, problem, problem_response
from app.ops.serving import MULTIPROC_ENV
from app.workers.models import Job, WorkerHeartbeat

router = APIRouter(tags=["operations"], responses=PROBLEMS)

JOBS = Gauge("kb_jobs", "Jobs by status", ["status"], multiprocess_mode="mostrecent")
WORKER_STALE = timedelta(seconds=30)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: problem_response("Not ready (problem details with each check)")})
async def readyz(request: Request) -> Any:
    """Ready for traffic: database reachable, migrations at head, a worker alive."""
    checks: dict[str, str] = {}
    try:
        async with request.app.state.sessionmaker() as s:
            await s.execute(text("SELECT 1"))
            checks["database"] = "ok"
            rev = await s.scalar(text("SELECT version_num FROM alembic_version"))
            head = request.app.state.migration_head
            checks["migrations"] = "ok" if rev == head else f"at {rev}, head is {head}"
            seen = await s.scalar(select(func.max(WorkerHeartbeat.seen_at)))
            checks["worker"] = "ok" if seen and utcnow() - seen < WORKER_STALE else "no worker heartbeat in 30 s"
    except Exception as e:  # the point of this endpoint is to report it
        checks.setdefault("database", f"unreachable: {type(e).__name__}")
    search = request.app.state.services.get("search")
    if search is not None:
        try:
            checks["search"] = "ok" if await search.health() else "index missing"
        except Exception as e:
            checks["search"] = f"unreachable: {type(e).__name__}"
    # The semantic leg is reported but never makes the service unready: keyword search works alone.
    semantic = request.app.state.services.get("semantic")
    detail = {"semantic_search": semantic.status()} if semantic is not None else {}
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks, **detail}
    return problem(503, "not_ready", "Not ready", "Some checks failed", checks=checks, **detail)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    try:
        async with request.app.state.sessionmaker() as s:
            counts = dict((await s.execute(select(Job.status, func.count()).group_by(Job.status))).all())
        for st in ("pending", "running", "done", "failed"):
            JOBS.labels(st).set(counts.get(st, 0))
    except Exception:
        pass  # metrics must answer even when the database does not
    if os.environ.get(MULTIPROC_ENV):  # `serve` with several processes: all of them, added up
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
