"""The recurring review-reminder job (`KB_REVIEW_REMINDER_HOURS`; app/feedback/reminders.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.feedback.reminders import run_reminders
from app.workers.outbox import JobContext, handler, schedule_recurring

REMINDER_JOB = "feedback.reminders"


async def schedule_reminders(
    session: AsyncSession, every_hours: float, *, besides: int | None = None, seconds: float | None = None
) -> bool:
    """Keep one recurring reminder job queued (0 hours turns it off)."""
    return await schedule_recurring(
        session, REMINDER_JOB, seconds if seconds is not None else every_hours * 3600, besides=besides
    )


@handler(REMINDER_JOB)
async def reminders(ctx: JobContext) -> dict[str, Any]:
    settings = ctx.services.get("settings")
    report = await run_reminders(ctx.session, warning_days=settings.expiry_warning_days if settings else 14)
    if settings is not None and settings.review_reminder_hours > 0:
        # a full batch: the rest follows in a second, in a transaction of its own
        report["next_scheduled"] = await schedule_reminders(
            ctx.session, settings.review_reminder_hours, besides=ctx.job_id, seconds=1.0 if report["more"] else None
        )
    return report
