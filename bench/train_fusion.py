"""Train the learned hybrid fusion (app/search/fusion.py) on faq_dev, and compare it with both legs and rrf.

    .venv/bin/python bench/train_fusion.py              # build the candidate lists, train, report
    .venv/bin/python bench/train_fusion.py --write      # ... and write app/search/fusion_model.json

Candidate lists are built the way the service builds them:

- keyword leg: the real `EmbeddedBackend` over the same `SearchDocument`s relevance_tuning.py
  indexes (its `build_index` and `service_query`), top `fusion.LEG_DEPTH` per query through the
  backend's own search, i.e. after the question-match rerank;
- semantic leg: exact cosine (numpy) of the query's vector (`--embedder`, default the service's
  default) with every corpus question's vector (bench/embedders.py's cached vectors), top
  `fusion.LEG_DEPTH`;
- the union, as `fusion.Candidate`s (questions = title and standard question; faq_dev has no
  similar questions and no popularity).

Split: a query is in validation when the SHA-256 of its relevant item's id falls in the last
fifth; so no target item is seen in both training and validation (several queries share a target).
Distractor items occur in both, which cannot leak anything: no feature names an item or a word.
LightGBM LambdaRank (a query = a group; label 1 for the relevant item) is trained on the training
part with fixed, small settings (no search over them on validation), then figures are given on
validation for keyword alone, semantic alone, rrf and learned: R@1, R@5, R@10, MRR@10. A query
whose relevant item neither leg returned counts as a miss for every method. `--folds` repeats
training and measuring for each fifth in turn (MRR@10 per fold), to see that the gain is not one
split's luck.
Nothing of the data set is written to the repo: the model file holds trees over the features only.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from embedders import DEFAULT_CACHE, corpus_vectors, query_vectors  # noqa: E402
from relevance import DEFAULT_DATA, Doc, Q, load, metrics, rank_of  # noqa: E402
from relevance_tuning import build_index, service_query  # noqa: E402

from app.search import fusion  # noqa: E402
from app.search.embedding import DEFAULT_EMBEDDER, make_embedder  # noqa: E402
from app.search.fusion import FEATURES, Candidate, features, rrf  # noqa: E402

PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [1, 5, 10],
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 20,
    "num_threads": 1,
    "seed": 20261207,
    "verbose": -1,
}
ROUNDS = 150


def fold_of(relevant: str) -> int:
    return int(hashlib.sha256(relevant.encode()).hexdigest(), 16) % 5


def in_validation(relevant: str) -> bool:
    return fold_of(relevant) == 4


async def keyword_leg(corpus: list[Doc], queries: list[Q], depth: int) -> list[list[tuple[int, float]]]:
    """Per query: (corpus index, score) of the keyword leg's top `depth`, best first."""
    folder = Path(tempfile.mkdtemp(prefix="kb-fusion-"))
    try:
        t = time.perf_counter()
        backend = await build_index(folder / "index", corpus)
        print(f"keyword leg: indexed {len(corpus):,} items in {time.perf_counter() - t:.1f} s", flush=True)
        live = backend._require_live()
        out = []
        t = time.perf_counter()
        for q in queries:
            query = dataclasses.replace(service_query(q.query), limit=depth)
            result = backend._search_sync(live, backend.analyzer, query)
            out.append([(h.item_id - 1, float(h.score)) for h in result.hits])
        print(f"keyword leg: {len(queries):,} queries in {time.perf_counter() - t:.1f} s", flush=True)
        await backend.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def semantic_leg(
    name: str, corpus: list[Doc], queries: list[Q], data: Path, cache: Path, depth: int
) -> tuple[str, list[list[tuple[int, float]]]]:
    embedder = make_embedder(name)
    assert embedder is not None
    docs = corpus_vectors(embedder, corpus, data, cache)
    qv = query_vectors(embedder, queries, data, cache)
    out = []
    for start in range(0, len(queries), 256):
        scores = qv[start : start + 256] @ docs.T
        top = np.argpartition(-scores, depth, axis=1)[:, :depth]
        for row in range(scores.shape[0]):
            order = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
            out.append([(int(i), float(scores[row, i])) for i in order])
    return embedder.model, out


def candidates_of(corpus: list[Doc], kw: list[tuple[int, float]], sem: list[tuple[int, float]]) -> list[Candidate]:
    by_index: dict[int, Candidate] = {}
    for rank, (i, score) in enumerate(kw):
        by_index[i] = Candidate(item_id=i, keyword_rank=rank, keyword_score=score)
    for rank, (i, score) in enumerate(sem):
        c = by_index.setdefault(i, Candidate(item_id=i))
        c.semantic_rank, c.semantic_score = rank, score
    for i, c in by_index.items():
        c.questions = [corpus[i].question, corpus[i].question]  # title, standard question
    return list(by_index.values())


def evaluate(orders: list[list[int]], targets: list[int]) -> dict[str, float]:
    ids = [str(t) for t in targets]
    return metrics([rank_of(t, [str(i) for i in order]) for t, order in zip(ids, orders, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--depth", type=int, default=fusion.LEG_DEPTH, help="candidates per leg")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="registered embedder for the semantic leg")
    parser.add_argument("--folds", action="store_true", help="also 5-fold cross-validation (same folds by item hash)")
    parser.add_argument("--write", action="store_true", help=f"write {fusion.MODEL_FILE.relative_to(ROOT)}")
    args = parser.parse_args()
    import lightgbm

    data = args.data.resolve()
    corpus, queries = load(data, None)
    index_of = {d.id: n for n, d in enumerate(corpus)}
    targets = [index_of[q.relevant] for q in queries]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    legs_file = args.cache / f"fusion-legs-{args.embedder}-{args.depth}.pickle"  # the keyword leg takes minutes: cached
    if legs_file.exists():
        kw, (embedder_model, sem) = pickle.loads(legs_file.read_bytes())
    else:
        kw = asyncio.run(keyword_leg(corpus, queries, args.depth))
        embedder_model, sem = semantic_leg(args.embedder, corpus, queries, data, args.cache, args.depth)
        args.cache.mkdir(parents=True, exist_ok=True)
        legs_file.write_bytes(pickle.dumps((kw, (embedder_model, sem))))

    lists = [candidates_of(corpus, k, s) for k, s in zip(kw, sem, strict=True)]
    t = time.perf_counter()
    rows = [features(q.query, cands) for q, cands in zip(queries, lists, strict=True)]
    feature_ms = (time.perf_counter() - t) * 1000 / len(queries)
    labels = [[1 if c.item_id == target else 0 for c in cands] for cands, target in zip(lists, targets, strict=True)]
    val = [in_validation(q.relevant) for q in queries]
    train_idx = [i for i, v in enumerate(val) if not v and any(labels[i])]
    val_idx = [i for i, v in enumerate(val) if v]
    covered = sum(1 for i in val_idx if any(labels[i]))
    print(
        f"{len(train_idx):,} training queries (with the target among the candidates), {len(val_idx):,} validation "
        f"({covered:,} with the target among the candidates); {np.mean([len(c) for c in lists]):.1f} candidates "
        f"per query; features {feature_ms:.3f} ms per query",
        flush=True,
    )

    def dataset(idx: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        x = np.asarray([r for i in idx for r in rows[i]], dtype=np.float64)
        y = np.asarray([v for i in idx for v in labels[i]], dtype=np.float64)
        return x, y, [len(rows[i]) for i in idx]

    x, y, groups = dataset(train_idx)
    train_set = lightgbm.Dataset(x, y, group=groups, feature_name=list(FEATURES), free_raw_data=False)
    t = time.perf_counter()
    booster = lightgbm.train(PARAMS, train_set, num_boost_round=ROUNDS)
    train_s = time.perf_counter() - t

    def learned_order(i: int) -> list[int]:
        scores = booster.predict(np.asarray(rows[i], dtype=np.float64), num_threads=1)
        cands = lists[i]
        order = sorted(
            range(len(cands)),
            key=lambda j: (
                -scores[j],
                cands[j].keyword_rank if cands[j].keyword_rank is not None else 1 << 30,
                cands[j].semantic_rank if cands[j].semantic_rank is not None else 1 << 30,
            ),
        )
        return [cands[j].item_id for j in order]

    report: dict[str, Any] = {}
    for part, idx in (("validation", val_idx), ("training", train_idx)):
        tg = [targets[i] for i in idx]
        report[part] = {
            "queries": len(idx),
            "keyword": evaluate([[i for i, _ in kw[i]] for i in idx], tg),
            "semantic": evaluate([[i for i, _ in sem[i]] for i in idx], tg),
            "rrf": evaluate([[c.item_id for c, _ in rrf(lists[i])] for i in idx], tg),
            "learned": evaluate([learned_order(i) for i in idx], tg),
        }
    print(f"{'validation':<10} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'MRR@10':>7}")
    for method in ("keyword", "semantic", "rrf", "learned"):
        m = report["validation"][method]
        print(f"{method:<10} {m['recall@1']:>7.4f} {m['recall@5']:>7.4f} {m['recall@10']:>7.4f} {m['mrr@10']:>7.4f}")
    m = report["training"]["learned"]
    print(f"(training part, learned: R@1 {m['recall@1']:.4f}, MRR@10 {m['mrr@10']:.4f})")
    gains = booster.feature_importance(importance_type="gain")
    report["importance"] = {
        f: round(float(g) / float(gains.sum()), 4)
        for f, g in sorted(zip(FEATURES, gains, strict=True), key=lambda p: -p[1])
    }
    print("gain share: " + ", ".join(f"{f} {g:.3f}" for f, g in report["importance"].items()))

    # Inference cost in the service's terms: features + predict for one query's candidates.
    sample = [lists[i] for i in val_idx[:500]]
    texts = [queries[i].query for i in val_idx[:500]]
    t = time.perf_counter()
    for text, cands in zip(texts, sample, strict=True):
        booster.predict(np.asarray(features(text, cands), dtype=np.float64), num_threads=1)
    report["fuse_ms_per_query"] = round((time.perf_counter() - t) * 1000 / len(sample), 3)
    matrices = [np.asarray(features(text, cands), dtype=np.float64) for text, cands in zip(texts, sample, strict=True)]
    t = time.perf_counter()
    for matrix in matrices:
        booster.predict(matrix, num_threads=1)
    report["predict_ms_per_query"] = round((time.perf_counter() - t) * 1000 / len(sample), 3)
    report["candidates_per_query"] = round(float(np.mean([len(c) for c in sample])), 1)
    report["train_s"] = round(train_s, 1)
    report["embedder"] = embedder_model
    report["depth"] = args.depth
    print(
        f"fuse: features + predict {report['fuse_ms_per_query']} ms, predict alone {report['predict_ms_per_query']} ms "
        f"per query ({report['candidates_per_query']} candidates)"
    )

    if args.folds:  # is the gain one split's luck? Train on four fifths, measure on the fifth, for each fifth
        per_fold: dict[str, list[float]] = {m: [] for m in ("keyword", "semantic", "rrf", "learned")}
        for k in range(5):
            tr = [i for i, q in enumerate(queries) if fold_of(q.relevant) != k and any(labels[i])]
            te = [i for i, q in enumerate(queries) if fold_of(q.relevant) == k]
            fx, fy, fg = dataset(tr)
            fold_booster = lightgbm.train(PARAMS, lightgbm.Dataset(fx, fy, group=fg), num_boost_round=ROUNDS)

            def fold_order(i: int, b: Any = fold_booster) -> list[int]:
                scores = b.predict(np.asarray(rows[i], dtype=np.float64), num_threads=1)
                return [lists[i][j].item_id for j in np.argsort(-scores, kind="stable")]

            tg = [targets[i] for i in te]
            per_fold["keyword"].append(evaluate([[i for i, _ in kw[i]] for i in te], tg)["mrr@10"])
            per_fold["semantic"].append(evaluate([[i for i, _ in sem[i]] for i in te], tg)["mrr@10"])
            per_fold["rrf"].append(evaluate([[c.item_id for c, _ in rrf(lists[i])] for i in te], tg)["mrr@10"])
            per_fold["learned"].append(evaluate([fold_order(i) for i in te], tg)["mrr@10"])
        report["folds_mrr@10"] = per_fold
        for method, values in per_fold.items():
            print(f"5-fold MRR@10 {method:<9} mean {np.mean(values):.4f}  min {min(values):.4f}  max {max(values):.4f}")

    if args.write:
        payload = {
            "features": list(FEATURES),
            "embedder": embedder_model,
            "depth": args.depth,
            "trained_on": "faq_dev (bench/train_fusion.py), training part; figures on the validation part",
            "lightgbm": lightgbm.__version__,
            "params": PARAMS,
            "rounds": ROUNDS,
            "validation": report["validation"],
            "model": booster.model_to_string(),
        }
        fusion.MODEL_FILE.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {fusion.MODEL_FILE} ({fusion.MODEL_FILE.stat().st_size:,} bytes)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
