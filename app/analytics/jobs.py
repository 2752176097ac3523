"""The recurring rollup job (`KB_ANALYTICS_ROLLUP_SECONDS`, scheduled at start-up like the channel sweep)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.rollup import rollup
from app.workers.outbox import JobContext, handler, schedule_recurring

ROLLUP_JOB = "analytics.rollup"


async def schedule_rollup(session: AsyncSession, every_seconds: float, *, besides: int | None = None) -> bool:
    """Keep one recurring rollup queued (0 turns it off)."""
    return await schedule_recurring(session, ROLLUP_JOB, every_seconds, besides=besides)


@handler(ROLLUP_JOB)
async def run_rollup(ctx: JobContext) -> dict[str, Any]:
    """Fold the new search log rows and votes into the daily tables (its own transactions, a day or a
    batch of items each), then queue the next run."""
    report: dict[str, Any] = dict(await rollup(ctx.sessionmaker))
    settings = ctx.services.get("settings")
    if settings is not None:
        report["next_scheduled"] = await schedule_rollup(
            ctx.session, settings.analytics_rollup_seconds, besides=ctx.job_id
        )
    return report
