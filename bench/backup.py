"""`kb backup` time and size at N items (default 100,000) on the embedded default.

The demo content (`seed-demo`) is multiplied directly in SQLite (items and their versions copied with
new ids, which is how fast generation goes here; not through the API), then `python -m app backup`
runs as a real process. Prints figures and ends with one JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def multiply(db: Path, items: int) -> int:
    conn = sqlite3.connect(db)
    item_cols = [c for c in columns(conn, "items") if c != "id"]
    ver_cols = [c for c in columns(conn, "item_versions") if c not in ("id", "item_id")]
    while (n := conn.execute("SELECT count(*) FROM items").fetchone()[0]) < items:
        offset = conn.execute("SELECT max(id) FROM items").fetchone()[0]
        take = min(n, items - n)
        src = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY id LIMIT ?", (take,))]
        lo, hi = src[0], src[-1]
        ic = ", ".join(item_cols)
        sel = ", ".join(f"{c} || '-' || (id + {int(offset)})" if c == "external_id" else c for c in item_cols)
        conn.execute(
            f"INSERT INTO items (id, {ic}) SELECT id + ?, {sel} FROM items WHERE id BETWEEN ? AND ?", (offset, lo, hi)
        )
        vc = ", ".join(ver_cols)
        conn.execute(
            f"INSERT INTO item_versions (item_id, {vc}) SELECT item_id + ?, {vc} FROM item_versions "
            "WHERE item_id BETWEEN ? AND ?",
            (offset, lo, hi),
        )
        conn.commit()
    count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    conn.close()
    return count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kb-bench-backup-"))
    env = {**os.environ, "KB_ENV": "dev", "KB_DATA_DIR": str(root / "data"), "KB_LOG_LEVEL": "WARNING"}
    env.pop("KB_DATABASE_URL", None)
    run = [sys.executable, "-m", "app"]
    subprocess.run([*run, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([*run, "seed-demo"], env=env, check=True, capture_output=True)
    t = time.perf_counter()
    items = multiply(root / "data" / "kb.sqlite3", args.items)
    print(f"generated {items:,} items in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    subprocess.run([*run, "backup", str(root / "backup")], env=env, check=True)
    seconds = time.perf_counter() - t
    size = sum(p.stat().st_size for p in (root / "backup").rglob("*") if p.is_file())
    db_size = (root / "data" / "kb.sqlite3").stat().st_size
    print(f"backup of {items:,} items: {seconds:.1f} s, {size / 1e6:.1f} MB (live database {db_size / 1e6:.1f} MB)")
    print(
        json.dumps(
            {
                "bench": "backup",
                "items": items,
                "seconds": round(seconds, 2),
                "mb": round(size / 1e6, 1),
                "live_db_mb": round(db_size / 1e6, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
