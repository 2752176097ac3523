"""The Elasticsearch backend without an Elasticsearch server.

Part 1 checks the request bodies built by `es_bodies` (index, documents, queries, aliases,
synonyms) and the mapping of responses written by hand in the shape the ES 9 docs give.
Part 2 runs `ElasticsearchBackend` with the real `AsyncElasticsearch` client against a
small recording HTTP server that plays Elasticsearch with canned answers: it checks which
endpoints the backend calls with which bodies, not how Elasticsearch analyzes text. That
is `test_es_live.py`'s job (needs KB_ES_URL).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from elasticsearch.helpers import expand_action

from app.search import ranking
from app.search.backends import es_bodies as b
from app.search.backends.base import SearchUnavailable
from app.search.backends.elasticsearch import ElasticsearchBackend, RebuildFailed
from app.search.documents import (
    AttachmentText,
    FacetValue,
    LanguageResources,
    SearchDocument,
    SearchFilters,
    SearchQuery,
)

SYN = "kb_items_synonyms"
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def make_doc(item_id: int = 101, **overrides: Any) -> SearchDocument:
    values: dict[str, Any] = {
        "item_id": item_id,
        "version_id": item_id * 10,
        "version_no": 3,
        "item_type": "faq",
        "status": "published",
        "title": "宽带故障报修流程",
        "question": "家里宽带断网了怎么办？",
        "similar_questions": ["光猫红灯闪烁怎么处理", "寬頻連不上網"],
        "body_text": "请先重启光猫，等待两分钟。若 LOS 灯仍为红色，请登记故障单。",
        "channel_answers": {
            "agent": "核实用户地址后派单，承诺 24 小时内上门。",
            "wechat": "您好，请先重启光猫试试哦。",
        },
        "attachments": [
            AttachmentText(7, "光猫指示灯说明.pdf", "PON 灯常亮表示注册成功；LOS 灯闪红表示光信号中断。"),
            AttachmentText(8, "报修单模板.docx", "报修单需填写宽带账号、联系电话和故障现象。"),
        ],
        "category_ids": [1, 4, 9],
        "category_paths": ["1/4/9"],
        "tags": ["宽带", "报修"],
        "attributes": {"region": ["华东", "华南"], "sla_hours": [24.0], "level": [2]},
        "acl_principals": ["public", "role:agent"],
        "channels": ["agent", "web", "wechat"],
        "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
        "valid_to": None,
        "updated_at": datetime(2026, 2, 14, 8, 0, 0, 123456, tzinfo=UTC),
    }
    values.update(overrides)
    return SearchDocument(**values)


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON-like structure, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# =========================================================================== index body


@pytest.fixture(scope="module")
def ik_body() -> dict[str, Any]:
    return b.create_index_body("ik", SYN, aliases=b.initial_aliases("kb_items"))


def test_index_is_strict_single_shard_with_both_aliases(ik_body: dict[str, Any]) -> None:
    settings = ik_body["settings"]["index"]
    assert settings["number_of_shards"] == 1
    mappings = ik_body["mappings"]
    assert mappings["dynamic"] == "strict"
    props = mappings["properties"]
    for name in ("answer", "attachments", "suggest"):
        assert props[name]["dynamic"] == "strict"
    assert ik_body["aliases"] == {"kb_items": {}, "kb_items_write": {"is_write_index": True}}


def test_mapping_declares_every_field(ik_body: dict[str, Any]) -> None:
    props = ik_body["mappings"]["properties"]
    expected = {
        "item_id": "long",
        "version_id": "long",
        "version_no": "long",
        "item_type": "keyword",
        "status": "keyword",
        "title": "text",
        "question": "text",
        "similar_questions": "text",
        "body": "text",
        "answer": "object",
        "attachments": "nested",
        "all_text": "text",
        "category_ids": "keyword",
        "category_paths": "keyword",
        "tags": "keyword",
        "attributes": "keyword",
        "acl_principals": "keyword",
        "channels": "keyword",
        "valid_from": "date",
        "valid_to": "date",
        "updated_at": "date",
        "suggest": "nested",
        "embedder": "keyword",
    }
    assert {name: spec["type"] for name, spec in props.items()} == expected
    assert set(props["answer"]["properties"]) == {"agent", "web", "wechat", "app"}
    assert props["attachments"]["properties"]["attachment_id"]["type"] == "long"
    assert props["attachments"]["properties"]["file_name"]["type"] == "keyword"


def test_ik_index_time_max_word_search_time_smart_with_updateable_synonyms(ik_body: dict[str, Any]) -> None:
    analysis = ik_body["settings"]["index"]["analysis"]
    analyzers, filters = analysis["analyzer"], analysis["filter"]
    assert analyzers["kb_index"]["tokenizer"] == "ik_max_word"
    assert analyzers["kb_search"]["tokenizer"] == "ik_smart"
    assert analyzers["kb_phrase"]["tokenizer"] == "ik_smart"
    assert analyzers["kb_search"]["filter"][-1] == "kb_synonyms"
    assert filters["kb_synonyms"] == {
        "type": "synonym_graph",
        "synonyms_set": SYN,
        "updateable": True,
        "lenient": True,
    }
    title = ik_body["mappings"]["properties"]["title"]
    assert (title["analyzer"], title["search_analyzer"]) == ("kb_index", "kb_search")
    for name in ("title", "question", "similar_questions", "body"):
        phrase = ik_body["mappings"]["properties"][name]["fields"]["phrase"]
        assert phrase == {"type": "text", "analyzer": "kb_phrase"}


def _field_specs(properties: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in properties.items():
        full = f"{path}{name}"
        yield full, spec
        yield from _field_specs(spec.get("properties", {}), f"{full}.")
        yield from _field_specs(spec.get("fields", {}), f"{full}.")


@pytest.mark.parametrize("analyzer", ["ik", "smartcn"])
def test_synonyms_only_in_search_analyzers(analyzer: b.Analyzer) -> None:
    body = b.create_index_body(analyzer, SYN)
    analyzers = body["settings"]["index"]["analysis"]["analyzer"]
    with_synonyms = {name for name, spec in analyzers.items() if "kb_synonyms" in spec.get("filter", [])}
    assert with_synonyms == {"kb_search", "kb_search_required"}  # query-time analyzers only
    used_at_index_time = {
        spec["analyzer"] for _, spec in _field_specs(body["mappings"]["properties"]) if "analyzer" in spec
    }
    assert not used_at_index_time & with_synonyms


BUILTIN_FILTERS = {"cjk_width", "lowercase", "trim", "smartcn_stop"}
BUILTIN_TOKENIZERS = {"keyword", "ik_smart", "ik_max_word", "smartcn_tokenizer"}


@pytest.mark.parametrize("analyzer", ["ik", "smartcn"])
@pytest.mark.parametrize("pinyin", [True, False])
def test_every_referenced_analysis_component_is_defined(analyzer: b.Analyzer, pinyin: bool) -> None:
    body = b.create_index_body(analyzer, SYN, pinyin=pinyin)
    analysis = body["settings"]["index"]["analysis"]
    for _, spec in _field_specs(body["mappings"]["properties"]):
        for key in ("analyzer", "search_analyzer"):
            if key in spec:
                assert spec[key] in analysis["analyzer"] or spec[key] == "keyword", spec
    for name, spec in analysis["analyzer"].items():
        assert spec["type"] == "custom"
        assert spec["tokenizer"] in analysis["tokenizer"] or spec["tokenizer"] in BUILTIN_TOKENIZERS, name
        for token_filter in spec.get("filter", []):
            assert token_filter in analysis["filter"] or token_filter in BUILTIN_FILTERS, (name, token_filter)
        for char_filter in spec.get("char_filter", []):
            assert char_filter in analysis["char_filter"], (name, char_filter)


def test_smartcn_fallback_has_no_ik_and_no_pinyin_by_choice() -> None:
    body = b.create_index_body("smartcn", SYN, pinyin=False)
    text = json.dumps(body)
    assert "ik_smart" not in text and "ik_max_word" not in text
    analyzers = body["settings"]["index"]["analysis"]["analyzer"]
    assert analyzers["kb_index"]["tokenizer"] == "smartcn_tokenizer"
    assert analyzers["kb_search"]["tokenizer"] == "smartcn_tokenizer"
    assert "smartcn_stop" in analyzers["kb_index"]["filter"]
    assert all(spec.get("type") != "pinyin" for spec in body["settings"]["index"]["analysis"]["filter"].values())
    assert "fields" not in body["mappings"]["properties"]["suggest"]["properties"]["text"]


def test_unknown_analyzer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown analyzer"):
        b.create_index_body("jieba", SYN)  # type: ignore[arg-type]


def test_long_text_has_offsets_for_the_unified_highlighter(ik_body: dict[str, Any]) -> None:
    specs = dict(_field_specs(ik_body["mappings"]["properties"]))
    highlighted = [
        "title",
        "question",
        "similar_questions",
        "body",
        "answer.agent",
        "answer.web",
        "answer.wechat",
        "answer.app",
        "attachments.text",
    ]
    for name in highlighted:
        assert specs[name]["index_options"] == "offsets", name
    assert "index_options" not in specs["all_text"]


def test_attachments_nested_and_all_text_built_by_the_app(ik_body: dict[str, Any]) -> None:
    assert ik_body["mappings"]["properties"]["attachments"]["type"] == "nested"
    assert "copy_to" not in {key for key, _ in walk(ik_body["mappings"])}
    # all_text and the vectors are indexed, not kept in _source (rebuilt from the database)
    assert ik_body["mappings"]["_source"] == {"excludes": ["all_text", "vectors"]}


def test_category_paths_have_a_path_hierarchy_sub_field(ik_body: dict[str, Any]) -> None:
    spec = ik_body["mappings"]["properties"]["category_paths"]
    assert spec["type"] == "keyword"
    tree = spec["fields"]["tree"]
    assert tree["search_analyzer"] == "keyword"
    analysis = ik_body["settings"]["index"]["analysis"]
    tokenizer = analysis["tokenizer"][analysis["analyzer"][tree["analyzer"]]["tokenizer"]]
    assert tokenizer == {"type": "path_hierarchy", "delimiter": "/"}


def test_suggestion_field_has_edge_ngrams_and_pinyin(ik_body: dict[str, Any]) -> None:
    analysis = ik_body["settings"]["index"]["analysis"]
    text = ik_body["mappings"]["properties"]["suggest"]["properties"]["text"]
    index_chain = analysis["analyzer"][text["analyzer"]]
    assert index_chain["tokenizer"] == "keyword"
    assert analysis["filter"][index_chain["filter"][-1]]["type"] == "edge_ngram"
    search_chain = analysis["analyzer"][text["search_analyzer"]]
    assert all(analysis["filter"].get(f, {}).get("type") != "edge_ngram" for f in search_chain["filter"])
    pinyin_field = text["fields"]["pinyin"]
    pinyin_chain = analysis["analyzer"][pinyin_field["analyzer"]]["filter"]
    pinyin = analysis["filter"]["kb_pinyin"]
    assert pinyin["type"] == "pinyin"
    assert pinyin["keep_first_letter"] is True
    assert pinyin["keep_joined_full_pinyin"] is True
    assert pinyin["keep_original"] is False
    assert pinyin_chain.index("kb_pinyin") < pinyin_chain.index("kb_pinyin_edge")
    # The only pinyin-analyzed field in the whole mapping is the suggestion sub-field.
    pinyin_analyzers = {n for n, s in analysis["analyzer"].items() if "kb_pinyin" in s.get("filter", [])}
    users = [n for n, s in _field_specs(ik_body["mappings"]["properties"]) if s.get("analyzer") in pinyin_analyzers]
    assert users == ["suggest.text.pinyin"]


def test_traditional_characters_fold_inside_elasticsearch(ik_body: dict[str, Any]) -> None:
    analysis = ik_body["settings"]["index"]["analysis"]
    rules = analysis["char_filter"]["kb_t2s"]["mappings"]
    assert analysis["char_filter"]["kb_t2s"]["type"] == "mapping"
    for rule in ("寬=>宽", "頻=>频", "攜=>携", "號=>号", "轉=>转", "貓=>猫", "暢=>畅", "掛=>挂", "網=>网"):
        assert rule in rules
    sources = {rule.split("=>")[0] for rule in rules}
    assert not sources & set("宽带光猫携号转网信用卡挂失")  # simplified text is left alone
    assert all(re.fullmatch(r".=>.", rule) for rule in rules)  # one character each way: offsets hold
    for name in ("kb_index", "kb_search", "kb_phrase", "kb_suggest_index", "kb_suggest_search"):
        assert analysis["analyzer"][name]["char_filter"] == ["kb_t2s"], name


def test_query_stopwords_only_at_search_time(ik_body: dict[str, Any]) -> None:
    analysis = ik_body["settings"]["index"]["analysis"]
    stop = analysis["filter"]["kb_query_stop"]
    assert stop["type"] == "stop" and {"的", "吗"} <= set(stop["stopwords"])
    assert "kb_query_stop" in analysis["analyzer"]["kb_search"]["filter"]
    assert "kb_query_stop" not in analysis["analyzer"]["kb_index"]["filter"]
    assert "kb_query_stop" not in analysis["analyzer"]["kb_phrase"]["filter"]


def test_versioned_index_names() -> None:
    assert b.index_name("kb_items", "ik", 3) == "kb_items_ik_v3"
    existing = ["kb_items_ik_v1", "kb_items_ik_v3", "kb_items_smartcn_v7", "kb_items_ik_vX", "other_ik_v9"]
    assert b.next_index_name(existing, "kb_items", "ik") == "kb_items_ik_v4"
    assert b.next_index_name([], "kb_items", "smartcn") == "kb_items_smartcn_v1"
    assert b.index_version("kb_items_ik_v12", "kb_items", "ik") == 12
    assert b.index_version("kb_items_ik_v12", "kb_items", "smartcn") is None
    assert (b.read_alias("kb_items"), b.write_alias("kb_items")) == ("kb_items", "kb_items_write")
    for bad in ("KB", "kb items", "", "_kb", "kb/items"):
        with pytest.raises(ValueError):
            b.validate_prefix(bad)


# =========================================================================== aliases, language


def test_alias_swap_is_one_atomic_actions_list() -> None:
    body = b.alias_actions(["kb_items_ik_v1"], "kb_items_ik_v2", read="kb_items", write="kb_items_write")
    assert list(body) == ["actions"]
    actions = body["actions"]
    assert actions == [
        {"remove": {"index": "kb_items_ik_v1", "alias": "kb_items"}},
        {"remove": {"index": "kb_items_ik_v1", "alias": "kb_items_write"}},
        {"add": {"index": "kb_items_ik_v2", "alias": "kb_items"}},
        {"add": {"index": "kb_items_ik_v2", "alias": "kb_items_write", "is_write_index": True}},
    ]


def test_alias_swap_for_first_index_and_single_alias() -> None:
    assert b.alias_actions([], "kb_items_ik_v1", read="kb_items") == {
        "actions": [{"add": {"index": "kb_items_ik_v1", "alias": "kb_items"}}]
    }
    moved = b.alias_actions(["kb_items_ik_v2", "kb_items_ik_v1"], "kb_items_ik_v2", write="kb_items_write")
    assert moved["actions"] == [
        {"remove": {"index": "kb_items_ik_v1", "alias": "kb_items_write"}},
        {"add": {"index": "kb_items_ik_v2", "alias": "kb_items_write", "is_write_index": True}},
    ]
    with pytest.raises(ValueError):
        b.alias_actions(["a"], "b")


LANGUAGE = LanguageResources(
    words=["光猫", "携号转网", "5G畅享套餐", "  ", "信用卡 挂失"],
    synonym_groups=[
        ["宽带", "宽频", "寬頻"],
        ["携号转网", "攜號轉網", "转网"],
        ["信用卡挂失", "卡丢了"],
        ["光猫"],  # one member: no rule
        ["５Ｇ畅享套餐", "5g畅享套餐", "5G套餐"],
        ["停机,保号", "保号停机"],  # a comma would split the rule: the term is dropped
    ],
)


def test_synonym_set_body_from_groups() -> None:
    body = b.synonyms_set_body(LANGUAGE)
    rules = [rule["synonyms"] for rule in body["synonyms_set"]]
    assert rules == ["宽带, 宽频", "携号转网, 转网", "信用卡挂失, 卡丢了", "5g畅享套餐, 5g套餐"]
    ids = [rule["id"] for rule in body["synonyms_set"]]
    assert len(set(ids)) == len(ids)
    assert b.synonyms_set_body(LANGUAGE) == body  # stable ids: unchanged groups keep them
    assert b.synonyms_set_body(LanguageResources()) == {"synonyms_set": []}


def test_ik_user_dictionary_holds_words_and_synonym_terms() -> None:
    text = b.ik_user_dictionary(LANGUAGE)
    assert text.endswith("\n") and "\r" not in text
    lines = text.splitlines()
    assert len(lines) == len(set(lines))
    for word in ("光猫", "携号转网", "5g畅享套餐", "宽频", "卡丢了", "转网"):
        assert word in lines
    assert "攜號轉網" not in lines  # folded like the text IK sees after the char filter
    assert all(line.strip() == line and line and " " not in line for line in lines)


# =========================================================================== documents


def _assert_fits(source: Any, properties: dict[str, Any], path: str = "") -> None:
    """Every key of `source` is declared in the strict mapping (ES would refuse it otherwise)."""
    items = source if isinstance(source, list) else [source]
    for item in items:
        for key, value in item.items():
            assert key in properties, f"{path}{key} is not mapped"
            spec = properties[key]
            if spec.get("type") in ("object", "nested") and value:
                _assert_fits(value, spec["properties"], f"{path}{key}.")


def test_document_body_fits_the_strict_mapping(ik_body: dict[str, Any]) -> None:
    doc = make_doc(channel_answers={"agent": "派单", "sms": "短信渠道没有映射", "app": "App 内自助报修"})
    source = b.document_body(doc)
    _assert_fits(source, ik_body["mappings"]["properties"])
    assert set(source["answer"]) == {"agent", "app"}


def test_document_body_values() -> None:
    source = b.document_body(make_doc(updated_at=datetime(2026, 2, 14, 16, 0, tzinfo=timezone(timedelta(hours=8)))))
    assert source["item_id"] == 101 and source["version_no"] == 3
    assert source["category_ids"] == ["1", "4", "9"]
    assert source["category_paths"] == ["1/4/9"]
    assert source["attributes"] == ["region=华东", "region=华南", "sla_hours=24", "level=2"]
    assert source["updated_at"] == "2026-02-14T08:00:00.000+00:00"
    assert source["valid_from"] == "2026-01-01T00:00:00.000+00:00" and source["valid_to"] is None
    assert source["attachments"][0] == {
        "attachment_id": 7,
        "file_name": "光猫指示灯说明.pdf",
        "text": "PON 灯常亮表示注册成功；LOS 灯闪红表示光信号中断。",
    }
    for part in ("宽带故障报修流程", "寬頻連不上網", "重启光猫", "LOS 灯闪红", "报修单模板.docx"):
        assert part in source["all_text"]
    assert "派单" not in source["all_text"]  # channel answers stay in their own fields
    assert source["suggest"] == [
        {"text": "宽带故障报修流程", "primary": True},
        {"text": "家里宽带断网了怎么办？", "primary": True},
        {"text": "光猫红灯闪烁怎么处理", "primary": False},
        {"text": "寬頻連不上網", "primary": False},
    ]


def test_naive_datetimes_are_utc_and_suggest_candidates_deduplicated() -> None:
    doc = make_doc(
        updated_at=datetime(2026, 2, 14, 8, 0),
        question="宽带故障报修流程",
        similar_questions=["宽带故障报修流程", "  ", "？？"],
    )
    source = b.document_body(doc)
    assert source["updated_at"] == "2026-02-14T08:00:00.000+00:00"
    assert source["suggest"] == [{"text": "宽带故障报修流程", "primary": True}]


def test_index_action_uses_external_versions_through_the_bulk_helper() -> None:
    doc = make_doc(version_no=17)
    header, body = expand_action(b.index_action(doc, "kb_items_write"))
    assert header == {
        "index": {"_index": "kb_items_write", "_id": "101", "version": 17, "version_type": "external_gte"}
    }
    assert body == b.document_body(doc)
    header, body = expand_action(b.delete_action(101, "kb_items_ik_v1"))
    assert (header, body) == ({"delete": {"_index": "kb_items_ik_v1", "_id": "101"}}, None)


# =========================================================================== search body

QUERY_VARIANTS = [
    SearchQuery(text="宽带故障", principals=["public", "role:agent"], channel="agent"),
    SearchQuery(text="", principals=["public"], channel="web"),
    SearchQuery(text="光猫", principals=["client:7"], channel="wechat", sort="updated", highlight=False),
    SearchQuery(text="信用卡挂失", principals=["dept:12"], channel="app", facets=False, explain=True),
    SearchQuery(
        text="5G畅享套餐",
        principals=["public"],
        channel="web",
        filters=SearchFilters(item_types=["faq"], category_ids=[4], tags=["5G"], valid_at=NOW),
    ),
]


@pytest.mark.parametrize("query", QUERY_VARIANTS, ids=lambda q: q.text or "browse")
def test_acl_and_channel_always_in_filter_context(query: SearchQuery) -> None:
    body = b.search_body(query)
    bool_query = body["query"]["bool"]
    assert bool_query["filter"][0] == {"terms": {"acl_principals": query.principals}}
    assert {"term": {"channels": query.channel}} in bool_query["filter"]
    # Aggregations see exactly the filtered query: nothing global, nothing post-filtered.
    assert "post_filter" not in body
    assert "global" not in {key for key, _ in walk(body.get("aggs", {}))}
    assert set(body) <= {"query", "from", "size", "sort", "track_total_hits", "_source", "aggs", "highlight", "explain"}
    # The only place a query clause sits outside `filter` is the text part under `must`.
    assert "acl_principals" not in json.dumps(bool_query["must"])


def test_no_principals_matches_nothing() -> None:
    body = b.search_body(SearchQuery(text="宽带", principals=[], channel="web"))
    assert body["query"]["bool"]["filter"][0] == {"match_none": {}}
    suggest = b.suggest_body("宽带", [], "web")
    assert suggest["query"]["bool"]["filter"][0] == {"match_none": {}}


def test_facets_are_aggregations_under_the_same_query() -> None:
    body = b.search_body(QUERY_VARIANTS[0])
    assert body["aggs"] == {
        "category": {"terms": {"field": "category_ids", "size": 30}},
        "tag": {"terms": {"field": "tags", "size": 20}},
        "type": {"terms": {"field": "item_type", "size": 20}},
    }
    assert "aggs" not in b.search_body(QUERY_VARIANTS[3])


SPECIAL_TEXTS = [
    '"宽带"故障',
    "title:光猫",
    "携号*转网",
    "(信用卡 挂失",
    "宽带 AND 光猫 OR NOT 套餐",
    "5G畅享套餐😀👍",
    "寬頻故障 攜號轉網",
    "a\\b/c[d]{e}~f^g!h",
]


@pytest.mark.parametrize("text", SPECIAL_TEXTS)
def test_user_text_is_plain_match_text(text: str) -> None:
    body = b.search_body(SearchQuery(text=f"  {text} ", principals=["public"]))
    keys = {key for key, _ in walk(body)}
    assert not keys & {"query_string", "simple_query_string", "wildcard", "regexp", "prefix", "fuzzy"}
    text_queries = [value for key, value in walk(body) if key in ("match", "multi_match", "match_phrase")]
    assert len(text_queries) == 4  # words, phrase, attachments, question words
    for clause in text_queries:
        inner = clause if "query" in clause else next(iter(clause.values()))
        assert inner["query"] == text  # verbatim: no escaping, no folding, no syntax
    suggest = b.suggest_body(text, ["public"], None)
    prefixes = [value["query"] for key, value in walk(suggest) if key in ("suggest.text", "suggest.text.pinyin")]
    assert prefixes == [text, text]


def test_field_boosts_are_ordered() -> None:
    clause = b.text_query("宽带故障")["bool"]["should"][0]["multi_match"]
    assert clause["type"] == "cross_fields" and clause["operator"] == "or"
    boosts = {f.split("^")[0]: float(f.split("^")[1]) for f in clause["fields"]}
    assert boosts["title"] > boosts["question"] > boosts["similar_questions"] > boosts["answer.agent"]
    assert boosts["answer.agent"] > boosts["body"] > b.ATTACHMENT_BOOST
    assert min(boosts["title"], boosts["question"]) >= 5 * boosts["body"]
    assert b.text_query("宽带故障")["bool"]["should"][2]["nested"]["boost"] == b.ATTACHMENT_BOOST
    phrase = b.text_query("宽带故障")["bool"]["should"][1]["multi_match"]
    assert phrase["type"] == "phrase"
    assert all(f.split("^")[0].endswith(".phrase") for f in phrase["fields"])


def test_channel_limits_answer_fields_and_highlights() -> None:
    body = b.search_body(SearchQuery(text="光猫", principals=["public"], channel="wechat"))
    fields = body["query"]["bool"]["must"][0]["bool"]["should"][0]["multi_match"]["fields"]
    assert [f for f in fields if f.startswith("answer.")] == ["answer.wechat^1.5"]
    assert [f for f in body["highlight"]["fields"] if f.startswith("answer.")] == ["answer.wechat"]
    everywhere = b.search_body(SearchQuery(text="光猫", principals=["role:agent"]))
    assert [f for f in everywhere["highlight"]["fields"] if f.startswith("answer.")] == [
        "answer.agent",
        "answer.web",
        "answer.wechat",
        "answer.app",
    ]


def test_filters_map_to_filter_clauses() -> None:
    filters = SearchFilters(
        item_types=["faq", "policy"],
        category_ids=[4, 9],
        tags=["宽带", "报修"],
        attributes={"sla_hours": [24.0, 48], "region": ["华东"], "empty": []},
        statuses=["published", "approved"],
        valid_at=datetime(2026, 3, 1, 17, 30, tzinfo=timezone(timedelta(hours=8))),
        updated_since=datetime(2026, 2, 1),
    )
    clauses = b.filter_clauses(["public"], "web", filters)
    assert clauses == [
        {"terms": {"acl_principals": ["public"]}},
        {"term": {"channels": "web"}},
        {"terms": {"status": ["published", "approved"]}},
        {"terms": {"item_type": ["faq", "policy"]}},
        {"term": {"category_ids": "4"}},
        {"term": {"category_ids": "9"}},
        {"term": {"tags": "宽带"}},
        {"term": {"tags": "报修"}},
        {"match_none": {}},  # "empty" attribute with no accepted value
        {"terms": {"attributes": ["region=华东"]}},
        {"terms": {"attributes": ["sla_hours=24", "sla_hours=48"]}},
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
    # attribute terms are written the same way on documents and in filters
    assert b.attribute_term("sla_hours", 24.0) in b.document_body(make_doc())["attributes"]


def test_default_filters_only_published_no_other_restriction() -> None:
    clauses = b.filter_clauses(["public", "public"], None, SearchFilters())
    assert clauses == [{"terms": {"acl_principals": ["public"]}}, {"terms": {"status": ["published"]}}]
    assert b.filter_clauses(["public"], None, SearchFilters(statuses=[])) == [{"terms": {"acl_principals": ["public"]}}]


def test_sorting_paging_explain() -> None:
    relevance = b.search_body(SearchQuery(text="宽带", principals=["public"], offset=20, limit=10))
    assert relevance["sort"][0] == {"_score": {"order": "desc"}}
    assert (relevance["from"], relevance["size"], relevance["track_total_hits"]) == (20, 10, True)
    assert "explain" not in relevance
    updated = b.search_body(SearchQuery(text="宽带", principals=["public"], sort="updated", explain=True))
    assert updated["sort"] == [{"updated_at": {"order": "desc"}}, {"item_id": {"order": "asc"}}]
    assert updated["explain"] is True
    browse = b.search_body(SearchQuery(text="   ", principals=["public"]))
    assert browse["query"]["bool"]["must"] == [{"match_all": {}}]
    assert browse["sort"][0] == {"updated_at": {"order": "desc"}}
    assert "highlight" not in browse
    deep = b.search_body(SearchQuery(text="宽带", principals=["public"], offset=9_995, limit=50))
    assert deep["from"] + deep["size"] == b.MAX_RESULT_WINDOW
    beyond = b.search_body(SearchQuery(text="宽带", principals=["public"], offset=50_000, limit=10))
    assert (beyond["from"], beyond["size"]) == (b.MAX_RESULT_WINDOW, 0)


def test_highlight_settings() -> None:
    body = b.search_body(SearchQuery(text="光猫", principals=["public"]))
    highlight = body["highlight"]
    assert highlight["type"] == "unified"
    assert (highlight["boundary_scanner"], highlight["boundary_scanner_locale"]) == ("sentence", "zh-CN")
    assert (highlight["pre_tags"], highlight["post_tags"], highlight["encoder"]) == (["<em>"], ["</em>"], "html")
    assert highlight["fields"]["title"] == {"number_of_fragments": 0}
    assert highlight["fields"]["body"] == {}
    inner = body["query"]["bool"]["must"][0]["bool"]["should"][2]["nested"]["inner_hits"]
    assert inner["highlight"]["fields"] == {"attachments.text": {}}
    assert inner["_source"] is False
    assert "attachments.attachment_id" in body["_source"] and "attachments.text" not in body["_source"]
    # pinyin is never highlighted (its offsets are meaningless)
    assert not [k for k, _ in walk(body) if "pinyin" in k]
    quiet = b.search_body(SearchQuery(text="光猫", principals=["public"], highlight=False))
    assert "highlight" not in quiet and "inner_hits" not in json.dumps(quiet)


def test_query_of_only_stopwords_keeps_them() -> None:
    assert b.only_stopwords("的吗？") and b.only_stopwords("了 呢") and b.only_stopwords("the")
    assert not b.only_stopwords("光猫的") and not b.only_stopwords("") and not b.only_stopwords("？！")
    only = b.text_query("的吗？")["bool"]["should"][0]["multi_match"]
    assert only["analyzer"] == "kb_phrase"
    # strict: the required share is counted without question words; loose: the plain search analyzer
    assert b.text_query("光猫的")["bool"]["should"][0]["multi_match"]["analyzer"] == "kb_search_required"
    assert "analyzer" not in b.text_query("光猫的", strict=False)["bool"]["should"][0]["multi_match"]
    # nothing but question words: those are the words required, as in the embedded backend
    assert b.only_question_words("怎么 可以吗") and not b.only_question_words("怎么办理")
    assert "analyzer" not in b.text_query("怎么 可以吗")["bool"]["should"][0]["multi_match"]


def test_multi_word_synonyms_are_not_phrase_queries() -> None:
    should = b.text_query("携号转网")["bool"]["should"]
    assert should[0]["multi_match"]["auto_generate_synonyms_phrase_query"] is False
    assert should[2]["nested"]["query"]["match"]["attachments.text"]["auto_generate_synonyms_phrase_query"] is False


# =========================================================================== suggest body


def test_suggest_body_prefix_pinyin_under_the_search_filter() -> None:
    body = b.suggest_body(" kdgz ", ["public", "client:7"], "wechat", 5, now=NOW)
    filters = body["query"]["bool"]["filter"]
    assert filters[0] == {"terms": {"acl_principals": ["public", "client:7"]}}
    assert {"term": {"channels": "wechat"}} in filters
    assert {"terms": {"status": ["published"]}} in filters
    assert any("must_not" in c.get("bool", {}) for c in filters)  # valid now
    nested = body["query"]["bool"]["must"][0]["nested"]
    assert nested["path"] == "suggest"
    matches = nested["query"]["bool"]["must"][0]["bool"]["should"]
    assert matches == [
        {"match": {"suggest.text": {"query": "kdgz"}}},
        {"match": {"suggest.text.pinyin": {"query": "kdgz"}}},
    ]
    assert nested["query"]["bool"]["should"][0]["term"]["suggest.primary"]["value"] is True
    assert "completion" not in {k for k, _ in walk(body)} and "suggest" not in body
    assert body["size"] == 20
    no_pinyin = b.suggest_body("宽带", ["public"], None, pinyin=False)
    assert "pinyin" not in json.dumps(no_pinyin)


# =========================================================================== responses

SEARCH_RESPONSE: dict[str, Any] = {
    "took": 12,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {
        "total": {"value": 2, "relation": "eq"},
        "max_score": 23.71,
        "hits": [
            {
                "_index": "kb_items_ik_v2",
                "_id": "101",
                "_score": 23.71,
                "_source": {
                    "item_id": 101,
                    "version_no": 3,
                    "title": "宽带故障报修流程",
                    "item_type": "faq",
                    "updated_at": "2026-02-14T08:00:00.123+00:00",
                    "attachments": [
                        {"attachment_id": 7, "file_name": "光猫指示灯说明.pdf"},
                        {"attachment_id": 8, "file_name": "报修单模板.docx"},
                    ],
                },
                "highlight": {
                    "title": ["<em>宽带</em>故障报修流程"],
                    "similar_questions": [
                        "<em>寬頻</em>連不上網",
                        "<em>宽带</em>断了",
                        "<em>宽带</em>没信号",
                        "<em>宽带</em>很慢",
                    ],
                    "answer.wechat": ["您好，请先重启光猫，<em>宽带</em>一般会恢复哦。"],
                    "body": ["请先重启光猫。", "若 LOS 灯仍为红色，请登记<em>宽带</em>故障单。"],
                },
                "inner_hits": {
                    "attachments": {
                        "hits": {
                            "total": {"value": 2, "relation": "eq"},
                            "max_score": 3.1,
                            "hits": [
                                {
                                    "_index": "kb_items_ik_v2",
                                    "_id": "101",
                                    "_nested": {"field": "attachments", "offset": 1},
                                    "_score": 3.1,
                                    "highlight": {"attachments.text": ["报修单需填写<em>宽带</em>账号"]},
                                },
                                {
                                    "_index": "kb_items_ik_v2",
                                    "_id": "101",
                                    "_nested": {"field": "attachments", "offset": 0},
                                    "_score": 1.2,
                                },
                            ],
                        }
                    }
                },
                "_explanation": {
                    "value": 23.71,
                    "description": "sum of:",
                    "details": [
                        {"value": 20.0, "description": "weight(title:宽带 in 0)", "details": []},
                        {"value": 3.71, "description": "weight(body:宽带 in 0)", "details": []},
                    ],
                },
                "sort": [23.71, 1771056000123, 101],
            },
            {
                "_index": "kb_items_ik_v2",
                "_id": "205",
                "_score": 4.5,
                "_source": {
                    "item_id": 205,
                    "version_no": 1,
                    "title": "携号转网办理条件",
                    "item_type": "policy",
                    "updated_at": "2026-01-20T02:00:00.000+00:00",
                },
                "inner_hits": {
                    "attachments": {"hits": {"total": {"value": 0, "relation": "eq"}, "max_score": None, "hits": []}}
                },
            },
        ],
    },
    "aggregations": {
        "category": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [{"key": "4", "doc_count": 2}, {"key": "9", "doc_count": 1}],
        },
        "tag": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [{"key": "宽带", "doc_count": 1}, {"key": "携号转网", "doc_count": 1}],
        },
        "type": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [{"key": "faq", "doc_count": 1}, {"key": "policy", "doc_count": 1}],
        },
    },
}


# A page beyond the rerank window: the engine's order and scores, the mapping alone.
BEYOND_WINDOW = SearchQuery(text="宽带", principals=["public"], offset=ranking.RERANK_WINDOW)


def test_search_response_maps_to_search_result() -> None:
    result = b.search_result(SEARCH_RESPONSE, BEYOND_WINDOW)
    assert result.total == 2 and result.took_ms == 12.0
    first, second = result.hits
    assert (first.item_id, first.version_no, first.score, first.title, first.item_type) == (
        101,
        3,
        23.71,
        "宽带故障报修流程",
        "faq",
    )
    assert first.updated_at == datetime(2026, 2, 14, 8, 0, 0, 123000, tzinfo=UTC)
    assert [(h.field, len(h.fragments)) for h in first.highlights] == [
        ("title", 1),
        ("similar_questions", 3),
        ("answer.wechat", 1),
        ("body", 2),
        ("attachment", 1),
    ]
    attachment = first.highlights[-1]
    assert (attachment.attachment_id, attachment.file_name) == (8, "报修单模板.docx")
    assert attachment.fragments == ["报修单需填写<em>宽带</em>账号"]
    assert first.explanation is not None
    assert first.explanation.splitlines()[0] == "23.71 = sum of:"
    assert "  20 = weight(title:宽带 in 0)" in first.explanation.splitlines()
    assert second.highlights == [] and second.explanation is None and second.item_type == "policy"
    assert result.facets == {
        "category": [FacetValue("4", 2), FacetValue("9", 1)],
        "tag": [FacetValue("宽带", 1), FacetValue("携号转网", 1)],
        "type": [FacetValue("faq", 1), FacetValue("policy", 1)],
    }


def test_hit_sorted_by_date_has_score_zero_and_nested_source_is_used_when_present() -> None:
    hit = {
        "_id": "3",
        "_score": None,
        "_source": {
            "item_id": 3,
            "version_no": 2,
            "title": "信用卡挂失",
            "item_type": "faq",
            "updated_at": "2026-01-02T00:00:00.000Z",
        },
        "inner_hits": {
            "attachments": {
                "hits": {
                    "hits": [
                        {
                            "_nested": {"field": "attachments", "offset": 5},
                            "_source": {"attachment_id": 31, "file_name": "挂失须知.pdf"},
                            "highlight": {"attachments.text": ["<em>挂失</em>后补卡"]},
                        }
                    ]
                }
            }
        },
    }
    mapped = b.search_hit(hit)
    assert mapped.score == 0.0
    assert mapped.updated_at == datetime(2026, 1, 2, tzinfo=UTC)
    assert (mapped.highlights[0].attachment_id, mapped.highlights[0].file_name) == (31, "挂失须知.pdf")
    empty = b.search_result({"took": 1, "hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}, BEYOND_WINDOW)
    assert (empty.total, empty.hits, empty.facets) == (0, [], {})


def _suggest_hit(item_id: int, title: str, candidates: list[str], offset: int) -> dict[str, Any]:
    return {
        "_id": str(item_id),
        "_score": 2.0,
        "_source": {"item_id": item_id, "title": title, "suggest": [{"text": c} for c in candidates]},
        "inner_hits": {
            "suggest": {
                "hits": {
                    "total": {"value": 1, "relation": "eq"},
                    "hits": [{"_id": str(item_id), "_nested": {"field": "suggest", "offset": offset}, "_score": 2.0}],
                }
            }
        },
    }


def test_suggest_response_maps_to_distinct_suggestions() -> None:
    response = {
        "took": 3,
        "hits": {
            "total": {"value": 4, "relation": "eq"},
            "hits": [
                _suggest_hit(101, "宽带故障报修流程", ["宽带故障报修流程", "家里宽带断网了怎么办？"], 1),
                _suggest_hit(102, "宽带故障报修（企业）", ["宽带故障报修（企业）", "家里宽带断网了怎么办？"], 1),
                _suggest_hit(103, "宽带资费", ["宽带资费"], 0),
                _suggest_hit(104, "宽带提速", ["宽带提速"], 0),
            ],
        },
    }
    assert [(s.item_id, s.text) for s in b.suggestions(response, limit=2)] == [
        (101, "家里宽带断网了怎么办？"),
        (103, "宽带资费"),
    ]


def test_versions_page_and_search_after() -> None:
    response = {
        "pit_id": "pit-2",
        "hits": {
            "hits": [
                {"_id": "101", "_source": {"item_id": 101, "version_no": 3}, "sort": [0]},
                {"_id": "205", "_source": {"item_id": 205, "version_no": 1}, "sort": [1]},
            ]
        },
    }
    assert b.versions_page(response) == ({101: 3, 205: 1}, [1], "pit-2")
    assert b.versions_page({"pit_id": "pit-3", "hits": {"hits": []}}) == ({}, None, "pit-3")
    body = b.indexed_versions_body("pit-2", [1], size=500)
    assert body["pit"] == {"id": "pit-2", "keep_alive": "1m"} and body["search_after"] == [1]
    assert body["sort"] == [{"_shard_doc": "asc"}] and body["size"] == 500
    assert "search_after" not in b.indexed_versions_body("pit-1", None)


@pytest.mark.parametrize(
    ("ok", "item", "expected"),
    [
        (True, {"index": {"_id": "101", "status": 201, "result": "created"}}, ("101", "ok", None)),
        (
            False,
            {"index": {"_id": "101", "status": 409, "error": {"type": "version_conflict_engine_exception"}}},
            ("101", "superseded", None),
        ),
        (False, {"delete": {"_id": "9", "status": 404, "result": "not_found"}}, ("9", "ok", None)),
        (
            False,
            {
                "index": {
                    "_id": "7",
                    "status": 400,
                    "error": {
                        "type": "document_parsing_exception",
                        "reason": "[1:2] failed to parse field [title]",
                        "caused_by": {
                            "type": "illegal_argument_exception",
                            "reason": "offsets must not go backwards",
                        },
                    },
                }
            },
            (
                "7",
                "error",
                "400 document_parsing_exception: [1:2] failed to parse field [title] "
                "(caused by illegal_argument_exception: offsets must not go backwards)",
            ),
        ),
        (
            False,
            {
                "index": {
                    "_id": "8",
                    "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "queue full"},
                }
            },
            ("8", "unavailable", "429 es_rejected_execution_exception: queue full"),
        ),
        # shape of a whole-chunk failure reported by the helper with raise_on_exception=False
        (
            False,
            {"index": {"_id": "6", "status": 503, "error": "ApiError(503, 'unavailable')"}},
            ("6", "unavailable", "503 ApiError(503, 'unavailable')"),
        ),
        (
            False,
            {"index": {"_id": "5", "status": "N/A", "error": "ConnectionError"}},
            ("5", "unavailable", "ConnectionError"),
        ),
    ],
)
def test_bulk_item_outcomes(ok: bool, item: dict[str, Any], expected: tuple[str, str, str | None]) -> None:
    assert b.bulk_item_outcome(ok, item) == expected


# =========================================================================== client wiring


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any


Responder = Callable[[Call], tuple[int, Any]]


@dataclass
class FakeES:
    """An HTTP server answering like Elasticsearch 9 with canned bodies; records requests."""

    routes: list[tuple[str, str, Responder]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, pattern: str, responder: Responder | tuple[int, Any]) -> None:
        fn = responder if callable(responder) else (lambda _call, r=responder: r)
        self.routes.insert(0, (method, pattern, fn))

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: Any = None
        if raw:
            text = raw.decode()
            if "ndjson" in request.headers.get("content-type", ""):
                body = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                body = json.loads(text)
        call = Call(request.method, request.path, dict(request.query), body)
        self.calls.append(call)
        status, payload = 404, {"error": {"type": "no_route", "reason": request.path}, "status": 404}
        for method, pattern, responder in self.routes:
            if re.fullmatch(method, request.method) and re.fullmatch(pattern, request.path):
                status, payload = responder(call)
                break
        return web.json_response(
            payload,
            status=status,
            headers={"X-Elastic-Product": "Elasticsearch"},
            dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
        )

    def paths(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.calls]


def not_found(kind: str) -> tuple[int, Any]:
    return 404, {
        "error": {"type": kind, "reason": "missing", "root_cause": [{"type": kind, "reason": "missing"}]},
        "status": 404,
    }


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeES]:
    fake = FakeES()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def backend(fake_es: FakeES) -> AsyncIterator[ElasticsearchBackend]:
    es = ElasticsearchBackend(fake_es.url, analyzer="ik", index_prefix="kbt", request_timeout=5)
    yield es
    await es.close()


async def test_open_creates_synonyms_set_then_index_with_aliases(
    fake_es: FakeES, backend: ElasticsearchBackend
) -> None:
    fake_es.on("GET", "/_synonyms/kbt_synonyms", not_found("resource_not_found_exception"))
    fake_es.on("PUT", "/_synonyms/kbt_synonyms", (200, {"result": "created"}))
    fake_es.on("GET", "/_alias/kbt", not_found("aliases_not_found_exception"))
    fake_es.on(
        "GET|POST",
        "/_resolve/index/.*",
        (200, {"indices": [{"name": "kbt_ik_v1", "attributes": ["open"]}], "aliases": [], "data_streams": []}),
    )
    fake_es.on("PUT", "/kbt_ik_v2", (200, {"acknowledged": True, "shards_acknowledged": True, "index": "kbt_ik_v2"}))
    await backend.open()
    assert fake_es.paths() == [
        "GET /_synonyms/kbt_synonyms",
        "PUT /_synonyms/kbt_synonyms",
        "GET /_alias/kbt",
        "POST /_resolve/index/kbt_ik_v*",
        "PUT /kbt_ik_v2",  # a leftover v1 without aliases keeps its number
    ]
    assert fake_es.calls[1].body == {"synonyms_set": []}
    assert fake_es.calls[-1].body == b.create_index_body("ik", "kbt_synonyms", aliases=b.initial_aliases("kbt"))


async def test_open_is_idempotent_when_the_alias_exists(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("GET", "/_synonyms/kbt_synonyms", (200, {"count": 0, "synonyms_set": []}))
    fake_es.on("GET", "/_alias/kbt", (200, {"kbt_ik_v3": {"aliases": {"kbt": {}}}}))
    await backend.open()
    assert fake_es.paths() == ["GET /_synonyms/kbt_synonyms", "GET /_alias/kbt"]


async def test_upsert_sends_external_versions_and_reports_each_document(
    fake_es: FakeES, backend: ElasticsearchBackend
) -> None:
    def bulk(call: Call) -> tuple[int, Any]:
        items = []
        for header in call.body[::2]:
            doc_id = header["index"]["_id"]
            if doc_id == "102":
                items.append(
                    {
                        "index": {
                            "_index": "kbt_ik_v1",
                            "_id": doc_id,
                            "status": 409,
                            "error": {
                                "type": "version_conflict_engine_exception",
                                "reason": "current version [9] is higher",
                            },
                        }
                    }
                )
            elif doc_id == "103":
                items.append(
                    {
                        "index": {
                            "_index": "kbt_ik_v1",
                            "_id": doc_id,
                            "status": 400,
                            "error": {
                                "type": "document_parsing_exception",
                                "reason": "failed to parse field [updated_at]",
                            },
                        }
                    }
                )
            else:
                items.append(
                    {"index": {"_index": "kbt_ik_v1", "_id": doc_id, "_version": 4, "result": "updated", "status": 200}}
                )
        return 200, {"took": 5, "errors": True, "items": items}

    fake_es.on("PUT|POST", "/_bulk", bulk)
    fake_es.on("POST", "/_bulk", bulk)
    docs = [make_doc(101, version_no=3), make_doc(101, version_no=4), make_doc(102), make_doc(103)]
    result = await backend.upsert(docs)
    assert result == {101: None, 102: None, 103: "400 document_parsing_exception: failed to parse field [updated_at]"}
    (call,) = fake_es.calls
    headers = call.body[::2]
    assert [h["index"]["_id"] for h in headers] == ["101", "102", "103"]  # one per item, the newest
    assert headers[0]["index"] == {"_index": "kbt_write", "_id": "101", "version": 4, "version_type": "external_gte"}
    assert call.body[1] == b.document_body(make_doc(101, version_no=4))


async def test_search_sends_the_body_and_maps_the_answer(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("POST", "/kbt/_search", (200, SEARCH_RESPONSE))
    query = SearchQuery(text="寬頻 故障", principals=["public"], channel="wechat")
    result = await backend.search(query)
    (call,) = fake_es.calls
    # The first page is reranked (app.search.ranking): the engine is asked for the whole window.
    assert call.body == b.search_body(ranking.engine_query(query))
    assert call.body["from"] == 0 and call.body["size"] == ranking.RERANK_WINDOW
    assert result == b.search_result(SEARCH_RESPONSE, query)


async def test_document_count_asks_the_read_alias(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("GET|POST", "/kbt/_count", (200, {"count": 27696, "_shards": {"total": 1, "successful": 1}}))
    assert await backend.document_count() == 27696
    fake_es.on("GET|POST", "/kbt/_count", (503, {"error": {"type": "cluster_block_exception"}, "status": 503}))
    with pytest.raises(SearchUnavailable):
        await backend.document_count()


async def test_suggest_skips_empty_input_and_filters_under_acl(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on(
        "POST",
        "/kbt/_search",
        (200, {"took": 1, "hits": {"hits": [_suggest_hit(101, "宽带故障报修流程", ["宽带故障报修流程"], 0)]}}),
    )
    assert await backend.suggest(" ？ ", ["public"], "web") == []
    assert fake_es.calls == []
    found = await backend.suggest("kdgz", ["public"], "web", limit=3)
    assert [(s.item_id, s.text) for s in found] == [(101, "宽带故障报修流程")]
    body = fake_es.calls[0].body
    assert body["query"]["bool"]["filter"][:2] == [
        {"terms": {"acl_principals": ["public"]}},
        {"term": {"channels": "web"}},
    ]


async def test_set_language_puts_the_synonyms_set(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("PUT", "/_synonyms/kbt_synonyms", (200, {"result": "updated", "reload_analyzers_details": {}}))
    await backend.set_language(LANGUAGE)
    assert fake_es.calls[0].body == b.synonyms_set_body(LANGUAGE)


async def test_indexed_versions_walks_a_point_in_time(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    pages = iter(
        [
            {"pit_id": "p2", "hits": {"hits": [{"_id": "1", "_source": {"item_id": 1, "version_no": 5}, "sort": [0]}]}},
            {"pit_id": "p3", "hits": {"hits": [{"_id": "2", "_source": {"item_id": 2, "version_no": 1}, "sort": [1]}]}},
            {"pit_id": "p3", "hits": {"hits": []}},
        ]
    )
    fake_es.on("POST", "/kbt/_pit", (200, {"id": "p1"}))
    fake_es.on("POST", "/_search", lambda _call: (200, next(pages)))
    fake_es.on("DELETE", "/_pit", (200, {"succeeded": True, "num_freed": 1}))
    assert await backend.indexed_versions() == {1: 5, 2: 1}
    assert fake_es.paths() == ["POST /kbt/_pit", "POST /_search", "POST /_search", "POST /_search", "DELETE /_pit"]
    assert fake_es.calls[0].query["keep_alive"] == "1m"
    assert [c.body["pit"]["id"] for c in fake_es.calls[1:4]] == ["p1", "p2", "p3"]
    assert [c.body.get("search_after") for c in fake_es.calls[1:4]] == [None, [0], [1]]
    assert fake_es.calls[-1].body == {"id": "p3"}


def _aliases_with(read: list[str], write: list[str]) -> Callable[[Call], tuple[int, Any]]:
    def answer(call: Call) -> tuple[int, Any]:
        targets = read if call.path.endswith("/kbt") else write
        if not targets:
            return not_found("aliases_not_found_exception")
        alias = call.path.rsplit("/", 1)[1]
        return 200, {name: {"aliases": {alias: {}}} for name in targets}

    return answer


async def test_rebuild_moves_writes_loads_swaps_readers_atomically_and_drops_old(
    fake_es: FakeES, backend: ElasticsearchBackend
) -> None:
    fake_es.on("GET", "/_synonyms/kbt_synonyms", (200, {"count": 0, "synonyms_set": []}))
    fake_es.on("GET", "/_alias/.*", _aliases_with(["kbt_ik_v1"], ["kbt_ik_v1"]))
    fake_es.on(
        "GET|POST", "/_resolve/index/.*", (200, {"indices": [{"name": "kbt_ik_v1"}], "aliases": [], "data_streams": []})
    )
    fake_es.on("PUT", "/kbt_ik_v2", (200, {"acknowledged": True}))
    fake_es.on("POST", "/_aliases", (200, {"acknowledged": True}))
    fake_es.on(
        "PUT|POST",
        "/_bulk",
        lambda call: (
            200,
            {"errors": False, "items": [{"index": {"_id": h["index"]["_id"], "status": 201}} for h in call.body[::2]]},
        ),
    )
    fake_es.on("POST", "/kbt_ik_v2/_refresh", (200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}))
    fake_es.on("DELETE", "/kbt_ik_v1", (200, {"acknowledged": True}))
    await backend.rebuild([make_doc(101), make_doc(205, title="携号转网办理条件")])
    assert fake_es.paths() == [
        "GET /_synonyms/kbt_synonyms",
        "GET /_alias/kbt",
        "GET /_alias/kbt_write",
        "POST /_resolve/index/kbt_ik_v*",
        "PUT /kbt_ik_v2",
        "POST /_aliases",
        "PUT /_bulk",
        "POST /kbt_ik_v2/_refresh",
        "POST /_aliases",
        "DELETE /kbt_ik_v1",
    ]
    assert "aliases" not in fake_es.calls[4].body
    assert fake_es.calls[5].body == b.alias_actions(["kbt_ik_v1"], "kbt_ik_v2", write="kbt_write")
    assert {h["index"]["_index"] for h in fake_es.calls[6].body[::2]} == {"kbt_ik_v2"}
    assert fake_es.calls[8].body == {
        "actions": [
            {"remove": {"index": "kbt_ik_v1", "alias": "kbt"}},
            {"add": {"index": "kbt_ik_v2", "alias": "kbt"}},
        ]
    }


async def test_failed_rebuild_keeps_the_old_index(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("GET", "/_synonyms/kbt_synonyms", (200, {"count": 0, "synonyms_set": []}))
    fake_es.on("GET", "/_alias/.*", _aliases_with(["kbt_ik_v1"], ["kbt_ik_v1"]))
    fake_es.on(
        "GET|POST", "/_resolve/index/.*", (200, {"indices": [{"name": "kbt_ik_v1"}], "aliases": [], "data_streams": []})
    )
    fake_es.on("PUT", "/kbt_ik_v2", (200, {"acknowledged": True}))
    fake_es.on("POST", "/_aliases", (200, {"acknowledged": True}))
    fake_es.on(
        "PUT|POST",
        "/_bulk",
        (
            200,
            {
                "errors": True,
                "items": [
                    {
                        "index": {
                            "_id": "101",
                            "status": 400,
                            "error": {"type": "document_parsing_exception", "reason": "bad"},
                        }
                    }
                ],
            },
        ),
    )
    fake_es.on("DELETE", "/kbt_ik_v2", (200, {"acknowledged": True}))
    with pytest.raises(RebuildFailed) as failure:
        await backend.rebuild([make_doc(101)])
    assert failure.value.errors == {101: "400 document_parsing_exception: bad"}
    assert fake_es.paths()[-2:] == ["POST /_aliases", "DELETE /kbt_ik_v2"]
    assert fake_es.calls[-2].body == b.alias_actions(["kbt_ik_v2"], "kbt_ik_v1", write="kbt_write")
    assert "DELETE /kbt_ik_v1" not in fake_es.paths()


async def test_delete_hits_every_index_behind_the_aliases(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("GET", "/_alias/.*", _aliases_with(["kbt_ik_v1"], ["kbt_ik_v2"]))
    fake_es.on(
        "PUT|POST",
        "/_bulk",
        lambda call: (
            200,
            {
                "errors": True,
                "items": [
                    {
                        "delete": {
                            "_index": h["delete"]["_index"],
                            "_id": h["delete"]["_id"],
                            "status": 404,
                            "result": "not_found",
                        }
                    }
                    for h in call.body
                ],
            },
        ),
    )
    await backend.delete([101, 101, 205])
    bulk = fake_es.calls[-1].body
    assert sorted((h["delete"]["_index"], h["delete"]["_id"]) for h in bulk) == [
        ("kbt_ik_v1", "101"),
        ("kbt_ik_v1", "205"),
        ("kbt_ik_v2", "101"),
        ("kbt_ik_v2", "205"),
    ]


async def test_api_errors_become_search_unavailable(fake_es: FakeES, backend: ElasticsearchBackend) -> None:
    fake_es.on("POST", "/kbt/_search", not_found("index_not_found_exception"))
    with pytest.raises(SearchUnavailable, match="index_not_found_exception"):
        await backend.search(SearchQuery(text="宽带", principals=["public"]))
    fake_es.on(
        "PUT|POST",
        "/_bulk",
        (
            503,
            {
                "error": {
                    "type": "cluster_block_exception",
                    "reason": "blocked",
                    "root_cause": [{"type": "cluster_block_exception", "reason": "blocked"}],
                },
                "status": 503,
            },
        ),
    )
    with pytest.raises(SearchUnavailable, match="whole bulk"):
        await backend.upsert([make_doc(101)])
    fake_es.on("POST", "/kbt/_count", not_found("index_not_found_exception"))
    assert await backend.health() is False
    fake_es.on("POST", "/kbt/_count", (200, {"count": 2, "_shards": {"total": 1}}))
    assert await backend.health() is True


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_cluster_raises_search_unavailable() -> None:
    es = ElasticsearchBackend(f"http://127.0.0.1:{_closed_port()}", index_prefix="kbt", request_timeout=1)
    try:
        assert await es.health() is False
        with pytest.raises(SearchUnavailable, match="unreachable"):
            await es.search(SearchQuery(text="宽带", principals=["public"]))
        with pytest.raises(SearchUnavailable):
            await es.upsert([make_doc(101)])
        with pytest.raises(SearchUnavailable):
            await es.open()
        with pytest.raises(SearchUnavailable):
            await es.suggest("kd", ["public"], None)
    finally:
        await es.close()


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        ElasticsearchBackend("http://localhost:9200", analyzer="jieba")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ElasticsearchBackend("http://localhost:9200", index_prefix="KB Items")
    smartcn = ElasticsearchBackend("http://localhost:9200", analyzer="smartcn")
    assert smartcn.pinyin is False and ElasticsearchBackend("http://localhost:9200").pinyin is True
    assert (smartcn.read_alias, smartcn.write_alias, smartcn.synonyms_set) == (
        "kb_items",
        "kb_items_write",
        "kb_items_synonyms",
    )


def test_t2s_mappings_fold_like_the_embedded_analyzer() -> None:
    rules = dict(rule.split("=>") for rule in b.t2s_char_mappings())
    assert rules["寬"] == "宽" and rules["頻"] == "频"
    assert rules["帳"] == "账" and rules["帐"] == "账"  # the same extra fold as analysis.EXTRA_FOLDS
    from app.search.analysis import normalize

    for src, dst in (("寬頻帳單", "宽频账单"),):
        assert "".join(rules.get(c, c) for c in src) == dst == normalize(src)
