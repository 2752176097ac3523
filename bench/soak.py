"""Soak: mixed reads, searches and writes at a fixed rate against `KB_WORKERS=2 python -m app serve`.

    .venv/bin/python bench/soak.py                  # 10 minutes at 30 requests/s
    .venv/bin/python bench/soak.py --seconds 180 --rate 40

1. A fresh data folder (temporary, or --keep DIR): `python -m app migrate`, then the project's own
   `python -m app serve` on 127.0.0.1 (a free port) with --server-workers API processes, the
   embedded default (SQLite, Tantivy, Tika in process), an administrator created by
   KB_BOOTSTRAP_ADMIN_*. Loopback only.
2. Setup (not measured): --seed-items call-center items created and published over HTTP.
3. The soak: request i is due at start + i / rate (open loop: a slow answer does not slow the
   schedule; --connections keep-alive clients take the due requests in turn), for --seconds.
   The mix: 30 % read an item, 10 % list items, 40 % search (1-3 words), 20 % a write step. A
   write step is the next step of an item's life: create, edit its draft twice (If-Match), then
   submit, approve, publish, attach a file; then the item is done and a new one starts.
4. Figures: requests and rate achieved, 5xx count (target 0), other non-2xx, p50/p99 per kind,
   RSS of every server process at the start of the soak and at its end (and the largest seen,
   sampled every 10 s), jobs failed and pending at the end, and the drift reported by
   POST /api/v1/search/consistency after the outbox has caught up.

The last line of output is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from search_http import stop_server, wait_ready

ROOT = Path(__file__).resolve().parent.parent
ADMIN, PASSWORD = "soak-admin", "Soak@2026kb-管理员"

TOPICS = [
    ("宽带无法上网", "光猫LOS灯红色闪烁，请检查尾纤；仍不亮请报修，装维24小时内上门。", ["宽带", "光猫", "报修"]),
    ("信用卡挂失", "信用卡遗失请立即致电95588挂失，挂失后可申请补卡，工本费20元。", ["信用卡", "挂失", "补卡"]),
    (
        "电费缴纳方式",
        "可通过网上国网APP、支付宝生活缴费或营业厅缴纳电费，欠费停电缴清后24小时内复电。",
        ["电费", "缴费", "复电"],
    ),
    ("5G套餐变更", "5G畅享套餐次月生效，当月变更不退差价；iPhone 15 支持 5G SA。", ["5G", "套餐", "变更"]),
    (
        "携号转网条件",
        "在网满120天、无欠费、无合约限制即可申请携号转网，发送 CXXZ 到10086查询。",
        ["携号转网", "欠费", "合约"],
    ),
    ("燃氣表故障", "燃氣表顯示E1請更換電池；仍無法使用請撥打客服熱線預約維修。", ["燃气表", "电池", "维修"]),
]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(50), "p99": at(99), "max": round(ordered[-1], 2)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_processes(parent: int) -> dict[str, int]:
    """The supervisor and the API processes `serve` started (multiprocessing spawn children)."""
    out = {"supervisor": parent}
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    api = [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    out.update({f"api-{i}": pid for i, pid in enumerate(sorted(api))})
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except FileNotFoundError:
        return None
    return None


def item_body(rng: random.Random, n: int) -> dict[str, Any]:
    title, body, _ = TOPICS[n % len(TOPICS)]
    return {
        "title": f"{title}（第{n}条）",
        "question": f"{title}怎么办？",
        "similar_questions": [f"{title}如何处理"],
        "body": f"<p>{body} 工单号 SK-{n:06d}。</p>",
        "visibility": "public",
        "tags": [title[:2]],
    }


class Load:
    """The soak's clients: one shared schedule, per-kind latencies and status counts."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], rng: random.Random) -> None:
        self.c, self.h, self.rng = client, headers, rng
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.transport_errors = 0
        self.published: list[int] = []
        self.in_progress: list[dict[str, Any]] = []  # items in their write pipeline
        self.created = 0

    async def timed(self, kind: str, method: str, url: str, **kw: Any) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r = await self.c.request(method, url, headers={**self.h, **kw.pop("headers", {})}, **kw)
        except httpx.TransportError:
            self.transport_errors += 1
            return None
        self.latency[kind].append((time.perf_counter() - t) * 1000)
        self.statuses[kind][r.status_code] += 1
        return r

    async def read(self) -> None:
        if self.published:
            await self.timed("read", "GET", f"/api/v1/items/{self.rng.choice(self.published)}")

    async def list(self) -> None:
        await self.timed("list", "GET", "/api/v1/items", params={"limit": 20})

    async def search(self) -> None:
        words = [w for _, _, ws in self.rng.sample(TOPICS, 2) for w in ws]
        q = " ".join(self.rng.sample(words, self.rng.randint(1, 3)))
        await self.timed("search", "GET", "/api/v1/search", params={"q": q})

    async def write(self) -> None:
        """The next step of one item's life (several items are in progress at once)."""
        if not self.in_progress or (len(self.in_progress) < 4 and self.rng.random() < 0.3):
            self.created += 1
            state = {"n": self.created, "step": 0}
            self.in_progress.append(state)
        else:
            state = self.in_progress.pop(0)
            self.in_progress.append(state)
        if state.get("busy"):
            return await self.search()  # its previous step is still in flight: the slot searches
        state["busy"] = True
        try:
            await self._step(state)
        finally:
            state["busy"] = False

    async def _step(self, state: dict[str, Any]) -> None:
        step = state["step"]
        if step == 0:
            r = await self.timed("create", "POST", "/api/v1/items", json=item_body(self.rng, 100_000 + state["n"]))
            if r is not None and r.status_code == 201:
                state.update(id=r.json()["id"], etag=r.headers["etag"], step=1)
            return
        item = f"/api/v1/items/{state['id']}"
        if step in (1, 2):
            body = f"<p>第{step}次修订：{TOPICS[state['n'] % len(TOPICS)][1]}</p>"
            r = await self.timed(
                "edit",
                "PATCH",
                f"{item}/draft",
                headers={"If-Match": state["etag"]},
                json={"body": body, "change_note": f"修订{step}"},
            )
        elif step in (3, 4, 5):
            action = ("submit", "approve", "publish")[step - 3]
            r = await self.timed("workflow", "POST", f"{item}/versions/1/{action}", headers={"If-Match": state["etag"]})
        else:
            text = f"处理回单 SK-{state['n']:06d}\n已联系客户并解决。\n".encode()
            r = await self.timed(
                "upload", "POST", f"{item}/attachments", files={"files": (f"回单-{state['n']}.txt", text, "text/plain")}
            )
        if r is None or r.status_code >= 300:
            return  # counted; the step is tried again next time
        state["etag"] = r.headers.get("etag", state["etag"])
        if step == 5:
            self.published.append(state["id"])
        state["step"] += 1
        if state["step"] > 6:
            self.in_progress.remove(state)

    async def one(self) -> None:
        x = self.rng.random()
        if x < 0.30:
            await self.read()
        elif x < 0.40:
            await self.list()
        elif x < 0.80:
            await self.search()
        else:
            await self.write()


async def paced(load: Load, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    """Bounded open loop: exactly rate * seconds requests, each due at its time."""
    total = int(rate * seconds)
    queue = iter(range(total))
    late: list[float] = []
    start = time.perf_counter() + 0.2

    async def worker() -> None:
        for i in queue:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late.append(-delay * 1000)
            await load.one()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "seconds": round(elapsed, 1),
        "rate": round(total / elapsed, 2),
        "late_starts": len(late),
        "late_p99_ms": percentiles(late).get("p99", 0),
    }


async def sample_rss(pids: dict[str, int], peak: dict[str, float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for name, pid in pids.items():
            mb = rss_mb(pid)
            if mb is not None:
                peak[name] = max(peak.get(name, 0.0), mb)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 10)


async def settle(c: httpx.AsyncClient, h: dict[str, str]) -> dict[str, Any]:
    """After the soak: wait for the outbox, then ask for the index's drift."""

    def due(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [j for j in jobs if j["kind"] != "attachments.collect_orphans"]  # the daily run, queued

    async def count(status: str) -> int:
        r = await c.get("/api/v1/jobs", headers=h, params={"status": status, "limit": 100})
        return len(due(r.json()["items"]))

    deadline = time.monotonic() + 120
    while await count("pending") or await count("running"):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    out: dict[str, Any] = {
        "jobs_pending": await count("pending"),
        "jobs_running": await count("running"),
        "jobs_failed": await count("failed"),
    }
    r = await c.post("/api/v1/search/consistency", headers=h)
    href = r.json()["href"]
    while (job := (await c.get(href, headers=h)).json())["status"] in ("pending", "running"):
        if time.monotonic() > deadline + 60:
            break
        await asyncio.sleep(0.5)
    report = job.get("result") or {}
    out["consistency"] = {
        k: (len(report[k]) if isinstance(report.get(k), list) else report.get(k))
        for k in ("expected", "indexed", "missing", "stale", "extra")
    }
    return out


async def run(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KB_ENV": "dev",
        "KB_DATA_DIR": str(data),
        "KB_HOST": "127.0.0.1",
        "KB_PORT": str(port),
        "KB_WORKERS": str(args.server_workers),
        "KB_LOG_LEVEL": "WARNING",
        "KB_JWT_SECRET": "soak-" + "s" * 40,
        "KB_BOOTSTRAP_ADMIN_USER": ADMIN,
        "KB_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
    }
    env.pop("KB_DATABASE_URL", None)  # the SQLite file in the data folder
    migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "migrate", cwd=data, env=env)
    if await migrate.wait():
        raise SystemExit("migrate failed")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", cwd=data, env=env)
    try:
        await wait_ready(base, proc, path="/readyz")
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
            r = await c.post(
                "/api/v1/auth/token", data={"grant_type": "password", "username": ADMIN, "password": PASSWORD}
            )
            r.raise_for_status()
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}
            rng = random.Random(7)
            load = Load(c, h, rng)
            t = time.perf_counter()
            for n in range(args.seed_items):
                r = await c.post("/api/v1/items", headers=h, json=item_body(rng, n))
                item_id, etag = r.json()["id"], r.headers["etag"]
                for action in ("submit", "approve", "publish"):
                    r = await c.post(f"/api/v1/items/{item_id}/versions/1/{action}", headers={**h, "If-Match": etag})
                    etag = r.headers["etag"]
                load.published.append(item_id)
            print(f"  seeded {args.seed_items} published items in {time.perf_counter() - t:.1f} s", flush=True)
            await asyncio.sleep(2)  # the seed's index jobs

            pids = server_processes(proc.pid)
            rss_start = {name: rss_mb(pid) for name, pid in pids.items()}
            peak: dict[str, float] = {}
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(pids, peak, stop))
            print(
                f"  soak: {args.rate}/s for {args.seconds} s over {args.connections} connections; "
                f"RSS at start {rss_start}",
                flush=True,
            )
            schedule = await paced(load, args.rate, args.seconds, args.connections)
            stop.set()
            await sampler
            rss_end = {name: rss_mb(pid) for name, pid in pids.items()}
            restarted = server_processes(proc.pid) != pids
            after = await settle(c, h)

        kinds = sorted(load.latency)
        status_5xx = sum(k for per in load.statuses.values() for s, k in per.items() if s >= 500)
        other = {kind: {str(s): k for s, k in per.items() if 300 <= s < 500} for kind, per in load.statuses.items()}
        return {
            **schedule,
            "server_workers": args.server_workers,
            "connections": args.connections,
            "status_5xx": status_5xx,
            "transport_errors": load.transport_errors,
            "non_2xx_below_500": {k: v for k, v in other.items() if v},
            "latency_ms": {kind: percentiles(load.latency[kind]) for kind in kinds},
            "items_created": load.created,
            "items_published_during_soak": len(load.published) - args.seed_items,
            "rss_mb": {name: {"start": rss_start[name], "end": rss_end[name], "peak": peak.get(name)} for name in pids},
            "process_restarted": restarted,
            **after,
        }
    finally:
        await stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=30, help="requests per second, all kinds")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--seed-items", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="keep the data folder here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        data = args.keep
    else:
        data = Path(tempfile.mkdtemp(prefix="kb-soak-"))
    try:
        result = asyncio.run(run(args, data))
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(
        f"  {result['requests']} requests in {result['seconds']} s ({result['rate']}/s): "
        f"{result['status_5xx']} x 5xx, {result['transport_errors']} transport errors"
    )
    for kind, p in result["latency_ms"].items():
        print(f"  {kind:9} {p}")
    for name, rss in result["rss_mb"].items():
        print(f"  RSS {name:10} {rss}")
    print(
        f"  after: jobs failed {result['jobs_failed']}, pending {result['jobs_pending']}; "
        f"consistency {result['consistency']}"
    )
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
