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
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relevance import DEFAULT_DATA, Doc, Q, load, metrics, rank_of
from tantivy import Occur, Query

from app.search import analysis, ranking
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


TextQuery = Callable[[EmbeddedBackend, Any, Any], Query]


@contextlib.contextmanager
def wrap_text_query(make: Callable[[TextQuery], TextQuery]) -> Iterator[None]:
    """Replace `_text_query` by `make(current one)`, so that wrappers stack."""
    inner = EmbeddedBackend._text_query
    with setattrs((EmbeddedBackend, "_text_query", make(inner))):
        yield


def all_must() -> contextlib.AbstractContextManager[None]:
    """AND semantics: every query word must match (the OR score is kept)."""

    def make(inner: TextQuery) -> TextQuery:
        def text_query(self: EmbeddedBackend, words: Any, fields: Any) -> Query:
            clauses = [(Occur.Must, inner(self, [w], fields)) for w in words]
            return (
                Query.boolean_query([(Occur.Should, inner(self, words, fields)), *clauses])
                if clauses
                else inner(self, words, fields)
            )

        return text_query

    return wrap_text_query(make)


def coord(bonus: float) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """OR, plus a constant bonus for every query word that matches."""

    def make(inner: TextQuery) -> TextQuery:
        def text_query(self: EmbeddedBackend, words: Any, fields: Any) -> Query:
            extra = [(Occur.Should, Query.const_score_query(inner(self, [w], fields), bonus)) for w in words]
            return Query.boolean_query([(Occur.Should, inner(self, words, fields)), *extra])

        return text_query

    return lambda: wrap_text_query(make)


def rerank(weight: float) -> Callable[[], contextlib.AbstractContextManager[None]]:
    return lambda: setattrs((ranking, "QUESTION_MATCH_WEIGHT", weight))


def analyzer_no_hmm() -> contextlib.AbstractContextManager[None]:
    original = analysis.Analyzer.__init__

    def init(self: analysis.Analyzer, resources: Any = None, *, hmm: bool = True) -> None:
        original(self, resources, hmm=False)

    return setattrs((analysis.Analyzer, "__init__", init))


def both(*patches: Callable[[], contextlib.AbstractContextManager[None]]) -> Callable[[], Any]:
    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for p in patches:
                stack.enter_context(p())
            yield

    return patch


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
    Variant("stop_none", "no stopwords at all (keep 的 了 吗 呢 ...)", stopwords("")),
    Variant("stop_questions", "also drop question words (怎么, 什么, 如何, ...)", stopwords(QUESTION_WORDS)),
    Variant("and", "AND: every query word must match (OR score kept)", all_must),
    Variant("coord_1", "OR + 1 per matched query word (coordination bonus; word scores are ~10-40)", coord(1.0)),
    Variant("coord_5", "OR + 5 per matched query word", coord(5.0)),
    Variant("coord_10", "OR + 10 per matched query word", coord(10.0)),
    Variant("coord_20", "OR + 20 per matched query word", coord(20.0)),
    Variant(
        "no_hmm",
        "jieba without HMM at index and query time (no invented words, no char fallback)",
        analyzer_no_hmm,
        reindex=True,
    ),
    Variant("rerank_0", "no question-match rerank (QUESTION_MATCH_WEIGHT 1.5 -> 0): the engine's order", rerank(0.0)),
    Variant("rerank_1", "QUESTION_MATCH_WEIGHT 1.5 -> 1.0", rerank(1.0)),
    Variant("rerank_3", "QUESTION_MATCH_WEIGHT 1.5 -> 3.0", rerank(3.0)),
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
