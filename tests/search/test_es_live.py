"""Contract tests against a real Elasticsearch 9 with the IK (and pinyin) plugins.

Run with e.g. `KB_ES_URL=http://localhost:9200 pytest tests/search/test_es_live.py`
against the image in docker/elasticsearch/. `KB_ES_ANALYZER=smartcn` runs them on the
fallback analyzer (pinyin checks are skipped there). Every run works under its own
index prefix and removes its indices and synonyms set at the end.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch, NotFoundError

from app.search.backends import es_bodies as b
from app.search.backends.elasticsearch import ElasticsearchBackend
from app.search.documents import (
    AttachmentText,
    LanguageResources,
    SearchDocument,
    SearchFilters,
    SearchQuery,
    SearchResult,
)
from tests.search.conftest import search_doc

ES_URL = os.environ.get("KB_ES_URL")
ANALYZER: b.Analyzer = "smartcn" if os.environ.get("KB_ES_ANALYZER") == "smartcn" else "ik"

pytestmark = pytest.mark.skipif(
    not ES_URL,
    reason="KB_ES_URL is not set: runs only against a live Elasticsearch 9 with the IK plugin "
    "(docker/elasticsearch), which this machine cannot run",
)

NOW = datetime.now(UTC)
AGENT = ["public", "role:agent"]
PUBLIC = ["public"]


def doc(item_id: int, title: str, **overrides: Any) -> SearchDocument:
    return search_doc(item_id, title, **{"question": "", "category_ids": [1], "category_paths": ["1"], **overrides})


DOCS = [
    doc(
        1,
        "宽带故障报修流程",
        question="家里宽带断网了怎么办？",
        similar_questions=["光猫红灯闪烁怎么处理"],
        body_text="请先重启光猫，等待两分钟。若 LOS 灯仍为红色，请登记故障单。",
        channel_answers={"agent": "核实地址后派单，承诺 24 小时内上门。", "wechat": "您好，请先重启光猫试试。"},
        attachments=[AttachmentText(71, "光猫指示灯说明.pdf", "LOS 灯闪红表示光信号中断，需要上门检修。")],
        category_ids=[1, 4],
        category_paths=["1/4"],
        tags=["宽带", "报修"],
        attributes={"region": ["华东"]},
    ),
    doc(
        2,
        "携号转网办理条件",
        question="怎么携号转网？",
        body_text="在网满 120 天且无欠费，可申请携号转网。",
        category_ids=[1, 5],
        category_paths=["1/5"],
        tags=["携号转网"],
        item_type="policy",
    ),
    doc(
        3,
        "5G畅享套餐资费说明",
        body_text="5G畅享套餐每月 129 元，含 30GB 流量。",
        category_ids=[1, 6],
        category_paths=["1/6"],
        tags=["5G", "套餐"],
    ),
    doc(
        4,
        "信用卡挂失内部流程",
        body_text="坐席核实身份后在核心系统登记挂失，并提示客户补卡。",
        acl_principals=["role:agent"],
        channels=["agent"],
        category_ids=[2],
        category_paths=["2"],
        tags=["信用卡", "报修"],
    ),
    doc(
        5,
        "寬頻連不上網怎麼辦",  # traditional characters in the document
        body_text="請檢查光貓的電源與光纖連接。",
        category_ids=[1, 4],
        category_paths=["1/4"],
        tags=["宽带"],
    ),
]


@pytest.fixture(scope="module")
async def admin() -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(ES_URL or "", request_timeout=30)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def es(admin: AsyncElasticsearch) -> AsyncIterator[ElasticsearchBackend]:
    prefix = f"kbtest_{uuid.uuid4().hex[:8]}"
    backend = ElasticsearchBackend(ES_URL or "", analyzer=ANALYZER, index_prefix=prefix, refresh="wait_for")
    try:
        await backend.open()
        await backend.set_language(
            LanguageResources(words=["光猫", "携号转网"], synonym_groups=[["宽带", "宽频"], ["挂失", "丢卡"]])
        )
        results = await backend.upsert(DOCS)
        assert results == {d.item_id: None for d in DOCS}
        yield backend
    finally:
        await backend.close()
        resolved = await admin.indices.resolve_index(name=f"{prefix}_*", expand_wildcards="all")
        for entry in resolved.body.get("indices", []):
            await admin.indices.delete(index=entry["name"])
        with contextlib.suppress(NotFoundError):
            await admin.synonyms.delete_synonym(id=backend.synonyms_set)


async def ids(es: ElasticsearchBackend, text: str, principals: list[str] = AGENT, **kw: Any) -> list[int]:
    result = await es.search(SearchQuery(text=text, principals=principals, **kw))
    return [hit.item_id for hit in result.hits]


async def test_health_and_open_is_idempotent(es: ElasticsearchBackend) -> None:
    assert await es.health()
    read, write = await es.aliases()
    await es.open()
    assert await es.aliases() == (read, write)
    assert read == write and len(read) == 1 and read[0].startswith(f"{es.prefix}_{ANALYZER}_v")


async def test_simplified_and_traditional_find_the_same_items(es: ElasticsearchBackend) -> None:
    # Items 1 (宽带, simplified) and 5 (寬頻, traditional; 宽频 is a synonym of 宽带) are the only
    # ones about broadband; a word no document holds finds nothing, so matches are not free.
    assert await ids(es, "火星移民") == []
    simplified = await ids(es, "宽带故障")
    assert simplified[0] == 1 and sorted(simplified) == [1, 5]  # only item 1 holds 故障 as well
    assert await ids(es, "寬帶故障") == simplified  # folded by the t2s char filter
    assert sorted(await ids(es, "宽带连不上")) == [1, 5]  # traditional document, simplified query
    assert sorted(await ids(es, "寬頻")) == [1, 5]  # 寬頻 -> 宽频, synonym of 宽带
    assert await ids(es, "貸款") == []  # traditional, but about loans: nothing


async def test_synonyms_apply_without_reindex(es: ElasticsearchBackend) -> None:
    assert sorted(await ids(es, "光猫")) == [1, 5]  # 5 holds 光貓 (traditional)
    assert await ids(es, "调制解调器") == []
    await es.set_language(
        LanguageResources(synonym_groups=[["宽带", "宽频"], ["挂失", "丢卡"], ["光猫", "调制解调器"]])
    )
    assert sorted(await ids(es, "调制解调器")) == [1, 5]
    assert await ids(es, "丢卡") == [4] == await ids(es, "挂失")


async def test_acl_channel_and_facets_never_leak(es: ElasticsearchBackend) -> None:
    public = await es.search(SearchQuery(text="报修", principals=PUBLIC, channel="web"))
    assert 4 not in [h.item_id for h in public.hits]
    tags = {f.value: f.count for f in public.facets["tag"]}
    assert tags.get("信用卡") is None and tags.get("报修") == 1
    agent = await es.search(SearchQuery(text="挂失", principals=["role:agent"], channel="agent"))
    assert [h.item_id for h in agent.hits] == [4]
    assert await ids(es, "挂失", principals=["role:agent"], channel="wechat") == []
    assert await ids(es, "挂失", principals=[]) == []


async def test_filters(es: ElasticsearchBackend) -> None:
    subtree = await ids(es, "", filters=SearchFilters(category_ids=[4]))
    assert sorted(subtree) == [1, 5]
    assert await ids(es, "", filters=SearchFilters(item_types=["policy"])) == [2]
    assert await ids(es, "", filters=SearchFilters(tags=["宽带", "报修"])) == [1]
    assert await ids(es, "", filters=SearchFilters(attributes={"region": ["华东"]})) == [1]
    assert await ids(es, "", filters=SearchFilters(statuses=["draft"])) == []
    recent = await ids(es, "", filters=SearchFilters(updated_since=NOW - timedelta(days=2, hours=12)))
    assert sorted(recent) == [1, 2]


async def test_highlights_land_on_original_text_and_name_the_attachment(es: ElasticsearchBackend) -> None:
    result = await es.search(SearchQuery(text="光信号中断", principals=AGENT))
    hit = next(h for h in result.hits if h.item_id == 1)
    attachment = next(h for h in hit.highlights if h.field == "attachment")
    assert (attachment.attachment_id, attachment.file_name) == (71, "光猫指示灯说明.pdf")
    assert "<em>" in attachment.fragments[0]
    traditional = await es.search(SearchQuery(text="宽带", principals=AGENT))
    title = next(h for h in traditional.hits if h.item_id == 5).highlights[0]
    assert title.field == "title" and "<em>寬頻</em>" in title.fragments[0]


async def test_plain_text_with_syntax_characters_does_not_fail(es: ElasticsearchBackend) -> None:
    for text in ['"宽带" AND (光猫*', "title:携号转网", "5G畅享套餐😀", "怎么办？", "：“”（）"]:
        await es.search(SearchQuery(text=text, principals=AGENT))
    assert 2 in await ids(es, "携号*转网")


async def test_suggest_chinese_pinyin_initials_under_acl(es: ElasticsearchBackend) -> None:
    found = await es.suggest("宽带", PUBLIC, "web")
    assert "宽带故障报修流程" in [s.text for s in found]
    assert await es.suggest("信用卡", PUBLIC, "web") == []
    assert [s.text for s in await es.suggest("信用卡", ["role:agent"], "agent")] == ["信用卡挂失内部流程"]
    if es.pinyin:
        assert "宽带故障报修流程" in [s.text for s in await es.suggest("kuandai", PUBLIC, None)]
        assert "宽带故障报修流程" in [s.text for s in await es.suggest("kdgz", PUBLIC, None)]


async def test_late_write_of_an_older_version_loses(es: ElasticsearchBackend) -> None:
    newer = doc(9, "光猫更换流程 v5", version_no=5)
    older = doc(9, "光猫更换流程 v4", version_no=4)
    assert await es.upsert([newer]) == {9: None}
    assert await es.upsert([older]) == {9: None}  # superseded, not an error
    assert (await es.indexed_versions())[9] == 5
    same = doc(9, "光猫更换流程 v5", version_no=5, acl_principals=["role:agent"])
    await es.upsert([same])  # same version again (ACL change) is applied
    assert 9 not in await ids(es, "光猫更换", principals=PUBLIC)
    await es.delete([9])
    assert 9 not in await es.indexed_versions()


async def test_rebuild_swaps_aliases(es: ElasticsearchBackend, admin: AsyncElasticsearch) -> None:
    before, _ = await es.aliases()
    await es.rebuild(DOCS)
    after, write = await es.aliases()
    assert after == write and after != before
    assert b.index_version(after[0], es.prefix, ANALYZER) == (b.index_version(before[0], es.prefix, ANALYZER) or 0) + 1
    assert not await admin.indices.exists(index=before[0])
    assert sorted(await es.indexed_versions()) == [1, 2, 3, 4, 5]
    found = await ids(es, "宽带故障")  # the new index answers as the old one did (see above)
    assert found[0] == 1 and sorted(found) == [1, 5]
    assert await ids(es, "火星移民") == []


# --------------------------------------------------------------------------- semantic leg

# Hand-made 8-dimensional "embeddings" along meaning axes, so the nearest document is known
# without an embedding model: 0 infants' medical claims, 1 broadband repair, 3 lost cards,
# 5 billing; 6 and 7 are noise.
MODEL = "live-test-8d"


def axes(*weights: tuple[int, float]) -> list[float]:
    vector = np.zeros(8, dtype=np.float32)
    vector[6:] = 0.05
    for axis, weight in weights:
        vector[axis] = weight
    return (vector / np.linalg.norm(vector)).tolist()


SEMANTIC_DOCS = [
    doc(
        11,
        "婴儿医疗险理赔材料",
        question="婴儿看病的费用怎么报销？",
        similar_questions=["新生儿住院可以理赔吗"],
        vectors=[axes((0, 1.0)), axes((0, 0.9), (5, 0.2))],
        embedder=MODEL,
    ),
    doc(12, "宽带上门维修时间", vectors=[axes((1, 1.0))], embedder=MODEL, tags=["宽带"]),
    doc(
        13,
        "信用卡挂失内部流程",
        body_text="坐席核实身份后在核心系统登记挂失。",
        vectors=[axes((3, 1.0))],
        embedder=MODEL,
        acl_principals=["role:agent"],
        channels=["agent"],
    ),
    doc(14, "信用卡挂失（客户自助）", vectors=[axes((3, 0.8), (5, 0.5))], embedder=MODEL),
    doc(15, "营业厅营业时间", body_text="营业厅每天 9:00 至 18:00 营业。"),  # the embedder was off for it
    doc(16, "携号转网办理条件", vectors=[axes((2, 1.0))], embedder="another-model-8d"),
]


@pytest.fixture(scope="module")
async def sem(admin: AsyncElasticsearch) -> AsyncIterator[ElasticsearchBackend]:
    prefix = f"kbtest_{uuid.uuid4().hex[:8]}"
    backend = ElasticsearchBackend(
        ES_URL or "", analyzer=ANALYZER, index_prefix=prefix, refresh="wait_for", vector_model=MODEL, vector_dims=8
    )
    try:
        await backend.open()
        assert await backend.upsert(SEMANTIC_DOCS) == {d.item_id: None for d in SEMANTIC_DOCS}
        yield backend
    finally:
        await backend.close()
        resolved = await admin.indices.resolve_index(name=f"{prefix}_*", expand_wildcards="all")
        for entry in resolved.body.get("indices", []):
            await admin.indices.delete(index=entry["name"])
        with contextlib.suppress(NotFoundError):
            await admin.synonyms.delete_synonym(id=backend.synonyms_set)


async def nearest(
    es: ElasticsearchBackend, vector: list[float], principals: list[str] = PUBLIC, **kw: Any
) -> SearchResult:
    return await es.search(SearchQuery(text="", principals=principals, mode="semantic", vector=vector, **kw))


async def test_knn_returns_the_nearest_document(sem: ElasticsearchBackend) -> None:
    # "宝宝看病能报销吗": no word in common with 婴儿医疗险理赔材料, but the nearest meaning
    query = axes((0, 0.95), (5, 0.1))
    result = await nearest(sem, query)
    assert result.hits[0].item_id == 11
    expected = max(float(np.dot(query, v)) for v in SEMANTIC_DOCS[0].vectors)
    assert result.hits[0].score == pytest.approx(expected, abs=0.05)  # int8 quantized
    assert result.hits[0].questions == ["婴儿医疗险理赔材料", "婴儿看病的费用怎么报销？", "新生儿住院可以理赔吗"]
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    second = await nearest(sem, query, offset=1, limit=1)
    assert [h.item_id for h in second.hits] == [result.hits[1].item_id] and second.total == result.total


async def test_acl_and_channel_apply_inside_the_knn(sem: ElasticsearchBackend) -> None:
    lost_card = axes((3, 1.0))
    agent = await nearest(sem, lost_card, ["role:agent", "public"], channel="agent", limit=1)
    assert [h.item_id for h in agent.hits] == [13]
    # the public caller's single nearest result is the nearest one they may read, not an
    # empty page left by a filter applied after the top 1 was chosen
    public = await nearest(sem, lost_card, PUBLIC, channel="wechat", limit=1)
    assert [h.item_id for h in public.hits] == [14]
    everything = await nearest(sem, lost_card, PUBLIC, limit=50)
    assert 13 not in [h.item_id for h in everything.hits]
    assert everything.total == len(everything.hits) == 3  # 11, 12, 14: the readable documents with vectors
    assert {f.value: f.count for f in everything.facets["type"]} == {"faq": 3}
    assert (await nearest(sem, lost_card, [])).hits == []
    tagged = await nearest(sem, lost_card, PUBLIC, filters=SearchFilters(tags=["宽带"]))
    assert [h.item_id for h in tagged.hits] == [12]


async def test_documents_without_vectors_stay_keyword_searchable(sem: ElasticsearchBackend) -> None:
    state = await sem.vector_state()
    assert state == {11: MODEL, 12: MODEL, 13: MODEL, 14: MODEL, 15: None, 16: None}  # 16: another model
    assert 15 in await ids(sem, "营业时间", principals=PUBLIC)
    assert 16 in await ids(sem, "携号转网", principals=PUBLIC)
    semantic = await nearest(sem, axes((2, 1.0)), limit=50)
    assert not {15, 16} & {h.item_id for h in semantic.hits}


async def test_semantic_leg_runs_on_the_basic_licence(sem: ElasticsearchBackend, admin: AsyncElasticsearch) -> None:
    licence = (await admin.license.get()).body["license"]["type"]
    if licence != "basic":
        pytest.skip(
            f"the cluster has a {licence} licence, so it cannot show that basic suffices: runs against a cluster "
            "on the basic licence (docker/elasticsearch's default) with KB_ES_URL set"
        )
    assert (await nearest(sem, axes((1, 1.0)), limit=1)).hits[0].item_id == 12


async def test_a_new_model_gets_a_new_index_version(sem: ElasticsearchBackend, admin: AsyncElasticsearch) -> None:
    before, _ = await sem.aliases()
    assert await sem.index_vectors() == b.VectorSpec(MODEL, 8)
    switched = ElasticsearchBackend(
        ES_URL or "", analyzer=ANALYZER, index_prefix=sem.prefix, refresh="wait_for", vector_model="live-test-4d"
    )
    try:
        four = [replace(d, vectors=[[1.0, 0.0, 0.0, 0.0]], embedder="live-test-4d") for d in SEMANTIC_DOCS[:2]]
        # into the 8-dim index, a 4-dim model's vectors are left out, never mixed in
        assert await switched.upsert(four) == {11: None, 12: None}
        assert (await switched.vector_state())[11] is None
        await switched.rebuild([*four, *SEMANTIC_DOCS[2:]])
        after, _ = await switched.aliases()
        assert after != before and not await admin.indices.exists(index=before[0])
        assert await switched.index_vectors() == b.VectorSpec("live-test-4d", 4)
        assert (await switched.vector_state())[11] == "live-test-4d"
        found = await nearest(switched, [1.0, 0.0, 0.0, 0.0])
        assert {h.item_id for h in found.hits} == {11, 12}
    finally:
        await switched.close()
