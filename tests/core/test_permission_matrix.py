"""Every endpoint refuses an anonymous caller and a caller without its permission.

The route list is read from the app's own OpenAPI document, so a new endpoint is covered the day it is added.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import People, assert_problem

# Routes anyone may call, and routes that need a signed-in caller but no permission.
PUBLIC = {
    ("POST", "/api/v1/auth/token"),
    # IK (Elasticsearch) polls the dictionary without credentials; words only, internal network.
    ("GET", "/api/v1/search/ik-dictionary.txt"),
    # The change feed: anonymous on the public channels, like the channel reads (tests/channels/test_changes.py).
    ("GET", "/api/v1/changes"),
}
SIGNED_IN_ONLY = {("GET", "/api/v1/auth/me"), ("POST", "/api/v1/auth/revoke")}
# Channel routes that answer anonymous callers with public content only.
PUBLIC_PREFIXES: tuple[str, ...] = ("/api/v1/channels/",)


def api_routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, ops in app.openapi()["paths"].items():
        if path.startswith("/api/"):
            out += [(m.upper(), path) for m in ops if m in {"get", "post", "put", "patch", "delete"}]
    return out


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_route_is_in_the_matrix(app: Any) -> None:
    routes = api_routes(app)
    assert len(routes) >= 20  # the matrix below must really cover the API
    assert set(routes) >= PUBLIC | SIGNED_IN_ONLY
    assert ("GET", "/api/v1/items/{item_id}/similar") in routes  # near duplicates: knowledge:read and the item ACL


async def test_anonymous_is_refused_everywhere(app: Any, client: httpx.AsyncClient) -> None:
    checked = 0
    for method, path in api_routes(app):
        if (method, path) in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            continue
        r = await client.request(method, concrete(path))
        assert r.status_code == 401, f"{method} {path} answered {r.status_code} to an anonymous caller"
        assert_problem(r, 401)
        checked += 1
    assert checked >= 20


async def test_caller_without_permission_is_refused_everywhere(
    app: Any, client: httpx.AsyncClient, people: People
) -> None:
    nobody = await people.make("no.perms", permissions=[])
    checked = 0
    for method, path in api_routes(app):
        if (method, path) in PUBLIC | SIGNED_IN_ONLY or path.startswith(PUBLIC_PREFIXES):
            continue
        r = await client.request(method, concrete(path), headers=nobody.headers)
        assert r.status_code == 403, f"{method} {path} answered {r.status_code} to a caller without permission"
        assert_problem(r, 403, "permission_denied")
        checked += 1
    assert checked >= 20


async def test_module_and_system_access_levels(client: httpx.AsyncClient, people: People) -> None:
    """An operation permission alone is not enough: the module and system access are levels too."""
    op_only = await people.make("op.only", permissions=["identity:manage"])
    no_system = await people.make("no.system", permissions=["module:admin", "identity:manage"])
    full = await people.make("full.admin", permissions=["system:access", "module:admin", "identity:manage"])
    assert_problem(await client.get("/api/v1/roles", headers=op_only.headers), 403, "permission_denied")
    assert_problem(await client.get("/api/v1/roles", headers=no_system.headers), 403, "permission_denied")
    assert (await client.get("/api/v1/roles", headers=full.headers)).status_code == 200


async def test_denials_are_audited(client: httpx.AsyncClient, people: People, admin: Any) -> None:
    agent = await people.make("zhang.wei", role="agent")
    assert (await client.get("/api/v1/users", headers=agent.headers)).status_code == 403
    r = await client.get("/api/v1/audit", params={"outcome": "denied"}, headers=admin.headers)
    entries = r.json()["items"]
    assert any(
        e["actor"] == f"user:{agent.user.id}"
        and e["summary"]["permission"] == "identity:manage"
        and e["summary"]["path"] == "/api/v1/users"
        for e in entries
    ), entries


# Learning paths, the expert network (issue 17): every route is walked above; these name them, so
# a route dropped from the app fails here, and say which ones an agent (the default role) may not call.
STUDY_AND_EXPERT_ROUTES = {
    ("POST", "/api/v1/study/paths"),
    ("GET", "/api/v1/study/paths"),
    ("GET", "/api/v1/study/paths/{path_id}"),
    ("PATCH", "/api/v1/study/paths/{path_id}"),
    ("DELETE", "/api/v1/study/paths/{path_id}"),
    ("GET", "/api/v1/study/paths/{path_id}/progress"),
    ("GET", "/api/v1/me/study"),
    ("GET", "/api/v1/me/study/paths/{path_id}"),
    ("GET", "/api/v1/me/study/changes"),
    ("GET", "/api/v1/me/study/changes/{item_id}"),
    ("GET", "/api/v1/experts"),
    ("GET", "/api/v1/experts/{user_id}"),
    ("PUT", "/api/v1/experts/{user_id}"),
    ("DELETE", "/api/v1/experts/{user_id}"),
    ("POST", "/api/v1/questions"),
    ("GET", "/api/v1/questions"),
    ("GET", "/api/v1/questions/{question_id}"),
    ("POST", "/api/v1/questions/{question_id}/answers"),
    ("POST", "/api/v1/questions/{question_id}/answers/{answer_id}/accept"),
    ("POST", "/api/v1/questions/{question_id}/close"),
    ("POST", "/api/v1/questions/{question_id}/answers/{answer_id}/draft"),
}
MANAGERS_ONLY = {
    r
    for r in STUDY_AND_EXPERT_ROUTES
    if r[1].startswith("/api/v1/study/")
    or (r[1].startswith("/api/v1/experts") and r[0] != "GET")
    or r[1].endswith("/draft")
}


async def test_study_and_expert_routes_are_covered_and_agents_kept_out_of_managing(
    app: Any, client: httpx.AsyncClient, people: People
) -> None:
    assert set(api_routes(app)) >= STUDY_AND_EXPERT_ROUTES
    agent = await people.make("zhang.wei", role="agent")
    for method, path in sorted(MANAGERS_ONLY):
        r = await client.request(method, concrete(path), headers=agent.headers)
        assert_problem(r, 403, "permission_denied")
