from __future__ import annotations

from typing import Any

from app.identity.service import purge_used_refresh_tokens
from app.workers.outbox import JobContext, handler


@handler("identity.purge_refresh_tokens")
async def purge_refresh_tokens(ctx: JobContext) -> dict[str, Any]:
    return {"deleted": await purge_used_refresh_tokens(ctx.session)}
