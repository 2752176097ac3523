"""Request bodies for Elasticsearch, built as pure functions, and the mapping of its responses.

Everything here is data in, data out: no client, no I/O. `elasticsearch.py` sends these
bodies; the tests check them without a server. Written for Elasticsearch 9.x (the client
major must equal the server major: `elasticsearch[async]==9.5.1` ↔ ES 9.x) with the IK
and pinyin plugins, or the official smartcn plugin as a fallback.

Choices worth knowing:

- Traditional → simplified folding happens *inside* Elasticsearch with a `mapping`
  char filter generated from OpenCC's t2s table (IK does not fold; a char filter keeps
  the offsets, so highlights land on the original, possibly traditional, text). The
  stopwords and synonym/dictionary normalization come from `app.search.analysis`, the
  same rules the embedded backend uses.
- Synonyms live in an ES synonyms set (`PUT _synonyms/<id>`) used only by the search
  analyzer (`updateable: true`), so a synonym change needs no reindex.
- Attachments are `nested` (inner_hits say which file matched); `all_text` is built by
  the app because `copy_to` cannot cross the nested boundary.
- Suggestions are a `nested` list of candidate texts (title, questions) with an
  edge-ngram field and a pinyin sub-field, queried under the same ACL/channel/status
  filter as search; completion suggesters cannot filter by ACL and are not used.
- The semantic leg: each document's vectors (title, questions, first answer sentences) sit
  in a `nested` list of `dense_vector` (`vectors.v`, cosine, `int8_hnsw`); a top-level
  `knn` search scores a document by its nearest vector, under the same `filter_clauses`
  as keyword search (applied during the HNSW search, never after it). Every index holds the
  vectors of one model only (`VectorSpec`, recorded in the mapping's `_meta`); vectors of
  another model or length are left out of the document (it stays keyword-searchable). Both
  `dense_vector` and kNN are basic-licence features; the `rrf`/`linear` retrievers are not
  (Enterprise), so BM25 and kNN are fused in the service.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from textwrap import indent
from typing import Any, Literal

import numpy as np
import opencc

from app.search import ranking
from app.search.analysis import (
    EXTRA_FOLDS,
    QUESTION_WORDS,
    STOPWORDS,
    dictionary_words,
    normalize,
    normalized_synonym_groups,
)
from app.search.documents import (
    CHANNELS,
    FACET_SIZES,
    FacetValue,
    Highlight,
    LanguageResources,
    SearchDocument,
    SearchFilters,
    SearchHit,
    SearchQuery,
    SearchResult,
    Suggestion,
)

Analyzer = Literal["ik", "smartcn"]
ANALYZERS: tuple[str, ...] = ("ik", "smartcn")

# Field weights, the same as the embedded backend's: title and questions far above body
# and answers, attachments last. For each word the best field counts
# (cross_fields), plus TIE_BREAKER of the others.
FIELD_BOOSTS: dict[str, float] = {
    "title": 8.0,
    "question": 6.0,
    "similar_questions": 5.0,
    **{f"answer.{channel}": 1.5 for channel in CHANNELS},
    "body": 1.0,
}
ATTACHMENT_BOOST = 0.25
TIE_BREAKER = 0.2
# Bonus when the words also occur as a phrase (ik_smart sub-fields).
PHRASE_BOOSTS: dict[str, float] = {
    "title.phrase": 4.0,
    "question.phrase": 3.0,
    "similar_questions.phrase": 2.5,
    "body.phrase": 0.5,
}

FACETS: dict[str, str] = {"category": "category_ids", "tag": "tags", "type": "item_type"}
MAX_RESULT_WINDOW = 10_000  # ES index.max_result_window default

HIGHLIGHT_PRE = "<em>"
HIGHLIGHT_POST = "</em>"
FRAGMENT_SIZE = 100
FRAGMENTS = 2
ATTACHMENT_INNER_HITS = 3
SIMILAR_QUESTION_HIGHLIGHTS = 3

SUGGEST_PREFIX_MAX = 24  # edge n-grams of compacted candidate texts, in characters
SUGGEST_PINYIN_MAX = 48  # edge n-grams of pinyin / initials, in letters
SUGGEST_PRIMARY_BOOST = 3.0  # title and standard question over similar questions

# Fields with highlights, in the order highlights are reported.
HIGHLIGHT_FIELDS: tuple[str, ...] = (
    "title",
    "question",
    "similar_questions",
    *(f"answer.{channel}" for channel in CHANNELS),
    "body",
)
_WHOLE_VALUE_FIELDS = frozenset({"title", "question", "similar_questions"})

# Semantic leg. The k nearest documents a semantic search considers (at least; more when a
# page reaches past them), and the HNSW candidates per shard: more candidates, better recall
# under restrictive filters, slower. Elasticsearch caps both at 10,000.
VECTOR_FIELD = "vectors.v"
KNN_K = 100
KNN_CANDIDATES_FACTOR = 2
KNN_MIN_CANDIDATES = 200
MAX_KNN = 10_000
MAX_VECTOR_DIMS = 4096  # dense_vector's limit
# Decimals kept per vector component in the bulk body: the index quantizes to int8 anyway,
# and 17 significant digits would triple the request size.
VECTOR_DECIMALS = 6

RESULT_SOURCE: list[str] = [
    "item_id",
    "version_no",
    "title",
    "question",
    "similar_questions",
    "item_type",
    "updated_at",
    "attachments.attachment_id",
    "attachments.file_name",
]

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,100}$")


# --------------------------------------------------------------------------- names


def validate_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"invalid index prefix {prefix!r}: lower-case letters, digits, '_' and '-' only")
    return prefix


def read_alias(prefix: str) -> str:
    return prefix


def write_alias(prefix: str) -> str:
    return f"{prefix}_write"


def synonyms_set_id(prefix: str) -> str:
    return f"{prefix}_synonyms"


def index_name(prefix: str, analyzer: str, version: int) -> str:
    """`kb_items_ik_v3`: the analyzer is part of the name, so switching it means a new index."""
    return f"{prefix}_{analyzer}_v{version}"


def index_pattern(prefix: str, analyzer: str) -> str:
    return f"{prefix}_{analyzer}_v*"


def index_version(name: str, prefix: str, analyzer: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(prefix)}_{re.escape(analyzer)}_v(\d+)", name)
    return int(match.group(1)) if match else None


def next_index_name(existing: Iterable[str], prefix: str, analyzer: str) -> str:
    versions = [v for v in (index_version(n, prefix, analyzer) for n in existing) if v is not None]
    return index_name(prefix, analyzer, max(versions, default=0) + 1)


# --------------------------------------------------------------------------- analysis


@lru_cache(maxsize=1)
def t2s_char_mappings() -> tuple[str, ...]:
    """`mapping` char filter rules ("寬=>宽") from OpenCC's t2s table, one CJK character each.

    Character level only (phrase conversions are lost), but one character in, one out, so
    offsets and highlights stay on the original text. Targets outside the BMP are skipped.
    """
    ranges = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
    chars = [chr(code) for start, end in ranges for code in range(start, end + 1)]
    converted = opencc.OpenCC("t2s").convert("\n".join(chars)).split("\n")
    if len(converted) != len(chars):  # pragma: no cover - guards against an OpenCC change
        raise RuntimeError("OpenCC t2s did not convert character by character")
    folds = {
        src: dst
        for src, dst in zip(chars, converted, strict=True)
        if src != dst and len(dst) == 1 and ord(dst) <= 0xFFFF
    }
    # The embedded analyzer's extra folds (帐 → 账: t2s gives 帐单, people type 账单), chained
    # through t2s so 帳 lands on 账 too: both backends fold the same way.
    for src, dst in EXTRA_FOLDS.items():
        folds[src] = dst
        folds.update({k: dst for k, v in folds.items() if v == src})
    return tuple(f"{src}=>{dst}" for src, dst in folds.items())


def _analysis_settings(analyzer: Analyzer, synonyms_set: str, pinyin: bool) -> dict[str, Any]:
    if analyzer == "ik":
        index_tokenizer, search_tokenizer, extra = "ik_max_word", "ik_smart", []
    elif analyzer == "smartcn":
        index_tokenizer, search_tokenizer, extra = "smartcn_tokenizer", "smartcn_tokenizer", ["smartcn_stop"]
    else:
        raise ValueError(f"unknown analyzer {analyzer!r}; choose one of {ANALYZERS}")
    fold = ["kb_t2s"]
    norm = ["cjk_width", "lowercase", *extra]
    filters: dict[str, Any] = {
        # Only in the search analyzer: reloaded by `PUT _synonyms/<id>` without a reindex.
        "kb_synonyms": {
            "type": "synonym_graph",
            "synonyms_set": synonyms_set,
            "updateable": True,
            "lenient": True,
        },
        # Same query stopwords as the embedded backend; index text keeps them.
        "kb_query_stop": {"type": "stop", "stopwords": sorted(STOPWORDS), "ignore_case": True},
        # Question words (怎么, 如何 ...) score but do not count toward the required share of
        # words (`analysis.QUESTION_WORDS`, as in the embedded backend).
        "kb_question_stop": {"type": "stop", "stopwords": sorted(QUESTION_WORDS), "ignore_case": True},
        "kb_question_keep": {"type": "keep", "keep_words": sorted(QUESTION_WORDS)},
        # Suggestion keys are compacted like the embedded backend's: letters and digits only.
        "kb_compact": {"type": "pattern_replace", "pattern": "[^\\p{L}\\p{N}]+", "replacement": ""},
        "kb_prefix_edge": {"type": "edge_ngram", "min_gram": 1, "max_gram": SUGGEST_PREFIX_MAX},
        "kb_prefix_truncate": {"type": "truncate", "length": SUGGEST_PREFIX_MAX},
    }
    analyzers: dict[str, Any] = {
        "kb_index": {"type": "custom", "char_filter": fold, "tokenizer": index_tokenizer, "filter": norm},
        "kb_search": {
            "type": "custom",
            "char_filter": fold,
            "tokenizer": search_tokenizer,
            "filter": [*norm, "kb_query_stop", "kb_synonyms"],
        },
        # The words a strict query requires its share of, and the question words that only score.
        "kb_search_required": {
            "type": "custom",
            "char_filter": fold,
            "tokenizer": search_tokenizer,
            "filter": [*norm, "kb_query_stop", "kb_question_stop", "kb_synonyms"],
        },
        "kb_search_question": {
            "type": "custom",
            "char_filter": fold,
            "tokenizer": search_tokenizer,
            "filter": [*norm, "kb_question_keep"],
        },
        # Coarse segmentation for phrase queries (match_phrase fails on ik_max_word output),
        # and the query analyzer when a query holds nothing but stopwords.
        "kb_phrase": {"type": "custom", "char_filter": fold, "tokenizer": search_tokenizer, "filter": norm},
        "kb_path": {"type": "custom", "tokenizer": "kb_path"},
        "kb_suggest_index": {
            "type": "custom",
            "char_filter": fold,
            "tokenizer": "keyword",
            "filter": ["cjk_width", "lowercase", "kb_compact", "kb_prefix_edge"],
        },
        "kb_suggest_search": {
            "type": "custom",
            "char_filter": fold,
            "tokenizer": "keyword",
            "filter": ["cjk_width", "lowercase", "kb_compact", "kb_prefix_truncate"],
        },
    }
    if pinyin:
        filters["kb_pinyin"] = {
            "type": "pinyin",
            "keep_first_letter": True,  # 宽带故障 -> kdgz
            "keep_separate_first_letter": False,
            "keep_full_pinyin": False,
            "keep_joined_full_pinyin": True,  # 宽带故障 -> kuandaiguzhang
            # The Chinese original is matched by the parent field, not repeated here.
            "keep_original": False,
            "keep_none_chinese": True,
            "keep_none_chinese_together": True,
            "keep_none_chinese_in_first_letter": True,
            "keep_none_chinese_in_joined_full_pinyin": True,
            "none_chinese_pinyin_tokenize": False,
            "limit_first_letter_length": SUGGEST_PINYIN_MAX,
            "lowercase": True,
            "trim_whitespace": True,
            "remove_duplicated_term": True,
        }
        filters["kb_pinyin_edge"] = {"type": "edge_ngram", "min_gram": 1, "max_gram": SUGGEST_PINYIN_MAX}
        filters["kb_pinyin_truncate"] = {"type": "truncate", "length": SUGGEST_PINYIN_MAX}
        analyzers["kb_suggest_pinyin_index"] = {
            "type": "custom",
            "char_filter": fold,
            "tokenizer": "keyword",
            "filter": ["cjk_width", "lowercase", "kb_compact", "kb_pinyin", "kb_pinyin_edge"],
        }
        analyzers["kb_suggest_pinyin_search"] = {
            "type": "custom",
            "tokenizer": "keyword",
            "filter": ["cjk_width", "lowercase", "kb_compact", "kb_pinyin_truncate"],
        }
    return {
        "char_filter": {"kb_t2s": {"type": "mapping", "mappings": list(t2s_char_mappings())}},
        "tokenizer": {"kb_path": {"type": "path_hierarchy", "delimiter": "/"}},
        "filter": filters,
        "analyzer": analyzers,
    }


# --------------------------------------------------------------------------- index


def _text(*, highlighted: bool = True, phrase: bool = False) -> dict[str, Any]:
    field: dict[str, Any] = {"type": "text", "analyzer": "kb_index", "search_analyzer": "kb_search"}
    if highlighted:
        # Unified highlighter reads offsets from the postings: no re-analysis of long text.
        field["index_options"] = "offsets"
    if phrase:
        field["fields"] = {"phrase": {"type": "text", "analyzer": "kb_phrase"}}
    return field


@dataclass(frozen=True, slots=True)
class VectorSpec:
    """The one embedding model (and its vector length) whose vectors an index holds."""

    model: str
    dims: int

    def __post_init__(self) -> None:
        if not self.model or not 1 <= self.dims <= MAX_VECTOR_DIMS:
            raise ValueError(f"invalid vector spec {self.model!r}/{self.dims}: dims must be 1..{MAX_VECTOR_DIMS}")


def vectors_mapping(spec: VectorSpec) -> dict[str, Any]:
    """`vectors`: one nested entry per embedded text, `v` its vector.

    Cosine rather than dot_product: Elasticsearch refuses a dot_product vector that is not
    of unit length within 1e-4, and the vectors are sent rounded (VECTOR_DECIMALS); with
    cosine it normalizes them itself at no query cost. `int8_hnsw` keeps a quarter of the
    float vectors' memory for the graph search (the floats stay on disk); set explicitly so
    the default (`bbq_hnsw` for 384+ dims since 9.1) cannot change the recall between versions.
    """
    return {
        "type": "nested",
        "dynamic": "strict",
        "properties": {
            "v": {
                "type": "dense_vector",
                "element_type": "float",
                "dims": spec.dims,
                "index": True,
                "similarity": "cosine",
                "index_options": {"type": "int8_hnsw", "m": 16, "ef_construction": 100},
            }
        },
    }


def vector_meta(spec: VectorSpec) -> dict[str, Any]:
    """The mapping's `_meta`: which model's vectors the index holds."""
    return {"embedder": spec.model, "vector_dims": spec.dims}


def vector_mapping_update(spec: VectorSpec) -> dict[str, Any]:
    """Keyword arguments of `indices.put_mapping` adding the vectors to an index created
    without them (a new field and `_meta` are the only changes a live mapping accepts)."""
    return {"meta": vector_meta(spec), "properties": {"vectors": vectors_mapping(spec)}}


def mapping_vector_spec(mappings_: Mapping[str, Any]) -> VectorSpec | None:
    """The VectorSpec of one index's `mappings` (from `GET <index>/_mapping`), None without vectors.

    The field's dims are the truth; the model name comes from `_meta`. Vectors mapped
    without a model name (not written by this backend) count as none: nothing is added to them.
    """
    field = (((mappings_.get("properties") or {}).get("vectors") or {}).get("properties") or {}).get("v") or {}
    model = (mappings_.get("_meta") or {}).get("embedder")
    dims = field.get("dims")
    if field.get("type") != "dense_vector" or not isinstance(model, str) or not isinstance(dims, int):
        return None
    try:
        return VectorSpec(model, dims)
    except ValueError:
        return None


# What `GET <alias>/_mapping` returns of each index for `mapping_vector_spec` (`dynamic` is
# always set, so every index appears in the answer even without vectors).
VECTOR_MAPPING_FILTER = "*.mappings._meta,*.mappings.dynamic,*.mappings.properties.vectors"


def index_vector_specs(response: Mapping[str, Any]) -> dict[str, VectorSpec | None]:
    """index name -> its VectorSpec, from a `GET <alias>/_mapping` answer."""
    return {name: mapping_vector_spec(body.get("mappings") or {}) for name, body in response.items()}


def document_vectors(doc: SearchDocument, spec: VectorSpec | None) -> list[list[float]]:
    """The vectors of `doc` the index of `spec` takes, rounded to VECTOR_DECIMALS: all of them
    when they are of its model, none otherwise (so one index never mixes two models' vectors).
    Vectors that cannot be indexed are left out: another length, a non-finite component, or
    zero length (cosine refuses those)."""
    if spec is None or doc.embedder != spec.model:
        return []
    rows = [vector for vector in doc.vectors if len(vector) == spec.dims]
    if not rows:
        return []
    matrix = np.asarray(rows, dtype=np.float64)
    usable = np.isfinite(matrix).all(axis=1) & (np.abs(matrix).sum(axis=1) > 0)
    return np.round(matrix[usable], VECTOR_DECIMALS).tolist()


def choose_vector_spec(docs: Iterable[SearchDocument], preferred: str | None = None) -> VectorSpec | None:
    """The VectorSpec for a new index holding `docs`: the model (and length) most of their
    vectors are of, `preferred` (the service's current embedder) first when any document
    carries it. Documents of other models are indexed without vectors."""
    counts: Counter[tuple[str, int]] = Counter()
    for doc in docs:
        if doc.embedder and doc.vectors and 1 <= len(doc.vectors[0]) <= MAX_VECTOR_DIMS:
            counts[(doc.embedder, len(doc.vectors[0]))] += 1
    if not counts:
        return None
    ranked = sorted(counts.items(), key=lambda entry: (entry[0][0] != preferred, -entry[1], entry[0]))
    model, dims = ranked[0][0]
    return VectorSpec(model, dims)


def mappings(pinyin: bool = True, vectors: VectorSpec | None = None) -> dict[str, Any]:
    suggest_text: dict[str, Any] = {
        "type": "text",
        "analyzer": "kb_suggest_index",
        "search_analyzer": "kb_suggest_search",
    }
    if pinyin:
        # Never highlighted: the pinyin filter does not keep usable offsets.
        suggest_text["fields"] = {
            "pinyin": {
                "type": "text",
                "analyzer": "kb_suggest_pinyin_index",
                "search_analyzer": "kb_suggest_pinyin_search",
            }
        }
    body: dict[str, Any] = {
        "dynamic": "strict",
        # all_text repeats every other text field, and the vectors are rebuilt from the
        # database when needed: indexed, not stored in _source (a 384-dim vector is ~3 KB of JSON).
        "_source": {"excludes": ["all_text", "vectors"]},
        "properties": {
            "item_id": {"type": "long"},
            "version_id": {"type": "long"},
            "version_no": {"type": "long"},
            "item_type": {"type": "keyword"},
            "status": {"type": "keyword"},
            "title": _text(phrase=True),
            "question": _text(phrase=True),
            "similar_questions": _text(phrase=True),
            "body": _text(phrase=True),
            "answer": {
                "type": "object",
                "dynamic": "strict",
                "properties": {channel: _text() for channel in CHANNELS},
            },
            "attachments": {
                "type": "nested",
                "dynamic": "strict",
                "properties": {
                    "attachment_id": {"type": "long"},
                    "file_name": {"type": "keyword", "ignore_above": 512},
                    "text": _text(),
                },
            },
            # Every text of the item in one top-level field (copy_to cannot leave the nested
            # attachments). Not part of the default scoring, which weighs fields separately;
            # there for whole-item queries (related items, the semantic leg's lexical side).
            "all_text": _text(highlighted=False),
            "category_ids": {"type": "keyword"},
            "category_paths": {
                "type": "keyword",
                "fields": {"tree": {"type": "text", "analyzer": "kb_path", "search_analyzer": "keyword"}},
            },
            "tags": {"type": "keyword"},
            "attributes": {"type": "keyword"},
            "acl_principals": {"type": "keyword"},
            "channels": {"type": "keyword"},
            "valid_from": {"type": "date"},
            "valid_to": {"type": "date"},
            "updated_at": {"type": "date"},
            "suggest": {
                "type": "nested",
                "dynamic": "strict",
                "properties": {"text": suggest_text, "primary": {"type": "boolean"}},
            },
            # The model of the document's vectors; null when it has none (keyword only).
            "embedder": {"type": "keyword"},
        },
    }
    if vectors is not None:
        body["_meta"] = vector_meta(vectors)
        body["properties"]["vectors"] = vectors_mapping(vectors)
    return body


def index_settings(analyzer: Analyzer, synonyms_set: str, *, pinyin: bool = True) -> dict[str, Any]:
    return {
        "index": {
            "number_of_shards": 1,
            # One replica where a second node exists, none on a single dev node (stays green).
            "auto_expand_replicas": "0-1",
            "max_result_window": MAX_RESULT_WINDOW,
            "analysis": _analysis_settings(analyzer, synonyms_set, pinyin),
        }
    }


def create_index_body(
    analyzer: Analyzer,
    synonyms_set: str,
    *,
    pinyin: bool = True,
    aliases: Mapping[str, Mapping[str, Any]] | None = None,
    vectors: VectorSpec | None = None,
) -> dict[str, Any]:
    """Body of `PUT /<index>` (settings, mappings and optionally its aliases).

    Without `vectors` the index has no vector field yet: the first documents carrying
    vectors add it (`vector_mapping_update`)."""
    body: dict[str, Any] = {
        "settings": index_settings(analyzer, synonyms_set, pinyin=pinyin),
        "mappings": mappings(pinyin, vectors),
    }
    if aliases:
        body["aliases"] = {name: dict(spec) for name, spec in aliases.items()}
    return body


def initial_aliases(prefix: str) -> dict[str, dict[str, Any]]:
    return {read_alias(prefix): {}, write_alias(prefix): {"is_write_index": True}}


def alias_actions(
    old_indices: Sequence[str],
    new_index: str,
    *,
    read: str | None = None,
    write: str | None = None,
) -> dict[str, Any]:
    """Body of `POST _aliases` moving the given aliases from the old indices to the new one.

    One request, one actions list: Elasticsearch applies it atomically, so readers never see
    no index or two indices behind the alias.
    """
    actions: list[dict[str, Any]] = []
    for alias in (read, write):
        if alias is None:
            continue
        for old in old_indices:
            if old != new_index:
                actions.append({"remove": {"index": old, "alias": alias}})
    if read is not None:
        actions.append({"add": {"index": new_index, "alias": read}})
    if write is not None:
        actions.append({"add": {"index": new_index, "alias": write, "is_write_index": True}})
    if not actions:
        raise ValueError("alias_actions needs a read or a write alias")
    return {"actions": actions}


# --------------------------------------------------------------------------- language


def _usable_synonym_term(term: str) -> bool:
    # "," separates terms and "=>" maps in the Solr rule format; "\" escapes.
    return bool(term) and "," not in term and "=>" not in term and "\\" not in term and not term.startswith("#")


def synonyms_set_body(resources: LanguageResources) -> dict[str, Any]:
    """Body of `PUT _synonyms/<id>`: one equivalence rule per synonym group.

    Terms are folded like indexed text (simplified, half-width, lower case). Rule ids are a
    hash of the rule, so unchanged groups keep their id.
    """
    rules: list[dict[str, str]] = []
    seen: set[str] = set()
    for group in normalized_synonym_groups(resources.synonym_groups):
        terms = [term for term in group if _usable_synonym_term(term)]
        if len(terms) < 2:
            continue
        rule = ", ".join(terms)
        rule_id = "g" + hashlib.sha1(rule.encode()).hexdigest()[:16]
        if rule_id in seen:
            continue
        seen.add(rule_id)
        rules.append({"id": rule_id, "synonyms": rule})
    return {"synonyms_set": rules}


def ik_user_dictionary(resources: LanguageResources) -> str:
    """Text for IK's `remote_ext_dict` URL: one word per line, UTF-8, `\\n` line ends.

    Holds the business words and every synonym term (so IK keeps them whole). IK polls the
    URL (Last-Modified/ETag); already indexed documents keep their old tokens, so a
    dictionary change needs a reindex (`rebuild`) to reach them.
    """
    words = sorted(dictionary_words(resources))
    return "".join(f"{word}\n" for word in words)


# --------------------------------------------------------------------------- documents


def es_datetime(value: datetime) -> str:
    """ISO 8601 with milliseconds and offset; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_es_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def attribute_term(code: str, value: str | int | float) -> str:
    """`code=value` as stored and filtered; 2.0 and 2 are the same value (as in the
    embedded backend)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{code}={value}"


def document_id(item_id: int) -> str:
    return str(item_id)


def document_body(doc: SearchDocument, vectors: VectorSpec | None = None) -> dict[str, Any]:
    """The `_source` indexed for one item, into an index holding `vectors`' model.

    Answers for channels outside CHANNELS are dropped (the mapping is strict). `all_text`
    leaves the per-channel answers out: one channel must not match on another's script.
    Vectors of another model than the index's (or none) leave the document keyword-only,
    `embedder: null`.
    """
    kept = document_vectors(doc, vectors)
    answers = {ch: text for ch, text in doc.channel_answers.items() if ch in CHANNELS and text}
    parts = [
        doc.title,
        doc.question,
        *doc.similar_questions,
        doc.body_text,
        *(f"{a.file_name}\n{a.text}" for a in doc.attachments),
    ]
    suggest: dict[str, bool] = {}
    for text, primary in (
        (doc.title, True),
        (doc.question, True),
        *((similar, False) for similar in doc.similar_questions),
    ):
        text = text.strip()
        if text and any(ch.isalnum() for ch in text):
            suggest[text] = suggest.get(text, False) or primary
    body: dict[str, Any] = {
        "item_id": doc.item_id,
        "version_id": doc.version_id,
        "version_no": doc.version_no,
        "item_type": doc.item_type,
        "status": doc.status,
        "title": doc.title,
        "question": doc.question,
        "similar_questions": list(doc.similar_questions),
        "body": doc.body_text,
        "answer": answers,
        "attachments": [
            {"attachment_id": a.attachment_id, "file_name": a.file_name, "text": a.text} for a in doc.attachments
        ],
        "all_text": "\n".join(p for p in parts if p),
        "category_ids": sorted({str(c) for c in doc.category_ids}),
        "category_paths": list(dict.fromkeys(doc.category_paths)),
        "tags": list(dict.fromkeys(doc.tags)),
        "attributes": list(
            dict.fromkeys(attribute_term(code, v) for code, values in doc.attributes.items() for v in values)
        ),
        "acl_principals": list(dict.fromkeys(doc.acl_principals)),
        "channels": list(dict.fromkeys(doc.channels)),
        "valid_from": es_datetime(doc.valid_from) if doc.valid_from else None,
        "valid_to": es_datetime(doc.valid_to) if doc.valid_to else None,
        "updated_at": es_datetime(doc.updated_at),
        "suggest": [{"text": text, "primary": primary} for text, primary in suggest.items()],
        "embedder": doc.embedder if kept else None,
    }
    if kept:
        body["vectors"] = [{"v": vector} for vector in kept]
    return body


def index_action(doc: SearchDocument, index: str, vectors: VectorSpec | None = None) -> dict[str, Any]:
    """One `helpers.async_streaming_bulk` action.

    External versioning with the item's version number: a write carrying an older version
    than the indexed one is rejected (409), so a late job never overwrites newer content.
    `external_gte` rather than `external` lets the *same* version be indexed again, which
    is needed when ACLs or categories change without a new content version.
    """
    return {
        "_op_type": "index",
        "_index": index,
        "_id": document_id(doc.item_id),
        "version": doc.version_no,
        "version_type": "external_gte",
        "_source": document_body(doc, vectors),
    }


def delete_action(item_id: int, index: str) -> dict[str, Any]:
    return {"_op_type": "delete", "_index": index, "_id": document_id(item_id)}


# --------------------------------------------------------------------------- queries


def filter_clauses(
    principals: Sequence[str],
    channel: str | None,
    filters: SearchFilters,
) -> list[dict[str, Any]]:
    """Filter-context clauses shared by keyword search, kNN search and suggest.

    The ACL clause is always first and always present: no principals → nothing matches.
    Within one filter any listed value matches (statuses, types, values of one attribute);
    different filters, each category id and each tag must all hold. An empty list means
    no restriction, except an attribute given with no values, which matches nothing.
    """
    clauses: list[dict[str, Any]] = []
    if principals:
        clauses.append({"terms": {"acl_principals": list(dict.fromkeys(principals))}})
    else:
        clauses.append({"match_none": {}})
    if channel is not None:
        clauses.append({"term": {"channels": channel}})
    if filters.statuses:
        clauses.append({"terms": {"status": list(filters.statuses)}})
    if filters.item_types:
        clauses.append({"terms": {"item_type": list(filters.item_types)}})
    # category_ids holds every ancestor, so a node id matches its whole subtree. Each
    # category and each tag must hold (drill-down), as in the embedded backend.
    for category_id in dict.fromkeys(filters.category_ids):
        clauses.append({"term": {"category_ids": str(category_id)}})
    for tag in dict.fromkeys(filters.tags):
        clauses.append({"term": {"tags": tag}})
    for code, values in sorted(filters.attributes.items()):
        if values:
            clauses.append({"terms": {"attributes": [attribute_term(code, v) for v in values]}})
        else:
            clauses.append({"match_none": {}})
    if filters.valid_at is not None:
        at = es_datetime(filters.valid_at)
        # valid_from <= t < valid_to; a missing bound is open.
        clauses.append(
            {
                "bool": {
                    "must_not": [
                        {"range": {"valid_from": {"gt": at}}},
                        {"range": {"valid_to": {"lte": at}}},
                    ]
                }
            }
        )
    if filters.updated_since is not None:
        clauses.append({"range": {"updated_at": {"gte": es_datetime(filters.updated_since)}}})
    return clauses


def only_stopwords(text: str) -> bool:
    """True when every word of `text` is a query stopword ("怎么办?"), so the query must keep them."""
    return _covered_by(text, STOPWORDS)


def only_question_words(text: str) -> bool:
    """True when `text` holds nothing but question words and stopwords ("怎么办理吗" is not):
    then, as in the embedded backend, those words are the ones required."""
    return _covered_by(text, STOPWORDS | QUESTION_WORDS)


def _covered_by(text: str, words: frozenset[str]) -> bool:
    runs = [run for run in re.split(r"[^\w]+|_", normalize(text)) if run]
    if not runs:
        return False
    longest = max(len(w) for w in words)

    def covered(run: str) -> bool:
        if run.isascii():
            return run in words
        ok = [True] + [False] * len(run)
        for end in range(1, len(run) + 1):
            ok[end] = any(ok[start] and run[start:end] in words for start in range(max(0, end - longest), end))
        return ok[-1]

    return all(covered(run) for run in runs)


def _highlight_options() -> dict[str, Any]:
    return {
        "type": "unified",
        "pre_tags": [HIGHLIGHT_PRE],
        "post_tags": [HIGHLIGHT_POST],
        # The text between the tags is HTML-escaped: fragments are safe to render.
        "encoder": "html",
        "boundary_scanner": "sentence",
        "boundary_scanner_locale": "zh-CN",
        "fragment_size": FRAGMENT_SIZE,
        "number_of_fragments": FRAGMENTS,
    }


def text_fields(channel: str | None) -> list[str]:
    """Searched text fields with boosts; with a channel, only that channel's answer."""
    return [
        f"{name}^{boost:g}"
        for name, boost in FIELD_BOOSTS.items()
        if not name.startswith("answer.") or channel is None or name == f"answer.{channel}"
    ]


def highlight_fields(channel: str | None) -> list[str]:
    return [
        name
        for name in HIGHLIGHT_FIELDS
        if not name.startswith("answer.") or channel is None or name == f"answer.{channel}"
    ]


# `analysis.required_words` in Elasticsearch's words: all of up to 2 words, 75 % (rounded down) of more.
STRICT_MINIMUM_SHOULD_MATCH = "2<75%"


def text_query(text: str, *, channel: str | None = None, highlight: bool = True, strict: bool = True) -> dict[str, Any]:
    """The scoring part for user text.

    User text only ever goes into match-type queries, so `"`, `:`, `*`, `(`, `AND` are
    plain characters, never syntax. Strict, a document needs
    `STRICT_MINIMUM_SHOULD_MATCH` of the words (loose: any one); `cross_fields` scores each word by its
    best field (all fields share one search analyzer), like the embedded backend.
    """
    # Multi-word synonyms become AND-ed terms, not phrases: phrase queries do not work on
    # ik_max_word output (overlapping tokens at increasing positions).
    options: dict[str, Any] = {"auto_generate_synonyms_phrase_query": False}
    if only_stopwords(text):
        options["analyzer"] = "kb_phrase"
    if strict:
        options["minimum_should_match"] = STRICT_MINIMUM_SHOULD_MATCH
        if not only_question_words(text):
            options.setdefault("analyzer", "kb_search_required")
    nested: dict[str, Any] = {
        "nested": {
            "path": "attachments",
            "score_mode": "max",
            "boost": ATTACHMENT_BOOST,
            "query": {"match": {"attachments.text": {"query": text, **options}}},
        }
    }
    if highlight:
        nested["nested"]["inner_hits"] = {
            "name": "attachments",
            "size": ATTACHMENT_INNER_HITS,
            # Which file matched comes from `_nested.offset` into the parent's list.
            "_source": False,
            "highlight": {**_highlight_options(), "fields": {"attachments.text": {}}},
        }
    return {
        "bool": {
            "should": [
                words_query(text, channel, **options),
                {
                    "multi_match": {
                        "query": text,
                        "type": "phrase",
                        "fields": [f"{name}^{boost:g}" for name, boost in PHRASE_BOOSTS.items()],
                        "slop": 1,
                    }
                },
                nested,
            ],
            "minimum_should_match": 1,
        }
    }


def words_query(text: str, channel: str | None, **options: Any) -> dict[str, Any]:
    """Each word scored by its best field (`cross_fields`), plus TIE_BREAKER of the others."""
    return {
        "multi_match": {
            "query": text,
            "type": "cross_fields",
            "operator": "or",
            "fields": text_fields(channel),
            "tie_breaker": TIE_BREAKER,
            **options,
        }
    }


def search_body(query: SearchQuery) -> dict[str, Any]:
    """Body of `POST <read alias>/_search` for one `SearchQuery`.

    Filters sit in `bool.filter` and aggregations run on the same query (no `global`
    aggregation, no `post_filter`), so facet counts never include documents the caller
    may not read. Browse mode (no text) and `sort="updated"` order by date, score 0.
    """
    text = query.text.strip()
    must = (
        [text_query(text, channel=query.channel, highlight=query.highlight, strict=query.strict)]
        if text
        else [{"match_all": {}}]
    )
    offset = min(max(0, query.offset), MAX_RESULT_WINDOW)
    size = max(0, min(query.limit, MAX_RESULT_WINDOW - offset))
    body: dict[str, Any] = {
        "query": {
            "bool": {
                "must": must,
                "filter": filter_clauses(query.principals, query.channel, query.filters),
            }
        },
        "from": offset,
        "size": size,
        "track_total_hits": True,
        "_source": list(RESULT_SOURCE),
    }
    if text and query.strict and not only_question_words(text):
        # The question words the required share leaves out still score, as optional words.
        body["query"]["bool"]["should"] = [words_query(text, query.channel, analyzer="kb_search_question")]
    if not text or query.sort == "updated":
        body["sort"] = [{"updated_at": {"order": "desc"}}, {"item_id": {"order": "asc"}}]
    else:
        body["sort"] = [
            {"_score": {"order": "desc"}},
            {"updated_at": {"order": "desc"}},
            {"item_id": {"order": "asc"}},
        ]
    if query.facets:
        body["aggs"] = {name: {"terms": {"field": FACETS[name], "size": size_}} for name, size_ in FACET_SIZES.items()}
    if query.highlight and text:
        fields: dict[str, Any] = {}
        for name in highlight_fields(query.channel):
            # Titles and questions come back whole, long text as sentence fragments.
            fields[name] = {"number_of_fragments": 0} if name in _WHOLE_VALUE_FIELDS else {}
        body["highlight"] = {**_highlight_options(), "fields": fields}
    if query.explain:
        body["explain"] = True
    return body


def knn_k(query: SearchQuery) -> int:
    """How many nearest documents a semantic search takes: KNN_K, or as far as the page reaches."""
    return min(max(KNN_K, max(0, query.offset) + max(0, query.limit)), MAX_KNN)


def knn_body(query: SearchQuery, *, model: str | None = None) -> dict[str, Any]:
    """Body of `POST <read alias>/_search` for a semantic `SearchQuery` (mode="semantic").

    A top-level `knn` over the nested `vectors.v`: a document scores by its nearest vector
    (nested kNN takes the best child). `filter` is exactly the keyword search's
    `filter_clauses`, on top-level fields, applied *during* the HNSW search as a pre-filter,
    so the k results are the k nearest the caller may read: never a top-k cut short by a
    filter applied afterwards, never a count that includes what they may not read. With
    `model` (the embedder of `query.vector`) only documents whose vectors are of that model
    are compared. `from`/`size` page over the k results; `hits.total` is how many of them
    came back (at most k). Aggregations run over those k documents. No highlights: nothing
    matched word for word. The sort only breaks ties.
    """
    if not query.vector:
        raise ValueError("a semantic query needs a query vector")
    k = knn_k(query)
    offset = min(max(0, query.offset), k)
    size = max(0, min(query.limit, k - offset))
    filters = filter_clauses(query.principals, query.channel, query.filters)
    if model is not None:
        filters.append({"term": {"embedder": model}})
    body: dict[str, Any] = {
        "knn": {
            "field": VECTOR_FIELD,
            "query_vector": [float(x) for x in query.vector],
            "k": k,
            "num_candidates": min(max(k * KNN_CANDIDATES_FACTOR, KNN_MIN_CANDIDATES), MAX_KNN),
            "filter": filters,
        },
        "from": offset,
        "size": size,
        "track_total_hits": True,
        "_source": list(RESULT_SOURCE),
        "sort": [
            {"_score": {"order": "desc"}},
            {"updated_at": {"order": "desc"}},
            {"item_id": {"order": "asc"}},
        ],
    }
    if query.facets:
        body["aggs"] = {name: {"terms": {"field": FACETS[name], "size": size_}} for name, size_ in FACET_SIZES.items()}
    return body


def relax(query: SearchQuery, result: SearchResult) -> bool:
    """Whether a strict search's empty result calls for the loose leg (any one word)."""
    return query.strict and result.total == 0 and bool(query.text.strip())


def has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def suggest_body(
    prefix: str,
    principals: Sequence[str],
    channel: str | None,
    limit: int = 10,
    *,
    pinyin: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Body of the suggestion search: candidate texts starting with `prefix` (in Chinese,
    pinyin or pinyin initials), under the same ACL/channel filter as search, published
    items valid now only (as in the embedded backend)."""
    prefix = prefix.strip()
    matches: list[dict[str, Any]] = [{"match": {"suggest.text": {"query": prefix}}}]
    if pinyin:
        matches.append({"match": {"suggest.text.pinyin": {"query": prefix}}})
    filters = SearchFilters(valid_at=now or datetime.now(UTC))
    return {
        "query": {
            "bool": {
                "must": [
                    {
                        "nested": {
                            "path": "suggest",
                            "score_mode": "max",
                            "query": {
                                "bool": {
                                    "must": [{"bool": {"should": matches, "minimum_should_match": 1}}],
                                    # A pure boost: title and question before similar questions.
                                    "should": [
                                        {
                                            "term": {
                                                "suggest.primary": {
                                                    "value": True,
                                                    "boost": SUGGEST_PRIMARY_BOOST,
                                                }
                                            }
                                        }
                                    ],
                                }
                            },
                            # Which candidate matched: its offset into the parent's `suggest` list.
                            "inner_hits": {"name": "suggest", "size": 1, "_source": False},
                        }
                    }
                ],
                "filter": filter_clauses(principals, channel, filters),
            }
        },
        # Several items can share a title: fetch more, keep distinct texts.
        "size": max(0, min(limit * 4, 100)),
        "_source": ["item_id", "title", "suggest.text"],
        "sort": [
            {"_score": {"order": "desc"}},
            {"updated_at": {"order": "desc"}},
            {"item_id": {"order": "asc"}},
        ],
    }


VERSIONS_SOURCE: tuple[str, ...] = ("item_id", "version_no")
VECTOR_STATE_SOURCE: tuple[str, ...] = ("item_id", "embedder")


def indexed_versions_body(
    pit_id: str,
    search_after: Sequence[Any] | None,
    size: int = 1000,
    source: Sequence[str] = VERSIONS_SOURCE,
) -> dict[str, Any]:
    """One page of a point-in-time walk over every document (item_id and `source`)."""
    body: dict[str, Any] = {
        "size": size,
        "query": {"match_all": {}},
        "_source": list(source),
        "pit": {"id": pit_id, "keep_alive": "1m"},
        "sort": [{"_shard_doc": "asc"}],
        "track_total_hits": False,
    }
    if search_after is not None:
        body["search_after"] = list(search_after)
    return body


# --------------------------------------------------------------------------- responses


def _explanation_text(node: Mapping[str, Any], depth: int = 0) -> str:
    lines = [f"{'  ' * depth}{node.get('value', 0):g} = {node.get('description', '')}"]
    for child in node.get("details") or ():
        lines.append(_explanation_text(child, depth + 1))
    return "\n".join(lines)


def _attachment_highlights(hit: Mapping[str, Any]) -> list[Highlight]:
    inner = (hit.get("inner_hits") or {}).get("attachments")
    if not inner:
        return []
    source_attachments = (hit.get("_source") or {}).get("attachments") or []
    result: list[Highlight] = []
    for inner_hit in inner.get("hits", {}).get("hits", []):
        fragments = (inner_hit.get("highlight") or {}).get("attachments.text")
        if not fragments:
            continue
        attachment: Mapping[str, Any] = inner_hit.get("_source") or {}
        if "attachment_id" not in attachment:
            # The nested offset points into the parent's attachments array.
            offset = (inner_hit.get("_nested") or {}).get("offset")
            if isinstance(offset, int) and 0 <= offset < len(source_attachments):
                attachment = source_attachments[offset]
        result.append(
            Highlight(
                field="attachment",
                fragments=list(fragments),
                attachment_id=attachment.get("attachment_id"),
                file_name=attachment.get("file_name"),
            )
        )
    return result


def search_hit(hit: Mapping[str, Any]) -> SearchHit:
    source = hit.get("_source") or {}
    highlights: list[Highlight] = []
    es_highlight = hit.get("highlight") or {}
    for field in HIGHLIGHT_FIELDS:
        fragments = es_highlight.get(field)
        if fragments:
            if field == "similar_questions":
                fragments = fragments[:SIMILAR_QUESTION_HIGHLIGHTS]
            highlights.append(Highlight(field=field, fragments=list(fragments)))
    highlights.extend(_attachment_highlights(hit))
    explanation = hit.get("_explanation")
    score = hit.get("_score")
    return SearchHit(
        item_id=int(source.get("item_id", hit.get("_id"))),
        version_no=int(source.get("version_no", hit.get("_version", 0))),
        score=float(score) if isinstance(score, int | float) else 0.0,
        title=source.get("title", ""),
        item_type=source.get("item_type", ""),
        updated_at=parse_es_datetime(source["updated_at"]),
        highlights=highlights,
        explanation=_explanation_text(explanation) if explanation else None,
        questions=[q for q in _questions(hit) if q],
    )


def _questions(hit: Mapping[str, Any]) -> list[str]:
    """Title, standard question and similar questions of a hit (for reranking and fusion)."""
    source = hit.get("_source") or {}
    return [source.get("title") or "", source.get("question") or "", *(source.get("similar_questions") or ())]


def _es_score(hit: Mapping[str, Any]) -> float:
    score = hit.get("_score")
    return float(score) if isinstance(score, int | float) else 0.0


def _ranked_hit(ranked: ranking.Ranked[Mapping[str, Any]]) -> SearchHit:
    hit = search_hit(ranked.candidate)
    hit.score = ranked.score
    if hit.explanation is not None and ranked.bonus:
        hit.explanation = ranking.explain_line(ranked) + "\n" + indent(hit.explanation, "  ")
    return hit


def _facets(response: Mapping[str, Any]) -> dict[str, list[FacetValue]]:
    facets: dict[str, list[FacetValue]] = {}
    aggregations = response.get("aggregations") or {}
    for name in FACETS:
        agg = aggregations.get(name)
        if agg is not None:
            facets[name] = [
                FacetValue(value=str(b.get("key_as_string", b["key"])), count=int(b["doc_count"]))
                for b in agg.get("buckets", [])
            ]
    return facets


def _total(response: Mapping[str, Any]) -> int:
    total = (response.get("hits") or {}).get("total", 0)
    return int(total["value"] if isinstance(total, Mapping) else total)


def cosine_from_score(score: float) -> float:
    """Elasticsearch scores a cosine kNN hit (1 + cosine) / 2; the hit carries the cosine."""
    return max(-1.0, min(1.0, 2.0 * score - 1.0))


def semantic_result(response: Mapping[str, Any], query: SearchQuery, model: str | None = None) -> SearchResult:
    """The result of a `knn_body(query)` response: hits in the engine's order, each scored by
    the cosine similarity of the item's nearest vector to the query vector."""
    hits: list[SearchHit] = []
    for raw in (response.get("hits") or {}).get("hits", []):
        hit = search_hit(raw)
        hit.score = cosine_from_score(_es_score(raw))
        if query.explain:
            of_model = f" ({model})" if model else ""
            hit.explanation = f"{hit.score:g} = cosine similarity of the item's nearest vector to the query{of_model}"
        hits.append(hit)
    return SearchResult(
        total=_total(response), hits=hits, facets=_facets(response), took_ms=float(response.get("took", 0))
    )


def vector_state_page(response: Mapping[str, Any]) -> tuple[dict[int, str | None], list[Any] | None, str | None]:
    """(item_id -> model of its vectors or None, search_after or None, the refreshed PIT id)."""
    found: dict[int, str | None] = {}
    last_sort: list[Any] | None = None
    hits = (response.get("hits") or {}).get("hits", [])
    for hit in hits:
        source = hit.get("_source") or {}
        model = source.get("embedder")
        found[int(source.get("item_id", hit.get("_id")))] = model if isinstance(model, str) and model else None
        last_sort = hit.get("sort")
    return found, last_sort if hits else None, response.get("pit_id")


def search_result(response: Mapping[str, Any], query: SearchQuery) -> SearchResult:
    """The result of a `search_body(ranking.engine_query(query))` response: the page `query`
    asked for, its first results reranked by the question match (app.search.ranking)."""
    hits = response.get("hits") or {}
    return SearchResult(
        total=_total(response),
        hits=[_ranked_hit(r) for r in ranking.rerank(query, hits.get("hits", []), _es_score, _questions)],
        facets=_facets(response),
        took_ms=float(response.get("took", 0)),
    )


def suggestions(response: Mapping[str, Any], limit: int = 10) -> list[Suggestion]:
    """Suggestions from the response: the matched candidate of each hit, distinct texts."""
    result: list[Suggestion] = []
    seen: set[str] = set()
    for hit in (response.get("hits") or {}).get("hits", []):
        source = hit.get("_source") or {}
        candidates = source.get("suggest") or []
        text: str | None = None
        inner = ((hit.get("inner_hits") or {}).get("suggest") or {}).get("hits", {}).get("hits", [])
        if inner:
            text = (inner[0].get("_source") or {}).get("text")
            offset = (inner[0].get("_nested") or {}).get("offset")
            if not text and isinstance(offset, int) and 0 <= offset < len(candidates):
                text = candidates[offset].get("text")
        text = text or source.get("title", "")
        if not text or text in seen:
            continue
        seen.add(text)
        result.append(Suggestion(item_id=int(source.get("item_id", hit.get("_id"))), text=text))
        if len(result) >= limit:
            break
    return result


def versions_page(response: Mapping[str, Any]) -> tuple[dict[int, int], list[Any] | None, str | None]:
    """(item_id -> version_no, search_after for the next page or None, the refreshed PIT id)."""
    found: dict[int, int] = {}
    last_sort: list[Any] | None = None
    hits = (response.get("hits") or {}).get("hits", [])
    for hit in hits:
        source = hit.get("_source") or {}
        found[int(source.get("item_id", hit.get("_id")))] = int(source.get("version_no", hit.get("_version", 0)))
        last_sort = hit.get("sort")
    return found, last_sort if hits else None, response.get("pit_id")


BulkOutcome = Literal["ok", "superseded", "error", "unavailable"]


def bulk_item_outcome(ok: bool, item: Mapping[str, Any]) -> tuple[str, BulkOutcome, str | None]:
    """Classify one `async_streaming_bulk` result: (document id, outcome, error text).

    - a 409 on an index action: an equal or newer version is already indexed, the write
      was meant to lose ("superseded", no error);
    - a 404 on delete: already gone ("ok");
    - 429 (after the helper's retries), 5xx or no status: the cluster could not take it
      ("unavailable");
    - anything else is about this document ("error"), e.g. a mapping or analysis failure.
    """
    op, info = next(iter(item.items()))
    doc_id = str(info.get("_id", ""))
    status = info.get("status")
    if ok:
        return doc_id, "ok", None
    if status == 409 and op in ("index", "create"):
        return doc_id, "superseded", None
    if status == 404 and op == "delete":
        return doc_id, "ok", None
    error = info.get("error")
    if isinstance(error, Mapping):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
        caused = error.get("caused_by")
        if isinstance(caused, Mapping) and caused.get("reason"):
            text += f" (caused by {caused.get('type', '')}: {caused['reason']})"
    else:
        text = str(error) if error else "unknown error"
    text = f"{status} {text}" if isinstance(status, int) else text
    if not isinstance(status, int) or status == 429 or status >= 500:
        return doc_id, "unavailable", text
    return doc_id, "error", text
