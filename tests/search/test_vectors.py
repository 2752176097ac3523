"""The embedded semantic leg beyond the exact threshold: the faiss IVF index must rank like exact
search, follow updates and deletes, and never shorten a page or leak a forbidden item.

The threshold is lowered (the production one is 50,000 vectors) so a few thousand vectors take
the approximate path; vectors are synthetic (clustered unit vectors: the engine does not care
what they mean), the Tantivy index and faiss are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.search.backends import vectors
from app.search.backends.embedded import EmbeddedBackend
from app.search.documents import SearchQuery
from tests.search.conftest import search_doc

MODEL = "test-model"
DIMS = 64
ITEMS = 1200
ROWS_PER_ITEM = 2
DEPT_ONLY = range(1, ITEMS + 1, 100)  # 12 items only dept:7 may read


def item_vectors(rng: np.random.Generator, centers: np.ndarray, item_id: int) -> np.ndarray:
    rows = centers[item_id % len(centers)] + 0.5 * rng.standard_normal((ROWS_PER_ITEM, DIMS), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def doc(item_id: int, rows: np.ndarray) -> Any:
    acl = ["dept:7"] if item_id in DEPT_ONLY else ["public"]
    return search_doc(item_id, f"宽带故障报修第{item_id}号", acl_principals=acl, vectors=rows, embedder=MODEL)


def query(vector: np.ndarray, principals: list[str], limit: int = 10) -> SearchQuery:
    return SearchQuery(
        text="",
        principals=principals,
        mode="semantic",
        vector=vector.tolist(),
        embedder=MODEL,
        limit=limit,
        facets=False,
        highlight=False,
    )


def exact_top(all_rows: dict[int, np.ndarray], vector: np.ndarray, allowed: set[int], k: int) -> list[int]:
    best = {i: float((rows @ vector).max()) for i, rows in all_rows.items() if i in allowed}
    return sorted(best, key=lambda i: -best[i])[:k]


@pytest.fixture
async def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[EmbeddedBackend, dict]]:
    monkeypatch.setattr(vectors, "ANN_MIN_ROWS", 1000)
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((40, DIMS), dtype=np.float32)
    rows = {i: item_vectors(rng, centers, i) for i in range(1, ITEMS + 1)}
    backend = EmbeddedBackend(tmp_path / "index")
    await backend.open()
    await backend.rebuild([doc(i, r) for i, r in rows.items()])
    yield backend, rows
    await backend.close()


def store_of(backend: EmbeddedBackend) -> vectors.VectorStore:
    store = backend._live.vectors  # type: ignore[union-attr]
    assert store is not None
    return store


async def test_approximate_index_ranks_like_exact_search(engine: tuple[EmbeddedBackend, dict]) -> None:
    backend, rows = engine
    rng = np.random.default_rng(11)
    public = {i for i in rows if i not in DEPT_ONLY}
    overlap = []
    for item_id in rng.choice(sorted(public), 25, replace=False):
        vector = rows[int(item_id)][0] + 0.3 * rng.standard_normal(DIMS, dtype=np.float32)
        vector /= np.linalg.norm(vector)
        result = await backend.search(query(vector, ["public"]))
        got = [h.item_id for h in result.hits]
        assert len(got) == 10
        assert got[0] == exact_top(rows, vector, public, 1)[0]
        overlap.append(len(set(got) & set(exact_top(rows, vector, public, 10))) / 10)
        for hit in result.hits:  # candidates are rescored exactly (from the stored float16 rows)
            assert hit.score == pytest.approx(float((rows[hit.item_id] @ vector).max()), abs=2e-3)
    store = store_of(backend)
    assert store.ann is not None and store.ann.ntotal == ITEMS * ROWS_PER_ITEM
    assert np.mean(overlap) >= 0.9


async def test_narrow_acl_gets_a_full_page_and_nothing_leaks(engine: tuple[EmbeddedBackend, dict]) -> None:
    backend, rows = engine
    vector = rows[2][0]
    narrow = await backend.search(query(vector, ["dept:7"], limit=10))
    assert narrow.total == len(DEPT_ONLY)
    assert [h.item_id for h in narrow.hits] == exact_top(rows, vector, set(DEPT_ONLY), 10)
    broad = await backend.search(query(rows[101][0], ["public"], limit=50))
    assert len(broad.hits) == 50
    assert not {h.item_id for h in broad.hits} & set(DEPT_ONLY)
    assert broad.total == ITEMS - len(DEPT_ONLY)


async def test_approximate_index_follows_updates_and_deletes(engine: tuple[EmbeddedBackend, dict]) -> None:
    backend, rows = engine
    rng = np.random.default_rng(5)
    target = rng.standard_normal(DIMS, dtype=np.float32)
    target /= np.linalg.norm(target)
    moved = np.stack([target, target])
    await backend.upsert([doc(7, moved)])  # item 7 now holds the query's own vector
    rows[7] = moved
    first = await backend.search(query(target, ["public"]))
    assert first.hits[0].item_id == 7 and first.hits[0].score == pytest.approx(1.0, abs=1e-5)

    await backend.delete([7])
    del rows[7]
    after = await backend.search(query(target, ["public"], limit=20))
    assert 7 not in [h.item_id for h in after.hits]
    assert store_of(backend).ann.ntotal == len(rows) * ROWS_PER_ITEM  # type: ignore[union-attr]

    # Below the threshold the store drops the approximate index and ranks exactly again.
    gone = [i for i in rows if i > 400]
    await backend.delete(gone)
    for i in gone:
        del rows[i]
    small = await backend.search(query(target, ["public"]))
    assert store_of(backend).ann is None
    public = {i for i in rows if i not in DEPT_ONLY}
    assert [h.item_id for h in small.hits] == exact_top(rows, target, public, 10)


async def test_a_large_store_loads_in_the_background_never_in_a_request(
    engine: tuple[EmbeddedBackend, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100,000 items the first load takes up to a minute: the first semantic search must not
    wait for it. It answers SearchUnavailable at once (the hybrid search then serves keywords and
    says so) while a background thread loads; then semantic search works."""
    import asyncio
    import time

    from app.search.backends import embedded
    from app.search.backends.base import SearchUnavailable

    backend, rows = engine
    monkeypatch.setattr(embedded, "VECTORS_INLINE_LOAD_MAX_DOCS", 100)
    store = store_of(backend)
    assert store.generation < 0, "nothing has loaded the vectors yet"
    slow = store.refresh

    def slow_refresh(*args: Any) -> None:
        time.sleep(0.5)  # a load that takes a while, as a large one does
        slow(*args)

    monkeypatch.setattr(store, "refresh", slow_refresh)
    vector = rows[5][0]
    started = time.perf_counter()
    with pytest.raises(SearchUnavailable, match="loading"):
        await backend.search(query(vector, ["public"]))
    with pytest.raises(SearchUnavailable, match="loading"):  # a second search starts no second load
        await backend.search(query(vector, ["public"]))
    assert time.perf_counter() - started < 0.4, "the searches did not wait for the load"
    for _ in range(100):
        if store.generation >= 0:
            break
        await asyncio.sleep(0.05)
    result = await backend.search(query(vector, ["public"]))
    assert result.hits[0].item_id == exact_top(rows, vector, {i for i in rows if i not in DEPT_ONLY}, 1)[0]
    assert store.vector_count == ITEMS * ROWS_PER_ITEM
