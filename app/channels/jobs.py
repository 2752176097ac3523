"""The change feed's scheduled sweep: validity boundaries that passed, and the retention."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.changes import SWEEP_BATCH, due_items, purge, reconcile
from app.core.db import utcnow
from app.workers.outbox import JobContext, handler, schedule_recurring

SWEEP_JOB = "channels.sweep"


async def schedule_sweep(session: AsyncSession, every_seconds: float, *, besides: int | None = None) -> bool:
    """Keep one recurring sweep queued (`KB_CHANNEL_SWEEP_SECONDS`; 0 turns it off)."""
    return await schedule_recurring(session, SWEEP_JOB, every_seconds, besides=besides)


@handler(SWEEP_JOB)
async def sweep(ctx: JobContext) -> dict[str, Any]:
    """Emit `expired` for items whose valid_to passed and `published` for those whose valid_from
    came (a batch per run; a full batch runs again at once), then purge events past the retention."""
    settings = ctx.services.get("settings")
    now = utcnow()
    ids = await due_items(ctx.session, now)
    events = await reconcile(ctx.session, ids)
    floor = await purge(ctx.session, settings.changes_retention_days if settings is not None else 30, now)
    report: dict[str, Any] = {"items": len(ids), "events": len(events), "floor": floor}
    if settings is not None:
        every = settings.channel_sweep_seconds
        if every > 0 and len(ids) >= SWEEP_BATCH:  # more are due: go on in a second
            every = min(every, 1.0)
        report["next_scheduled"] = await schedule_sweep(ctx.session, every, besides=ctx.job_id)
    return report
