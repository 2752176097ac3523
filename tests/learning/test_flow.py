"""The issue's "done when": a supervisor generates a paper from the broadband category, approves its
questions, assigns it to new agents, who take it with a time limit and see their score and the
items to study."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import Actor
from tests.learning.conftest import BROADBAND, Kb, call, iso

API = "/api/v1/learning"


async def test_supervisor_to_agents_score_and_items_to_study(
    client: httpx.AsyncClient,
    kb: Kb,
    supervisor: Actor,
    newcomers: tuple[int, list[Actor]],
    broadband: list[dict[str, Any]],
) -> None:
    parent_id, (liu, huang) = newcomers
    answers = {item["id"]: row[3] for item, row in zip(broadband, BROADBAND, strict=True)}

    # 出题: every broadband FAQ becomes a draft single-choice question
    r = await call(
        client, "POST", f"{API}/questions/generate", supervisor, json={"category_id": kb.nodes["宽带业务"], "count": 6}
    )
    assert r.status_code == 201, r.text
    created = r.json()["created"]
    assert len(created) == 6 and r.json()["skipped"] == []
    for q in created:
        assert q["state"] == "draft" and q["source"] == "generated" and q["kind"] == "single_choice"
        source = next(lk for lk in q["items"] if lk["role"] == "source")
        right = next(o["text"] for o in q["options"] if o["key"] == q["answer"][0])
        assert right == answers[source["item_id"]]
        texts = [o["text"] for o in q["options"]]
        assert len(texts) == 4 and len(set(texts)) == 4
        assert set(texts) - {right} <= set(answers.values())  # wrong options: other broadband answers
    # a second run makes nothing new: each item has its question
    r = await call(
        client, "POST", f"{API}/questions/generate", supervisor, json={"category_id": kb.nodes["宽带业务"], "count": 6}
    )
    assert r.json()["created"] == []

    # drafts stay out of papers until approved
    rule = {"kind": "single_choice", "count": 5, "categories": [kb.nodes["宽带业务"]], "score": 20}
    r = await call(client, "POST", f"{API}/papers", supervisor, json={"title": "新人宽带上岗考试", "rules": [rule]})
    assert r.status_code == 422 and r.json()["code"] == "rule_not_met"
    r = await call(
        client, "POST", f"{API}/questions/approve", supervisor, json={"question_ids": [q["id"] for q in created]}
    )
    assert r.status_code == 200 and sorted(r.json()["approved"]) == sorted(q["id"] for q in created)

    r = await call(
        client,
        "POST",
        f"{API}/papers",
        supervisor,
        json={"title": "新人宽带上岗考试", "rules": [rule], "total_score": 100, "pass_score": 60, "seed": 7},
    )
    assert r.status_code == 201, r.text
    paper = r.json()
    assert paper["question_count"] == 5 and paper["total_score"] == 100

    # assigned to the parent department: its sub-department's new agents are in the audience
    r = await call(
        client,
        "POST",
        f"{API}/exams",
        supervisor,
        json={
            "paper_id": paper["id"],
            "audience": {"departments": [parent_id]},
            "opens_at": iso(-timedelta(minutes=5)),
            "closes_at": iso(timedelta(days=3)),
            "time_limit_minutes": 30,
        },
    )
    assert r.status_code == 201, r.text
    exam = r.json()

    r = await call(client, "GET", "/api/v1/me/todo", liu)
    assert r.json()["sections"]["exams"]["items"][0]["id"] == exam["id"]
    r = await call(client, "GET", "/api/v1/me/exams", liu)
    assert [(e["id"], e["status"]) for e in r.json()["items"]] == [(exam["id"], "open")]

    r = await call(client, "POST", f"/api/v1/me/exams/{exam['id']}/attempt", liu)
    assert r.status_code == 201, r.text
    attempt = r.json()
    assert 29 * 60 < attempt["remaining_seconds"] <= 30 * 60
    assert all("answer" not in q and "explanation" not in q for q in attempt["questions"])
    key = {q["question_id"]: q["answer"][0] for q in paper["questions"]}
    qids = [q["question_id"] for q in attempt["questions"]]
    wrong_qid = qids[0]
    mine = {str(qid): key[qid] for qid in qids[1:]}
    mine[str(wrong_qid)] = next(o["key"] for o in attempt["questions"][0]["options"] if o["key"] != key[wrong_qid])
    r = await call(
        client,
        "PUT",
        f"/api/v1/me/exams/{exam['id']}/attempt/answers",
        liu,
        json={"answers": {str(qids[1]): key[qids[1]]}},
    )
    assert r.status_code == 200 and r.json()["answers"] == {str(qids[1]): key[qids[1]]}
    r = await call(client, "POST", f"/api/v1/me/exams/{exam['id']}/attempt/submit", liu, json={"answers": mine})
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["score"], result["passed"], result["state"]) == (80, True, "completed")
    assert [w["question_id"] for w in result["wrong"]] == [wrong_qid]
    study = result["wrong"][0]["study"]
    wrong_item = next(lk["item_id"] for lk in paper["questions"][0]["items"] if lk["role"] == "source")
    assert [s["link"] for s in study] == [f"/api/v1/items/{wrong_item}"]
    assert result["wrong"][0]["right_answer"] is None and not result["answers_released"]

    r = await call(client, "GET", "/api/v1/me/todo", liu)
    assert "exams" not in r.json()["sections"] or r.json()["sections"]["exams"]["count"] == 0

    # the other new agent runs out of answers: all wrong, failed
    r = await call(client, "POST", f"/api/v1/me/exams/{exam['id']}/attempt", huang)
    assert r.status_code == 201
    r = await call(client, "POST", f"/api/v1/me/exams/{exam['id']}/attempt/submit", huang, json={})
    assert (r.json()["score"], r.json()["passed"], len(r.json()["wrong"])) == (0, False, 5)

    r = await call(client, "GET", f"{API}/exams/{exam['id']}/results", supervisor)
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["attempts"], res["completed"], res["passed"]) == (2, 2, 1)
    (dept,) = res["departments"]
    assert dept["department"] == "新人培训班" and dept["average_score"] == 40 and dept["pass_rate"] == 0.5
    r = await call(client, "GET", f"{API}/exams/{exam['id']}/attempts", supervisor)
    assert {(a["username"], a["score"]) for a in r.json()["items"]} == {("liu.xin", 80), ("huang.mei", 0)}
