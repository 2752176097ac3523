from __future__ import annotations

from datetime import datetime
from typing import Any

from app.core.schemas import Out


class JobOut(Out):
    id: int
    kind: str
    status: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    run_after: datetime
    locked_by: str | None
    finished_at: datetime | None
    last_error: str | None
    progress: dict[str, Any]
    result: dict[str, Any]
    created_by: str | None
    created_at: datetime
    updated_at: datetime
