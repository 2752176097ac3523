"""Second-stage ranking shared by both backends: the question match.

Callers ask in their own words, and the item that answers them usually has a title, standard
question or similar question (相似问法) worded much like the query. The engine's BM25 scores
words, so it misses two questions that share nearly all their characters but were segmented
differently (辨别/分辨, 登陆/登录, 飞机票/机票) and it cannot tell a near-duplicate question from
one that merely shares the rare words. So the first `RERANK_WINDOW` results of a relevance
search get a bonus: the best character overlap (multiset Jaccard of the normalized characters)
between the query and any of the item's questions, times `QUESTION_MATCH_WEIGHT`, times the
top engine score. Scaling by the top score keeps the bonus in the engine's own units, so a
reranked score is never below the engine score and the order beyond the window (page 3 and
on) is untouched; pages stay consistent.

Tuned on bench/faq_dev only (bench/relevance_tuning.py: weights 1.0 to 3.0 all help, 1.5 is
best). An indexed character-bigram field was measured too: +0.009 MRR@10 alone, +0.002 on top
of this rerank, not worth a second copy of every question in the index.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, Generic, NamedTuple, TypeVar

from app.search.analysis import compact
from app.search.documents import SearchQuery

RERANK_WINDOW = 20
QUESTION_MATCH_WEIGHT = 1.5
# Questions are short; a long title or a pasted query is compared on its beginning.
_PROFILE_CHARS = 200

C = TypeVar("C")


class Ranked(NamedTuple, Generic[C]):
    candidate: C
    score: float
    bonus: float  # what the question match added (0 outside the window)
    match: float  # the best character overlap, 0..1


def reranks(query: SearchQuery) -> bool:
    return bool(query.text.strip()) and query.sort == "relevance" and query.offset < RERANK_WINDOW


def engine_query(query: SearchQuery) -> SearchQuery:
    """The query to send to the engine: from the top through the whole window when reranking."""
    if not reranks(query):
        return query
    return dataclasses.replace(query, offset=0, limit=max(RERANK_WINDOW, query.offset + query.limit))


def _profile(text: str) -> tuple[Counter[str], int]:
    return _cached_profile(text[:_PROFILE_CHARS])


@lru_cache(maxsize=8192)  # popular items' questions; keys are at most _PROFILE_CHARS long
def _cached_profile(text: str) -> tuple[Counter[str], int]:
    chars = compact(text)
    return Counter(chars), len(chars)


def question_match(query_text: str, questions: Iterable[str]) -> float:
    """Best multiset Jaccard overlap of normalized characters between the query and a question."""
    return _best_overlap(_profile(query_text), questions)


def _best_overlap(query: tuple[Counter[str], int], questions: Iterable[str]) -> float:
    query_chars, query_len = query
    best = 0.0
    if not query_len:
        return best
    for text in questions:
        chars, length = _profile(text)
        if not length:
            continue
        shared = sum(min(count, chars[char]) for char, count in query_chars.items())
        best = max(best, shared / (query_len + length - shared))
    return best


def rerank(
    query: SearchQuery,
    candidates: Sequence[C],
    score: Callable[[C], float],
    questions: Callable[[C], Iterable[str]],
) -> list[Ranked[C]]:
    """The page `query` asked for, from candidates the engine returned for `engine_query(query)`."""
    if not reranks(query):
        return [Ranked(c, score(c), 0.0, 0.0) for c in candidates]
    top = score(candidates[0]) if candidates else 0.0
    query_profile = _profile(query.text)
    ranked: list[tuple[float, int, Ranked[C]]] = []
    for position, candidate in enumerate(candidates):
        engine = score(candidate)
        match = bonus = 0.0
        if position < RERANK_WINDOW and top > 0:
            match = _best_overlap(query_profile, questions(candidate))
            bonus = QUESTION_MATCH_WEIGHT * top * match
        ranked.append((engine + bonus, -position, Ranked(candidate, engine + bonus, bonus, match)))
    ranked.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)  # ties keep the engine's order
    return [entry[2] for entry in ranked[query.offset : query.offset + query.limit]]


def explain_line(ranked: Ranked[Any]) -> str:
    return (
        f"{ranked.score:g} = engine score {ranked.score - ranked.bonus:g} + question match "
        f"{ranked.bonus:g} (character overlap {ranked.match:.3f} x weight {QUESTION_MATCH_WEIGHT:g} x top score)"
    )
