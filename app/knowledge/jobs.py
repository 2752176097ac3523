from __future__ import annotations

from typing import Any

from app.knowledge.workflow import SCHEDULED_PUBLISH_JOB, publish_due
from app.workers.outbox import JobContext, PermanentJobError, handler


@handler(SCHEDULED_PUBLISH_JOB)
async def publish_scheduled(ctx: JobContext) -> dict[str, Any]:
    """Publish a version whose `publish_at` has come (定时发布)."""
    try:
        item_id, number, at = int(ctx.payload["item_id"]), int(ctx.payload["version"]), str(ctx.payload["publish_at"])
    except (KeyError, TypeError, ValueError) as e:
        raise PermanentJobError(f"bad payload: {e}")
    return await publish_due(ctx.session, item_id, number, at)
