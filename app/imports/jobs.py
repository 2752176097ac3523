"""The worker's side of an import (job `imports.run`), of a large export (`imports.export`) and the
exports' retention (`imports.expire_exports`, recurring)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.imports import export
from app.imports.engine import ImportRun, JobFailed
from app.imports.service import RUN_ATTEMPTS
from app.workers.outbox import JobContext, PermanentJobError, handler, schedule_recurring


@handler("imports.run")
async def run_import(ctx: JobContext) -> dict[str, Any]:
    import_id = ctx.payload.get("import_id")
    if not isinstance(import_id, int):
        raise PermanentJobError("payload needs an integer import_id")
    run = ImportRun(ctx.sessionmaker, ctx.services["settings"], import_id, ctx.services, progress=ctx.report_progress)
    try:
        return await run.run()
    except Exception as e:  # retried from the last committed batch; the last attempt fails the import
        if ctx.attempt >= RUN_ATTEMPTS:
            await run.finish_failed(
                JobFailed(
                    "internal_error",
                    f"the import stopped after {ctx.attempt} attempts: {type(e).__name__}: {str(e)[:500]}",
                )
            )
        raise


@handler(export.EXPORT_JOB)
async def run_export(ctx: JobContext) -> dict[str, Any]:
    export_id = ctx.payload.get("export_id")
    if not isinstance(export_id, int):
        raise PermanentJobError("payload needs an integer export_id")
    readers = ctx.payload.get("readers")
    if readers is not None and not (isinstance(readers, list) and all(isinstance(r, str) for r in readers)):
        raise PermanentJobError("payload readers must be a list of ACL subjects or null")
    return await export.run_job(
        ctx.sessionmaker,
        ctx.services["settings"],
        export_id,
        readers=readers,
        progress=ctx.report_progress,
        last_attempt=ctx.attempt >= export.EXPORT_ATTEMPTS,
    )


EXPIRE_EVERY_SECONDS = 3600.0


async def schedule_expiry(session: AsyncSession, retention_hours: float, *, besides: int | None = None) -> bool:
    """Keep one hourly retention run queued while `KB_EXPORT_RETENTION_HOURS` is set."""
    every = min(EXPIRE_EVERY_SECONDS, retention_hours * 3600 / 4) if retention_hours > 0 else 0
    return await schedule_recurring(session, export.EXPIRE_JOB, every, besides=besides)


@handler(export.EXPIRE_JOB)
async def expire_exports(ctx: JobContext) -> dict[str, Any]:
    settings = ctx.services["settings"]
    report: dict[str, Any] = await export.expire(ctx.session, settings)
    report["next_scheduled"] = await schedule_expiry(ctx.session, settings.export_retention_hours, besides=ctx.job_id)
    return report
