"""Relevance of `GET /api/v1/search` on a Chinese FAQ-retrieval set, next to a jieba + BM25 baseline.

    .venv/bin/python bench/relevance.py                      # ../shared/bench/faq_dev, every query
    .venv/bin/python bench/relevance.py --limit-queries 500  # a quick run

Every run starts from an EMPTY data folder (a temporary directory, or `--keep DIR`, which must
be empty or absent and is left in place): SQLite file and embedded Tantivy index live there.
The database is built by the real Alembic migrations and the app by `create_app(Settings(...))`
under its lifespan. The corpus goes in through the bulk import endpoint, in process over
`httpx.ASGITransport` as an administrator signed in at `POST /api/v1/auth/token`: an item type
`faq_dev` with `review_required=False` (`POST /api/v1/item-types`), a sync source `faq_dev`
(`publish_mode=publish`, item type `faq_dev`), and the corpus written as one NDJSON file (a row
per corpus entry: external_id = corpus id, title = question = the corpus question, body = the
answer as Markdown when there is one) posted to `POST /api/v1/imports?source=faq_dev`. The real
`Worker` runs the `imports.run` job (rows in batches of 500, one transaction each, their index
jobs queued in the same transaction), then, with `--index drain` (the default), the index jobs
in batches of 500 (one Tantivy commit each), as the live service would. The bench checks that
every corpus row was created, that no job failed and that the engine holds exactly the corpus,
then runs every query through `GET /api/v1/search?q=...&limit=10`. The items are the same as
the per-item path made before (`knowledge.service.create_item` + `workflow.transition(...,
"publish")`, one transaction each, ~36 items/s, 16 minutes for this corpus): same type, title,
question, body, source and external id, so the relevance figures stay comparable.

The baseline is computed in the same run in a child process (it takes ~4 minutes of one core
and overlaps the import and indexing): `rank_bm25.BM25Okapi(k1=1.5, b=0.75)` over `jieba.lcut`
tokens, tokens that are whitespace or only punctuation dropped, ties broken by corpus order.

Metrics: Recall@1, Recall@5 (share of queries whose one relevant item is in the top k) and
MRR@10 (mean 1/rank, 0 beyond rank 10), with latency per request, for each `mode` (keyword,
semantic, hybrid; keyword only with `--embedder off`), on every query and on the fifth whose
target items the learned fusion never saw in training. The last line of output is one JSON object.
The data set is internal evaluation data (see its README): nothing of it is written to the repo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/relevance.py` from anywhere
from benchapp import served  # noqa: E402 - bench/ is on the path: this script's folder

DEFAULT_DATA = ROOT.parent / "shared" / "bench" / "faq_dev"
if not DEFAULT_DATA.is_dir():  # a git worktree one level deeper than the main checkout
    DEFAULT_DATA = ROOT.parent.parent / "shared" / "bench" / "faq_dev"
ITEM_TYPE = "faq_dev"
SOURCE = "faq_dev"
INDEX_JOB = "search.index_item"
TOP_K = 10


# ---------------------------------------------------------------- data and metrics


@dataclass(frozen=True, slots=True)
class Doc:
    id: str
    question: str
    answer: str | None


@dataclass(frozen=True, slots=True)
class Q:
    qid: str
    query: str
    relevant: str


def load(data: Path, limit_queries: int | None) -> tuple[list[Doc], list[Q]]:
    corpus = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                corpus.append(Doc(str(row["id"]), row["question"], row.get("answer")))
    queries = []
    with (data / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                relevant = row["relevant"]
                if len(relevant) != 1:
                    raise SystemExit(f"{row['qid']}: expected exactly one relevant id, got {relevant}")
                queries.append(Q(str(row["qid"]), row["query"], str(relevant[0])))
    if limit_queries is not None:
        queries = queries[:limit_queries]
    return corpus, queries


def rank_of(relevant: str, ranked: list[str]) -> int | None:
    """1-based rank of the relevant id within the top TOP_K, None when absent."""
    try:
        rank = ranked.index(relevant) + 1
    except ValueError:
        return None
    return rank if rank <= TOP_K else None


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks) or 1
    return {
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "recall@5": round(sum(1 for r in ranks if r is not None and r <= 5) / n, 4),
        "recall@10": round(sum(1 for r in ranks if r is not None) / n, 4),
        "mrr@10": round(sum(1 / r for r in ranks if r is not None) / n, 4),
    }


# ---------------------------------------------------------------- baseline (child process)


def _bm25_keep(token: str) -> bool:
    """Drop whitespace tokens and tokens made only of punctuation."""
    stripped = token.strip()
    return bool(stripped) and not all(unicodedata.category(c).startswith("P") for c in stripped)


def baseline(data: str, limit_queries: int | None) -> dict[str, Any]:
    """BM25Okapi over jieba.lcut tokens, ranking the whole corpus for every query."""
    import jieba
    import numpy as np
    from rank_bm25 import BM25Okapi

    jieba.setLogLevel(logging.WARNING)
    started = time.perf_counter()
    corpus, queries = load(Path(data), limit_queries)

    def tokens(text: str) -> list[str]:
        return [t for t in jieba.lcut(text) if _bm25_keep(t)]

    bm25 = BM25Okapi([tokens(d.question) for d in corpus], k1=1.5, b=0.75)
    ids = [d.id for d in corpus]
    ranked: dict[str, list[str]] = {}
    for q in queries:
        scores = bm25.get_scores(tokens(q.query))
        top = np.argsort(-scores, kind="stable")[:TOP_K]  # ties: corpus order
        ranked[q.qid] = [ids[i] for i in top]
    return {"ranked": ranked, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- the service


async def drain_all(app: Any) -> int:
    """Run every queued job with the real worker (Worker.drain stops after 1,000 rounds)."""
    from app.workers.worker import Worker

    worker = Worker(app.state.sessionmaker, app.state.settings, services=app.state.services)
    total = 0
    while True:
        done = await worker.drain(max_rounds=1000)
        total += done
        if not done:
            return total


async def job_summary(app: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.workers.models import Job

    async with app.state.sessionmaker() as s:
        rows = await s.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
        return {f"{kind}:{status}": n for kind, status, n in rows.all()}


async def run_job_now(app: Any, worker: Any, job_id: int) -> str:
    """Claim one given job the way `Worker.claim` does (it would take the oldest jobs first) and
    run it with `Worker.run_job`: the real handler, the real bookkeeping."""
    from sqlalchemy import update

    from app.core.db import utcnow
    from app.workers.models import Job

    now = utcnow()
    async with app.state.sessionmaker() as s:
        await s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "pending")
            .values(
                status="running", locked_by=worker.worker_id, locked_at=now, attempts=Job.attempts + 1, updated_at=now
            )
        )
        await s.commit()
    return await worker.run_job(job_id)


async def index_corpus(app: Any, client: Any, headers: dict[str, str], mode: str) -> dict[str, Any]:
    """Build the index with the real jobs.

    drain:   run every queued `search.index_item` job (one per imported row) with the worker, as
             the live service would: claimed 500 at a time, one Tantivy commit per batch.
    rebuild: `POST /api/v1/search/reindex` and run that `search.reindex_all` job. The per-item
             jobs stay queued (each would only rewrite an item the rebuild already indexed, at
             the same version); a sample of them runs after the queries (`drain_sample`).
    """
    from app.workers.worker import Worker

    worker = Worker(app.state.sessionmaker, app.state.settings, services=app.state.services)
    if mode == "drain":
        t = time.perf_counter()
        jobs = await drain_all(app)
        return {"jobs_run": jobs, "index_jobs_per_s": round(jobs / (time.perf_counter() - t), 1)}
    r = await client.post("/api/v1/search/reindex", headers=headers)
    if r.status_code != 202:
        raise SystemExit(f"reindex refused: {r.status_code} {r.text[:300]}")
    job_id = r.json()["job_id"]
    t = time.perf_counter()
    outcome = await run_job_now(app, worker, job_id)
    rebuild_s = time.perf_counter() - t
    if outcome != "done":
        raise SystemExit(f"search.reindex_all job {job_id}: {outcome}")
    return {"reindex_all_s": round(rebuild_s, 1)}


async def drain_sample(app: Any, sample: int) -> dict[str, Any]:
    """Run `sample` (at most 500, the batch size) of the queued index jobs as ONE batch (after the
    queries: rewriting documents leaves deleted ones in Tantivy's term statistics until a merge):
    the rate of a batch, which is how the worker runs them; not a per-job latency."""
    from app.workers.worker import Worker

    worker = Worker(app.state.sessionmaker, app.state.settings, services=app.state.services)
    t = time.perf_counter()
    ids = await worker.claim_batch(INDEX_JOB, limit=sample)
    counts = await worker.run_batch(INDEX_JOB, ids) if ids else {}
    seconds = time.perf_counter() - t
    return {
        "index_batch_jobs": len(ids),
        "index_batch_done": counts.get("done", 0),
        "index_batch_s": round(seconds, 2),
        "index_batch_jobs_per_s": round(len(ids) / seconds, 1) if ids else None,
    }


async def import_corpus(
    app: Any, client: Any, headers: dict[str, str], corpus: list[Doc], folder: Path
) -> dict[str, Any]:
    """The corpus as one NDJSON file through `POST /api/v1/imports`; the worker runs the import job
    (not yet its index jobs). Returns item id -> corpus id and the phase's figures."""
    from sqlalchemy import select

    from app.knowledge.models import Item
    from app.workers.worker import Worker

    r = await client.post(
        "/api/v1/item-types",
        headers=headers,
        json={"code": ITEM_TYPE, "name": "FAQ (benchmark import)", "review_required": False},
    )
    if r.status_code != 201 or r.json()["review_required"] is not False:
        raise SystemExit(f"item type refused: {r.status_code} {r.text[:300]}")
    r = await client.post(
        "/api/v1/sync-sources",
        headers=headers,
        json={
            "name": SOURCE,
            "description": "faq_dev corpus (bench/relevance.py)",
            "publish_mode": "publish",
            "item_type": ITEM_TYPE,
        },
    )
    if r.status_code != 201:
        raise SystemExit(f"sync source refused: {r.status_code} {r.text[:300]}")
    worker = Worker(app.state.sessionmaker, app.state.settings, services=app.state.services)
    await drain_all(app)  # whatever startup queued, before anything is timed
    path = folder / "faq_dev.ndjson"
    with path.open("w", encoding="utf-8") as fh:
        for doc in corpus:
            row: dict[str, Any] = {"external_id": doc.id, "title": doc.question[:300], "question": doc.question[:500]}
            if doc.answer:
                row["body"], row["body_format"] = doc.answer, "markdown"
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    out: dict[str, Any] = {"file_mb": round(path.stat().st_size / 1e6, 1)}

    async def chunks() -> Any:
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                yield chunk

    t = time.perf_counter()
    r = await client.post(
        "/api/v1/imports",
        params={"source": SOURCE, "file_name": path.name},
        content=chunks(),
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    if r.status_code != 202:
        raise SystemExit(f"import refused: {r.status_code} {r.text[:300]}")
    import_id = r.json()["id"]
    out["upload_s"] = round(time.perf_counter() - t, 2)
    path.unlink()
    t = time.perf_counter()
    claimed = await worker.claim()  # the imports.run job, as the first step of a worker round
    for job_id in claimed:
        await worker.run_job(job_id)
    out["import_job_s"] = round(time.perf_counter() - t, 1)
    r = await client.get(f"/api/v1/imports/{import_id}", headers=headers)
    job = r.json()
    if job["state"] != "done" or job["counts"]["created"] != len(corpus) or job["errors_total"]:
        raise SystemExit(f"import {import_id}: {job['state']} {job['counts']} {job['error']} {job['errors'][:5]}")
    out["rows_per_s"] = round(len(corpus) / (out["upload_s"] + out["import_job_s"]))
    print(f"  import {import_id}: {job['counts']['created']:,} created; {out}", flush=True)
    async with app.state.sessionmaker() as s:
        item_to_doc = dict((await s.execute(select(Item.id, Item.external_id).where(Item.source == SOURCE))).all())
    return {"item_to_doc": item_to_doc, "import": out}


async def run_queries(
    client: Any,
    headers: dict[str, str],
    queries: list[Q],
    item_to_doc: dict[int, str],
    concurrency: int,
    mode: str = "keyword",
) -> tuple[dict[str, list[str]], list[float]]:
    ranked: dict[str, list[str]] = {}
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    unknown: set[int] = set()

    async def one(q: Q) -> None:
        async with gate:
            t = time.perf_counter()
            r = await client.get("/api/v1/search", params={"q": q.query, "limit": TOP_K, "mode": mode}, headers=headers)
            latencies.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"search failed for {q.qid}: {r.status_code} {r.text[:300]}")
        if r.json()["mode_used"] != mode:
            raise SystemExit(f"asked for {mode}, the service ran {r.json()['mode_used']}: {r.json()['warnings']}")
        hits = r.json()["items"]
        out = []
        for hit in hits:
            doc = item_to_doc.get(hit["item_id"])
            if doc is None:
                unknown.add(hit["item_id"])
            else:
                out.append(doc)
        ranked[q.qid] = out

    await asyncio.gather(*(one(q) for q in queries))
    if unknown:
        raise SystemExit(f"search returned items that were not imported: {sorted(unknown)[:10]}")
    return ranked, latencies


async def run_service(
    data_dir: Path,
    corpus: list[Doc],
    queries: list[Q],
    concurrency: int,
    index_mode: str,
    sample: int,
    embedder: str,
) -> dict[str, Any]:
    from app.core.config import Settings

    settings = Settings(
        _env_file=None,
        env="dev",
        data_dir=data_dir,
        worker_embedded=False,
        job_backoff_seconds=0,
        jwt_secret=secrets.token_urlsafe(48),
        log_level="WARNING",
        embedder=embedder,
    )
    timings: dict[str, float] = {}
    data_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    async with served(settings, http_timeout=120) as (app, client, headers):
        timings["start_s"] = time.perf_counter() - t  # migrations and the app's start-up

        print(f"importing {len(corpus):,} items through POST /api/v1/imports (NDJSON) ...", flush=True)
        t = time.perf_counter()
        imported = await import_corpus(app, client, headers, corpus, data_dir)
        item_to_doc = imported["item_to_doc"]
        timings["import_s"] = time.perf_counter() - t

        print(f"indexing ({index_mode}) ...", flush=True)
        t = time.perf_counter()
        indexing = await index_corpus(app, client, headers, index_mode)
        timings["index_s"] = time.perf_counter() - t
        indexing["seconds"] = round(timings["index_s"], 1)
        summary = await job_summary(app)
        print(f"  done in {timings['index_s']:.1f} s: {indexing}; job table: {summary}")
        failed = {k: v for k, v in summary.items() if k.endswith((":failed", ":running"))}
        if failed:
            raise SystemExit(f"jobs failed or stuck: {failed}")
        indexed = len(await app.state.services["search"].indexed_versions())
        if indexed != len(corpus):
            raise SystemExit(f"the index holds {indexed} items, expected {len(corpus)}")

        modes = ["keyword", "semantic", "hybrid"] if embedder != "off" else ["keyword"]
        ranked: dict[str, dict[str, list[str]]] = {}
        latencies: dict[str, list[float]] = {}
        for mode in modes:
            print(
                f"searching ({mode}): {len(queries):,} queries through GET /api/v1/search "
                f"(concurrency {concurrency}) ...",
                flush=True,
            )
            t = time.perf_counter()
            ranked[mode], latencies[mode] = await run_queries(client, headers, queries, item_to_doc, concurrency, mode)
            timings[f"search_{mode}_s"] = time.perf_counter() - t
        if index_mode == "rebuild" and sample > 0:
            indexing.update(await drain_sample(app, sample))
            print(f"  per-item index jobs (measured after the queries): {indexing}")
    return {
        "ranked": ranked,
        "timings": timings,
        "latencies": latencies,
        "indexing": indexing,
        "import": imported["import"],
    }


# ---------------------------------------------------------------- report


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report_misses(
    queries: list[Q],
    corpus: list[Doc],
    service: dict[str, list[str]],
    base: dict[str, list[str]],
    shown: int,
) -> None:
    text = {d.id: d.question for d in corpus}
    wins = losses = 0
    for q in queries:
        s, b = rank_of(q.relevant, service[q.qid]), rank_of(q.relevant, base[q.qid])
        rs, rb = (1 / s if s else 0), (1 / b if b else 0)
        wins += rs > rb
        losses += rs < rb
    equal = len(queries) - wins - losses
    print(f"\nper query vs baseline: service better on {wins}, worse on {losses}, equal on {equal}")
    misses = [q for q in queries if rank_of(q.relevant, service[q.qid]) != 1]
    print(f"service misses at rank 1: {len(misses)} (first {min(shown, len(misses))} shown)")
    for q in misses[:shown]:
        s, b = rank_of(q.relevant, service[q.qid]), rank_of(q.relevant, base[q.qid])
        top = service[q.qid][0] if service[q.qid] else None
        print(f"  {q.qid} query   {q.query}")
        print(f"         target  {text[q.relevant]}  (service rank {s or '>10'}, bm25 rank {b or '>10'})")
        print(f"         top-1   {text[top] if top else '(no hit)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with corpus.jsonl and queries.jsonl")
    parser.add_argument("--limit-queries", type=int, default=None, help="only the first N queries (quick runs)")
    parser.add_argument("--keep", type=Path, default=None, help="data folder to use and keep (must be empty)")
    parser.add_argument("--concurrency", type=int, default=1, help="searches in flight at once")
    parser.add_argument("--misses", type=int, default=8, help="misses to print")
    parser.add_argument(
        "--index",
        choices=("rebuild", "drain"),
        default="drain",
        help="drain: the import's index jobs, 500 per batch (default); rebuild: one search.reindex_all job",
    )
    parser.add_argument(
        "--embedder",
        default=None,
        help="KB_EMBEDDER of the service (default: the service's default; off: keyword only)",
    )
    parser.add_argument(
        "--drain-sample",
        type=int,
        default=500,
        help="with --index rebuild: queued index jobs run afterwards as one batch, to measure their rate",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    wall = time.perf_counter()
    from app.search.embedding import DEFAULT_EMBEDDER

    embedder = args.embedder or DEFAULT_EMBEDDER
    data = args.data.resolve()
    corpus, queries = load(data, args.limit_queries)
    print(f"data {data}: {len(corpus):,} items, {len(queries):,} queries", flush=True)

    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep} is not empty: every run starts from an empty data folder")
        data_dir = args.keep.resolve()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="kb-relevance-"))

    # The baseline runs in a child process while the service imports and indexes.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        future: Future[dict[str, Any]] = pool.submit(baseline, str(data), args.limit_queries)
        try:
            service = asyncio.run(
                run_service(data_dir, corpus, queries, args.concurrency, args.index, args.drain_sample, embedder)
            )
        except BaseException:
            for process in list(getattr(pool, "_processes", {}).values()):  # do not wait minutes for it
                process.terminate()
            raise
        finally:
            if args.keep is None:
                shutil.rmtree(data_dir, ignore_errors=True)
        t = time.perf_counter()
        base = future.result()
        waited = time.perf_counter() - t

    from train_fusion import in_validation  # the learned fusion's held-back fifth of faq_dev

    base_ranks = [rank_of(q.relevant, base["ranked"][q.qid]) for q in queries]
    theirs = metrics(base_ranks)
    held = [i for i, q in enumerate(queries) if in_validation(q.relevant)]
    timings = service["timings"]
    results: dict[str, dict[str, Any]] = {}
    print(
        f"\n{'system':<34} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'MRR@10':>7}   {'held-out fifth: R@1':>20} "
        f"{'MRR@10':>7}   {'p50 ms':>7} {'p99 ms':>7}"
    )
    rows: list[tuple[str, dict[str, float], dict[str, float], list[float]]] = []
    for mode, ranked in service["ranked"].items():
        ranks = [rank_of(q.relevant, ranked[q.qid]) for q in queries]
        rows.append(
            (f"service mode={mode}", metrics(ranks), metrics([ranks[i] for i in held]), service["latencies"][mode])
        )
        results[mode] = {
            **metrics(ranks),
            "held_out": metrics([ranks[i] for i in held]),
            "p50_ms": round(_pct(service["latencies"][mode], 50), 2),
            "p99_ms": round(_pct(service["latencies"][mode], 99), 2),
        }
    rows.append(("baseline jieba + BM25Okapi", theirs, metrics([base_ranks[i] for i in held]), []))
    for name, m, h, lat in rows:
        speed = f"{_pct(lat, 50):>7.1f} {_pct(lat, 99):>7.1f}" if lat else f"{'':>7} {'':>7}"
        print(
            f"{name:<34} {m['recall@1']:>7.4f} {m['recall@5']:>7.4f} {m['recall@10']:>7.4f} {m['mrr@10']:>7.4f}   "
            f"{h['recall@1']:>20.4f} {h['mrr@10']:>7.4f}   {speed}"
        )
    print(
        f"(held-out fifth: the {len(held):,} queries whose target item the learned fusion never saw in training, "
        "bench/train_fusion.py)"
    )
    best = "hybrid" if "hybrid" in service["ranked"] else "keyword"
    report_misses(queries, corpus, service["ranked"][best], base["ranked"], args.misses)
    searches = ", ".join(f"{mode} {timings[f'search_{mode}_s']:.1f} s" for mode in service["ranked"])
    print(
        f"\ntimes: start {timings['start_s']:.1f} s, import {timings['import_s']:.1f} s "
        f"({len(corpus) / timings['import_s']:,.0f} items/s; {service['import']}), indexing {timings['index_s']:.1f} s "
        f"{service['indexing']} (embedder {embedder}), {len(queries):,} searches per mode: {searches}; "
        f"baseline {base['seconds']:.1f} s in a child process (waited {waited:.1f} s for it), "
        f"wall {time.perf_counter() - wall:.1f} s"
    )
    print(
        json.dumps(
            {
                "embedder": embedder,
                "queries": len(queries),
                "modes": results,
                "baseline": {k: theirs[k] for k in ("recall@1", "recall@5", "mrr@10")},
            }
        )
    )


if __name__ == "__main__":
    main()
