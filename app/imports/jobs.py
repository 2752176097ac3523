"""The worker's side of an import (job `imports.run`)."""

from __future__ import annotations

from typing import Any

from app.imports.engine import ImportRun
from app.workers.outbox import JobContext, PermanentJobError, handler


@handler("imports.run")
async def run_import(ctx: JobContext) -> dict[str, Any]:
    import_id = ctx.payload.get("import_id")
    if not isinstance(import_id, int):
        raise PermanentJobError("payload needs an integer import_id")
    settings = ctx.services["settings"]
    return await ImportRun(ctx.sessionmaker, settings, import_id, ctx.services, progress=ctx.report_progress).run()
