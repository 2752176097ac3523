"""The semantic leg and hybrid search over the API: real embeddings (the default embedder), real Tantivy, the
real workflow and outbox. The embedder is off in every other test (tests/conftest.py); these
switch it on before anything is published, so the index jobs embed what they index. Each text
costs ~25 ms to embed: the corpus is a handful of items."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from app.search.documents import SearchQuery
from app.search.embedding import DEFAULT_EMBEDDER, Embedder, EmbedderUnavailable, make_embedder
from app.search.models import EmbeddingCache
from app.search.semantic import Semantic
from tests.conftest import Actor, People, assert_problem
from tests.search.conftest import search_doc
from tests.search.test_search_api import drain, ids, publish, search


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    embedder = make_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    return embedder


class BrokenEmbedder:
    """An embedder whose engine fails on every call (a corrupt model file, an engine error)."""

    model = "broken-model"
    dims = 384

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        raise EmbedderUnavailable("engine error: model file is corrupt")

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        raise EmbedderUnavailable("engine error: model file is corrupt")


def switch(app: Any, embedder: Embedder | None, name: str = DEFAULT_EMBEDDER) -> Semantic:
    semantic = Semantic(name, embedder, None if embedder else "not installed")
    app.state.services["semantic"] = semantic
    return semantic


async def job_result(client: httpx.AsyncClient, h: dict[str, str], app: Any, path: str, **params: Any) -> Any:
    r = await client.post(path, params=params, headers=h)
    assert r.status_code == 202, r.text
    await drain(app)
    job = (await client.get(r.json()["href"], headers=h)).json()
    assert job["status"] == "done", job
    return job["result"]


@pytest.fixture
async def kb(client: httpx.AsyncClient, admin: Actor, app: Any) -> dict[str, int]:
    switch(app, embedder())
    h = admin.headers
    out = {
        "baby": await publish(
            client,
            h,
            title="婴儿发烧怎么处理",
            question="婴儿发烧怎么处理",
            similar_questions=["新生儿体温偏高"],
            body="体温超过38.5度请及时就医。",
            visibility="public",
        ),
        "broadband": await publish(
            client,
            h,
            title="宽带故障报修",
            question="宽带故障报修",
            body="拨打10000号或在营业厅APP提交报修单。",
            visibility="public",
        ),
        "lost_card": await publish(
            client,
            h,
            title="信用卡挂失流程",
            question="信用卡挂失流程",
            body="信用卡丢失请立即致电95588挂失。",
            visibility="public",
        ),
        "water": await publish(
            client,
            h,
            title="水费缴纳方式",
            question="水费缴纳方式",
            body="可通过微信、支付宝或营业网点缴纳水费。",
            visibility="public",
        ),
    }
    await drain(app)
    return out


async def test_customer_words_find_the_answer_by_meaning(
    client: httpx.AsyncClient, admin: Actor, kb: dict[str, int]
) -> None:
    h = admin.headers
    customer_words = (
        ("小宝宝身上很烫", kb["baby"]),
        ("家里上不了网", kb["broadband"]),
        ("自来水的钱在哪交", kb["water"]),
    )
    for query, expected in customer_words:
        keyword = await search(client, h, query, mode="keyword")
        assert expected not in ids(keyword) and keyword["mode_used"] == "keyword"
        semantic = await search(client, h, query, mode="semantic")
        assert ids(semantic)[0] == expected and semantic["mode_used"] == "semantic"
        hybrid = await search(client, h, query)  # hybrid is the default with an embedder loaded
        assert hybrid["mode"] == "hybrid" and hybrid["mode_used"] == "hybrid"
        assert ids(hybrid)[0] == expected and hybrid["warnings"] == []
    # A keyword match stays first in hybrid mode; the answer API runs the same hybrid search.
    assert ids(await search(client, h, "信用卡挂失"))[0] == kb["lost_card"]
    r = await client.get("/api/v1/channels/agent/answers", params={"q": "小宝宝身上很烫"}, headers=h)
    assert r.status_code == 200 and r.json()["items"][0]["item_id"] == kb["baby"]


async def test_semantic_leg_applies_acl_and_channel_inside_the_engine(
    client: httpx.AsyncClient, admin: Actor, people: People, kb: dict[str, int], app: Any
) -> None:
    h = admin.headers
    team = (await client.post("/api/v1/departments", headers=h, json={"name": "母婴专线"})).json()
    secret = await publish(
        client, h, title="宝宝疫苗接种内部流程", question="宝宝疫苗接种内部流程", visibility="internal"
    )
    r = await client.get(f"/api/v1/items/{secret}/acl", headers=h)
    r = await client.put(
        f"/api/v1/items/{secret}/acl",
        headers={**h, "If-Match": r.headers.get("etag", "*")},
        json={"grants": [{"subject": f"dept:{team['id']}", "access": "read"}]},
    )
    assert r.status_code == 200, r.text
    agent_only = await publish(
        client, h, title="婴幼儿套餐内部资费", question="婴幼儿套餐内部资费", channels=["agent"], visibility="public"
    )
    await drain(app)
    outsider = await people.make("li.na", role="agent")
    insider = await people.make("wang.fang", role="agent", department_id=team["id"])
    assert secret in ids(await search(client, insider.headers, "宝宝生病了", mode="semantic"))
    for mode in ("semantic", "hybrid"):
        everything = await search(client, outsider.headers, "宝宝生病了", mode=mode, limit=50)
        assert secret not in ids(everything) and everything["total"] == len(everything["items"])
        # Pages are never short while allowed items remain, and never leak the hidden one.
        first = await search(client, outsider.headers, "宝宝生病了", mode=mode, limit=2)
        assert len(first["items"]) == min(2, everything["total"]) and secret not in ids(first)
        assert everything["total"] >= 1
    assert (await search(client, outsider.headers, "宝宝生病了", mode="semantic", limit=50))["total"] == 5
    wechat = await search(client, h, "婴幼儿资费", mode="semantic", channel="wechat", limit=50)
    assert agent_only not in ids(wechat) and wechat["total"] == 5  # all but the agent-only one
    assert agent_only in ids(await search(client, h, "婴幼儿资费", mode="semantic", channel="agent"))
    # Filters apply in the leg too: no faq is of another type, so nothing comes back.
    assert (await search(client, h, "宝宝生病了", mode="semantic", type="article"))["total"] == 0


async def test_bad_queries_never_fail(client: httpx.AsyncClient, admin: Actor, kb: dict[str, int]) -> None:
    h = admin.headers
    for q in ("网", "😀😀😀", "上不了网" * 50 + "x" * 9_800, "   "):  # the long one: 10,000 characters
        for mode in ("semantic", "hybrid"):
            result = await search(client, h, q, mode=mode)
            assert result["warnings"] == [] or result["warnings"][0].startswith("query truncated")
    # Emoji only: nothing close enough by meaning, nothing by words: a zero result, as before.
    assert (await search(client, h, "😀😀😀"))["total"] == 0


async def test_embedder_off_leaves_keyword_search_whole(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    h = admin.headers  # the embedder is off (tests/conftest.py)
    item = await publish(client, h, title="宽带故障报修", question="宽带故障报修", visibility="public")
    await drain(app)
    plain = await search(client, h, "宽带故障")
    assert ids(plain) == [item] and plain["mode"] == "keyword" and plain["mode_used"] == "keyword"
    assert plain["warnings"] == []
    asked = await search(client, h, "宽带故障", mode="hybrid")
    assert ids(asked) == [item] and asked["mode_used"] == "keyword"
    assert asked["warnings"][0].startswith("semantic_unavailable")
    r = await client.get("/readyz")
    assert r.json()["semantic_search"] == "off"
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(EmbeddingCache)) == 0


async def test_failing_embedder_falls_back_and_the_consistency_check_repairs(
    client: httpx.AsyncClient, admin: Actor, app: Any
) -> None:
    h = admin.headers
    switch(app, BrokenEmbedder())  # type: ignore[arg-type]
    item = await publish(client, h, title="宽带故障报修", question="宽带故障报修", visibility="public")
    await drain(app)  # the index job succeeds without vectors
    result = await search(client, h, "宽带故障")
    assert ids(result) == [item] and result["mode"] == "hybrid" and result["mode_used"] == "keyword"
    assert "semantic_unavailable" in result["warnings"][0]
    r = await client.get(f"/api/v1/items/{item}/similar", headers=h)
    assert r.status_code == 200 and r.json() == []
    semantic = switch(app, embedder())
    report = await job_result(client, h, app, "/api/v1/search/consistency")
    assert report["without_vectors"] == [item] and report["vector_model"] == semantic.model
    report = await job_result(client, h, app, "/api/v1/search/consistency", repair=True)
    assert report["repaired"] is True
    assert ids(await search(client, h, "家里上不了网", mode="semantic"))[0] == item
    assert (await job_result(client, h, app, "/api/v1/search/consistency"))["without_vectors"] == []
    switch(app, None)  # failed to load at start-up
    r = await client.get("/readyz")
    assert r.json()["semantic_search"].startswith("down")
    assert (await search(client, h, "宽带故障", mode="semantic"))["mode_used"] == "keyword"


async def test_vectors_of_another_model_or_a_deleted_index_are_rebuilt(
    client: httpx.AsyncClient, admin: Actor, kb: dict[str, int], app: Any
) -> None:
    h = admin.headers
    backend = app.state.services["search"]
    stale = search_doc(
        kb["water"], "水费缴纳方式", version_no=1, vectors=np.eye(1, 384, dtype=np.float32), embedder="e5-base-old"
    )
    await backend.upsert([stale])  # an index written by another model version
    vector = await app.state.services["semantic"].query_vector("怎样交水费")
    found = await backend.search(
        SearchQuery(
            text="",
            principals=["superuser"],
            mode="semantic",
            vector=vector,
            embedder=app.state.services["semantic"].model,
            limit=10,
        )
    )
    assert kb["water"] not in [hit.item_id for hit in found.hits]  # never compared with this model's
    report = await job_result(client, h, app, "/api/v1/search/consistency", repair=True)
    assert report["without_vectors"] == [kb["water"]] and report["repaired"] is True
    assert ids(await search(client, h, "怎样交水费", mode="semantic"))[0] == kb["water"]

    async with app.state.sessionmaker() as s:
        cached = await s.scalar(select(func.count()).select_from(EmbeddingCache))
    shutil.rmtree(backend.index_dir)  # the index and the vectors stored in it are gone
    r = await client.get("/api/v1/search", params={"q": "小宝宝身上很烫"}, headers=h)
    assert_problem(r, 503, "search_unavailable")
    await drain(app)  # the rebuild queued by that failure: every vector from the cache, none embedded again
    assert ids(await search(client, h, "小宝宝身上很烫", mode="semantic"))[0] == kb["baby"]
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(EmbeddingCache)) == cached


async def test_similar_items_and_possible_duplicates(
    client: httpx.AsyncClient, admin: Actor, people: People, kb: dict[str, int], app: Any
) -> None:
    h = admin.headers
    r = await client.post(
        "/api/v1/items",
        headers=h,
        json={
            "title": "小孩发高烧如何处理",
            "question": "小孩发高烧如何处理",
            "body": "先物理降温。",
            "visibility": "public",
        },
    )
    assert r.status_code == 201, r.text
    draft = r.json()
    assert [d["item_id"] for d in draft["possible_duplicates"]] == [kb["baby"]]
    assert draft["possible_duplicates"][0]["likely_duplicate"] is True
    r = await client.post(
        f"/api/v1/items/{draft['id']}/versions/1/submit", headers={**h, "If-Match": r.headers["etag"]}
    )
    assert r.status_code == 200 and [d["item_id"] for d in r.json()["possible_duplicates"]] == [kb["baby"]]
    assert (await client.get(f"/api/v1/items/{kb['baby']}", headers=h)).json()["possible_duplicates"] is None

    similar = (await client.get(f"/api/v1/items/{kb['baby']}/similar", headers=h)).json()
    assert kb["baby"] not in [s["item_id"] for s in similar]  # never the item itself
    assert all(not s["likely_duplicate"] for s in similar)  # the draft is not published; the rest differ
    assert [s["score"] for s in similar] == sorted((s["score"] for s in similar), reverse=True)
    # Search down: the create still succeeds, without the hint.
    shutil.rmtree(app.state.services["search"].index_dir)
    r = await client.post("/api/v1/items", headers=h, json={"title": "婴儿发烧怎么处理", "visibility": "public"})
    assert r.status_code == 201 and r.json()["possible_duplicates"] == []
    assert_problem(await client.get(f"/api/v1/items/{kb['baby']}/similar", headers=h), 503, "search_unavailable")
    outsider = await people.make("guest.reader", permissions=["search:query"])
    assert (await client.get(f"/api/v1/items/{kb['baby']}/similar", headers=outsider.headers)).status_code == 403
