"""The question match (app.search.ranking): a caller's question worded like an item's question
ranks that item first, on both backends, without breaking paging."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.search import ranking
from app.search.backends import es_bodies as b
from app.search.backends.embedded import EmbeddedBackend
from app.search.documents import SearchQuery
from tests.search.conftest import search_doc

NOW = datetime.now(UTC)
EVERYONE = ["public"]


def test_question_match_folds_script_width_case_and_punctuation() -> None:
    assert ranking.question_match("寬頻斷網了怎麼辦？", ["宽频断网了怎么办"]) == 1.0
    assert ranking.question_match("ＥＴＣ怎么办理", ["etc 怎么办理!"]) == 1.0
    assert ranking.question_match("信用卡挂失", ["电费怎么交"]) == 0.0
    assert ranking.question_match("？？", ["信用卡挂失"]) == 0.0
    # The best of the item's questions counts: 信用卡挂失 shares 5 of 7 characters with the query.
    assert ranking.question_match("信用卡挂失流程", ["银行卡", "信用卡挂失"]) == pytest.approx(5 / 7)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    engine = EmbeddedBackend(tmp_path / "index")
    await engine.open()
    await engine.upsert(
        [
            search_doc(1, "怎样提升信用卡额度", updated_at=NOW - timedelta(days=9)),
            search_doc(2, "信用卡额度查询", updated_at=NOW - timedelta(days=1)),
            search_doc(3, "手机银行登录不了怎么办", similar_questions=["手机银行APP打不开"]),
            search_doc(4, "手机银行登陆密码重置"),
        ]
    )
    yield engine
    await engine.close()


async def test_a_question_worded_like_the_callers_comes_first(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = SearchQuery(text="信用卡额度怎么提高", principals=EVERYONE, explain=True)
    first, second = (await backend.search(query)).hits[:2]
    assert (first.item_id, second.item_id) == (1, 2)
    explanation = json.loads(first.explanation or "")
    assert "question match" in explanation["description"]
    assert explanation["value"] == pytest.approx(first.score)
    assert first.score > explanation["details"][0]["value"]  # the engine's own score, below

    # BM25 alone prefers the shorter item that shares the two rare words: the test depends on the rerank.
    monkeypatch.setattr(ranking, "QUESTION_MATCH_WEIGHT", 0.0)
    assert [h.item_id for h in (await backend.search(query)).hits[:2]] == [2, 1]


async def test_date_order_is_left_alone(backend: EmbeddedBackend) -> None:
    by_date = await backend.search(SearchQuery(text="信用卡额度怎么提高", principals=EVERYONE, sort="updated"))
    assert [h.item_id for h in by_date.hits][:2] == [2, 1]
    assert [h.updated_at for h in by_date.hits] == sorted((h.updated_at for h in by_date.hits), reverse=True)
    assert all(h.score == 0 for h in by_date.hits)


async def test_pages_across_the_window_neither_repeat_nor_skip(tmp_path: Path) -> None:
    engine = EmbeddedBackend(tmp_path / "paging")
    await engine.open()
    problems = ["无法上网", "网速慢", "断线", "光猫红灯", "报修进度", "账号密码", "提速", "移机"]
    docs = [
        search_doc(n, f"宽带{problems[n % 8]}问题第{n}号", similar_questions=[f"家里宽带{problems[n % 8]}怎么办"])
        for n in range(1, 41)
    ]
    await engine.upsert(docs)
    # Loose (any word), so that all 40 items match and the pages cross the rerank window.
    loose = SearchQuery(text="家里宽带无法上网", principals=EVERYONE, limit=40, strict=False)
    whole = await engine.search(loose)
    paged = []
    for offset in range(0, 40, 7):
        page = await engine.search(dataclasses.replace(loose, offset=offset, limit=7))
        paged += page.hits
    assert [h.item_id for h in paged] == [h.item_id for h in whole.hits]
    assert len({h.item_id for h in paged}) == 40
    scores = [h.score for h in paged]
    assert scores == sorted(scores, reverse=True)
    # The five items about 无法上网 (same wording as the query) lead.
    assert {h.item_id for h in paged[:5]} == {n for n in range(1, 41) if n % 8 == 0}
    await engine.close()


def _es_hit(item_id: int, score: float, title: str, similar: list[str]) -> dict[str, Any]:
    return {
        "_id": str(item_id),
        "_score": score,
        "_source": {
            "item_id": item_id,
            "version_no": 1,
            "title": title,
            "question": title,
            "similar_questions": similar,
            "item_type": "faq",
            "updated_at": "2026-11-01T08:00:00.000+00:00",
        },
        "_explanation": {"value": score, "description": "sum of:", "details": []},
    }


def test_elasticsearch_results_get_the_same_rerank() -> None:
    query = SearchQuery(text="信用卡额度怎么提高", principals=EVERYONE, limit=1, explain=True)
    body = b.search_body(ranking.engine_query(query))
    assert (body["from"], body["size"]) == (0, ranking.RERANK_WINDOW)
    assert {"question", "similar_questions"} <= set(body["_source"])
    response = {
        "took": 3,
        "hits": {
            "total": {"value": 2, "relation": "eq"},
            "hits": [_es_hit(2, 24.15, "信用卡额度查询", []), _es_hit(1, 22.23, "怎样提升信用卡额度", [])],
        },
    }
    result = b.search_result(response, query)
    assert result.total == 2 and [h.item_id for h in result.hits] == [1]  # the page asked for: one hit
    bonus = ranking.QUESTION_MATCH_WEIGHT * 24.15 * ranking.question_match(query.text, ["怎样提升信用卡额度"])
    assert result.hits[0].score == pytest.approx(22.23 + bonus)
    assert (result.hits[0].explanation or "").splitlines()[1] == "  22.23 = sum of:"

    # The same engine scores give the same order on the embedded backend's path (one function).
    second_page = b.search_result(response, SearchQuery(text=query.text, principals=EVERYONE, offset=1, limit=1))
    assert [h.item_id for h in second_page.hits] == [2]
