"""Every knowledge endpoint refuses anonymous callers (401) and callers without its permission (403)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import People, assert_problem
from tests.knowledge.conftest import Kb


def knowledge_routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            if "knowledge" in op.get("tags", []):
                out.append((method.upper(), path))
    return out


async def test_every_endpoint_needs_a_caller_and_a_permission(
    app: Any, kb: Kb, client: httpx.AsyncClient, people: People
) -> None:
    routes = knowledge_routes(app)
    assert len(routes) == 26, routes  # GET /items/{id}/similar (semantic search) is the 26th
    nobody = await people.make("no.perms", permissions=[])
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", "1", path)
        assert_problem(await client.request(method, url), 401)
        body = assert_problem(await client.request(method, url, headers=nobody.headers), 403, "permission_denied")
        assert body["required_permission"].startswith("knowledge:"), (method, path)


async def test_readers_cannot_write(kb: Kb, client: httpx.AsyncClient, people: People) -> None:
    # A pure reader: the agent role also proposes best-practice cases (tests/knowledge/test_cases.py).
    agent = await people.make("zhang.wei", permissions=["system:access", "module:knowledge", "knowledge:read"])
    writes = [
        ("POST", "/api/v1/items"),
        ("PATCH", "/api/v1/items/1"),
        ("PATCH", "/api/v1/items/1/draft"),
        ("DELETE", "/api/v1/items/1/draft"),
        ("DELETE", "/api/v1/items/1"),
        ("GET", "/api/v1/items/1/draft"),
        ("POST", "/api/v1/items/1/versions/1/restore"),
        ("GET", "/api/v1/reviews"),
        ("PUT", "/api/v1/items/1/acl"),
        ("GET", "/api/v1/taxonomy-nodes/1/acl"),
    ]
    writes += [
        ("POST", f"/api/v1/items/1/versions/1/{a}")
        for a in ("submit", "withdraw", "approve", "reject", "reopen", "publish", "unpublish", "archive")
    ]
    for method, url in writes:
        assert_problem(await client.request(method, url, headers=agent.headers), 403, "permission_denied")
