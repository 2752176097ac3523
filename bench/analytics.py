"""Usage analytics on the embedded default (SQLite): recording 1,000,000 view/search events, the daily
rollup, a 30-day report, and what recording costs the channel read path.

The app runs in process (bench/benchapp.py: real migrations, real lifespan, ASGI transport). Items come
in through the real import endpoint (`--items` rows of bench/imports.py's generator, published, public,
on every channel). Then:

1. record: `--events` events (60 % views, 38 % searches, 2 % votes) spread over the last 30 days go
   through the real batch writers (`ChannelEvents`, `SearchLogBuffer`: the rows the read and search
   paths queue; `append` is all a request pays) and their real write functions, flushed every
   `--flush` rows as the 0.5 s timer would under load: events/s from the first append to the last
   commit (view rows and their `channel_view_days` upsert, search log rows, vote upserts);
2. rollup: `analytics.rollup` over the 30 days (searches and votes into the daily tables);
3. report: `service.report_data` for 30 days, then every `/api/v1/analytics/...` route over HTTP
   (ASGI), report.html included: p50/p99 of `--repeat` calls each;
4. read path: `GET /api/v1/channels/web/items/{id}` anonymously, sequential, with recording on and
   with it off (`ChannelEvents.view` replaced by a no-op), alternating rounds (ABAB...) so drift of the
   machine hits both alike: requests/s and p50 of each, and the slowdown.

Figures only: this is not a test. `make bench-analytics`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from benchapp import served  # noqa: E402
from imports import SOURCE, drain, load_questions, rows, run_import_job, upload, write_ndjson  # noqa: E402
from relevance import DEFAULT_DATA  # noqa: E402

CHANNELS = ("agent", "web", "wechat", "app")
ROUTES = (
    "views",
    "top-items",
    "searches",
    "top-queries",
    "zero-result-queries",
    "unclicked-queries",
    "helpfulness",
    "stale",
    "throughput",
    "report.html",
)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": round(max(ms), 2)}


async def setup_items(app: Any, client: Any, headers: dict[str, str], settings: Any, n: int, tmp: Path) -> list[int]:
    from sqlalchemy import select

    from app.knowledge.models import Item
    from app.workers.worker import Worker

    r = await client.post("/api/v1/taxonomies", json={"code": "kb", "name": "知识分类"}, headers=headers)
    r.raise_for_status()
    r = await client.post(
        "/api/v1/sync-sources",
        headers=headers,
        json={
            "name": SOURCE,
            "description": "CRM 知识库 (bench)",
            "publish_mode": "publish",
            "create_categories": True,
            "create_tags": True,
            "item_type": "faq",
            "visibility": "public",
            "channels": list(CHANNELS),
        },
    )
    r.raise_for_status()
    path = tmp / "items.ndjson"
    write_ndjson(path, rows(n, load_questions(DEFAULT_DATA)))
    worker = Worker(app.state.sessionmaker, settings, services=app.state.services)
    await drain(worker)
    await upload(client, headers, path, "ndjson")
    await run_import_job(worker)
    await drain(worker)
    async with app.state.sessionmaker() as s:
        return list((await s.scalars(select(Item.id).where(Item.status == "published"))).all())


async def record(app: Any, ids: list[int], queries: list[str], n: int, flush_every: int) -> dict[str, Any]:
    events, log = app.state.channel_events, app.state.search_log
    rng = random.Random(7)
    now = datetime.now(UTC)
    hot = ids[: max(1, len(ids) // 10)]  # a tenth of the items gets most of the reads
    counts = {"view": 0, "search": 0, "vote": 0}
    t = time.perf_counter()
    for i in range(n):
        at = now - timedelta(seconds=rng.random() * 30 * 86400)
        channel = CHANNELS[i % 4]
        roll = rng.random()
        if roll < 0.60:
            item = rng.choice(hot) if rng.random() < 0.7 else rng.choice(ids)
            events.append(
                {
                    "kind": "view",
                    "at": at,
                    "channel": channel,
                    "item_id": item,
                    "version": 1,
                    "actor": None,
                    "address": f"10.{i % 250}.{i % 7}.1",
                    "query": None,
                    "search_id": None,
                }
            )
            counts["view"] += 1
        elif roll < 0.98:
            q = rng.choice(queries) if rng.random() < 0.9 else f"燃气表{rng.randrange(10_000)}号读数异常"
            zero = q.startswith("燃气表")
            log.append(
                {
                    "search_id": secrets.token_hex(16),
                    "at": at,
                    "actor": "bench",
                    "channel": channel,
                    "query": q,
                    "normalized": q,
                    "filters": {},
                    "total": 0 if zero else 10,
                    "zero_result": zero,
                    "took_ms": 3.0,
                    "clicked_item_id": None if zero or rng.random() < 0.5 else rng.choice(ids),
                }
            )
            counts["search"] += 1
        else:
            events.append(
                {
                    "kind": "vote",
                    "at": at,
                    "channel": channel,
                    "item_id": rng.choice(ids),
                    "version": 1,
                    "voter": f"visitor:{rng.randrange(50_000):08d}",
                    "helpful": rng.random() < 0.7,
                    "comment": None,
                    "search_id": None,
                }
            )
            counts["vote"] += 1
        if (i + 1) % flush_every == 0:
            await events.flush()
            await log.flush()
    await events.flush()
    await log.flush()
    seconds = time.perf_counter() - t
    return {
        **counts,
        "seconds": round(seconds, 1),
        "events_per_s": round(n / seconds),
        "dropped": events.dropped + log.dropped,
    }


async def report(app: Any, client: Any, headers: dict[str, str], repeat: int) -> dict[str, Any]:
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from app.analytics import service
    from app.identity.models import User
    from app.identity.service import principal_for_user

    today = datetime.now(UTC).date()
    start = today - timedelta(days=29)
    out: dict[str, Any] = {}
    async with app.state.sessionmaker() as s:
        admin = (
            await s.scalars(
                select(User)
                .where(User.username == "bench-admin")
                .options(selectinload(User.roles), selectinload(User.department))
            )
        ).one()
        principal = principal_for_user(admin)
        ms = []
        for _ in range(repeat):
            t = time.perf_counter()
            data = await service.report_data(s, principal, start, today)
            ms.append((time.perf_counter() - t) * 1000)
        out["report_data"] = summary(ms)
        out["figures"] = {
            "views": data.views.total,
            "searches": data.searches.total,
            "zero_results": data.searches.zero_results,
            "zero_result_queries": len(data.zero_result_queries),
        }
    params = {"from": str(start), "to": str(today)}
    for route in ROUTES:
        ms = []
        for _ in range(repeat):
            t = time.perf_counter()
            r = await client.get(f"/api/v1/analytics/{route}", params=params, headers=headers)
            ms.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"{route}: {r.status_code} {r.text[:300]}")
        out[route] = summary(ms)
    return out


async def read_path(app: Any, client: Any, ids: list[int], rounds: int, per_round: int) -> dict[str, Any]:
    events = app.state.channel_events
    real_view = events.view
    sample = ids[:200]
    results: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds * 2):
        mode = "on" if r % 2 == 0 else "off"
        events.view = real_view if mode == "on" else (lambda **_: None)
        for i in range(per_round):
            t = time.perf_counter()
            resp = await client.get(f"/api/v1/channels/web/items/{sample[i % len(sample)]}")
            results[mode].append((time.perf_counter() - t) * 1000)
            if resp.status_code != 200:
                raise SystemExit(f"channel read: {resp.status_code} {resp.text[:300]}")
    events.view = real_view
    out: dict[str, Any] = {}
    for mode, ms in results.items():
        out[mode] = {**summary(ms), "req_per_s": round(len(ms) / (sum(ms) / 1000))}
    out["slowdown_pct"] = round((out["off"]["req_per_s"] - out["on"]["req_per_s"]) / out["off"]["req_per_s"] * 100, 1)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from app.analytics.rollup import rollup
    from app.core.config import Settings

    tmp = Path(tempfile.mkdtemp(prefix="kb-bench-analytics-"))
    (tmp / "data").mkdir()
    settings = Settings(
        _env_file=None,
        env="dev",
        data_dir=tmp / "data",
        worker_embedded=False,
        job_backoff_seconds=0,
        jwt_secret=secrets.token_urlsafe(48),
        log_level="WARNING",
        analytics_rollup_seconds=0,
        rate_limit_anonymous="10000000/minute",
    )  # the read loop is one address
    out: dict[str, Any] = {"items": args.items, "events": args.events}
    async with served(settings) as (app, client, headers):
        ids = await setup_items(app, client, headers, settings, args.items, tmp)
        print(f"{len(ids):,} items published", flush=True)
        queries = load_questions(DEFAULT_DATA)[:2000]
        out["record"] = await record(app, ids, queries, args.events, args.flush)
        print("record:", out["record"], flush=True)
        t = time.perf_counter()
        out["rollup"] = {"report": await rollup(app.state.sessionmaker)}
        out["rollup"]["seconds"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        await rollup(app.state.sessionmaker)
        out["rollup"]["again_seconds"] = round(time.perf_counter() - t, 1)
        print("rollup:", out["rollup"], flush=True)
        out["report_30_days"] = await report(app, client, headers, args.repeat)
        for k, v in out["report_30_days"].items():
            print(f"  {k:20} {v}", flush=True)
        out["read_path"] = await read_path(app, client, ids, args.rounds, args.per_round)
        print("read path:", out["read_path"], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--flush", type=int, default=10_000, help="rows appended between flushes")
    p.add_argument("--repeat", type=int, default=20, help="calls per report route")
    p.add_argument("--rounds", type=int, default=5, help="ABAB rounds of the read-path comparison")
    p.add_argument("--per-round", type=int, default=400, help="channel reads per round")
    args = p.parse_args()
    t = time.perf_counter()
    out = asyncio.run(main_async(args))
    out["wall_s"] = round(time.perf_counter() - t, 1)
    import json

    print(json.dumps(out, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
