"""Questions, papers and exams made through the API for the tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import Actor
from tests.learning.conftest import call, iso

API = "/api/v1/learning"


async def question(client: httpx.AsyncClient, who: Actor, *, approve: bool = True, **fields: Any) -> dict[str, Any]:
    body = {
        "kind": "single_choice",
        "stem": "宽带报修电话是多少？",
        "options": ["10000", "10086", "95588"],
        "answer": ["A"],
        "difficulty": 2,
        **fields,
    }
    r = await call(client, "POST", f"{API}/questions", who, json=body)
    assert r.status_code == 201, r.text
    q = r.json()
    if approve:
        r = await call(client, "POST", f"{API}/questions/{q['id']}/approve", who, etag=q["etag"])
        assert r.status_code == 200, r.text
        q = r.json()
    return q


async def paper(
    client: httpx.AsyncClient,
    who: Actor,
    questions: list[dict[str, Any]],
    scores: list[float] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    scores = scores or [10] * len(questions)
    r = await call(
        client,
        "POST",
        f"{API}/papers",
        who,
        json={
            "title": "宽带业务抽考",
            "questions": [{"question_id": q["id"], "score": s} for q, s in zip(questions, scores, strict=True)],
            **fields,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


async def exam(
    client: httpx.AsyncClient, who: Actor, paper_id: int, audience: dict[str, Any], minutes: int = 30, **fields: Any
) -> dict[str, Any]:
    body = {
        "paper_id": paper_id,
        "audience": audience,
        "opens_at": iso(-timedelta(minutes=1)),
        "closes_at": iso(timedelta(days=1)),
        "time_limit_minutes": minutes,
        **fields,
    }
    r = await call(client, "POST", f"{API}/exams", who, json=body)
    assert r.status_code == 201, r.text
    return r.json()
