"""`hot` over a large view history, and the cost of writing views in batches.

    .venv/bin/python bench/channel_hot.py                      # 100,000 items, 30 days, SQLite
    .venv/bin/python bench/channel_hot.py --items 20000 --database-url postgresql+asyncpg://...

1. A fresh database built by the Alembic migrations (SQLite in a temporary folder unless
   --database-url names an empty PostgreSQL database). Items FOR SPEED by bulk INSERT (items,
   their published version, their read set "public"): the channel filter and ACL are the real
   ones, the content is not. The daily rollup gets --days of rows for every item viewed
   (views Zipf-distributed: a few hot answers, a long tail), as the flushes would have left it.
2. `app.channels.events.hot` (the function behind the endpoint) as an anonymous web visitor:
   the ranking computed (rollup sum over the window, top 200; once per `hot_ttl` per process)
   and served from the cache (the 200 filtered by what the caller sees now, top 10).
3. `ChannelEvents.flush` of --batch queued views (raw rows + rollup upsert): the write cost a
   process pays every 0.5 s under that load.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchapp import migrate  # noqa: E402

from app.channels.access import ChannelCaller, anonymous  # noqa: E402
from app.channels.events import ChannelEvents, hot  # noqa: E402
from app.channels.models import ChannelViewDay  # noqa: E402
from app.core.db import make_engine, make_sessionmaker, utcnow  # noqa: E402
from app.knowledge.models import Item, ItemReader, ItemVersion  # noqa: E402
from app.taxonomy.service import ensure_default_item_types  # noqa: E402


async def fill(maker: object, items: int, days: int, viewed_share: float) -> int:
    now = utcnow()
    today = now.date()
    rnd = random.Random(7)
    rows = 0
    async with maker() as s:  # type: ignore[operator]
        await ensure_default_item_types(s)
        await s.commit()
        step = 5000
        for start in range(1, items + 1, step):
            ids = range(start, min(start + step, items + 1))
            await s.execute(
                insert(Item),
                [
                    {"id": i, "item_type": "faq", "status": "published", "visibility": "public", "latest_version_no": 1}
                    for i in ids
                ],
            )
            await s.execute(
                insert(ItemVersion),
                [
                    {
                        "id": i,
                        "item_id": i,
                        "number": 1,
                        "state": "published",
                        "title": f"常见问题 {i}",
                        "question": f"问题 {i} 怎么办",
                        "channels": ["agent", "web", "wechat", "app"],
                    }
                    for i in ids
                ],
            )
            await s.execute(insert(ItemReader), [{"item_id": i, "subject": "public"} for i in ids])
            await s.execute(
                text("UPDATE items SET published_version_id = id WHERE id >= :a AND id < :b"),
                {"a": start, "b": start + step},
            )
        await s.commit()
        viewed = rnd.sample(range(1, items + 1), int(items * viewed_share))
        batch: list[dict[str, object]] = []
        for rank, item in enumerate(viewed, 1):
            base = max(1, int(10_000 / rank))  # Zipf: 10,000 views a day for the first, 1 for the tail
            for d in range(days):
                batch.append(
                    {
                        "channel": "web",
                        "day": today - timedelta(days=d),
                        "item_id": item,
                        "views": max(1, int(base * rnd.uniform(0.5, 1.5))),
                    }
                )
            if len(batch) >= 20_000:
                await s.execute(insert(ChannelViewDay), batch)
                rows += len(batch)
                batch = []
        if batch:
            await s.execute(insert(ChannelViewDay), batch)
            rows += len(batch)
        await s.commit()
    return rows


async def timed(fn: object, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30, help="days of history in the rollup")
    ap.add_argument("--viewed", type=float, default=0.5, help="share of the items viewed every day")
    ap.add_argument("--batch", type=int, default=2000, help="views queued per flush")
    ap.add_argument("--database-url")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kb-hot-")
    url = args.database_url or f"sqlite+aiosqlite:///{tmp}/kb.sqlite3"
    await asyncio.to_thread(migrate, url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    t = time.perf_counter()
    rows = await fill(maker, args.items, args.days, args.viewed)
    print(f"{args.items:,} items, {rows:,} rollup rows ({args.days} days) in {time.perf_counter() - t:.0f} s")
    caller = ChannelCaller("web", anonymous("web"), "203.0.113.7")
    events = ChannelEvents(maker)
    for days in (1, 7, 30):
        async with maker() as s:

            async def cold(s: object = s, days: int = days) -> None:
                events.forget_rankings()
                await hot(s, caller, days, 10, events)  # type: ignore[arg-type]

            async def warm(s: object = s, days: int = days) -> None:
                await hot(s, caller, days, 10, events)  # type: ignore[arg-type]

            c50, _ = await timed(cold, 3)
            w50, w99 = await timed(warm, 200)
        print(
            f"hot days={days:<3} limit=10: ranking computed (once per 30 s) median {c50:7.1f} ms;"
            f" cached p50 {w50:5.2f} ms p99 {w99:5.2f} ms"
        )
    rnd = random.Random(3)
    flushes = []
    for _ in range(10):
        for _ in range(args.batch):
            events.view(
                channel="web",
                item_id=rnd.randint(1, args.items),
                version=1,
                actor=None,
                address="203.0.113.7",
                query="宽带断网了怎么办",
                search_id=None,
            )
        t = time.perf_counter()
        await events.flush()
        flushes.append((time.perf_counter() - t) * 1000)
    print(f"flush of {args.batch:,} views (rows + rollup upsert): median {statistics.median(flushes):.0f} ms")
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
