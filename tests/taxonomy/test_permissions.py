from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.audit.models import AuditEntry
from tests.conftest import Actor, People, assert_problem
from tests.taxonomy.helpers import API, SM, build_kb

# Every write endpoint with a body that would succeed for a manager.
WRITES = [
    ("POST", "/taxonomies", {"code": "scope", "name": "适用范围"}),
    ("PATCH", "/taxonomies/{tax}", {"name": "知识目录"}),
    ("DELETE", "/taxonomies/{tax}", None),
    ("POST", "/taxonomies/{tax}/nodes", {"name": "余额查询"}),
    ("PATCH", "/taxonomy-nodes/{node}", {"name": "電費繳納"}),
    ("POST", "/taxonomy-nodes/{node}/move", {"position": 0}),
    ("DELETE", "/taxonomy-nodes/{node}", None),
    ("POST", "/tags", {"name": "宽带"}),
    ("PATCH", "/tags/1", {"name": "宽带"}),
    ("DELETE", "/tags/1", None),
    ("POST", "/attributes", {"code": "fee", "name": "资费", "type": "number"}),
    ("PATCH", "/attributes/1", {"name": "资费"}),
    ("DELETE", "/attributes/1", None),
    ("POST", "/templates", {"name": "政策模板"}),
    ("PATCH", "/templates/1", {"name": "政策模板"}),
    ("DELETE", "/templates/1", None),
    ("POST", "/item-types", {"code": "memo", "name": "备忘"}),
    ("PATCH", "/item-types/faq", {"name": "问答"}),
    ("DELETE", "/item-types/faq", None),
]
READS = [
    "/taxonomies",
    "/taxonomies/{tax}",
    "/taxonomies/{tax}/tree",
    "/taxonomies/{tax}/nodes",
    "/taxonomy-nodes/{node}",
    "/tags",
    "/attributes",
    "/templates",
    "/item-types",
]


async def test_writes_need_taxonomy_manage(
    client: httpx.AsyncClient, mgr: Actor, agent: Actor, people: People, sm: SM
) -> None:
    ids = await build_kb(client, mgr.headers)
    author = await people.make("li.na", role="author")
    fill = {"tax": ids["tax"], "node": ids["電費"]}
    for method, path, body in WRITES:
        url = API + path.format(**fill)
        anonymous = await client.request(method, url, json=body)
        assert_problem(anonymous, 401, "unauthenticated")
        for who in (agent, author):
            r = await client.request(method, url, json=body, headers=who.headers)
            problem = assert_problem(r, 403, "permission_denied")
            assert problem["required_permission"] == "taxonomy:manage", (method, path)
    async with sm() as s:
        denials = await s.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "permission.denied")
        )
        assert denials == 2 * len(WRITES)
    # nothing was changed by the refused calls
    r = await client.get(f"{API}/taxonomy-nodes/{ids['電費']}", headers=agent.headers)
    assert r.status_code == 200 and r.json()["name"] == "電費"

    for path in READS:
        url = API + path.format(**fill)
        assert_problem(await client.get(url), 401, "unauthenticated")
        assert (await client.get(url, headers=agent.headers)).status_code == 200, path
    nobody = await people.make("wang.audit", role="auditor")  # no knowledge:read
    assert_problem(await client.get(f"{API}/taxonomies", headers=nobody.headers), 403, "permission_denied")
    assert_problem(await client.get(f"{API}/tags", headers=nobody.headers), 403, "permission_denied")
