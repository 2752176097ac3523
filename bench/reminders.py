"""The review-reminder job over many items: runs until nothing is left, and one idle run.

    .venv/bin/python bench/reminders.py                       # 100,000 items, SQLite
    .venv/bin/python bench/reminders.py --items 20000 --database-url postgresql+asyncpg://...

A fresh database built by the Alembic migrations (SQLite in a temporary folder unless
--database-url names an empty PostgreSQL database). Published items by bulk INSERT: half past
their review date, half expiring in 5 days. Then `run_reminders` (the job's body) one
transaction per run, as the job does, until no step is full; then a run with nothing to do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.db import make_engine, make_sessionmaker, utcnow  # noqa: E402
from app.feedback.models import Task  # noqa: E402
from app.feedback.reminders import run_reminders  # noqa: E402
from app.knowledge.models import Item  # noqa: E402
from app.taxonomy.service import ensure_default_item_types  # noqa: E402
from tests.conftest import alembic_config  # noqa: E402


async def bench(url: str, n: int) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    async with sm() as s:
        await ensure_default_item_types(s)
        await s.commit()
    now = utcnow()
    past = (now - timedelta(days=2)).date()
    rows = [
        {
            "item_type": "faq",
            "status": "published",
            "visibility": "internal",
            "review_due": past if i % 2 == 0 else None,
            "valid_to": now + timedelta(days=5) if i % 2 else None,
            "latest_version_no": 1,
            "row_version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    async with sm() as s:
        for k in range(0, n, 10_000):
            await s.execute(insert(Item.__table__), rows[k : k + 10_000])
        await s.commit()
    runs, worst, start = 0, 0.0, time.perf_counter()
    while True:
        t = time.perf_counter()
        async with sm() as s:
            report = await run_reminders(s, warning_days=14)
            await s.commit()
        worst, runs = max(worst, time.perf_counter() - t), runs + 1
        if not report["more"]:
            break
    total = time.perf_counter() - start
    t = time.perf_counter()
    async with sm() as s:
        await run_reminders(s, warning_days=14)
        await s.commit()
    idle = time.perf_counter() - t
    async with sm() as s:
        tasks = await s.scalar(select(func.count()).select_from(Task))
    await engine.dispose()
    print(
        f"{engine.dialect.name}: {n} items -> {tasks} tasks in {runs} runs, {total:.1f} s in all, "
        f"slowest run {worst:.2f} s, idle run {idle:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.sqlite3", args.items))


if __name__ == "__main__":
    main()
