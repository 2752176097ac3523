"""Relevance experiments for the search engineer: what-if variants of the embedded engine, measured.

    .venv/bin/python bench/relevance_tuning.py                      # every variant, every query
    .venv/bin/python bench/relevance_tuning.py --variants as_is,chars_0

`bench/relevance.py` is the benchmark (the unmodified service over HTTP). This script answers
"what would change X do?" quickly: it indexes the same corpus as the same `SearchDocument`s the
service's indexing builds for an imported FAQ (title = standard question = the corpus question,
readable by the superuser subject, every channel) straight into an `EmbeddedBackend` in a
temporary folder, then runs every query through the backend's own search with the same
`SearchQuery` the service builds for an administrator (channel agent, status published,
valid now, top 10). The `as_is` variant must reproduce relevance.py's figures exactly; every
other variant monkeypatches one thing in this process only (query-time constants, the query
analyzer, or the indexed tokens, which needs a rebuild) and nothing in app/ is changed.
Tune on the dev data only. The last line of output is one JSON object: variant -> metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tantivy
from relevance import DEFAULT_DATA, Doc, Q, load, metrics, rank_of
from tantivy import Occur, Query

from app.search import analysis
from app.search.backends import embedded
from app.search.backends.embedded import EmbeddedBackend
from app.search.documents import CHANNELS, SearchDocument, SearchFilters, SearchQuery
from app.search.indexing import SUPERUSER_SUBJECT

NOW = datetime.now(UTC)

# Question words and fillers that LCQMC users (and call-center customers) wrap questions in.
QUESTION_WORDS = (
    "怎么 怎么办 怎样 如何 什么 为什么 哪个 哪里 哪些 多少 是不是 可以 有没有 请问 谁 吗 呢 啊 吧 呀 的 了 么"
)


def to_document(n: int, doc: Doc) -> SearchDocument:
    """What app.search.indexing builds for an item imported by relevance.py."""
    return SearchDocument(
        item_id=n,
        version_id=n,
        version_no=1,
        item_type="faq_dev",
        status="published",
        title=doc.question[:300],
        question=doc.question[:500],
        similar_questions=[],
        body_text=doc.answer or "",
        channel_answers={},
        attachments=[],
        category_ids=[],
        category_paths=[],
        tags=[],
        attributes={},
        acl_principals=["internal", SUPERUSER_SUBJECT],
        channels=list(CHANNELS),
        valid_from=None,
        valid_to=None,
        updated_at=NOW,
    )


def service_query(text: str) -> SearchQuery:
    """The SearchQuery app.search.service.search builds for GET /api/v1/search?q=text&limit=10."""
    return SearchQuery(
        text=text[:200],
        principals=["public", "user:1", "role:1", "internal", SUPERUSER_SUBJECT],
        channel="agent",
        filters=SearchFilters(statuses=["published"], valid_at=NOW),
        limit=10,
        highlight=False,  # neither changes the ranking
        facets=False,
    )


# ---------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    patch: Callable[[], contextlib.AbstractContextManager[None]]
    reindex: bool = False  # changes the indexed tokens: needs its own index


@contextlib.contextmanager
def setattrs(*changes: tuple[Any, str, Any]) -> Iterator[None]:
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in changes]
    try:
        for obj, name, value in changes:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def constant(name: str, value: float) -> Callable[[], contextlib.AbstractContextManager[None]]:
    return lambda: setattrs((embedded, name, value))


def stopwords(words: str) -> Callable[[], contextlib.AbstractContextManager[None]]:
    return lambda: setattrs((analysis, "STOPWORDS", frozenset(words.split())))


def _text_query_all_must(self: EmbeddedBackend, words: Any, fields: Any) -> Query:
    """AND semantics: every query word must match (the real one ORs them)."""
    query = ORIGINAL_TEXT_QUERY(self, words, fields)
    clauses = [(Occur.Must, ORIGINAL_TEXT_QUERY(self, [w], fields)) for w in words]
    return Query.boolean_query([(Occur.Should, query), *clauses]) if clauses else query


def _text_query_coord(self: EmbeddedBackend, words: Any, fields: Any) -> Query:
    """OR, plus a bonus for every query word matched: the sum of per-word constant scores."""
    query = ORIGINAL_TEXT_QUERY(self, words, fields)
    bonus = [
        (Occur.Should, Query.const_score_query(ORIGINAL_TEXT_QUERY(self, [w], fields), COORD_BONUS)) for w in words
    ]
    return Query.boolean_query([(Occur.Should, query), *bonus])


def _text_query_with_bigrams(self: EmbeddedBackend, words: Any, fields: Any) -> Query:
    """The real query OR character bigrams of the query against a bigram field (weight BIGRAM_WEIGHT)."""
    query = ORIGINAL_TEXT_QUERY(self, words, fields)
    text = CURRENT_QUERY_TEXT.get("text", "")
    grams = list(dict.fromkeys(bigrams(text)))
    if not grams:
        return query
    per_gram = [(Occur.Should, Query.term_query(self.schema, "bigrams", g)) for g in grams]
    return Query.boolean_query(
        [(Occur.Should, query), (Occur.Should, Query.boost_query(Query.boolean_query(per_gram), BIGRAM_WEIGHT))]
    )


ORIGINAL_TEXT_QUERY = EmbeddedBackend._text_query
ORIGINAL_TO_DOCUMENT = EmbeddedBackend._to_document
ORIGINAL_SEARCH_SYNC = EmbeddedBackend._search_sync
COORD_BONUS = 1.0
BIGRAM_WEIGHT = 1.0
CURRENT_QUERY_TEXT: dict[str, str] = {}


def bigrams(text: str) -> list[str]:
    """Overlapping character bigrams of each run of letters/digits/Chinese (single chars kept)."""
    folded = analysis.normalize(text)
    out: list[str] = []
    run: list[str] = []
    for char in [*folded, " "]:
        if char.isalnum():
            run.append(char)
            continue
        if len(run) == 1:
            out.append(run[0])
        out += ["".join(run[i : i + 2]) for i in range(len(run) - 1)]
        run = []
    return out


def _make_bigram_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("item_id", stored=True, indexed=True, fast=True)
    builder.add_unsigned_field("version_no", fast=True)
    for name in embedded.FIELD_BOOSTS:
        builder.add_text_field(name, tokenizer_name="raw", index_option="position")
    builder.add_text_field("suggest_primary", tokenizer_name="raw", index_option="freq")
    builder.add_text_field("suggest_more", tokenizer_name="raw", index_option="freq")
    for name in ("item_type", "tags"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic", fast=True)
    for name in ("status", "acl", "channels", "attrs"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("category_ids", indexed=True, fast=True)
    for name in ("valid_from", "valid_to", "updated_at"):
        builder.add_integer_field(name, indexed=True, fast=True)
    builder.add_bytes_field("source", stored=True)
    builder.add_text_field("bigrams", tokenizer_name="raw", index_option="freq")
    return builder.build()


def _to_document_with_bigrams(self: EmbeddedBackend, doc: SearchDocument, analyzer: Any) -> tantivy.Document:
    tdoc = ORIGINAL_TO_DOCUMENT(self, doc, analyzer)
    for text in (doc.title, doc.question, *doc.similar_questions):
        for gram in bigrams(text):
            tdoc.add_text("bigrams", gram)
    return tdoc


def _search_sync_remembering(self: EmbeddedBackend, live: Any, analyzer: Any, query: SearchQuery) -> Any:
    CURRENT_QUERY_TEXT["text"] = query.text
    return ORIGINAL_SEARCH_SYNC(self, live, analyzer, query)


def bigram_variant(weight: float) -> Callable[[], contextlib.AbstractContextManager[None]]:
    def patch() -> contextlib.AbstractContextManager[None]:
        return setattrs(
            (sys.modules[__name__], "BIGRAM_WEIGHT", weight),
            (embedded, "_build_schema", _make_bigram_schema),
            (EmbeddedBackend, "_to_document", _to_document_with_bigrams),
            (EmbeddedBackend, "_text_query", _text_query_with_bigrams),
            (EmbeddedBackend, "_search_sync", _search_sync_remembering),
        )

    return patch


def analyzer_no_hmm() -> contextlib.AbstractContextManager[None]:
    original = analysis.Analyzer.__init__

    def init(self: analysis.Analyzer, resources: Any = None, *, hmm: bool = True) -> None:
        original(self, resources, hmm=False)

    return setattrs((analysis.Analyzer, "__init__", init))


def coord(bonus: float) -> Callable[[], contextlib.AbstractContextManager[None]]:
    return lambda: setattrs(
        (sys.modules[__name__], "COORD_BONUS", bonus), (EmbeddedBackend, "_text_query", _text_query_coord)
    )


VARIANTS: list[Variant] = [
    Variant("as_is", "the service unmodified (must equal relevance.py)", nothing),
    Variant(
        "chars_0",
        "CHARS_WEIGHT 0.2 -> 0: no character fallback for words jieba's HMM invented",
        constant("CHARS_WEIGHT", 0.0),
    ),
    Variant("chars_0.5", "CHARS_WEIGHT 0.2 -> 0.5", constant("CHARS_WEIGHT", 0.5)),
    Variant("chars_1", "CHARS_WEIGHT 0.2 -> 1.0", constant("CHARS_WEIGHT", 1.0)),
    Variant("parts_0", "PART_WEIGHT 0.3 -> 0: sub-words of long query words ignored", constant("PART_WEIGHT", 0.0)),
    Variant("parts_0.6", "PART_WEIGHT 0.3 -> 0.6", constant("PART_WEIGHT", 0.6)),
    Variant("parts_1", "PART_WEIGHT 0.3 -> 1.0", constant("PART_WEIGHT", 1.0)),
    Variant(
        "tie_0",
        "dismax tie breaker 0.2 -> 0 (title and question hold the same text here)",
        constant("DISMAX_TIE_BREAKER", 0.0),
    ),
    Variant("tie_1", "dismax tie breaker 0.2 -> 1 (sum over fields)", constant("DISMAX_TIE_BREAKER", 1.0)),
    Variant("stop_none", "no stopwords at all", stopwords("")),
    Variant("stop_questions", "also drop question words (怎么, 什么, 如何, ...)", stopwords(QUESTION_WORDS)),
    Variant(
        "and",
        "AND: every query word must match (OR score kept)",
        lambda: setattrs((EmbeddedBackend, "_text_query", _text_query_all_must)),
    ),
    Variant("coord_5", "OR + 5 per matched query word (coordination bonus; word scores are ~10-40)", coord(5.0)),
    Variant("coord_10", "OR + 10 per matched query word", coord(10.0)),
    Variant("coord_20", "OR + 20 per matched query word", coord(20.0)),
    Variant(
        "no_hmm",
        "jieba without HMM at index and query time (no invented words, no char fallback)",
        analyzer_no_hmm,
        reindex=True,
    ),
    Variant("bigrams_1", "+ character-bigram field over title/questions, weight 1", bigram_variant(1.0), reindex=True),
    Variant("bigrams_3", "+ character-bigram field, weight 3", bigram_variant(3.0), reindex=True),
    Variant("bigrams_8", "+ character-bigram field, weight 8", bigram_variant(8.0), reindex=True),
]


# ---------------------------------------------------------------- running


async def build_index(folder: Path, corpus: list[Doc]) -> EmbeddedBackend:
    backend = EmbeddedBackend(folder)
    await backend.open()
    await backend.rebuild([to_document(n, d) for n, d in enumerate(corpus, start=1)])
    return backend


def evaluate(backend: EmbeddedBackend, corpus: list[Doc], queries: list[Q]) -> tuple[dict[str, float], list]:
    ids = {n: d.id for n, d in enumerate(corpus, start=1)}
    live = backend._require_live()
    ranks = []
    for q in queries:
        result = backend._search_sync(live, backend.analyzer, service_query(q.query))
        ranks.append(rank_of(q.relevant, [ids[h.item_id] for h in result.hits]))
    return metrics(ranks), ranks


async def run(data: Path, names: list[str] | None, limit_queries: int | None) -> dict[str, Any]:
    corpus, queries = load(data, limit_queries)
    chosen = [v for v in VARIANTS if names is None or v.name in names]
    folder = Path(tempfile.mkdtemp(prefix="kb-tuning-"))
    results: dict[str, Any] = {}
    try:
        t = time.perf_counter()
        shared = await build_index(folder / "as_is", corpus)
        print(f"indexed {len(corpus):,} items in {time.perf_counter() - t:.1f} s; {len(queries):,} queries")
        base_ranks = None
        print(f"{'variant':<16} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'MRR@10':>7} {'dMRR':>7}  what")
        for v in chosen:
            t = time.perf_counter()
            with v.patch():
                if v.reindex:
                    backend = await build_index(folder / v.name, corpus)
                    try:
                        m, ranks = evaluate(backend, corpus, queries)
                    finally:
                        await backend.close()
                        shutil.rmtree(folder / v.name, ignore_errors=True)
                else:
                    m, ranks = evaluate(shared, corpus, queries)
            if v.name == "as_is":
                base_ranks = ranks
            d = m["mrr@10"] - results["as_is"]["mrr@10"] if "as_is" in results else 0.0
            better = worse = None
            if base_ranks is not None and v.name != "as_is":

                def rr(r: int | None) -> float:
                    return 1 / r if r else 0.0

                better = sum(rr(a) > rr(b) for a, b in zip(ranks, base_ranks, strict=True))
                worse = sum(rr(a) < rr(b) for a, b in zip(ranks, base_ranks, strict=True))
            results[v.name] = {**m, "better": better, "worse": worse, "seconds": round(time.perf_counter() - t, 1)}
            print(
                f"{v.name:<16} {m['recall@1']:>7.4f} {m['recall@5']:>7.4f} {m['recall@10']:>7.4f} "
                f"{m['mrr@10']:>7.4f} {d:>+7.4f}  {v.what}"
                + (f" [better on {better}, worse on {worse}]" if better is not None else ""),
                flush=True,
            )
        await shared.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--limit-queries", type=int, default=None)
    parser.add_argument("--list", action="store_true", help="list the variants and stop")
    args = parser.parse_args()
    if args.list:
        for v in VARIANTS:
            print(f"{v.name:<16} {v.what}")
        return
    names = args.variants.split(",") if args.variants else None
    results = asyncio.run(run(args.data.resolve(), names, args.limit_queries))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
