from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.core.schemas import Id, Out, Schema

Term = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class HighlightOut(BaseModel):
    field: str
    fragments: list[str]
    attachment_id: Id | None = None
    file_name: str | None = None


class HitOut(BaseModel):
    item_id: Id
    version: int
    title: str
    item_type: str
    score: float
    updated_at: datetime
    highlights: list[HighlightOut] = []
    explanation: str | None = None


class FacetOut(BaseModel):
    value: str
    count: int
    label: str | None = None


class SearchOut(BaseModel):
    search_id: str = Field(description="Pass to POST /search/click when the caller opens a result")
    query: str
    normalized: str
    total: int
    items: list[HitOut]
    facets: dict[str, list[FacetOut]]
    page: int
    limit: int
    next_cursor: str | None
    took_ms: float
    relaxed: bool = Field(
        description="True when no item had enough of the query's words (all of 1-2, 75 % of 3 or more), "
        "so these are the items matching any one of them"
    )
    mode: str = Field(
        "keyword", description="What was asked: keyword, semantic or hybrid (the default when an embedder is loaded)"
    )
    mode_used: str = Field(
        "keyword",
        description="What ran: keyword when the semantic leg was not available (a "
        "warning starting with semantic_unavailable says why), for a browse or sort=updated",
    )
    warnings: list[str] = []


class SimilarItemOut(BaseModel):
    item_id: Id
    title: str
    item_type: str
    score: float = Field(description="max(semantic_score, question_match), 0..1")
    semantic_score: float | None = Field(
        description="Cosine of this item's question with the other item's "
        "nearest text; null when the semantic leg is off or missed it"
    )
    question_match: float = Field(description="Best character overlap between the two items' questions")
    likely_duplicate: bool = Field(description="Past KB_DUPLICATE_MIN_SCORE (cosine) or 0.6 overlap")


class SuggestionOut(BaseModel):
    item_id: Id
    text: str


class ClickIn(Schema):
    search_id: str = Field(min_length=1, max_length=32)
    item_id: Id
    position: int = Field(ge=1, le=10_000)


class WordsIn(Schema):
    words: list[Term] = Field(min_length=1, max_length=1000)


class WordOut(Out):
    id: int
    word: str
    created_at: datetime
    created_by: str | None


class SynonymIn(Schema):
    terms: list[Term] = Field(min_length=2, max_length=30)
    note: Annotated[str, StringConstraints(max_length=200)] = ""


class SynonymPatch(Schema):
    terms: list[Term] | None = Field(None, min_length=2, max_length=30)
    note: Annotated[str | None, StringConstraints(max_length=200)] = None


class SynonymOut(Out):
    id: int
    terms: list[str]
    note: str
    created_at: datetime
    updated_at: datetime


class SearchLogOut(Out):
    id: int
    search_id: str
    at: datetime
    actor: str
    channel: str | None
    query: str
    normalized: str
    filters: dict
    total: int
    zero_result: bool
    took_ms: float
    clicked_item_id: Id | None
    clicked_position: int | None


class JobAccepted(BaseModel):
    job_id: Id
    status: str
    href: str
