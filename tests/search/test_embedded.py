"""The embedded (Tantivy) backend on a small call-center corpus: telecom, banking, utilities."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.search.backends.base import RebuildFailed, SearchUnavailable
from app.search.backends.embedded import SCHEMA_VERSION, EmbeddedBackend
from app.search.documents import (
    LanguageResources,
    SearchDocument,
    SearchFilters,
    SearchQuery,
    SearchResult,
)
from tests.search.conftest import attachment, search_doc

NOW = datetime.now(UTC)
LANGUAGE = LanguageResources(
    words=["5G畅享套餐", "光猫", "携号转网", "信用卡挂失", "阶梯电价"],
    synonym_groups=[["上不了网", "无法上网", "断网"], ["宽带", "寬頻", "宽频"], ["挂失", "冻结卡片"]],
)
EVERYONE = ["public", "role:agent", "dept:12"]


# Category tree: 1 通信 > 11 宽带 > 111 故障 / 112 账单; 1 > 12 套餐; 2 银行 > 21 信用卡; 3 公用事业 > 31 电力.
CORPUS: list[SearchDocument] = [
    search_doc(
        1,
        "宽带无法上网怎么办",
        similar_questions=["家里网络断网了", "宽带连不上怎么处理"],
        body_text="请先检查光猫电源和指示灯，如LOS灯红色闪烁，说明光纤线路异常，需要报修。",
        channel_answers={"wechat": "请重启光猫后再试。", "agent": "核实地址后派单给装维。"},
        category_ids=[1, 11, 111],
        tags=["故障", "宽带"],
        attributes={"region": ["北京"], "level": [1]},
        updated_at=NOW - timedelta(days=3),
    ),
    search_doc(
        2,
        "寬頻帳單查詢",
        body_text="您可以透過網上營業廳或撥打客服熱線查詢寬頻帳單。",
        channels=["web", "app"],
        category_ids=[1, 11, 112],
        tags=["账单"],
        updated_at=NOW - timedelta(days=1),
    ),
    search_doc(
        3,
        "5G畅享套餐资费说明",
        body_text="5G畅享套餐每月128元，包含30GB国内流量和500分钟通话。",
        acl_principals=["role:agent"],
        channels=["agent"],
        category_ids=[1, 12],
        tags=["资费"],
        attributes={"region": ["北京", "上海"], "level": [2]},
        updated_at=NOW - timedelta(days=5),
    ),
    search_doc(
        4,
        "携号转网办理条件",
        item_type="policy",
        body_text="办理携号转网需在网满120天且无欠费。iPhone 15 用户转网后需重新设置APN。",
        category_ids=[1],
        attributes={"region": ["上海"]},
        valid_from=NOW - timedelta(days=400),
        valid_to=NOW - timedelta(days=30),
        updated_at=NOW - timedelta(days=40),
    ),
    search_doc(
        5,
        "信用卡挂失流程",
        body_text="信用卡丢失后请立即致电95588挂失，挂失后原卡片立即失效。",
        acl_principals=["dept:12"],
        category_ids=[2, 21],
        tags=["挂失"],
        updated_at=NOW - timedelta(days=2),
    ),
    search_doc(
        6,
        "95598电费查询",
        item_type="article",
        body_text="拨打95598或登录网上国网APP可查询电费余额和缴费记录。",
        attachments=[
            attachment(61, "缴费指南.pdf", "第一章 缴费渠道。银行代扣、支付宝、微信均可缴纳。"),
            attachment(62, "居民阶梯电价说明.docx", "居民阶梯电价分三档，第一档每月200度以内。"),
        ],
        category_ids=[3, 31],
        tags=["电费"],
        updated_at=NOW - timedelta(days=10),
    ),
    # Boost trio: the same word in title / body only / attachment only.
    search_doc(7, "光猫指示灯说明", category_ids=[1, 11], updated_at=NOW - timedelta(days=20)),
    search_doc(
        8,
        "装维上门服务规范",
        body_text="装维人员上门时需出示工牌，安装光猫后应向客户说明使用方法。",
        category_ids=[1, 11],
        updated_at=NOW - timedelta(days=21),
    ),
    search_doc(
        9,
        "入户设备清单",
        body_text="入户设备以工单为准。",
        attachments=[attachment(91, "设备型号.xlsx", "光猫型号：HG8245，路由器型号：AX3000。")],
        category_ids=[1, 11],
        updated_at=NOW - timedelta(days=22),
    ),
    search_doc(10, "停电通知草稿", status="draft", category_ids=[3, 31], updated_at=NOW - timedelta(days=4)),
]
VISIBLE = [d for d in CORPUS if d.status == "published"]


@pytest.fixture(scope="module")
async def backend(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedBackend]:
    engine = EmbeddedBackend(tmp_path_factory.mktemp("index"), LANGUAGE)
    await engine.open()
    assert await engine.upsert(CORPUS) == {d.item_id: None for d in CORPUS}
    yield engine
    await engine.close()


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    engine = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    await engine.open()
    yield engine
    await engine.close()


async def ids(engine: EmbeddedBackend, text: str = "", principals: Sequence[str] = EVERYONE, **kw: object) -> list[int]:
    result = await engine.search(SearchQuery(text=text, principals=list(principals), limit=50, **kw))  # type: ignore[arg-type]
    return [h.item_id for h in result.hits]


def visible_to(principals: Sequence[str], channel: str | None = None) -> set[int]:
    return {
        d.item_id
        for d in VISIBLE
        if set(d.acl_principals) & set(principals) and (channel is None or channel in d.channels)
    }


# ---------------------------------------------------------------- text, folding, synonyms


async def test_traditional_query_finds_simplified_document(backend: EmbeddedBackend) -> None:
    # Item 1 holds 宽带, 无法 and 上网; item 2 only 寬頻 (a synonym of 宽带): 1 of the 3 words,
    # below the 2 required (app.search.analysis.required_words).
    assert await ids(backend, "寬帶無法上網") == await ids(backend, "宽带无法上网") == [1]


async def test_simplified_query_finds_traditional_document(backend: EmbeddedBackend) -> None:
    assert await ids(backend, "账单") == [2]
    assert (await ids(backend, "宽带账单查询"))[0] == 2


async def test_synonym_finds_internal_term(backend: EmbeddedBackend) -> None:
    # The customer says 上不了网; the document says 无法上网 / 断网.
    found = await ids(backend, "上不了网")
    assert found and found[0] == 1


async def test_business_word_matches_whole(backend: EmbeddedBackend) -> None:
    result = await backend.search(SearchQuery(text="5G畅享套餐", principals=["role:agent"]))
    assert [h.item_id for h in result.hits] == [3]
    title = next(h for h in result.hits[0].highlights if h.field == "title")
    assert title.fragments == ["<em>5G畅享套餐</em>资费说明"]


async def test_mixed_latin_and_digits(backend: EmbeddedBackend) -> None:
    assert await ids(backend, "IPHONE") == [4]
    assert 6 in await ids(backend, "95598")


@pytest.mark.parametrize(
    "text",
    ['"宽带" AND (光猫 OR title:*)', "title:宽带 -body:[* TO *] ^2~", "\\", "😀🙏🏻", "\x00\u200b", "((((", "*:*"],
)
async def test_query_syntax_is_plain_text(backend: EmbeddedBackend, text: str) -> None:
    result = await backend.search(SearchQuery(text=text, principals=EVERYONE))
    assert isinstance(result, SearchResult)
    if text == "*:*":
        assert result.total == 0  # not "match all"
    # The syntax characters only separate words: the same words as plain text find the same items.
    words = re.sub(r"[^\w]+", " ", text).strip()
    if not words:  # syntax alone is a query for nothing, not browse mode
        assert result.total == 0
    else:
        plain = await backend.search(SearchQuery(text=words, principals=EVERYONE))
        assert [h.item_id for h in result.hits] == [h.item_id for h in plain.hits]
        assert result.total == plain.total
    expected = {'"宽带" AND (光猫 OR title:*)': {1, 2, 7, 8, 9}, "title:宽带 -body:[* TO *] ^2~": {1, 2}}
    if text in expected:  # 宽带 in 1 (寬頻 in 2), 光猫 in 1, 7, 8 and 9 (attachment); nothing else
        assert {h.item_id for h in result.hits} == expected[text]


async def test_ten_thousand_character_query(backend: EmbeddedBackend) -> None:
    text = ("宽带无法上网，光猫红灯闪烁怎么办？😀" * 600)[:10_000]
    result = await backend.search(SearchQuery(text=text, principals=EVERYONE))
    assert result.took_ms < 2000
    # Item 1 answers it (宽带无法上网 in its title); the others hold only 宽带/寬頻 or 光猫,
    # far below 75 % of the words.
    assert [h.item_id for h in result.hits] == [1] and not result.relaxed


async def test_boosts_title_over_body_over_attachment(backend: EmbeddedBackend) -> None:
    found = await ids(backend, "光猫")
    assert {7, 8, 9} <= set(found)
    assert found.index(7) < found.index(8) < found.index(9)


# ---------------------------------------------------------------- security and filters


async def test_acl_hides_everything_about_an_unreadable_document(backend: EmbeddedBackend) -> None:
    allowed = await backend.search(SearchQuery(text="5G畅享套餐", principals=["role:agent"]))
    assert allowed.total == 1 and any(f.count for f in allowed.facets["type"])
    denied = await backend.search(SearchQuery(text="5G畅享套餐", principals=["public", "dept:99"]))
    assert denied.total == 0 and denied.hits == []
    assert all(values == [] for values in denied.facets.values())
    assert [s.item_id for s in await backend.suggest("5G", ["role:agent"], None)] == [3]
    assert await backend.suggest("5G", ["public", "dept:99"], None) == []


async def test_no_principals_sees_nothing(backend: EmbeddedBackend) -> None:
    assert (await backend.search(SearchQuery(text="", principals=[]))).total == 0


async def test_browse_returns_what_the_caller_may_read_newest_first(backend: EmbeddedBackend) -> None:
    for principals in (["public"], ["dept:12"], EVERYONE):
        found = await ids(backend, principals=principals)
        assert set(found) == visible_to(principals)
        updated = {d.item_id: d.updated_at for d in CORPUS}
        assert found == sorted(found, key=lambda i: updated[i], reverse=True)


async def test_channel_filter(backend: EmbeddedBackend) -> None:
    assert 2 in await ids(backend, "寬頻帳單", channel="web")
    assert 2 not in await ids(backend, "寬頻帳單", channel="agent")
    assert set(await ids(backend, channel="wechat")) == visible_to(EVERYONE, "wechat")


async def test_channel_answer_is_only_searched_on_its_channel(backend: EmbeddedBackend) -> None:
    # "派单" appears only in the agent script of item 1.
    assert await ids(backend, "派单", channel="agent") == [1]
    assert await ids(backend, "派单", channel="wechat") == []


async def test_category_subtree_filter(backend: EmbeddedBackend) -> None:
    for node in (1, 11, 111, 2, 31):
        expected = {d.item_id for d in VISIBLE if node in d.category_ids}
        assert set(await ids(backend, filters=SearchFilters(category_ids=[node]))) == expected
    # Two nodes: both must hold.
    assert set(await ids(backend, filters=SearchFilters(category_ids=[11, 112]))) == {2}
    assert await ids(backend, filters=SearchFilters(category_ids=[-1])) == []


async def test_tag_attribute_type_and_status_filters(backend: EmbeddedBackend) -> None:
    assert await ids(backend, filters=SearchFilters(tags=["资费"])) == [3]
    assert await ids(backend, filters=SearchFilters(tags=["故障", "宽带"])) == [1]
    assert await ids(backend, filters=SearchFilters(tags=["故障", "资费"])) == []
    assert set(await ids(backend, filters=SearchFilters(attributes={"region": ["北京"]}))) == {1, 3}
    assert set(await ids(backend, filters=SearchFilters(attributes={"region": ["北京", "上海"]}))) == {1, 3, 4}
    assert await ids(backend, filters=SearchFilters(attributes={"region": ["上海"], "level": [2.0]})) == [3]
    assert await ids(backend, filters=SearchFilters(attributes={"region": []})) == []
    assert await ids(backend, filters=SearchFilters(item_types=["policy"])) == [4]
    assert set(await ids(backend, filters=SearchFilters(item_types=["policy", "article"]))) == {4, 6}
    assert 10 not in await ids(backend)
    assert await ids(backend, filters=SearchFilters(statuses=["draft"])) == [10]


async def test_validity_and_updated_since_filters(backend: EmbeddedBackend) -> None:
    assert 4 not in await ids(backend, filters=SearchFilters(valid_at=NOW))
    assert 4 in await ids(backend, filters=SearchFilters(valid_at=NOW - timedelta(days=100)))
    assert 4 not in await ids(backend, filters=SearchFilters(valid_at=NOW - timedelta(days=500)))
    # valid_to is exclusive.
    assert 4 not in await ids(backend, filters=SearchFilters(valid_at=NOW - timedelta(days=30)))
    recent = await ids(backend, filters=SearchFilters(updated_since=NOW - timedelta(days=3, minutes=1)))
    assert set(recent) == {d.item_id for d in VISIBLE if d.updated_at >= NOW - timedelta(days=3, minutes=1)}


async def test_date_filters_are_exact_to_the_microsecond(fresh: EmbeddedBackend) -> None:
    t = datetime(2026, 5, 1, 10, 0, 0, 600_000, tzinfo=UTC)
    await fresh.upsert([search_doc(1, "宽带", updated_at=t, valid_from=t - timedelta(days=1), valid_to=t)])
    micro = timedelta(microseconds=1)
    assert await ids(fresh, filters=SearchFilters(updated_since=t)) == [1]
    assert await ids(fresh, filters=SearchFilters(updated_since=t + micro)) == []
    assert await ids(fresh, filters=SearchFilters(valid_at=t - micro)) == [1]
    assert await ids(fresh, filters=SearchFilters(valid_at=t)) == []
    assert await ids(fresh, filters=SearchFilters(valid_at=datetime(2026, 5, 1, 9, 0))) == [1]  # naive = UTC
    hit = (await fresh.search(SearchQuery(text="宽带", principals=EVERYONE))).hits[0]
    assert hit.updated_at == t


async def test_facets_count_under_the_same_filter(backend: EmbeddedBackend) -> None:
    result = await backend.search(SearchQuery(text="", principals=["public"], limit=1))
    readable = [d for d in VISIBLE if "public" in d.acl_principals]
    assert result.total == len(readable) and len(result.hits) == 1
    facets = {name: {f.value: f.count for f in values} for name, values in result.facets.items()}
    assert facets["type"] == {t: sum(d.item_type == t for d in readable) for t in {d.item_type for d in readable}}
    for node in (1, 11, 3):
        assert facets["category"][str(node)] == sum(node in d.category_ids for d in readable)
    assert "21" not in facets["category"]  # item 5 is dept:12 only
    assert facets["tag"] == {t: sum(t in d.tags for d in readable) for t in {t for d in readable for t in d.tags}}
    texted = await backend.search(SearchQuery(text="光猫", principals=["public"], filters=SearchFilters(tags=["故障"])))
    assert texted.total == 1 and {f.value for f in texted.facets["tag"]} == {"故障", "宽带"}
    assert (await backend.search(SearchQuery(text="", principals=["public"], facets=False))).facets == {}


async def test_sort_updated_offset_and_limit(backend: EmbeddedBackend) -> None:
    everything = await ids(backend, "光猫", sort="updated")
    updated = {d.item_id: d.updated_at for d in CORPUS}
    assert everything == sorted(everything, key=lambda i: updated[i], reverse=True)
    page1 = await backend.search(SearchQuery(text="", principals=EVERYONE, limit=3))
    page2 = await backend.search(SearchQuery(text="", principals=EVERYONE, limit=3, offset=3))
    assert page1.total == page2.total == len(visible_to(EVERYONE))
    assert [h.item_id for h in page1.hits + page2.hits] == (await ids(backend))[:6]


# ---------------------------------------------------------------- highlights, explain


async def test_highlight_marks_original_traditional_text(backend: EmbeddedBackend) -> None:
    result = await backend.search(SearchQuery(text="账单", principals=EVERYONE))
    hit = result.hits[0]
    assert hit.item_id == 2
    fields = {h.field: h.fragments for h in hit.highlights}
    assert fields["title"] == ["寬頻<em>帳單</em>查詢"]
    assert fields["body"] == ["您可以透過網上營業廳或撥打客服熱線查詢寬頻<em>帳單</em>。"]


async def test_highlights_fold_all_fields_at_once_or_one_by_one_alike(fresh: EmbeddedBackend) -> None:
    """Fields are folded in one OpenCC call; a fold that changes a length (İ lower-cases to two
    characters) makes the backend fold field by field: the marks must be the same and in place."""
    answers = {"agent": "请重启光猫，IPHONE 15 用户同理。", "wechat": "请重启光猫后再试。"}
    plain = search_doc(
        1,
        "光猫指示灯不亮",
        similar_questions=["光猫红灯", "宽带断网"],
        body_text="检查光猫电源。",
        channel_answers=answers,
    )
    dotted = search_doc(
        2,
        "光猫指示灯不亮",
        similar_questions=["光猫红灯", "宽带断网"],
        body_text="İ检查光猫电源。",
        channel_answers=answers,
    )
    await fresh.upsert([plain, dotted])
    result = await fresh.search(SearchQuery(text="光猫 iphone", principals=EVERYONE, channel="agent"))
    marks = {hit.item_id: {h.field: h.fragments for h in hit.highlights} for hit in result.hits}
    assert marks[1]["title"] == ["<em>光猫</em>指示灯不亮"]
    assert marks[1]["similar_questions"] == ["<em>光猫</em>红灯"]
    assert marks[1]["answer.agent"] == ["请重启<em>光猫</em>，<em>IPHONE</em> 15 用户同理。"]
    assert marks[2]["body"] == ["İ检查<em>光猫</em>电源。"]
    assert {k: v for k, v in marks[2].items() if k != "body"} == {k: v for k, v in marks[1].items() if k != "body"}


async def test_highlight_names_the_matching_attachment(backend: EmbeddedBackend) -> None:
    result = await backend.search(SearchQuery(text="阶梯电价", principals=EVERYONE))
    assert [h.item_id for h in result.hits] == [6]
    attachments = [h for h in result.hits[0].highlights if h.field == "attachment"]
    assert [(h.attachment_id, h.file_name) for h in attachments] == [(62, "居民阶梯电价说明.docx")]
    assert "<em>阶梯电价</em>" in attachments[0].fragments[0]


async def test_highlight_of_synonyms_and_channel_answers(backend: EmbeddedBackend) -> None:
    result = await backend.search(SearchQuery(text="上不了网 光猫", principals=EVERYONE, channel="wechat"))
    hit = next(h for h in result.hits if h.item_id == 1)
    fields = {h.field: h.fragments for h in hit.highlights}
    assert fields["title"] == ["宽带<em>无法上网</em>怎么办"]
    assert fields["similar_questions"] == ["家里网络<em>断网</em>了"]
    assert fields["answer.wechat"] == ["请重启<em>光猫</em>后再试。"]
    assert "answer.agent" not in fields
    no_highlight = await backend.search(SearchQuery(text="光猫", principals=EVERYONE, highlight=False))
    assert all(h.highlights == [] for h in no_highlight.hits)


async def test_explain(backend: EmbeddedBackend) -> None:
    result = await backend.search(SearchQuery(text="光猫", principals=EVERYONE, explain=True))
    explanation = result.hits[0].explanation
    assert explanation and json.loads(explanation)["value"] == pytest.approx(result.hits[0].score, rel=1e-3)
    assert (await backend.search(SearchQuery(text="光猫", principals=EVERYONE))).hits[0].explanation is None


# ---------------------------------------------------------------- suggestions


@pytest.mark.parametrize(
    ("prefix", "principals", "expected"),
    [
        ("宽带", ["public"], "宽带无法上网怎么办"),
        ("寬帶無", ["public"], "宽带无法上网怎么办"),
        ("kuandai", ["public"], "宽带无法上网怎么办"),
        ("kd", ["public"], "宽带无法上网怎么办"),
        ("KuanDaiW", ["public"], "宽带无法上网怎么办"),
        ("xyk", ["dept:12"], "信用卡挂失流程"),
        ("挂失", ["dept:12"], "信用卡挂失流程"),
        ("95598", ["public"], "95598电费查询"),
        ("家里网络", ["public"], "家里网络断网了"),
    ],
)
async def test_suggest(backend: EmbeddedBackend, prefix: str, principals: list[str], expected: str) -> None:
    assert expected in [s.text for s in await backend.suggest(prefix, principals, None)]


async def test_suggest_respects_acl_channel_validity_and_limit(backend: EmbeddedBackend) -> None:
    assert await backend.suggest("xyk", ["public"], None) == []
    assert await backend.suggest("寬頻", ["public"], "agent") == []
    assert [s.item_id for s in await backend.suggest("寬頻", ["public"], "web")] == [2]
    assert await backend.suggest("携号", ["public"], None) == []  # expired (valid_to passed)
    assert len(await backend.suggest("k", EVERYONE, None, limit=1)) == 1
    assert await backend.suggest("！？😀", EVERYONE, None) == []


# ---------------------------------------------------------------- writes and lifecycle


async def test_upsert_replaces_and_late_versions_never_win(fresh: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(1, "宽带报修", version_no=1)])
    await fresh.upsert([search_doc(1, "光猫更换", version_no=2)])
    assert await ids(fresh, "宽带") == []
    assert await ids(fresh, "光猫") == [1]
    assert await fresh.indexed_versions() == {1: 2}
    assert await fresh.upsert([search_doc(1, "宽带报修", version_no=1)]) == {1: None}
    assert await ids(fresh, "宽带") == [] and await fresh.indexed_versions() == {1: 2}
    # Same version again (e.g. its ACL changed): replaced.
    await fresh.upsert([search_doc(1, "光猫更换", version_no=2, acl_principals=["role:agent"])])
    assert await ids(fresh, "光猫", principals=["public"]) == []
    assert (await fresh.search(SearchQuery(text="", principals=EVERYONE))).total == 1


async def test_upsert_reports_a_bad_document_and_keeps_the_rest(fresh: EmbeddedBackend) -> None:
    bad = dataclasses.replace(search_doc(2, "坏文档"), title=None)
    result = await fresh.upsert([search_doc(1, "宽带报修"), bad])
    assert result[1] is None and result[2]
    assert await fresh.indexed_versions() == {1: 1}


async def test_delete(fresh: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(1, "宽带报修"), search_doc(2, "宽带提速")])
    await fresh.delete([1, 999])
    assert await ids(fresh, "宽带") == [2]
    assert await fresh.indexed_versions() == {2: 1}
    assert await fresh.suggest("宽带报", EVERYONE, None) == []


async def test_rebuild_swaps_and_keeps_writes_made_meanwhile(fresh: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(1, "宽带报修"), search_doc(2, "旧的公告")])
    old_version = json.loads((fresh.index_dir / "CURRENT").read_text())["version"]
    started, proceed = threading.Event(), threading.Event()

    class GatedDocs(Sequence[SearchDocument]):
        docs = [search_doc(1, "宽带报修指南", version_no=2), search_doc(3, "信用卡挂失流程")]

        def __len__(self) -> int:
            return len(self.docs)

        def __getitem__(self, index):  # type: ignore[no-untyped-def]
            return self.docs[index]

        def __iter__(self) -> Iterator[SearchDocument]:
            started.set()
            proceed.wait(10)
            return iter(self.docs)

    rebuild = asyncio.create_task(fresh.rebuild(GatedDocs()))
    assert await asyncio.to_thread(started.wait, 10)
    # While the new version is built, the old one still answers and takes writes.
    assert await ids(fresh, "旧的公告") == [2]
    await fresh.upsert([search_doc(4, "电费缴纳渠道")])
    proceed.set()
    await rebuild
    assert await fresh.indexed_versions() == {1: 2, 3: 1, 4: 1}
    assert await ids(fresh, "公告") == []
    assert await ids(fresh, "电费") == [4]
    new_version = json.loads((fresh.index_dir / "CURRENT").read_text())["version"]
    assert new_version != old_version
    # The previous version stays until the next rebuild (searches may still read it).
    await fresh.rebuild([search_doc(5, "停电通知")])
    assert {p.name for p in fresh.index_dir.glob("v*")} == {
        json.loads((fresh.index_dir / "CURRENT").read_text())["version"],
        new_version,
    }
    assert await ids(fresh, "停电") == [5]


async def test_a_rebuild_with_a_bad_document_fails_and_keeps_the_old_index(fresh: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(1, "宽带报修"), search_doc(2, "信用卡挂失流程")])
    versions = {p.name for p in fresh.index_dir.glob("v*")}
    bad = dataclasses.replace(search_doc(3, "坏文档"), title=None)
    with pytest.raises(RebuildFailed) as failure:
        await fresh.rebuild([search_doc(1, "宽带报修指南", version_no=2), bad])
    assert list(failure.value.errors) == [3]
    # Nothing swapped, nothing left behind: the complete old index still answers.
    assert {p.name for p in fresh.index_dir.glob("v*")} == versions
    assert await fresh.indexed_versions() == {1: 1, 2: 1}
    assert await ids(fresh, "挂失") == [2]


async def test_reopen_keeps_the_index(tmp_path: Path) -> None:
    first = EmbeddedBackend(tmp_path, LANGUAGE)
    await first.open()
    await first.upsert([search_doc(1, "宽带报修")])
    await first.close()
    second = EmbeddedBackend(tmp_path, LANGUAGE)
    await second.open()
    try:
        assert await ids(second, "宽带") == [1]
    finally:
        await second.close()


async def test_missing_index_directory(fresh: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(1, "宽带报修")])
    assert await fresh.health()
    shutil.rmtree(fresh.index_dir)
    assert not await fresh.health()
    with pytest.raises(SearchUnavailable):
        await fresh.search(SearchQuery(text="宽带", principals=EVERYONE))
    with pytest.raises(SearchUnavailable):
        await fresh.suggest("宽", EVERYONE, None)
    with pytest.raises(SearchUnavailable):
        await fresh.upsert([search_doc(2, "宽带提速")])
    await fresh.open()  # recreates an empty index; a reindex job refills it
    assert await fresh.health()
    assert (await fresh.search(SearchQuery(text="", principals=EVERYONE))).total == 0


@pytest.fixture
async def reader(fresh: EmbeddedBackend) -> AsyncIterator[EmbeddedBackend]:
    """Another process's backend on `fresh`'s index (flock locks are per open file, so a second
    backend in this process stands for another process)."""
    engine = EmbeddedBackend(fresh.index_dir)
    await engine.open()
    yield engine
    await engine.close()


async def test_a_second_process_reads_and_follows_the_writer(fresh: EmbeddedBackend, reader: EmbeddedBackend) -> None:
    """`serve --workers N`: one process takes the writer lock, the others open the index
    read-only and see its commits, rebuilds and dictionary at their next read."""
    assert fresh.writable and not reader.writable
    await fresh.upsert([search_doc(1, "宽带报修"), search_doc(2, "信用卡挂失"), search_doc(4, "光猫指示灯不亮")])
    assert await ids(reader, "宽带") == [1]
    assert await reader.document_count() == 3
    await fresh.delete([2])
    assert await ids(reader, "挂失") == []

    with pytest.raises(SearchUnavailable, match="reads the search index"):
        await reader.upsert([search_doc(3, "宽带提速")])
    with pytest.raises(SearchUnavailable, match="reads the search index"):
        await reader.rebuild([])

    # A dictionary and synonyms applied by the writer reach the reader without a restart.
    assert await ids(reader, "调制解调器") == []
    await fresh.set_language(LanguageResources(words=LANGUAGE.words, synonym_groups=[["调制解调器", "光猫"]]))
    assert await ids(reader, "调制解调器") == [4]

    # A rebuild swaps the version directory: the reader opens the new one.
    await fresh.rebuild([search_doc(7, "电费缴纳"), search_doc(8, "宽带报修", version_no=3)])
    assert await ids(reader, "宽带") == [8]
    assert await ids(reader, "电费") == [7]
    assert await reader.health()

    # The writer's index folder deleted: both report it; the writer's reopen and a rebuild bring both back.
    shutil.rmtree(fresh.index_dir)
    assert not await reader.health()
    with pytest.raises(SearchUnavailable):
        await reader.search(SearchQuery(text="宽带", principals=EVERYONE))
    await fresh.open()
    await fresh.rebuild([search_doc(9, "燃气报装")])
    assert await ids(reader, "燃气") == [9]


async def test_a_reader_that_cannot_follow_answers_503(fresh: EmbeddedBackend, reader: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(1, "宽带报修")])
    broken = fresh.index_dir / "v999999"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    (fresh.index_dir / "CURRENT").write_text(json.dumps({"version": broken.name, "schema": SCHEMA_VERSION}))
    with pytest.raises(SearchUnavailable):
        await reader.search(SearchQuery(text="宽带", principals=EVERYONE))
    assert not await reader.health()


async def test_the_writer_lock_passes_on_when_the_writer_closes(tmp_path: Path) -> None:
    first = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    await first.open()
    await first.upsert([search_doc(1, "宽带报修")])
    second = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    await second.open()
    assert not second.writable
    await first.close()
    await second.close()
    third = EmbeddedBackend(tmp_path / "index", LANGUAGE)  # e.g. the writer process restarted
    await third.open()
    try:
        assert third.writable
        await third.upsert([search_doc(2, "宽带提速")])
        assert sorted(await ids(third, "宽带")) == [1, 2]
    finally:
        await third.close()


async def test_a_reader_without_a_writer_answers_503_until_an_index_exists(tmp_path: Path) -> None:
    blocker = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    assert blocker._take_writer_lock()  # a writer that has not created the index yet
    reader = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("app.search.backends.embedded.READER_OPEN_WAIT_SECONDS", 0.2)
            await reader.open()
        assert asyncio.get_running_loop().time() - started < 5
        assert not reader.writable and not await reader.health()
        with pytest.raises(SearchUnavailable):
            await reader.search(SearchQuery(text="宽带", principals=EVERYONE))
    finally:
        await reader.close()
        await blocker.close()
    writer = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    await writer.open()
    reader = EmbeddedBackend(tmp_path / "index", LANGUAGE)
    await reader.open()
    try:
        await writer.upsert([search_doc(1, "宽带报修")])
        assert await ids(reader, "宽带") == [1]
    finally:
        await reader.close()
        await writer.close()


async def test_closed_backend_is_unavailable(tmp_path: Path) -> None:
    engine = EmbeddedBackend(tmp_path)
    assert not await engine.health()
    with pytest.raises(SearchUnavailable):
        await engine.search(SearchQuery(text="宽带", principals=EVERYONE))


async def test_set_language_applies_at_run_time(tmp_path: Path) -> None:
    engine = EmbeddedBackend(tmp_path)
    await engine.open()
    try:
        doc = search_doc(1, "宽带无法上网", body_text="办理携号转网前请确认")
        await engine.upsert([doc])
        assert await ids(engine, "上不了网") == []
        await engine.set_language(LanguageResources(words=["携号转网"], synonym_groups=[["上不了网", "无法上网"]]))
        assert [w.term for w in engine.analyzer.query_words("携号转网")] == ["携号转网"]
        # Indexed before the change: 无法上网 was stored as 无法 + 上网. A reindex applies it.
        assert await ids(engine, "上不了网") == []
        await engine.upsert([doc])
        assert await ids(engine, "上不了网") == [1]
        result = await engine.search(SearchQuery(text="携号转网", principals=EVERYONE))
        body = next(h for h in result.hits[0].highlights if h.field == "body")
        assert body.fragments == ["办理<em>携号转网</em>前请确认"]
    finally:
        await engine.close()


async def test_concurrent_searches_and_writes(fresh: EmbeddedBackend) -> None:
    await fresh.upsert([search_doc(i, f"宽带故障{i}号工单") for i in range(1, 21)])

    async def write(n: int) -> None:
        await fresh.upsert([search_doc(100 + n, f"光猫更换{n}")])

    results = await asyncio.gather(
        *(fresh.search(SearchQuery(text="宽带故障", principals=EVERYONE)) for _ in range(20)),
        *(write(n) for n in range(5)),
    )
    assert all(r.total == 20 for r in results if isinstance(r, SearchResult))
    assert len(await ids(fresh, "光猫")) == 5
