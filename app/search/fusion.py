"""Merging the keyword and semantic legs of a hybrid search, in the service (both backends).

Each leg ran under the same ACL, channel and filter clauses inside its engine; fusion only
reorders what both legs were allowed to return. Baseline: reciprocal-rank fusion (k = 60,
as Elasticsearch's own rrf retriever, which needs a paid licence there). A learned
combination of features replaces it when a trained model ships with the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RRF_K = 60


@dataclass(slots=True)
class Candidate:
    """One item returned by at least one leg; ranks are 0-based, None when the leg missed it."""

    item_id: int
    keyword_rank: int | None = None
    keyword_score: float | None = None
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
        return (c.keyword_rank if c.keyword_rank is not None else 1 << 30,
                c.semantic_rank if c.semantic_rank is not None else 1 << 30)

    ranked = sorted(candidates, key=lambda c: (-score(c), tie(c)))
    return [(c, score(c)) for c in ranked]
