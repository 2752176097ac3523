"""Every bad input of the issue: submitting after the deadline or twice, answers to questions not in
the paper, an unmeetable paper rule, an exam for an unknown department, duplicate options, an
agent reading the answer key; the time limit is the server's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.core.db import utcnow
from app.learning.models import Attempt, Exam
from tests.conftest import Actor, People, assert_problem
from tests.learning.conftest import Kb, call, sweep
from tests.learning.helpers import API, exam, paper, question

ME = "/api/v1/me/exams"


async def _started(
    client: httpx.AsyncClient, supervisor: Actor, agent: Actor, minutes: int = 30
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    qs = [
        await question(client, supervisor),
        await question(
            client,
            supervisor,
            kind="true_false",
            stem="光猫 LOS 红灯闪烁可以自行插拔光纤。",
            options=[],
            answer=["false"],
        ),
    ]
    p = await paper(client, supervisor, qs)
    e = await exam(client, supervisor, p["id"], {"users": [agent.user.id]}, minutes=minutes)
    r = await call(client, "POST", f"{ME}/{e['id']}/attempt", agent)
    assert r.status_code == 201, r.text
    return e, r.json(), qs


async def test_submitting_twice_is_409(client: httpx.AsyncClient, supervisor: Actor, people: People) -> None:
    agent = await people.make("liu.xin", role="agent")
    e, _attempt, qs = await _started(client, supervisor, agent)
    r = await call(
        client,
        "POST",
        f"{ME}/{e['id']}/attempt/submit",
        agent,
        json={"answers": {str(qs[0]["id"]): "A", str(qs[1]["id"]): False}},
    )
    assert r.status_code == 200 and r.json()["score"] == 20
    r = await call(client, "POST", f"{ME}/{e['id']}/attempt/submit", agent, json={"answers": {str(qs[0]["id"]): "B"}})
    assert_problem(r, 409, "already_submitted")
    assert_problem(
        await call(client, "PUT", f"{ME}/{e['id']}/attempt/answers", agent, json={"answers": {}}),
        409,
        "already_submitted",
    )
    assert_problem(await call(client, "POST", f"{ME}/{e['id']}/attempt", agent), 409, "already_submitted")
    r = await call(client, "GET", f"{ME}/{e['id']}/result", agent)
    assert r.json()["score"] == 20  # the second submission changed nothing


async def test_time_limit_is_enforced_by_the_server(
    client: httpx.AsyncClient, supervisor: Actor, people: People, app: Any
) -> None:
    agent = await people.make("liu.xin", role="agent")
    e, attempt, qs = await _started(client, supervisor, agent, minutes=20)
    # the deadline is the server's: started_at + 20 minutes
    assert 19 * 60 < attempt["remaining_seconds"] <= 20 * 60
    r = await call(client, "PUT", f"{ME}/{e['id']}/attempt/answers", agent, json={"answers": {str(qs[0]["id"]): "A"}})
    assert r.status_code == 200
    async with app.state.sessionmaker() as s:  # 21 minutes later
        past = utcnow() - timedelta(minutes=21)
        await s.execute(
            update(Attempt)
            .where(Attempt.id == attempt["id"])
            .values(started_at=past, deadline=past + timedelta(minutes=20))
        )
        await s.commit()
    r = await call(
        client,
        "PUT",
        f"{ME}/{e['id']}/attempt/answers",
        agent,
        json={"answers": {str(qs[0]["id"]): "A", str(qs[1]["id"]): False}},
    )
    assert_problem(r, 409, "deadline_passed")
    r = await call(
        client,
        "POST",
        f"{ME}/{e['id']}/attempt/submit",
        agent,
        json={"answers": {str(qs[0]["id"]): "A", str(qs[1]["id"]): False}},
    )
    assert_problem(r, 409, "deadline_passed")
    r = await call(client, "GET", f"{ME}/{e['id']}/result", agent)
    result = r.json()
    # submitted with what was saved before the deadline: the true/false answer came too late
    assert (result["score"], result["auto_submitted"], result["state"]) == (10, True, "completed")
    assert [w["question_id"] for w in result["wrong"]] == [qs[1]["id"]]


async def test_window_closing_cuts_the_time_limit_and_the_sweep_submits(
    client: httpx.AsyncClient, supervisor: Actor, people: People, app: Any
) -> None:
    agent = await people.make("liu.xin", role="agent")
    e, attempt, qs = await _started(client, supervisor, agent, minutes=120)
    assert_problem(
        await call(client, "POST", f"{ME}/{e['id']}/attempt", await people.make(role="agent")), 404, "exam_not_found"
    )  # not in the audience
    await call(client, "PUT", f"{ME}/{e['id']}/attempt/answers", agent, json={"answers": {str(qs[1]["id"]): False}})
    async with app.state.sessionmaker() as s:  # the window closed a second ago
        closed = utcnow() - timedelta(seconds=1)
        await s.execute(update(Exam).where(Exam.id == e["id"]).values(closes_at=closed))
        await s.execute(update(Attempt).where(Attempt.id == attempt["id"]).values(deadline=closed))
        await s.commit()
    await sweep(app)  # nobody touched it: the job submits it
    r = await call(client, "GET", f"{API}/attempts/{attempt['id']}", supervisor)
    assert (r.json()["state"], r.json()["score"], r.json()["auto_submitted"]) == ("completed", 10, True)
    late = await people.make("late.agent", role="agent")
    async with app.state.sessionmaker() as s:
        from app.learning.models import ExamAudience

        s.add(ExamAudience(exam_id=e["id"], subject=f"user:{late.user.id}"))
        await s.commit()
    assert_problem(await call(client, "POST", f"{ME}/{e['id']}/attempt", late), 409, "exam_closed")


async def test_a_new_attempt_gets_min_of_limit_and_window(
    client: httpx.AsyncClient, supervisor: Actor, people: People
) -> None:
    agent = await people.make("liu.xin", role="agent")
    qs = [await question(client, supervisor)]
    p = await paper(client, supervisor, qs)
    from tests.learning.conftest import iso

    e = await exam(
        client, supervisor, p["id"], {"users": [agent.user.id]}, minutes=60, closes_at=iso(timedelta(minutes=10))
    )
    r = await call(client, "POST", f"{ME}/{e['id']}/attempt", agent)
    assert r.json()["remaining_seconds"] <= 600 and r.json()["deadline"] == r.json()["deadline"]
    upcoming = await exam(
        client,
        supervisor,
        p["id"],
        {"users": [agent.user.id]},
        opens_at=iso(timedelta(hours=1)),
        closes_at=iso(timedelta(hours=2)),
    )
    assert_problem(await call(client, "POST", f"{ME}/{upcoming['id']}/attempt", agent), 409, "exam_not_open")


async def test_answers_to_questions_not_in_the_paper(
    client: httpx.AsyncClient, supervisor: Actor, people: People
) -> None:
    agent = await people.make("liu.xin", role="agent")
    e, _attempt, qs = await _started(client, supervisor, agent)
    other = await question(client, supervisor, stem="信用卡挂失电话是多少？", options=["95588", "10000"])
    for method, url in (("PUT", f"{ME}/{e['id']}/attempt/answers"), ("POST", f"{ME}/{e['id']}/attempt/submit")):
        r = await call(client, method, url, agent, json={"answers": {str(qs[0]["id"]): "A", str(other["id"]): "A"}})
        body = assert_problem(r, 422, "unknown_question")
        assert body["unknown"] == [str(other["id"])]
    r = await call(client, "PUT", f"{ME}/{e['id']}/attempt/answers", agent, json={"answers": {str(qs[0]["id"]): "F"}})
    assert assert_problem(r, 422, "invalid_answer")["field"] == f"answers.{qs[0]['id']}"
    r = await call(client, "PUT", f"{ME}/{e['id']}/attempt/answers", agent, json={"answers": {"宽带": "A"}})
    assert_problem(r, 422, "unknown_question")
    r = await call(client, "GET", f"{ME}/{e['id']}/attempt", agent)
    assert r.json()["answers"] == {} and r.json()["state"] == "in_progress"  # nothing was saved


async def test_unmeetable_rule_names_the_shortfall(client: httpx.AsyncClient, kb: Kb, supervisor: Actor) -> None:
    for i in range(4):
        await question(client, supervisor, stem=f"宽带故障题 {i}", categories=[kb.nodes["宽带故障"]])
    await question(client, supervisor, stem="草稿题", categories=[kb.nodes["宽带故障"]], approve=False)
    r = await call(
        client,
        "POST",
        f"{API}/papers",
        supervisor,
        json={
            "title": "宽带考试",
            "rules": [
                {
                    "kind": "single_choice",
                    "difficulty": 2,
                    "categories": [kb.nodes["宽带业务"]],
                    "count": 10,
                    "score": 5,
                },
                {"kind": "true_false", "count": 2},
            ],
        },
    )
    body = assert_problem(r, 422, "rule_not_met")
    assert "single_choice difficulty 2 in 宽带业务: need 10, approved 4" in body["detail"]
    assert "true_false: need 2, approved 0" in body["detail"]
    assert [(s["need"], s["approved"]) for s in body["shortfalls"]] == [(10, 4), (2, 0)]
    r = await call(
        client,
        "POST",
        f"{API}/papers",
        supervisor,
        json={
            "title": "宽带考试",
            "rules": [{"kind": "single_choice", "categories": [kb.nodes["宽带业务"]], "count": 4, "score": 5}],
            "total_score": 100,
        },
    )
    assert assert_problem(r, 422, "total_score_mismatch")["questions_total"] == 20
    r = await call(
        client,
        "POST",
        f"{API}/papers",
        supervisor,
        json={"title": "宽带考试", "rules": [{"kind": "single_choice", "categories": [999999], "count": 1}]},
    )
    assert_problem(r, 422, "unknown_category")


async def test_exam_for_unknown_department_role_or_user(client: httpx.AsyncClient, supervisor: Actor) -> None:
    p = await paper(client, supervisor, [await question(client, supervisor)])
    from tests.learning.conftest import iso

    base = {"paper_id": p["id"], "opens_at": iso(), "closes_at": iso(timedelta(days=1)), "time_limit_minutes": 30}
    for audience, code, named in (
        ({"departments": [987654]}, "unknown_department", [987654]),
        ({"roles": ["agent", "实习生"]}, "unknown_role", ["实习生"]),
        ({"users": [876543]}, "unknown_user", [876543]),
    ):
        r = await call(client, "POST", f"{API}/exams", supervisor, json={**base, "audience": audience})
        body = assert_problem(r, 422, code)
        assert body["unknown"] == named and str(named[0]) in body["detail"]
    assert_problem(
        await call(client, "POST", f"{API}/exams", supervisor, json={**base, "audience": {}}), 422, "empty_audience"
    )
    r = await call(
        client,
        "POST",
        f"{API}/exams",
        supervisor,
        json={**base, "audience": {"roles": ["agent"]}, "closes_at": base["opens_at"]},
    )
    assert_problem(r, 422, "invalid_window")
    r = await call(
        client, "POST", f"{API}/exams", supervisor, json={**base, "paper_id": 99999, "audience": {"roles": ["agent"]}}
    )
    assert_problem(r, 422, "unknown_paper")


async def test_duplicate_options_are_refused(client: httpx.AsyncClient, supervisor: Actor) -> None:
    for options in (
        ["10000", "10086", "１００００"],  # full-width digits
        ["寬頻報修", "宽频报修"],  # traditional and simplified
        ["Reboot the ONT.", "reboot the ont"],
    ):
        r = await call(
            client,
            "POST",
            f"{API}/questions",
            supervisor,
            json={"kind": "single_choice", "stem": "宽带报修电话是多少？", "options": options, "answer": ["A"]},
        )
        assert_problem(r, 422, "duplicate_options")
    q = await question(client, supervisor)
    r = await call(
        client,
        "PATCH",
        f"{API}/questions/{q['id']}",
        supervisor,
        etag=q["etag"],
        json={"options": ["10000", "10086", " 10086 "]},
    )
    assert_problem(r, 422, "duplicate_options")
    r = await call(
        client,
        "POST",
        f"{API}/questions",
        supervisor,
        json={
            "kind": "single_choice",
            "stem": "宽带报修电话是多少？",
            "options": ["10000", "10086"],
            "answer": ["A", "B"],
        },
    )
    assert_problem(r, 422, "invalid_answer_key")
    r = await call(
        client,
        "POST",
        f"{API}/questions",
        supervisor,
        json={"kind": "true_false", "stem": "宽带可以办理移机。", "answer": ["maybe"]},
    )
    assert_problem(r, 422, "invalid_answer_key")


async def test_agent_cannot_read_the_answer_key(
    client: httpx.AsyncClient, supervisor: Actor, people: People, app: Any
) -> None:
    agent = await people.make("liu.xin", role="agent")
    e, attempt, qs = await _started(client, supervisor, agent)
    for url in (
        f"{API}/questions",
        f"{API}/questions/{qs[0]['id']}",
        f"{API}/papers",
        f"{API}/papers/{e['paper_id']}",
        f"{API}/exams/{e['id']}",
        f"{API}/attempts/{attempt['id']}",
        f"{API}/exams/{e['id']}/results",
        f"{API}/grading",
    ):
        assert_problem(await call(client, "GET", url, agent), 403, "permission_denied")
    r = await call(client, "GET", f"{ME}/{e['id']}/attempt", agent)
    assert "answer" not in r.text.replace('"answers"', "") and "explanation" not in r.text
    r = await call(client, "POST", f"{ME}/{e['id']}/attempt/submit", agent, json={"answers": {str(qs[0]["id"]): "B"}})
    assert r.json()["answers_released"] is False
    assert all(w["right_answer"] is None and w["explanation"] is None for w in r.json()["wrong"])
    assert r.json()["questions"] is None
    async with app.state.sessionmaker() as s:  # the exam closes: the key is released
        await s.execute(update(Exam).where(Exam.id == e["id"]).values(closes_at=utcnow() - timedelta(seconds=1)))
        await s.commit()
    r = await call(client, "GET", f"{ME}/{e['id']}/result", agent)
    assert r.json()["answers_released"] is True
    assert {w["question_id"]: w["right_answer"] for w in r.json()["wrong"]} == {
        qs[0]["id"]: ["A"],
        qs[1]["id"]: ["false"],
    }
    # another agent's attempt stays out of reach
    other = await people.make("huang.mei", role="agent")
    assert_problem(await call(client, "GET", f"{ME}/{e['id']}/result", other), 404, "exam_not_found")


async def test_question_updates_need_if_match(client: httpx.AsyncClient, supervisor: Actor) -> None:
    q = await question(client, supervisor)
    assert q["state"] == "approved"
    url = f"{API}/questions/{q['id']}"
    assert_problem(await call(client, "PATCH", url, supervisor, json={"stem": "宽带报修拨打哪个号码？"}), 428)
    r = await call(client, "PATCH", url, supervisor, etag=q["etag"], json={"stem": "宽带报修拨打哪个号码？"})
    assert r.status_code == 200 and r.json()["state"] == "draft"  # changed: approved again before use
    assert_problem(await call(client, "PATCH", url, supervisor, etag=q["etag"], json={"difficulty": "hard"}), 412)
    r = await call(client, "PATCH", url, supervisor, etag=r.headers["etag"], json={"difficulty": "hard"})
    assert r.json()["difficulty"] == 5
    r = await call(client, "POST", f"{url}/retire", supervisor, etag=r.headers["etag"])
    assert r.json()["state"] == "retired"
    assert_problem(await call(client, "POST", f"{url}/approve", supervisor, etag=r.headers["etag"]), 409)
    r = await call(
        client,
        "POST",
        f"{API}/papers",
        supervisor,
        json={"title": "x", "questions": [{"question_id": q["id"], "score": 5}]},
    )
    assert_problem(r, 422, "question_not_approved")
