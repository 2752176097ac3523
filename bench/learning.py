"""Training and exams on the embedded default (SQLite): assembling a 50-question paper from a bank
built on 100,000 items, and 500 agents submitting an exam within one minute over HTTP.

1. paper: `--items` published FAQ items (inserted through the models, straight into the tables, to
   set up quickly) in 宽带业务 and 10 sub-categories plus other trees, one approved question per item
   (kinds and difficulties mixed, each linked to its item and categories); then the real
   `POST /api/v1/learning/papers` by rules (30 single choice of difficulty 2 and 10 multiple choice
   of difficulty 3 in 宽带业务, 10 true/false anywhere), `--repeat` times: p50/p99/max.
2. exam: a 10-question paper assigned to the agent role, `--agents` agents (users with real JWTs);
   the project's own `python -m app serve` on a local port, and every agent, at a random moment of
   `--seconds` seconds, starts the attempt, saves answers and submits (three HTTP requests, over
   keep-alive connections): p50/p99 of each step, the errors, and the number of completed attempts
   in the database afterwards (none may be lost).

Figures only: this is not a test. `make bench-learning`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from benchapp import served  # noqa: E402
from search_http import free_port, stop_server, wait_ready  # noqa: E402

CHUNK = 5_000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": round(max(ms), 1)} if ms else {}


async def build_bank(app: Any, n: int) -> dict[str, int]:
    """Items, versions, categories and one approved question per item, inserted in bulk."""
    from sqlalchemy import insert, update

    from app.core.db import utcnow
    from app.knowledge.models import Item, ItemVersion, version_categories
    from app.learning.models import Question, QuestionCategory, QuestionItem
    from app.taxonomy.models import Taxonomy, TaxonomyNode

    rng = random.Random(17)
    now = utcnow()
    async with app.state.sessionmaker() as s:
        tax = Taxonomy(code="kb_category", name="知识分类")
        s.add(tax)
        await s.flush()
        nodes: dict[str, int] = {}
        leaves: list[int] = []
        for root, children in (
            ("宽带业务", [f"宽带子类{i}" for i in range(10)]),
            ("手机业务", [f"手机子类{i}" for i in range(10)]),
            ("信用卡", [f"信用卡子类{i}" for i in range(10)]),
        ):
            p = TaxonomyNode(taxonomy_id=tax.id, name=root, path="/")
            s.add(p)
            await s.flush()
            p.path = f"/{p.id}/"
            nodes[root] = p.id
            for child in children:
                c = TaxonomyNode(taxonomy_id=tax.id, parent_id=p.id, name=child, path="/")
                s.add(c)
                await s.flush()
                c.path = f"{p.path}{c.id}/"
                leaves.append(c.id)
        await s.commit()
        kinds = ["single_choice"] * 6 + ["multiple_choice"] * 2 + ["true_false"] + ["fill_in"]
        for start in range(1, n + 1, CHUNK):
            ids = range(start, min(n, start + CHUNK - 1) + 1)
            await s.execute(
                insert(Item),
                [
                    {
                        "id": i,
                        "item_type": "faq",
                        "status": "published",
                        "visibility": "internal",
                        "latest_version_no": 1,
                        "row_version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
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
                        "title": f"宽带问题 {i} 怎么处理",
                        "question": f"宽带问题 {i} 怎么处理",
                        "similar_questions": [],
                        "body": f"<p>处理办法 {i}。</p>",
                        "body_format": "html",
                        "channel_answers": {"agent": f"处理办法 {i}。"},
                        "channels": ["agent"],
                        "attributes": {},
                        "change_note": "",
                        "created_at": now,
                        "updated_at": now,
                        "published_at": now,
                    }
                    for i in ids
                ],
            )
            await s.execute(update(Item).where(Item.id.in_(list(ids))).values(published_version_id=Item.id))
            cats = {i: rng.choice(leaves) for i in ids}
            await s.execute(insert(version_categories), [{"version_id": i, "node_id": cats[i]} for i in ids])
            rows = []
            for i in ids:
                kind = rng.choice(kinds)
                options = (
                    []
                    if kind in ("true_false", "fill_in")
                    else [{"key": k, "text": f"处理办法 {i + d}。"} for d, k in enumerate("ABCD")]
                )
                answer = {
                    "single_choice": ["A"],
                    "multiple_choice": ["A", "C"],
                    "true_false": ["true"],
                    "fill_in": [str(i)],
                }[kind]
                rows.append(
                    {
                        "id": i,
                        "kind": kind,
                        "stem": f"宽带问题 {i} 怎么处理？",
                        "options": options,
                        "answer": answer,
                        "explanation": "",
                        "difficulty": rng.randint(1, 5),
                        "state": "approved",
                        "needs_review": False,
                        "source": "generated",
                        "created_by": "bench",
                        "updated_by": "bench",
                        "row_version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            await s.execute(insert(Question), rows)
            await s.execute(insert(QuestionCategory), [{"question_id": i, "node_id": cats[i]} for i in ids])
            await s.execute(
                insert(QuestionItem), [{"question_id": i, "item_id": i, "version": 1, "role": "source"} for i in ids]
            )
            await s.commit()
    return nodes


async def paper_bench(client: Any, headers: dict[str, str], broadband: int, repeat: int) -> dict[str, Any]:
    rules = [
        {"kind": "single_choice", "difficulty": 2, "categories": [broadband], "count": 30, "score": 2},
        {"kind": "multiple_choice", "difficulty": 3, "categories": [broadband], "count": 10, "score": 2},
        {"kind": "true_false", "count": 10, "score": 2},
    ]
    ms: list[float] = []
    for i in range(repeat):
        t = time.perf_counter()
        r = await client.post(
            "/api/v1/learning/papers",
            headers=headers,
            json={"title": f"宽带上岗考试 {i}", "rules": rules, "total_score": 100},
        )
        ms.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        assert r.json()["question_count"] == 50
    return summary(ms)


async def exam_setup(app: Any, client: Any, headers: dict[str, str], agents: int) -> tuple[int, list[str], Any]:
    """A 10-question paper, an exam for the agent role, `agents` agent users and their tokens."""
    from app.core.db import utcnow
    from app.identity.models import Role, User
    from app.identity.service import ensure_default_roles

    r = await client.post(
        "/api/v1/learning/papers",
        headers=headers,
        json={"title": "新人宽带上岗考试", "questions": [{"question_id": q, "score": 10} for q in range(1, 11)]},
    )
    r.raise_for_status()
    paper = r.json()
    now = utcnow()
    r = await client.post(
        "/api/v1/learning/exams",
        headers=headers,
        json={
            "paper_id": paper["id"],
            "audience": {"roles": ["agent"]},
            "opens_at": (now - timedelta(minutes=1)).isoformat(),
            "closes_at": (now + timedelta(hours=2)).isoformat(),
            "time_limit_minutes": 30,
        },
    )
    r.raise_for_status()
    exam_id = r.json()["id"]
    async with app.state.sessionmaker() as s:
        roles = await ensure_default_roles(s)
        agent_role: Role = roles["agent"]
        users = [
            User(username=f"agent{i:04d}", display_name=f"坐席{i}", password_hash="x", roles=[agent_role])
            for i in range(agents)
        ]
        s.add_all(users)
        await s.commit()
        codec = app.state.token_codec
        tokens = [
            codec.encode({"sub": f"user:{u.id}", "typ": "access", "ver": u.token_version}, timedelta(hours=3))[0]
            for u in users
        ]
    return exam_id, tokens, paper


def answers_for(paper: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q in paper["questions"]:
        right = rng.random() < 0.8
        if q["kind"] == "single_choice":
            out[str(q["question_id"])] = q["answer"][0] if right else "B"
        elif q["kind"] == "multiple_choice":
            out[str(q["question_id"])] = q["answer"] if right else ["B"]
        elif q["kind"] == "true_false":
            out[str(q["question_id"])] = right
        else:
            out[str(q["question_id"])] = q["answer"][0] if right else "不知道"
    return out


async def exam_bench(
    data_dir: Path, jwt_secret: str, exam_id: int, tokens: list[str], paper: dict[str, Any], seconds: float
) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KB_ENV": "dev",
        "KB_DATA_DIR": str(data_dir),
        "KB_JWT_SECRET": jwt_secret,
        "KB_LOG_LEVEL": "WARNING",
        "KB_HOST": "127.0.0.1",
        "KB_PORT": str(port),
        "KB_WORKERS": "1",
        "KB_RATE_LIMIT_ENABLED": "false",
        "KB_WORKER_EMBEDDED": "false",
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", cwd=data_dir, env=env)
    timings: dict[str, list[float]] = {"start": [], "save": [], "submit": []}
    errors: list[str] = []
    rng = random.Random(5)
    try:
        await wait_ready(base, proc)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            t0 = time.monotonic()

            async def agent(token: str, at: float, answers: dict[str, Any]) -> None:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
                h = {"Authorization": f"Bearer {token}"}
                url = f"/api/v1/me/exams/{exam_id}/attempt"
                for step, method, path, body in (
                    ("start", "POST", url, None),
                    ("save", "PUT", f"{url}/answers", {"answers": answers}),
                    ("submit", "POST", f"{url}/submit", {}),
                ):
                    t = time.perf_counter()
                    r = await client.request(method, path, headers=h, json=body)
                    timings[step].append((time.perf_counter() - t) * 1000)
                    if r.status_code >= 400:
                        errors.append(f"{step} {r.status_code} {r.text[:120]}")
                        return

            await asyncio.gather(*(agent(tok, rng.uniform(0, seconds), answers_for(paper, rng)) for tok in tokens))
            wall = time.monotonic() - t0
    finally:
        await stop_server(proc)
    return {
        "agents": len(tokens),
        "wall_s": round(wall, 1),
        "errors": len(errors),
        "first_errors": errors[:3],
        **{step: summary(ms) for step, ms in timings.items()},
    }


async def count_completed(app_settings: Any, exam_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.core.db import make_engine, make_sessionmaker
    from app.learning.models import Attempt

    engine = make_engine(app_settings.database_url)
    async with make_sessionmaker(engine)() as s:
        rows = dict(
            (
                await s.execute(
                    select(Attempt.state, func.count()).where(Attempt.exam_id == exam_id).group_by(Attempt.state)
                )
            ).all()
        )
    await engine.dispose()
    return rows


async def run(args: argparse.Namespace) -> None:
    from app.core.config import Settings

    with tempfile.TemporaryDirectory(prefix="kb-bench-learning-") as tmp:
        data_dir = Path(tmp)
        secret = secrets.token_urlsafe(48)
        settings = Settings(
            _env_file=None,
            env="dev",
            data_dir=data_dir,
            jwt_secret=secret,
            worker_embedded=False,
            rate_limit_enabled=False,
        )
        async with served(settings) as (app, client, headers):
            t = time.perf_counter()
            nodes = await build_bank(app, args.items)
            print(
                f"bank: {args.items:,} items and approved questions inserted in {time.perf_counter() - t:.1f} s",
                flush=True,
            )
            figures = await paper_bench(client, headers, nodes["宽带业务"], args.repeat)
            print(f"POST /learning/papers, 50 questions by 3 rules from {args.items:,}: {figures}", flush=True)
            exam_id, tokens, paper = await exam_setup(app, client, headers, args.agents)
        result = await exam_bench(data_dir, secret, exam_id, tokens, paper, args.seconds)
        print(f"{args.agents} agents start, save and submit within {args.seconds:g} s over HTTP: {result}", flush=True)
        states = await count_completed(settings, exam_id)
        lost = args.agents - states.get("completed", 0)
        print(f"attempts in the database: {states}; lost submissions: {lost}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
