"""The embedded search backend: a Tantivy index on local disk, analyzed in Python.

Text is analyzed by `app.search.analysis.Analyzer` (jieba + business dictionary, folded
to simplified Chinese) and handed to Tantivy pre-tokenized, with each token's character
offsets into the original text. Queries are built from analyzed words with Tantivy's
query objects; user text never reaches Tantivy's query parser.

Layout of `index_dir`:
    CURRENT     {"version": "v000003", "schema": N}, replaced atomically (os.replace)
    v000003/    the live Tantivy index
    v000002/    the one before the last rebuild, removed by the next rebuild or open

    LANGUAGE    the dictionary and synonyms the writer applies, for reader processes
    ../search.writer.lock   held (flock) by the one process that writes; outside the index
                folder, so deleting that folder cannot hand out a second writer

Operational notes:
- One process writes an index. `open()` takes the writer lock when it is free; every other
  process (`serve` with several workers) opens the index read-only and follows the writer:
  a new commit (meta.json replaced), a rebuilt version (CURRENT replaced) and a new
  dictionary (LANGUAGE replaced) are seen by a stat before each read. The process holding
  the lock runs the job worker (app/main.py), so index jobs always reach the writer.
- Writes are serialized by an asyncio lock and run in a worker thread, like searches, so
  the event loop never blocks on Tantivy or jieba.
- Every write commits and reloads the reader: a change is searchable when `upsert`
  returns.
- `set_language` applies a new dictionary and synonym list to queries and to documents
  indexed from then on. Documents already in the index keep their old tokens until they
  are indexed again: run a reindex (`rebuild`) after a dictionary change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import html
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import tantivy
from tantivy import Occur, Query

from app.search import ranking
from app.search.analysis import (
    QUESTION_WORDS,
    Analyzer,
    Normalized,
    QueryWord,
    compact,
    highlight_pattern,
    normalize_with_offsets,
    required_words,
)
from app.search.backends.base import RebuildFailed, SearchBackend, SearchUnavailable
from app.search.backends.vectors import VectorStore, vector_hash
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

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
POINTER_FILE = "CURRENT"
LANGUAGE_FILE = "LANGUAGE"
META_FILE = "meta.json"  # Tantivy's; replaced at every commit
READER_OPEN_WAIT_SECONDS = 10.0  # a reader starting beside its writer waits for the first CURRENT

ANSWER_FIELDS = {channel: f"answer_{channel}" for channel in CHANNELS}
OTHER_ANSWERS = "answer_other"  # answers for channels outside CHANNELS; searched only without a channel

# Field weights: title and questions far above body and answers, attachments last.
FIELD_BOOSTS: dict[str, float] = {
    "title": 8.0,
    "question": 6.0,
    "similar_questions": 5.0,
    **{name: 1.5 for name in (*ANSWER_FIELDS.values(), OTHER_ANSWERS)},
    "body": 1.0,
    "attachment": 0.25,
}
SYNONYM_WEIGHT = 0.9
PART_WEIGHT = 0.3  # a dictionary sub-word ("套餐" of "5g畅享套餐") is weaker evidence
# All characters of a word the dictionary does not know (jieba's HMM cuts such words
# differently in different contexts), found anywhere in the field.
CHARS_WEIGHT = 0.2
DISMAX_TIE_BREAKER = 0.2

FACET_FIELDS = {"category": "category_ids", "tag": "tags", "type": "item_type"}
MAX_LIMIT = 1000
# A vector store this small loads inside the first semantic search (well under a second); a
# larger one loads in a background thread while searches fall back to keywords.
VECTORS_INLINE_LOAD_MAX_DOCS = 20_000

# Suggestion keys: prefixes of the compacted (normalized, punctuation-free) text and of its
# pinyin, plus prefixes starting at each word of the title (so "故障" completes
# "宽带故障报修"). Lengths are capped; longer input is checked in Python.
SUGGEST_HAN_CHARS = 24
SUGGEST_PINYIN_CHARS = 48
SUGGEST_INFIX_CHARS = 12
SUGGEST_SIMILAR_CHARS = 12

# Text beyond this many characters in one field value (a 300-page attachment) is stored
# but not indexed: analyzing it would take seconds and hundreds of MB for little gain.
MAX_INDEXED_CHARS = 200_000

# Semantic leg: candidates checked against the filter query per round (growing x4), and how many
# are walked before the allowed ids are read from Tantivy instead.
SEMANTIC_CHUNK = 64
SEMANTIC_WALK_MAX = 4096

HIGHLIGHT_FRAGMENT_CHARS = 100
HIGHLIGHT_FRAGMENTS = 2
HIGHLIGHT_MAX_ATTACHMENTS = 3
HIGHLIGHT_SCAN_CHARS = 50_000  # only the start of a very long attachment is scanned for snippets


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Dates are indexed as i64 microseconds: Tantivy's date fields keep seconds only, which
# would make "updated since 10:00:00.6" miss an item updated at exactly that instant.
NO_START = -(2**63)
NO_END = 2**63 - 1


def _micros(value: datetime | None, default: int) -> int:
    return default if value is None else (_utc(value) - _EPOCH) // _MICROSECOND


def attribute_term(code: str, value: str | int | float) -> str:
    """The indexed form of one attribute value: "code=value" (5.0 and 5 are the same)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{code}={value}"


def _build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("item_id", stored=True, indexed=True, fast=True)
    builder.add_unsigned_field("version_no", fast=True)
    for name in FIELD_BOOSTS:
        # Pre-tokenized; the tokenizer name only matters for Tantivy's own query parser.
        builder.add_text_field(name, tokenizer_name="raw", index_option="freq")
    # Suggestion keys never contain spaces: handed over space-joined, one call per field.
    builder.add_text_field("suggest_primary", tokenizer_name="whitespace", index_option="freq")
    builder.add_text_field("suggest_more", tokenizer_name="whitespace", index_option="freq")
    for name in ("item_type", "tags"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic", fast=True)
    for name in ("status", "acl", "channels", "attrs"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("category_ids", indexed=True, fast=True)
    for name in ("valid_from", "valid_to", "updated_at"):
        builder.add_integer_field(name, indexed=True, fast=True)
    builder.add_bytes_field("source", stored=True)
    # Semantic leg: the item's vectors (float16, row after row), the model that made them
    # (indexed: the semantic filter keeps only the query's model) and a hash of both (fast: a
    # reader finds the items whose vectors changed without reading stored documents).
    builder.add_bytes_field("vec", stored=True)
    builder.add_text_field("vecmodel", tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("vec_hash", fast=True)
    return builder.build()


@dataclass(slots=True)
class _Live:
    path: Path
    index: tantivy.Index
    writer: Any  # tantivy.IndexWriter; None once closed
    generation: int = 0  # bumped at every reader reload; the vectors follow it
    vectors: VectorStore | None = None


Stamp = tuple[int, int, int] | None  # (inode, mtime_ns, size) of a file that is replaced, never edited


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(slots=True)
class _Seen:
    """What a reader process last loaded of the writer's files."""

    pointer: Stamp = None
    meta: Stamp = None
    language: Stamp = None


@dataclass(slots=True)
class _Op:
    kind: str  # "upsert" | "delete"
    docs: Sequence[SearchDocument] = ()
    item_ids: Sequence[int] = ()


class EmbeddedBackend(SearchBackend):
    name = "embedded"

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        resources: LanguageResources | None = None,
        *,
        writer_heap_bytes: int = 64_000_000,
        writer_threads: int = 1,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.schema = _build_schema()
        self.analyzer = Analyzer(resources)
        self._writer_heap = writer_heap_bytes
        self._writer_threads = writer_threads
        self._live: _Live | None = None
        self._lock_file: int | None = None  # fd holding the process writer lock
        self.writable = True  # False: another process writes; this one follows it read-only
        self._seen = _Seen()
        self._follow_lock = threading.Lock()
        self._vector_loads_lock = threading.Lock()
        self._vector_loads: set[int] = set()  # ids of the vector stores loading in the background
        self._write_lock = asyncio.Lock()
        self._rebuild_lock = asyncio.Lock()
        self._journal: list[_Op] | None = None  # writes made while a rebuild runs
        self.commits = 0  # Tantivy commits made by this instance (each costs a segment and a reader reload)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        async with self._write_lock:
            if self._live is not None and self._index_present(self._live):
                return
            try:
                if self._lock_file is None:
                    self.writable = await asyncio.to_thread(self._take_writer_lock)
                if self.writable:
                    await asyncio.to_thread(self._open_sync)
                else:
                    await asyncio.to_thread(self._follow_sync, READER_OPEN_WAIT_SECONDS)
            except SearchUnavailable:
                raise
            except Exception as exc:
                raise SearchUnavailable(f"cannot open search index in {self.index_dir}: {exc}") from exc

    def _take_writer_lock(self) -> bool:
        """The process lock of the writer: True when this process got it (kept until close)."""
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.index_dir.parent / f"{self.index_dir.name}.writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_file = fd
        return True

    def _open_sync(self) -> None:
        if self._live is not None:
            self._close_live(self._live)
            self._live = None
        self.index_dir.mkdir(parents=True, exist_ok=True)
        pointer = self._read_pointer()
        if pointer and pointer.get("schema") == SCHEMA_VERSION:
            path = self.index_dir / str(pointer["version"])
            if tantivy.Index.exists(str(path)):
                self._live = self._make_live(path)
                self._remove_old_versions(keep={path.name})
                return
            log.warning("search index %s is missing; creating an empty one (reindex needed)", path)
        elif pointer:
            log.warning("search index schema changed; creating an empty one (reindex needed)")
        path = self._new_version_dir()
        self._live = self._make_live(path)
        self._write_pointer(path.name)
        self._remove_old_versions(keep={path.name})

    async def close(self) -> None:
        async with self._write_lock:
            live, self._live = self._live, None
            if live is not None:
                await asyncio.to_thread(self._close_live, live)
            if self._lock_file is not None:
                os.close(self._lock_file)  # releases the writer lock
                self._lock_file = None
            self._seen = _Seen()

    async def health(self) -> bool:
        try:
            live, _ = await self._reading()
            await asyncio.to_thread(lambda: live.index.searcher().num_docs)
        except SearchUnavailable:
            return False
        except Exception:
            log.exception("search index does not answer")
            return False
        return True

    async def set_language(self, resources: LanguageResources) -> None:
        # Built aside (jieba loads its dictionary, ~0.1 s) and swapped in one assignment.
        self.analyzer = await asyncio.to_thread(Analyzer, resources)
        if self.writable and self._live is not None:
            await asyncio.to_thread(self._publish_language, resources)
        else:  # a reader loaded the database's resources: the writer's file is no newer
            self._seen.language = _stamp(self.index_dir / LANGUAGE_FILE)

    def _publish_language(self, resources: LanguageResources) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        _replace_file(self.index_dir / LANGUAGE_FILE, json.dumps(asdict(resources), ensure_ascii=False))

    # ------------------------------------------------------------------ writes

    async def upsert(self, docs: Sequence[SearchDocument]) -> dict[int, str | None]:
        async with self._write_lock:
            live = self._require_live(write=True)
            result = await asyncio.to_thread(self._upsert_sync, live, docs, True)
            if self._journal is not None:
                self._journal.append(_Op("upsert", docs=list(docs)))
            return result

    async def delete(self, item_ids: Sequence[int]) -> None:
        async with self._write_lock:
            live = self._require_live(write=True)
            await asyncio.to_thread(self._delete_sync, live, item_ids)
            if self._journal is not None:
                self._journal.append(_Op("delete", item_ids=list(item_ids)))

    async def rebuild(self, docs: Sequence[SearchDocument]) -> None:
        """Build a new index version aside, replay writes made meanwhile, then swap."""
        async with self._rebuild_lock:
            async with self._write_lock:
                self._require_live(write=True)
                self._journal = []
            new: _Live | None = None
            try:
                new = await asyncio.to_thread(self._build_version, docs)
                async with self._write_lock:
                    journal, self._journal = self._journal or [], None
                    await asyncio.to_thread(self._swap_in, new, journal)
            except BaseException:
                self._journal = None
                if new is not None and (self._live is None or self._live.path != new.path):
                    await asyncio.to_thread(self._discard, new)
                raise

    def _upsert_sync(
        self, live: _Live, docs: Sequence[SearchDocument], check_versions: bool = True
    ) -> dict[int, str | None]:
        result: dict[int, str | None] = {doc.item_id: None for doc in docs}
        indexed = self._versions_of(live, list(result)) if check_versions else {}
        analyzer = self.analyzer
        built: dict[int, tantivy.Document] = {}
        for item_id, doc in _latest(docs).items():
            if indexed.get(item_id, -1) > doc.version_no:
                continue  # a newer version is already indexed: late writes never win
            try:
                built[item_id] = self._to_document(doc, analyzer)
            except Exception as exc:  # one bad document must not fail the batch; the old version stays
                log.exception("cannot index item %s", item_id)
                result[item_id] = f"{type(exc).__name__}: {exc}"
        if built:
            self._write(live, list(built), built.values())
        return result

    def _delete_sync(self, live: _Live, item_ids: Sequence[int]) -> None:
        if item_ids:
            self._write(live, item_ids, ())

    def _write(self, live: _Live, delete_ids: Sequence[int], add: Iterable[tantivy.Document]) -> None:
        """Delete the items' documents, add the new ones, commit and reload: one atomic step."""
        try:
            # Deletes apply to documents added before them, so the re-added ones survive.
            live.writer.delete_documents_by_query(Query.term_set_query(self.schema, "item_id", list(delete_ids)))
            for tdoc in add:
                live.writer.add_document(tdoc)
            self._commit(live)
        except Exception as exc:
            with contextlib.suppress(Exception):
                live.writer.rollback()
            raise SearchUnavailable(f"search index write failed: {exc}") from exc

    def _commit(self, live: _Live) -> None:
        live.writer.commit()
        self.commits += 1
        live.index.reload()
        live.generation += 1

    def _build_version(self, docs: Sequence[SearchDocument]) -> _Live:
        """A new index version with every document, or RebuildFailed (nothing kept) as on Elasticsearch:
        an index missing documents must never replace a complete one."""
        path = self._new_version_dir()
        new = self._make_live(path)
        try:
            analyzer = self.analyzer
            errors: dict[int, str] = {}
            for doc in _latest(docs).values():
                try:
                    new.writer.add_document(self._to_document(doc, analyzer))
                except Exception as exc:
                    log.exception("rebuild: cannot index item %s", doc.item_id)
                    errors[doc.item_id] = f"{type(exc).__name__}: {exc}"
            if errors:
                raise RebuildFailed(errors)
            self._commit(new)
        except BaseException:
            self._discard(new)
            raise
        return new

    def _swap_in(self, new: _Live, journal: list[_Op]) -> None:
        for op in journal:
            if op.kind == "upsert":
                self._upsert_sync(new, op.docs, True)
            else:
                self._delete_sync(new, op.item_ids)
        old = self._live
        self._write_pointer(new.path.name)
        self._live = new
        keep = {new.path.name}
        if old is not None:
            self._close_live(old)
            # Searches that started on the old version may still read it: it is removed
            # by the next rebuild or open, not now.
            keep.add(old.path.name)
        self._remove_old_versions(keep=keep)

    def _discard(self, live: _Live) -> None:
        self._close_live(live)
        shutil.rmtree(live.path, ignore_errors=True)

    # ------------------------------------------------------------------ reads

    # Searches and suggestions run on the event loop's own thread, not in a worker thread: they
    # take a few ms of CPU, and handing each one to a thread and back cost more than that under
    # load (GIL hand-offs between the loop and the workers). Measured with bench/search_http.py's
    # server, 16 clients, 2-word queries: about 8.6 -> 6.7 ms of server CPU per search, 200 ->
    # 285 searches/s. The longest a search holds the loop: ~20 ms for a 200-character query of
    # 32 words at 100k items. Writes, rebuilds and following the writer stay in threads.
    async def search(self, query: SearchQuery) -> SearchResult:
        live, analyzer = await self._reading()
        try:
            if query.mode == "semantic":
                # numpy over every vector: in a thread (BLAS releases the GIL), never on the loop.
                return await asyncio.to_thread(self._semantic_sync, live, analyzer, query)
            return self._search_sync(live, analyzer, query)
        except SearchUnavailable:
            raise
        except Exception as exc:
            log.exception("embedded search failed")
            raise SearchUnavailable(f"search failed: {exc}") from exc

    async def suggest(
        self, prefix: str, principals: list[str], channel: str | None, limit: int = 10
    ) -> list[Suggestion]:
        """Completions of titles and questions; only published items valid now."""
        live, _ = await self._reading()
        try:
            return self._suggest_sync(live, prefix, principals, channel, limit)
        except Exception as exc:
            log.exception("embedded suggest failed")
            raise SearchUnavailable(f"suggest failed: {exc}") from exc

    async def items_lacking_vectors(self, model: str) -> list[int]:
        """Items without vectors of `model` (none, or another model's): the consistency check."""
        live, _ = await self._reading()

        def find() -> list[int]:
            searcher = live.index.searcher()
            if searcher.num_docs == 0:
                return []
            query = Query.boolean_query(
                [(Occur.Must, Query.all_query()), (Occur.MustNot, Query.term_query(self.schema, "vecmodel", model))]
            )
            found = searcher.search(query, searcher.num_docs, count=False)
            ids = searcher.fast_field_values("item_id", [address for _, address in found.hits])
            return sorted(int(i) for i in ids if i is not None)

        return await asyncio.to_thread(find)

    async def indexed_versions(self) -> dict[int, int]:
        live, _ = await self._reading()
        return await asyncio.to_thread(self._all_versions, live)

    async def document_count(self) -> int:
        live, _ = await self._reading()
        return int(await asyncio.to_thread(lambda: live.index.searcher().num_docs))

    def _search_sync(self, live: _Live, analyzer: Analyzer, query: SearchQuery) -> SearchResult:
        started = time.perf_counter()
        result = self._search_once(live, analyzer, query)
        # Nothing has enough of the words: the loose match (any one word), flagged as such.
        if query.strict and result.total == 0 and len(analyzer.query_words(query.text)) > 1:
            result = self._search_once(live, analyzer, replace(query, strict=False))
            result.relaxed = result.total > 0
        result.took_ms = (time.perf_counter() - started) * 1000
        return result

    def _search_once(self, live: _Live, analyzer: Analyzer, query: SearchQuery) -> SearchResult:
        started = time.perf_counter()
        searcher = live.index.searcher()
        filters = self._filter_queries(query.principals, query.channel, query.filters)
        text_fields = self._text_fields(query.channel)
        words: list[QueryWord] = []
        browse = not query.text.strip()
        if browse:
            main = Query.all_query()
        else:
            words = analyzer.query_words(query.text)
            main = self._text_query(words, text_fields, strict=query.strict) if words else Query.empty_query()
        full = Query.boolean_query([(Occur.Must, main)] + [(Occur.Must, f) for f in filters])

        limit = max(0, min(query.limit, MAX_LIMIT))
        offset = max(0, query.offset)
        by_date = browse or query.sort == "updated"
        # With facets, the aggregation already visits every match: the total comes from it
        # and the top-k search can skip counting (one full pass instead of two).
        facets, total = self._facets(searcher, full) if query.facets else ({}, None)
        asked = replace(query, offset=offset, limit=limit)
        fetch = ranking.engine_query(asked)
        found = searcher.search(
            full,
            max(fetch.limit, 1),
            count=total is None,
            offset=fetch.offset,
            order_by_field="updated_at" if by_date else None,
            order=tantivy.Order.Desc,
        )
        candidates = [
            (0.0 if by_date else float(score), address, json.loads(searcher.doc(address)["source"][0]))
            for score, address in found.hits[: fetch.limit]
        ]
        page = ranking.rerank(
            asked,
            candidates,
            score=lambda c: c[0],
            questions=lambda c: (c[2]["title"], c[2]["q"], *c[2]["sq"]),
        )
        # Characters of unknown words are not marked: single characters would light up everywhere.
        terms = (t for w in words for t in (w.term, *w.synonyms, *w.parts))
        pattern = highlight_pattern(terms) if query.highlight else None
        hits: list[SearchHit] = []
        for ranked in page:
            _, address, source = ranked.candidate
            explanation = None
            if query.explain:
                explanation = full.explain(searcher, address).to_json()
                if ranked.bonus:
                    explanation = json.dumps(
                        {
                            "value": ranked.score,
                            "description": ranking.explain_line(ranked),
                            "details": [json.loads(explanation)],
                        },
                        ensure_ascii=False,
                    )
            hits.append(
                SearchHit(
                    item_id=source["id"],
                    version_no=source["v"],
                    score=ranked.score,
                    title=source["title"],
                    item_type=source["type"],
                    updated_at=datetime.fromisoformat(source["upd"]),
                    highlights=self._highlights(source, pattern, query.channel) if pattern else [],
                    explanation=explanation,
                    questions=[source["title"], source["q"], *source["sq"]],
                )
            )
        took = (time.perf_counter() - started) * 1000
        return SearchResult(
            total=total if total is not None else found.count or 0, hits=hits, facets=facets, took_ms=took
        )

    def warm_vectors(self) -> None:
        """Load the vectors now (in the background), not at the first semantic search."""
        live = self._live
        if live is not None and live.vectors is not None and live.vectors.generation < 0:
            self._load_vectors(live)

    def _load_vectors(self, live: _Live) -> None:
        store = live.vectors
        assert store is not None
        with self._vector_loads_lock:
            if id(store) in self._vector_loads:
                return
            self._vector_loads.add(id(store))

        def load() -> None:
            started = time.perf_counter()
            try:
                with store.lock:
                    generation = live.generation
                    store.refresh(live.index.searcher(), generation)
                log.info(
                    "semantic index loaded",
                    extra={"vectors": store.vector_count, "seconds": round(time.perf_counter() - started, 1)},
                )
            except Exception:
                log.exception("the semantic index could not be loaded; the next semantic search tries again")
            finally:
                with self._vector_loads_lock:
                    self._vector_loads.discard(id(store))

        threading.Thread(target=load, name="kb-vectors-load", daemon=True).start()

    def _semantic_sync(self, live: _Live, analyzer: Analyzer, query: SearchQuery) -> SearchResult:
        """The nearest items to `query.vector` among those the ACL, channel and filters allow.

        The store ranks the items (exactly, or through its approximate index beyond
        ANN_MIN_ROWS vectors), candidates are walked best first and Tantivy says
        which of them the filter query accepts, a chunk at a time, until the page is full: a
        page is never short while allowed items remain, and nothing the caller may not read
        leaves this method, not even in the total or the facets. When the nearest items are
        mostly forbidden (a narrow ACL or filter), after SEMANTIC_WALK_MAX candidates the allowed
        ids are read from Tantivy once and ranked directly.
        """
        started = time.perf_counter()
        model = query.embedder
        if not query.vector or not model:
            return SearchResult(total=0, hits=[])
        store = live.vectors
        assert store is not None
        generation = live.generation  # before the searcher: a newer searcher only refreshes again
        searcher = live.index.searcher()
        if store.generation < 0 and searcher.num_docs > VECTORS_INLINE_LOAD_MAX_DOCS:
            # The first load of a large index takes up to a minute (100,000 items: reading every
            # vector, training the approximate index): never inside a request. It runs in the
            # background; until it is done the hybrid search answers with keywords and says so.
            self._load_vectors(live)
            raise SearchUnavailable("the semantic index is loading (first use after a start)")
        with store.lock:
            store.refresh(searcher, generation)
            ranking = store.ranking(np.asarray(query.vector, dtype=np.float32), model)
            scored = store.count(model)
        filters = self._filter_queries(query.principals, query.channel, query.filters)
        allowed = Query.boolean_query(
            [(Occur.Must, f) for f in filters] + [(Occur.Must, Query.term_query(self.schema, "vecmodel", model))]
        )
        total = int(searcher.search(allowed, 1, count=True).count or 0)
        limit = max(0, min(query.limit, MAX_LIMIT))
        offset = max(0, query.offset)
        want = min(offset + limit, total)
        picked: list[tuple[int, float, tantivy.DocAddress]] = []  # (item id, cosine, address)
        seen: set[int] = set()
        checked = 0
        chunk = max(2 * want, SEMANTIC_CHUNK)
        while len(picked) < want and checked < scored and checked < SEMANTIC_WALK_MAX:
            ids, cosines = ranking.top(min(scored, checked + chunk))
            fresh = [(i, c) for i, c in zip(ids[checked:], cosines[checked:], strict=True) if i not in seen]
            if not fresh:
                break  # the approximate index holds no more near this query
            seen.update(i for i, _ in fresh)
            accepted = self._accepted(searcher, allowed, [i for i, _ in fresh])
            picked += [(i, c, accepted[i]) for i, c in fresh if i in accepted]
            checked, chunk = len(ids), chunk * 4
        if len(picked) < want and len(seen) < scored:
            found = searcher.search(allowed, total, count=False)
            addresses = [address for _, address in found.hits]
            pairs = [
                (int(i), a)
                for i, a in zip(searcher.fast_field_values("item_id", addresses), addresses, strict=True)
                if i is not None
            ]
            cosine_of = ranking.of([i for i, _ in pairs])
            pairs = [p for p in pairs if p[0] in cosine_of]
            pairs.sort(key=lambda p: -cosine_of[p[0]])
            picked = [(i, cosine_of[i], a) for i, a in pairs[:want]]
        picked = picked[:want]
        facets: dict[str, list[FacetValue]] = {}
        if query.facets and picked:
            nearest = Query.term_set_query(self.schema, "item_id", [p[0] for p in picked])
            window = Query.boolean_query([(Occur.Must, allowed), (Occur.Must, nearest)])
            facets, _ = self._facets(searcher, window)
        words = analyzer.query_words(query.text) if query.highlight and query.text.strip() else []
        terms = [t for w in words for t in (w.term, *w.synonyms, *w.parts)]
        pattern = highlight_pattern(terms) if terms else None
        hits = []
        for item_id, cosine, address in picked[offset : offset + limit]:
            source = json.loads(searcher.doc(address)["source"][0])
            hits.append(
                SearchHit(
                    item_id=item_id,
                    version_no=source["v"],
                    score=cosine,
                    title=source["title"],
                    item_type=source["type"],
                    updated_at=datetime.fromisoformat(source["upd"]),
                    highlights=self._highlights(source, pattern, query.channel) if pattern else [],
                    explanation=f"cosine {cosine:.4f} of the query with the item's nearest text ({model})"
                    if query.explain
                    else None,
                    questions=[source["title"], source["q"], *source["sq"]],
                )
            )
        return SearchResult(total=total, hits=hits, facets=facets, took_ms=(time.perf_counter() - started) * 1000)

    def _accepted(self, searcher: tantivy.Searcher, allowed: Query, ids: list[int]) -> dict[int, tantivy.DocAddress]:
        """Which of `ids` the filter query accepts, with their document addresses."""
        if not ids:
            return {}
        query = Query.boolean_query(
            [(Occur.Must, allowed), (Occur.Must, Query.term_set_query(self.schema, "item_id", ids))]
        )
        found = searcher.search(query, len(ids), count=False)
        addresses = [address for _, address in found.hits]
        return {
            int(i): a
            for i, a in zip(searcher.fast_field_values("item_id", addresses), addresses, strict=True)
            if i is not None
        }

    def _suggest_sync(
        self, live: _Live, prefix: str, principals: list[str], channel: str | None, limit: int
    ) -> list[Suggestion]:
        key = compact(prefix)
        if not key or limit <= 0:
            return []
        lookup = key[: SUGGEST_PINYIN_CHARS if key.isascii() else SUGGEST_HAN_CHARS]
        matcher = Query.disjunction_max_query(
            [
                Query.boost_query(Query.term_query(self.schema, "suggest_primary", lookup), 3.0),
                Query.term_query(self.schema, "suggest_more", lookup),
            ]
        )
        filters = self._filter_queries(principals, channel, SearchFilters(valid_at=datetime.now(UTC)))
        full = Query.boolean_query([(Occur.Must, matcher)] + [(Occur.Must, f) for f in filters])
        searcher = live.index.searcher()
        found = searcher.search(full, max(limit * 4, 20), count=False)
        suggestions: list[Suggestion] = []
        seen: set[str] = set()
        for _, address in found.hits:
            source = json.loads(searcher.doc(address)["source"][0])
            text = _completion(source, key)
            if text is not None and text not in seen:
                seen.add(text)
                suggestions.append(Suggestion(item_id=source["id"], text=text))
                if len(suggestions) >= limit:
                    break
        return suggestions

    def _all_versions(self, live: _Live) -> dict[int, int]:
        searcher = live.index.searcher()
        if searcher.num_docs == 0:
            return {}
        found = searcher.search(Query.all_query(), searcher.num_docs, count=False)
        addresses = [address for _, address in found.hits]
        ids = searcher.fast_field_values("item_id", addresses)
        versions = searcher.fast_field_values("version_no", addresses)
        return {int(i): int(v) for i, v in zip(ids, versions, strict=True) if i is not None and v is not None}

    def _versions_of(self, live: _Live, item_ids: Sequence[int]) -> dict[int, int]:
        if not item_ids:
            return {}
        searcher = live.index.searcher()
        query = Query.term_set_query(self.schema, "item_id", list(set(item_ids)))
        found = searcher.search(query, len(item_ids) * 2 + 1, count=False)
        addresses = [address for _, address in found.hits]
        ids = searcher.fast_field_values("item_id", addresses)
        versions = searcher.fast_field_values("version_no", addresses)
        return {int(i): int(v) for i, v in zip(ids, versions, strict=True) if i is not None and v is not None}

    # ------------------------------------------------------------------ queries

    def _text_fields(self, channel: str | None) -> list[str]:
        if channel is None:
            return list(FIELD_BOOSTS)
        answers = set(ANSWER_FIELDS.values()) | {OTHER_ANSWERS}
        own = ANSWER_FIELDS.get(channel)
        return [name for name in FIELD_BOOSTS if name not in answers or name == own]

    def _text_query(self, words: Sequence[QueryWord], fields: Sequence[str], *, strict: bool = True) -> Query:
        """Each word: best field wins (dismax), synonyms and weaker parts inside; a document
        matches `required_words` of the words (strict), or any one (loose)."""
        schema = self.schema

        def term(name: str, value: str, weight: float = 1.0) -> Query:
            query = Query.term_query(schema, name, value)
            return query if weight == 1.0 else Query.boost_query(query, weight)

        clauses: list[tuple[Occur, Query]] = []
        soft: list[tuple[Occur, Query]] = []
        content = [w for w in words if w.term not in QUESTION_WORDS] or list(words)
        for word in words:
            per_field = []
            for name in fields:
                alternatives = [term(name, word.term)]
                alternatives += [term(name, synonym, SYNONYM_WEIGHT) for synonym in word.synonyms]
                alternatives += [term(name, part, PART_WEIGHT) for part in word.parts]
                if word.chars:
                    every_char = Query.boolean_query([(Occur.Must, term(name, c)) for c in word.chars])
                    alternatives.append(Query.boost_query(every_char, CHARS_WEIGHT))
                field_query = (
                    alternatives[0]
                    if len(alternatives) == 1
                    else Query.boolean_query([(Occur.Should, q) for q in alternatives])
                )
                per_field.append(Query.boost_query(field_query, FIELD_BOOSTS[name]))
            target = clauses if word in content else soft
            target.append((Occur.Should, Query.disjunction_max_query(per_field, DISMAX_TIE_BREAKER)))
        matched = Query.boolean_query(clauses, required_words(len(clauses), strict=strict))
        if not soft:
            return matched
        return Query.boolean_query([(Occur.Must, matched), *soft])

    def _filter_queries(self, principals: Sequence[str], channel: str | None, f: SearchFilters) -> list[Query]:
        """Document-level security and filters, applied inside the engine.

        Within one filter any listed value matches (types, statuses, values of one
        attribute); different filters, each category id and each tag must all hold.
        """
        if not principals:
            return [Query.empty_query()]
        queries = [self._any_of("acl", principals)]
        if channel is not None:
            queries.append(self._any_of("channels", [channel]))
        if f.statuses:
            queries.append(self._any_of("status", f.statuses))
        if f.item_types:
            queries.append(self._any_of("item_type", f.item_types))
        for category_id in dict.fromkeys(f.category_ids):
            valid = 0 <= category_id < 2**64  # the field is unsigned: an impossible id matches nothing
            queries.append(self._any_of("category_ids", [int(category_id)] if valid else []))
        queries += [self._any_of("tags", [tag]) for tag in dict.fromkeys(f.tags)]
        for code, values in f.attributes.items():
            queries.append(self._any_of("attrs", [attribute_term(code, value) for value in values]))
        if f.valid_at is not None:
            instant = _micros(f.valid_at, 0)
            queries.append(_range(self.schema, "valid_from", upper=instant))
            queries.append(_range(self.schema, "valid_to", lower=instant, include_lower=False))
        if f.updated_since is not None:
            queries.append(_range(self.schema, "updated_at", lower=_micros(f.updated_since, 0)))
        return queries

    def _any_of(self, field: str, values: Sequence[str | int]) -> Query:
        """Documents with any of `values` in `field` (none: nothing matches).

        A union of term queries: measured faster here than `term_set_query`, which builds a
        bit set of every matching document per segment (slow for "published", "public").
        """
        terms = [Query.term_query(self.schema, field, value) for value in dict.fromkeys(values)]
        if len(terms) == 1:
            return terms[0]
        return Query.boolean_query([(Occur.Should, t) for t in terms]) if terms else Query.empty_query()

    def _facets(self, searcher: tantivy.Searcher, query: Query) -> tuple[dict[str, list[FacetValue]], int]:
        """Facet counts, and the number of matches."""
        aggs: dict[str, Any] = {
            name: {"terms": {"field": FACET_FIELDS[name], "size": size}} for name, size in FACET_SIZES.items()
        }
        aggs["matches"] = {"value_count": {"field": "item_id"}}  # every document has one item_id
        result = searcher.aggregate(query, aggs)
        facets = {
            name: [
                FacetValue(value=str(bucket["key"]), count=int(bucket["doc_count"]))
                for bucket in result.get(name, {}).get("buckets", [])
            ]
            for name in FACET_SIZES
        }
        return facets, int(result["matches"]["value"] or 0)

    # ------------------------------------------------------------------ documents

    def _to_document(self, doc: SearchDocument, analyzer: Analyzer) -> tantivy.Document:
        tdoc = tantivy.Document()
        tdoc.add_unsigned("item_id", doc.item_id)
        tdoc.add_unsigned("version_no", doc.version_no)

        def add_text(field: str, text: str) -> list[tantivy.Token]:
            if not text or text.isspace():
                return []
            text = text[:MAX_INDEXED_CHARS]
            tokens = analyzer.tokens(text, tantivy.Token)
            tdoc.add_pre_tokenized_text(field, tantivy.PreTokenizedString(text, tokens))
            return tokens

        title_terms = [token.text for token in add_text("title", doc.title)]
        add_text("question", doc.question)
        for similar in doc.similar_questions:
            add_text("similar_questions", similar)
        add_text("body", doc.body_text)
        for channel, answer in doc.channel_answers.items():
            add_text(ANSWER_FIELDS.get(channel, OTHER_ANSWERS), answer)
        for attachment in doc.attachments:
            add_text("attachment", attachment.text)

        pinyin = {"title": analyzer.pinyin_keys(doc.title), "q": analyzer.pinyin_keys(doc.question)}
        primary, more = _suggest_keys(doc, title_terms, pinyin)
        tdoc.add_text("suggest_primary", " ".join(primary))
        tdoc.add_text("suggest_more", " ".join(more - primary))

        tdoc.add_text("item_type", doc.item_type)
        tdoc.add_text("status", doc.status)
        for tag in dict.fromkeys(doc.tags):
            tdoc.add_text("tags", tag)
        for principal in dict.fromkeys(doc.acl_principals):
            tdoc.add_text("acl", principal)
        for channel in dict.fromkeys(doc.channels):
            tdoc.add_text("channels", channel)
        for code, values in doc.attributes.items():
            for value in values:
                tdoc.add_text("attrs", attribute_term(code, value))
        for category_id in dict.fromkeys(doc.category_ids):
            tdoc.add_unsigned("category_ids", category_id)
        tdoc.add_integer("valid_from", _micros(doc.valid_from, NO_START))
        tdoc.add_integer("valid_to", _micros(doc.valid_to, NO_END))
        tdoc.add_integer("updated_at", _micros(doc.updated_at, NO_START))

        source = {
            "id": doc.item_id,
            "v": doc.version_no,
            "type": doc.item_type,
            "upd": _utc(doc.updated_at).isoformat(),
            "title": doc.title,
            "q": doc.question,
            "sq": doc.similar_questions,
            "body": doc.body_text,
            "ans": doc.channel_answers,
            "att": [[a.attachment_id, a.file_name, a.text] for a in doc.attachments],
            "py": pinyin,
        }
        tdoc.add_bytes("source", json.dumps(source, ensure_ascii=False).encode())
        if doc.embedder and len(doc.vectors):
            packed = np.asarray(doc.vectors, dtype="<f2")
            if packed.ndim != 2 or not np.isfinite(packed).all():
                raise ValueError(f"vectors of item {doc.item_id} are not a finite (n, dims) matrix")
            blob = packed.tobytes()
            tdoc.add_bytes("vec", f"{doc.embedder}\n{packed.shape[1]}\n".encode() + blob)
            tdoc.add_text("vecmodel", doc.embedder)
            tdoc.add_unsigned("vec_hash", vector_hash(doc.embedder, blob))
        else:
            tdoc.add_unsigned("vec_hash", 0)
        return tdoc

    # ------------------------------------------------------------------ highlights

    def _highlights(self, source: dict[str, Any], pattern: re.Pattern[str], channel: str | None) -> list[Highlight]:
        answers = [(c, text) for c, text in source["ans"].items() if channel is None or c == channel]
        attachments = [(i, name, text[:HIGHLIGHT_SCAN_CHARS]) for i, name, text in source["att"]]
        texts = [source["title"], source["q"], *source["sq"], *(t for _, t in answers), source["body"]]
        texts += [text for _, _, text in attachments]
        folded = iter(_normalize_all(texts))

        def mark(text: str, whole: bool = False) -> list[str]:
            return _mark(text, next(folded), pattern, whole=whole)

        result: list[Highlight] = []
        for field, text in (("title", source["title"]), ("question", source["q"])):
            if marked := mark(text, whole=True):
                result.append(Highlight(field=field, fragments=marked))
        similar = [m[0] for q in source["sq"] if (m := mark(q, whole=True))]
        if similar:
            result.append(Highlight(field="similar_questions", fragments=similar[:3]))
        for answer_channel, text in answers:
            if marked := mark(text):
                result.append(Highlight(field=f"answer.{answer_channel}", fragments=marked))
        if marked := mark(source["body"]):
            result.append(Highlight(field="body", fragments=marked))
        found = 0
        for attachment_id, file_name, text in attachments:
            if found < HIGHLIGHT_MAX_ATTACHMENTS and (marked := mark(text)):
                result.append(
                    Highlight(field="attachment", fragments=marked, attachment_id=attachment_id, file_name=file_name)
                )
                found += 1
        return result

    # ------------------------------------------------------------------ files

    def _require_live(self, write: bool = False) -> _Live:
        if write and not self.writable:
            raise SearchUnavailable("this process reads the search index; the process holding its writer lock writes")
        live = self._live
        if live is None:
            raise SearchUnavailable("search index is not open")
        if not self._index_present(live):
            raise SearchUnavailable(f"search index directory {live.path} is missing")
        return live

    async def _reading(self) -> tuple[_Live, Analyzer]:
        """The index and analyzer to read with; a reader first catches up with the writer."""
        if not self.writable and self._behind():
            try:
                await asyncio.to_thread(self._follow_sync)
            except Exception as exc:
                raise SearchUnavailable(f"cannot follow the search index writer: {exc}") from exc
        return self._require_live(), self.analyzer

    def _behind(self) -> bool:
        live, seen = self._live, self._seen
        if live is None or _stamp(self.index_dir / POINTER_FILE) != seen.pointer:
            return True
        if _stamp(live.path / META_FILE) != seen.meta:
            return True
        language = _stamp(self.index_dir / LANGUAGE_FILE)
        return language is not None and language != seen.language

    def _follow_sync(self, wait_seconds: float = 0.0) -> None:
        """Reader: open the version CURRENT names (waiting up to `wait_seconds` for a writer
        that is starting), reload after a commit, apply a new dictionary."""
        with self._follow_lock:
            deadline = time.monotonic() + wait_seconds
            while (pointer := self._read_pointer()) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            pointer_stamp = _stamp(self.index_dir / POINTER_FILE)
            live = self._live
            if pointer is not None and pointer.get("schema") == SCHEMA_VERSION:
                path = self.index_dir / str(pointer["version"])
                if (live is None or live.path != path) and tantivy.Index.exists(str(path)):
                    live = self._live = self._make_live(path, write=False)
                    self._seen.meta = _stamp(path / META_FILE)
            self._seen.pointer = pointer_stamp
            if live is None:
                return  # no index yet: reads answer 503 until the writer makes one
            meta = _stamp(live.path / META_FILE)
            if meta is not None and meta != self._seen.meta:
                live.index.reload()
                live.generation += 1
                self._seen.meta = meta
            language = _stamp(self.index_dir / LANGUAGE_FILE)
            if language is not None and language != self._seen.language:
                with contextlib.suppress(OSError, ValueError):
                    self.analyzer = Analyzer(
                        LanguageResources(**json.loads((self.index_dir / LANGUAGE_FILE).read_text()))
                    )
                self._seen.language = language

    @staticmethod
    def _index_present(live: _Live) -> bool:
        return (live.path / META_FILE).is_file()

    def _make_live(self, path: Path, write: bool = True) -> _Live:
        """The index in `path` with a manual reader; with `write`, created if missing and with its writer."""
        if write:
            path.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(self.schema, path=str(path), reuse=True)
        index.config_reader(reload_policy="manual")
        writer = index.writer(heap_size=self._writer_heap, num_threads=self._writer_threads) if write else None
        return _Live(path=path, index=index, writer=writer, vectors=VectorStore())

    @staticmethod
    def _close_live(live: _Live) -> None:
        writer, live.writer = live.writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.rollback()  # nothing is pending outside a write call; drops a half-done batch
                writer.wait_merging_threads()  # consumes the writer and releases the lock

    def _read_pointer(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.index_dir / POINTER_FILE).read_text())
        except (OSError, ValueError):
            return None

    def _write_pointer(self, version: str) -> None:
        _replace_file(self.index_dir / POINTER_FILE, json.dumps({"version": version, "schema": SCHEMA_VERSION}))

    def _versions(self) -> list[Path]:
        return sorted(p for p in self.index_dir.glob("v[0-9]*") if p.is_dir())

    def _new_version_dir(self) -> Path:
        numbers = [int(p.name[1:]) for p in self._versions() if p.name[1:].isdigit()]
        return self.index_dir / f"v{max(numbers, default=0) + 1:06d}"

    def _remove_old_versions(self, keep: set[str]) -> None:
        for path in self._versions():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _replace_file(path: Path, text: str) -> None:
    """Write aside, then rename over: readers see the old file or the new one, never half."""
    tmp = path.with_name(f"{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _latest(docs: Iterable[SearchDocument]) -> dict[int, SearchDocument]:
    """One document per item: the highest version, the later one on a tie."""
    latest: dict[int, SearchDocument] = {}
    for doc in docs:
        kept = latest.get(doc.item_id)
        if kept is None or doc.version_no >= kept.version_no:
            latest[doc.item_id] = doc
    return latest


def _range(
    schema: tantivy.Schema,
    field: str,
    *,
    lower: int | None = None,
    upper: int | None = None,
    include_lower: bool = True,
) -> Query:
    return Query.range_query(
        schema, field, tantivy.FieldType.Integer, lower_bound=lower, upper_bound=upper, include_lower=include_lower
    )


def _prefixes(text: str, limit: int) -> list[str]:
    return [text[:n] for n in range(1, min(len(text), limit) + 1)]


def _suggest_keys(
    doc: SearchDocument, title_terms: Sequence[str], pinyin: dict[str, tuple[str, str]]
) -> tuple[set[str], set[str]]:
    primary: set[str] = set()
    title = compact(doc.title)
    for han, (full, initials) in ((title, pinyin["title"]), (compact(doc.question), pinyin["q"])):
        primary.update(_prefixes(han, SUGGEST_HAN_CHARS))
        primary.update(_prefixes(full, SUGGEST_PINYIN_CHARS))
        primary.update(_prefixes(initials, SUGGEST_HAN_CHARS))
    more: set[str] = set()
    for term in title_terms:  # words and sub-words: "挂失" in "信用卡挂失流程"
        found = title.find(term) if len(term) > 1 else -1
        if found > 0:
            more.update(_prefixes(title[found:], SUGGEST_INFIX_CHARS))
    for similar in doc.similar_questions:
        more.update(_prefixes(compact(similar), SUGGEST_SIMILAR_CHARS))
    return primary, more


def _completion(source: dict[str, Any], key: str) -> str | None:
    """The title or question of a stored document that `key` completes, best first."""
    for text, name in ((source["title"], "title"), (source["q"], "q")):
        full, initials = source["py"][name]
        if text and (compact(text).startswith(key) or full.startswith(key) or initials.startswith(key)):
            return text
    for similar in source["sq"]:
        if compact(similar).startswith(key):
            return similar
    if key in compact(source["title"]):
        return source["title"]
    return None


_SEPARATOR = "\x1f"


def _normalize_all(texts: Sequence[str]) -> list[Normalized]:
    """`normalize_with_offsets` of each text, folding them in one OpenCC call when possible."""
    joined = _SEPARATOR.join(texts)
    folded = normalize_with_offsets(joined)
    parts = folded.text.split(_SEPARATOR)
    if folded.origin is None and len(parts) == len(texts):
        return [Normalized(part, None) for part in parts]
    return [normalize_with_offsets(text) for text in texts]


def _mark(text: str, normalized: Normalized, pattern: re.Pattern[str], *, whole: bool = False) -> list[str]:
    """Snippets of `text` with pattern matches wrapped in <em>, offsets mapped to the original.

    `whole`: one fragment, the entire text (titles, questions). Otherwise up to
    HIGHLIGHT_FRAGMENTS windows of about HIGHLIGHT_FRAGMENT_CHARS around the first matches.
    """
    if not text:
        return []
    fragments: list[str] = []
    spans: list[tuple[int, int]] = []
    window_start = window_end = previous_end = 0
    for match in pattern.finditer(normalized.text):
        start, end = normalized.span(match.start(), match.end())
        if spans and start < spans[-1][1]:  # only when one input char folded to several
            continue
        if whole:
            spans.append((start, end))
            continue
        if spans and end > window_end:
            fragments.append(_render(text, window_start, window_end, spans))
            previous_end, spans = window_end, []
            if len(fragments) >= HIGHLIGHT_FRAGMENTS:
                return fragments
        if not spans:
            window_start = max(previous_end, start - HIGHLIGHT_FRAGMENT_CHARS // 4)
            window_end = min(len(text), max(window_start + HIGHLIGHT_FRAGMENT_CHARS, end))
        spans.append((start, end))
    if spans:
        fragments.append(
            _render(text, 0, len(text), spans) if whole else _render(text, window_start, window_end, spans)
        )
    return fragments


def _escape(text: str) -> str:
    return html.escape(text, quote=False) if "&" in text or "<" in text or ">" in text else text


def _render(text: str, start: int, end: int, spans: Sequence[tuple[int, int]]) -> str:
    parts: list[str] = []
    cursor = start
    for span_start, span_end in spans:
        parts.append(_escape(text[cursor:span_start]))
        parts.append(f"<em>{_escape(text[span_start:span_end])}</em>")
        cursor = span_end
    parts.append(_escape(text[cursor:end]))
    return "".join(parts).strip()
