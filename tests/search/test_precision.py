"""Query precision: a multi-word query needs a share of its words (all of 1-2, 75 % of 3+),
adjacent single characters count as one word, and an empty strict match falls back to the
loose one (`relaxed`). Embedded on real Tantivy; Elasticsearch as request bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from app.search.analysis import Analyzer, required_words
from app.search.backends import es_bodies as b
from app.search.backends.embedded import EmbeddedBackend
from app.search.documents import LanguageResources, SearchQuery, SearchResult
from tests.search.conftest import search_doc

NOW = datetime.now(UTC)
LANGUAGE = LanguageResources(words=["光猫", "携号转网"], synonym_groups=[["宽带", "寬頻"]])
EVERYONE = ["public", "role:agent"]

CORPUS = [
    search_doc(
        1,
        "内部折扣码使用规定",
        body_text="内部折扣码仅限员工办理宽带业务时使用，不得外传。",
        acl_principals=["role:agent"],
        updated_at=NOW - timedelta(days=1),
    ),
    search_doc(
        2, "短信验证码收不到怎么办", body_text="请检查手机是否拦截了验证码短信。", updated_at=NOW - timedelta(days=2)
    ),
    search_doc(3, "二维码缴纳电费", body_text="扫描账单上的二维码即可缴纳电费。", updated_at=NOW - timedelta(days=3)),
    search_doc(4, "宽带折扣活动", body_text="新装宽带享受八折折扣。", updated_at=NOW - timedelta(days=4)),
    search_doc(
        5, "信用卡年费减免条件", body_text="信用卡每年刷卡满六次即可减免次年年费。", updated_at=NOW - timedelta(days=5)
    ),
    search_doc(6, "信用卡年费标准", body_text="普卡年费100元，金卡年费300元。", updated_at=NOW - timedelta(days=6)),
    search_doc(
        7, "光猫指示灯说明", body_text="光猫LOS灯红色闪烁说明光纤线路异常。", updated_at=NOW - timedelta(days=7)
    ),
    search_doc(8, "寬頻報修流程", body_text="寬頻故障請撥打10000號報修。", updated_at=NOW - timedelta(days=8)),
    search_doc(
        9,
        "信用卡分期手续费",
        body_text="分期手续费按期收取，部门内部可查询。",
        acl_principals=["dept:9"],
        updated_at=NOW - timedelta(days=9),
    ),
]


@pytest.fixture(scope="module")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedBackend]:
    backend = EmbeddedBackend(tmp_path_factory.mktemp("precision"), LANGUAGE)
    await backend.open()
    assert await backend.upsert(CORPUS) == {d.item_id: None for d in CORPUS}
    yield backend
    await backend.close()


async def search(engine: EmbeddedBackend, text: str, principals: Sequence[str] = EVERYONE) -> SearchResult:
    return await engine.search(SearchQuery(text=text, principals=list(principals), limit=50))


def ids(result: SearchResult) -> list[int]:
    return [h.item_id for h in result.hits]


def test_required_share_of_words() -> None:
    assert [required_words(n) for n in range(1, 9)] == [1, 2, 2, 3, 3, 4, 5, 6]
    assert [required_words(n, strict=False) for n in (1, 2, 5)] == [1, 1, 1]


def test_adjacent_single_characters_are_one_word() -> None:
    analyzer = Analyzer(LANGUAGE)
    words = {w.term: w for w in analyzer.query_words("手机卡丢了咋补")}
    # 咋|补 are what jieba leaves of an unknown word: one word, both characters required.
    assert words["咋补"].chars == ("咋", "补") and "咋" not in words and "补" not in words
    # A space the caller typed separates words.
    assert [w.term for w in analyzer.query_words("咋 补")] == ["咋", "补"]


async def test_internal_discount_code_does_not_return_items_with_only_its_last_character(
    engine: EmbeddedBackend,
) -> None:
    result = await search(engine, "内部折扣码")
    # 内部 + 折扣 + 码 (3 words, 2 needed): item 1 holds all; 2 and 3 only 码, 4 only 折扣.
    assert ids(result) == [1] and not result.relaxed
    # A customer (public) may not read item 1: nothing strict, so the loose leg answers under
    # the same ACL filter, and says so. (验证码 and 二维码 are words of their own, not 码.)
    public = await search(engine, "内部折扣码", ["public"])
    assert public.relaxed and ids(public) == [4]


async def test_all_words_rank_above_some_words(engine: EmbeddedBackend) -> None:
    result = await search(engine, "信用卡年费减免条件")
    # 信用卡, 年费, 减免, 条件: item 5 has all four; item 6 only 信用卡 + 年费 (2 < 3): left out.
    assert ids(result) == [5] and not result.relaxed
    # Two words: both required. Item 9 has 信用卡 only (and another department's ACL).
    both = await search(engine, "信用卡 年费", [*EVERYONE, "dept:9"])
    assert set(ids(both)) == {5, 6} and not both.relaxed


async def test_three_words_need_two(engine: EmbeddedBackend) -> None:
    # 光猫 + 红色 + 报修: item 7 has 光猫 and 红色; item 8 only 报修 (1 of 3).
    assert ids(await search(engine, "光猫 红色 报修")) == [7]


async def test_relaxed_fallback_when_nothing_has_enough_words(engine: EmbeddedBackend) -> None:
    # 光猫 (item 7) and 电费 (item 3) never appear together: nothing strict, so any one word.
    result = await search(engine, "光猫 电费")
    assert result.relaxed and set(ids(result)) == {3, 7} and result.total == 2
    # One word: strict and loose are the same, nothing to relax.
    nothing = await search(engine, "携号转网")
    assert nothing.total == 0 and not nothing.relaxed


async def test_traditional_query_still_matches(engine: EmbeddedBackend) -> None:
    # 寬頻 folds to 宽频 ↔ 宽带 (synonym); 報修 to 报修: item 8 holds both.
    result = await search(engine, "寬帶報修")
    assert ids(result) == [8] and not result.relaxed


async def test_relaxed_leg_keeps_the_acl_filter(engine: EmbeddedBackend) -> None:
    # 手续费 only in item 9 (dept:9) and 二维码 in item 3: no item holds both.
    outsider = await search(engine, "手续费 二维码", ["public"])
    assert outsider.relaxed and ids(outsider) == [3]
    insider = await search(engine, "手续费 二维码", ["public", "dept:9"])
    assert insider.relaxed and set(ids(insider)) == {3, 9}


def test_es_strict_body_requires_the_same_share_and_loose_body_does_not() -> None:
    strict = b.search_body(SearchQuery(text="内部折扣码", principals=["public"]))
    text = strict["query"]["bool"]["must"][0]["bool"]["should"]
    cross, phrase, nested = text
    assert cross["multi_match"]["minimum_should_match"] == "2<75%"
    assert nested["nested"]["query"]["match"]["attachments.text"]["minimum_should_match"] == "2<75%"
    assert "minimum_should_match" not in phrase["multi_match"]
    loose = b.search_body(SearchQuery(text="内部折扣码", principals=["public"], strict=False))
    cross, _, nested = loose["query"]["bool"]["must"][0]["bool"]["should"]
    assert "minimum_should_match" not in cross["multi_match"]
    assert "minimum_should_match" not in nested["nested"]["query"]["match"]["attachments.text"]
    # The ACL filter is the same in both legs.
    assert loose["query"]["bool"]["filter"] == strict["query"]["bool"]["filter"]


def test_es_relaxes_only_an_empty_strict_text_search() -> None:
    empty, found = SearchResult(total=0, hits=[]), SearchResult(total=3, hits=[])
    assert b.relax(SearchQuery(text="光猫 电费", principals=["public"]), empty)
    assert not b.relax(SearchQuery(text="光猫 电费", principals=["public"]), found)
    assert not b.relax(SearchQuery(text="光猫 电费", principals=["public"], strict=False), empty)
    assert not b.relax(SearchQuery(text="  ", principals=["public"]), empty)


async def test_question_words_score_but_are_not_required(engine: EmbeddedBackend) -> None:
    # 信用卡 / 年费 / 减免 / 怎么 / 才能: the customer's question words are not in the answer's
    # text, yet the item holding every content word matches strictly (not through the loose leg).
    result = await search(engine, "信用卡年费怎么才能减免")
    assert not result.relaxed
    assert ids(result)[0] == 5
    # without the question words the same item is required to hold the same content words
    assert ids(await search(engine, "信用卡年费减免"))[0] == 5
    # question words alone are the words required: nothing holds 怎么 and 可以 together, so only
    # the loose leg finds item 2 (怎么办), and says so
    alone = await search(engine, "怎么 可以")
    assert alone.relaxed and ids(alone) == [2]
