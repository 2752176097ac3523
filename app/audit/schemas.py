from __future__ import annotations

from datetime import datetime
from typing import Any

from app.core.schemas import Out


class AuditOut(Out):
    id: int
    at: datetime
    actor: str
    actor_name: str
    action: str
    outcome: str
    target_type: str | None
    target_id: str | None
    request_id: str | None
    summary: dict[str, Any]
