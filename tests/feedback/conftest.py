"""The feedback tests reuse the knowledge fixtures: a 知识分类 tree, staff of every role, `Kb`."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Actor
from tests.knowledge.conftest import Kb, agent, author, kb, publisher, reviewer

__all__ = ["Kb", "agent", "author", "kb", "publisher", "report", "reviewer", "task_act"]


async def report(
    client: httpx.AsyncClient,
    actor: Actor,
    item_id: int,
    category: str = "outdated",
    comment: str = "资费已经调整，页面还是旧价格",
    **extra: Any,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/items/{item_id}/error-reports",
        json={"category": category, "comment": comment, **extra},
        headers=actor.headers,
    )


async def task_act(
    client: httpx.AsyncClient,
    actor: Actor,
    task_id: int,
    action: str,
    body: dict[str, Any] | None = None,
    if_match: str | None = None,
) -> httpx.Response:
    headers = dict(actor.headers)
    if if_match is not None:
        headers["If-Match"] = if_match
    return await client.post(f"/api/v1/tasks/{task_id}/{action}", json=body, headers=headers)
