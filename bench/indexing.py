"""Index jobs through the worker: batched (claimed up to 500 at a time, coalesced by item, one
engine write per batch) against the single-job path.

    .venv/bin/python bench/indexing.py                      # 5,000 items, SQLite + embedded Tantivy
    .venv/bin/python bench/indexing.py --items 20000 --per-item 3
    .venv/bin/python bench/indexing.py --database-url postgresql+asyncpg://127.0.0.1/kb_bench  # an empty database

1. A fresh data folder, the Alembic migrations, the app built by `create_app(Settings(...))` under its
   lifespan; users, taxonomy, dictionary and synonyms by `setup()` of bench/search_http.py; --items
   published items written IN THE DATABASE in bulk by `seed_items` of bench/channels.py (the rows the
   service writes, read sets and change feed by the real code) without indexing them.
2. single: one `search.index_item` job per item for the first --single items, drained by a
   `Worker(batch_handlers={})`: each job alone (one transaction, one build_documents, one upsert =
   one Tantivy commit, one reconcile), the path before batching.
3. batched: the index emptied; --per-item jobs per item for every item, queued side by side (as
   several writers touching one item queue them; coalesced when they fall in one batch), drained
   by the default `Worker`, then checked: every job done, every item in the index.
Figures: index jobs/s and items/s (wall), Tantivy commits. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's `app`, whatever the venv's editable install points at

from channels import PUBLISHER, seed_items  # noqa: E402
from search_http import migrate, settings_for, setup  # noqa: E402

INDEX_JOB = "search.index_item"


async def enqueue_jobs(app: Any, item_ids: list[int], per_item: int) -> int:
    """`per_item` jobs per item, side by side (one item published, then edited: its writers' jobs)."""
    from app.workers.outbox import enqueue

    async with app.state.sessionmaker() as s:
        for start in range(0, len(item_ids), 2000):
            for item_id in item_ids[start : start + 2000]:
                for _ in range(per_item):
                    enqueue(s, INDEX_JOB, {"item_id": item_id}, created_by="bench")
            await s.commit()
    return len(item_ids) * per_item


async def job_states(app: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.workers.models import Job

    async with app.state.sessionmaker() as s:
        rows = await s.execute(select(Job.status, func.count()).where(Job.kind == INDEX_JOB).group_by(Job.status))
        return {status: int(n) for status, n in rows.all()}


async def clear_jobs(app: Any) -> None:
    from sqlalchemy import delete

    from app.workers.models import Job

    async with app.state.sessionmaker() as s:
        await s.execute(delete(Job).where(Job.kind == INDEX_JOB))
        await s.commit()


async def run(worker: Any, app: Any, item_ids: list[int], per_item: int) -> dict[str, Any]:
    backend = app.state.services["search"]
    await backend.rebuild([])  # an empty index: every job writes a new document
    await clear_jobs(app)
    jobs = await enqueue_jobs(app, item_ids, per_item)
    commits = backend.commits
    t = time.perf_counter()
    ran = await worker.drain(max_rounds=1_000_000)
    seconds = time.perf_counter() - t
    states = await job_states(app)
    indexed = await backend.document_count()
    if states != {"done": jobs} or indexed != len(item_ids) or ran < jobs:
        raise SystemExit(f"not everything was indexed: jobs {states}, {indexed:,} of {len(item_ids):,} in the index")
    return {
        "jobs": jobs,
        "items": len(item_ids),
        "seconds": round(seconds, 2),
        "jobs_per_s": round(jobs / seconds, 1),
        "items_per_s": round(len(item_ids) / seconds, 1),
        "tantivy_commits": backend.commits - commits,
    }


async def bench(data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from asgi_lifespan import LifespanManager
    from sqlalchemy import select

    from app.identity import service as identity
    from app.knowledge.models import Item
    from app.main import create_app
    from app.workers.worker import Worker

    settings = settings_for(data_dir, secrets.token_urlsafe(48))
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate, settings.database_url)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=120):
        env = await setup(app)
        async with app.state.sessionmaker() as s:
            publisher, _ = await identity.ensure_admin(s, PUBLISHER, secrets.token_urlsafe(18))
            await s.commit()
            env["publisher_id"] = publisher.id
        print(f"seeding {args.items:,} published items into the database (not the index) ...", flush=True)
        seeding = await seed_items(app, env, args.items, 500, index=False)
        async with app.state.sessionmaker() as s:
            ids = list((await s.scalars(select(Item.id).order_by(Item.id))).all())
        sm, services = app.state.sessionmaker, app.state.services
        out: dict[str, Any] = {
            "items": len(ids),
            "per_item": args.per_item,
            "database": settings.database_url.split(":")[0],
            "seed_items_per_s": seeding["seed_items_per_s"],
        }
        if args.single:
            print(f"single path: {min(args.single, len(ids)):,} jobs, one at a time ...", flush=True)
            out["single"] = await run(
                Worker(sm, settings, services=services, batch_handlers={}), app, ids[: args.single], 1
            )
            print(f"  {out['single']}", flush=True)
        print(f"batched: {len(ids) * args.per_item:,} jobs ({args.per_item} per item) ...", flush=True)
        out["batched"] = await run(Worker(sm, settings, services=services), app, ids, args.per_item)
        print(f"  {out['batched']}", flush=True)
        if args.single:
            out["speedup_jobs_per_s"] = round(out["batched"]["jobs_per_s"] / out["single"]["jobs_per_s"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--single", type=int, default=500, help="items run through the single-job path (0: skip)")
    parser.add_argument("--per-item", type=int, default=1, help="index jobs per item in the batched run")
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite in a temp folder)")
    args = parser.parse_args()
    wall = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="kb-bench-indexing-"))
    try:
        figures = asyncio.run(bench(data_dir, args))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    figures["wall_s"] = round(time.perf_counter() - wall, 1)
    print(f"wall {figures['wall_s']} s")
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
