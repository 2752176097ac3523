"""The shapes that cross the `SearchBackend` seam.

The database is the truth; a `SearchDocument` is what one published item looks like to
a search engine. Both backends (Tantivy, Elasticsearch) take the same documents and the
same `SearchQuery`, and answer with the same `SearchResult`, so the API above them does
not know which engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Channel = Literal["agent", "web", "wechat", "app"]
CHANNELS: tuple[str, ...] = ("agent", "web", "wechat", "app")
# Facet values returned per search, most frequent first, on both backends. A search screen
# shows a short list; every further value costs each search a label lookup and its bytes.
FACET_SIZES: dict[str, int] = {"category": 30, "tag": 20, "type": 20}


@dataclass(slots=True)
class AttachmentText:
    attachment_id: int
    file_name: str
    text: str


@dataclass(slots=True)
class SearchDocument:
    item_id: int
    version_id: int
    version_no: int
    item_type: str  # faq, article, policy, announcement, ...
    status: str  # published (editors may also index drafts later)
    title: str
    question: str  # the standard question
    similar_questions: list[str]
    body_text: str  # body with markup stripped
    channel_answers: dict[str, str]  # channel -> answer text
    attachments: list[AttachmentText]
    # Every taxonomy node the item sits in, with all their ancestors, as ids.
    category_ids: list[int]
    # Full id paths of the nodes the item sits in, e.g. "1/4/9" (for ES path_hierarchy).
    category_paths: list[str]
    tags: list[str]
    # attribute code -> value(s); values are str, int/float, or ISO date strings.
    attributes: dict[str, list[str | int | float]]
    # Document-level security: who may read it, e.g. "public", "role:3", "dept:12",
    # "client:7", "user:5". A caller sees a document when the sets intersect.
    acl_principals: list[str]
    # Channels on which the item is visible (agents-only items: ["agent"]).
    channels: list[str]
    valid_from: datetime | None
    valid_to: datetime | None
    updated_at: datetime
    # Semantic leg (app/search/embedding): L2-normalized vectors of the item's short texts (title,
    # standard and similar questions, channel answers' first sentence), all of `embedder`'s model.
    # Empty when the embedder is off or failed: the item is then found by keyword only.
    # Filled by app.search.semantic.embed_documents as one (n, dims) float32 numpy array (a row
    # per text); read it with `numpy.asarray(doc.vectors, dtype=...)` (lists work the same).
    vectors: list[list[float]] = field(default_factory=list)
    embedder: str | None = None


@dataclass(slots=True)
class SearchFilters:
    item_types: list[str] = field(default_factory=list)
    # Each id matches documents in that node's subtree (category_ids holds ancestors).
    category_ids: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    # attribute code -> accepted values (any of them matches)
    attributes: dict[str, list[str | int | float]] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=lambda: ["published"])
    # When set, only documents valid at that instant (valid_from <= t < valid_to).
    valid_at: datetime | None = None
    updated_since: datetime | None = None


@dataclass(slots=True)
class SearchQuery:
    text: str  # may be "" (browse mode)
    principals: list[str]  # the caller's ACL principals; always applied inside the engine
    channel: str | None = None  # when set, only documents visible on that channel
    filters: SearchFilters = field(default_factory=SearchFilters)
    sort: Literal["relevance", "updated"] = "relevance"
    offset: int = 0
    limit: int = 10
    highlight: bool = True
    facets: bool = True
    explain: bool = False
    # Strict: a document must match `analysis.required_words` of the query words; loose: any one.
    strict: bool = True
    # keyword: BM25 over the text fields; semantic: nearest `vector` among the documents' vectors,
    # under the same ACL, channel and filter clauses (the service fuses the two for hybrid).
    mode: Literal["keyword", "semantic"] = "keyword"
    vector: list[float] | None = None
    embedder: str | None = None  # the model of `vector`: only documents embedded by it are compared


@dataclass(slots=True)
class Highlight:
    field: str  # title, question, similar_questions, body, answer.<channel>, attachment
    fragments: list[str]  # snippets with matched words wrapped in <em>...</em>
    attachment_id: int | None = None
    file_name: str | None = None


@dataclass(slots=True)
class SearchHit:
    item_id: int
    version_no: int
    score: float
    title: str
    item_type: str
    updated_at: datetime
    highlights: list[Highlight] = field(default_factory=list)
    explanation: str | None = None
    # Title, standard and similar questions, for the service's fusion features.
    questions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FacetValue:
    value: str
    count: int


@dataclass(slots=True)
class SearchResult:
    total: int
    hits: list[SearchHit]
    # facet name ("category", "tag", "type") -> counts, computed under the same ACL filter
    facets: dict[str, list[FacetValue]] = field(default_factory=dict)
    took_ms: float = 0.0
    relaxed: bool = False  # the strict match found nothing, so these are the loose match's results


@dataclass(slots=True)
class Suggestion:
    item_id: int
    text: str  # the title or question that completes the input


@dataclass(slots=True)
class LanguageResources:
    """The managed business dictionary and synonym groups, loaded from the database."""

    words: list[str] = field(default_factory=list)
    synonym_groups: list[list[str]] = field(default_factory=list)
