"""Exams, attempts, grading and results.

An exam assigns a paper to roles, departments (with their sub-departments) and users, inside a
window (`opens_at` … `closes_at`) with a time limit. An agent has one attempt per exam; the server
records `started_at` and the deadline, min(started_at + limit, closes_at). Answers are saved any
number of times before the deadline and submitted once. An attempt whose deadline passed is
submitted with what was saved: when the agent next touches it, and by the `learning.sweep` job.

The answer key is never in an examinee's view of the questions; their result shows which
questions were wrong (with the items to study) at once, and the right answers and explanations
once the exam has closed (`answers_released`), so that nobody hands them to a colleague who is
still sitting it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import record
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.etag import make_etag
from app.core.pagination import PageParams, paginate_by_id
from app.identity.models import Department, User
from app.identity.principal import Principal
from app.identity.service import department_paths, role_ids_by_name
from app.learning.models import Attempt, Exam, ExamAudience, Paper
from app.learning.schemas import (
    AttemptOut,
    AttemptQuestionOut,
    DepartmentResult,
    ExamCreate,
    ExamOut,
    ExamResultsOut,
    GradesIn,
    GradingEntry,
    LinkOut,
    MyExamOut,
    OptionOut,
    ResultOut,
    ResultQuestionOut,
    ResultRow,
)
from app.learning.scoring import check_answer, score_objective
from app.learning.service import get_paper, is_objective

SWEEP_BATCH = 500


def etag_of(e: Exam) -> str:
    return make_etag("exam", e.id, e.row_version)


def attempt_etag(a: Attempt) -> str:
    return make_etag("attempt", a.id, a.row_version)


# ---------------------------------------------------------------- exams (managers)


async def _audience(session: AsyncSession, data: ExamCreate) -> list[str]:
    aud = data.audience
    subjects: list[str] = []
    roles = await role_ids_by_name(session, aud.roles, "audience.roles")
    subjects += [f"role:{role_id}" for role_id in roles.values()]
    departments = await department_paths(session, list(dict.fromkeys(aud.departments)), "audience.departments")
    subjects += [f"dept:{d}" for d in dict.fromkeys(aud.departments) if d in departments]
    users = list(dict.fromkeys(aud.users))
    if users:
        active = dict((await session.execute(select(User.id, User.is_active).where(User.id.in_(users)))).all())
        unknown_ids = [u for u in users if u not in active]
        if unknown_ids:
            raise InvalidInput(
                f"Unknown user id(s): {', '.join(map(str, unknown_ids))}",
                code="unknown_user",
                field="audience.users",
                unknown=unknown_ids,
            )
        inactive = [u for u in users if not active[u]]
        if inactive:
            raise InvalidInput(
                f"Disabled user id(s): {', '.join(map(str, inactive))}",
                code="inactive_user",
                field="audience.users",
                inactive=inactive,
            )
        subjects += [f"user:{u}" for u in users]
    if not subjects:
        raise InvalidInput(
            "Assign the exam to at least one role, department or user", code="empty_audience", field="audience"
        )
    return subjects


async def create_exam(session: AsyncSession, actor: Principal, data: ExamCreate) -> Exam:
    paper = await session.get(Paper, data.paper_id)
    if paper is None:
        raise InvalidInput(f"Unknown paper {data.paper_id}", code="unknown_paper", field="paper_id")
    if data.closes_at <= data.opens_at:
        raise InvalidInput("closes_at must be after opens_at", code="invalid_window", field="closes_at")
    if data.closes_at <= utcnow():
        raise InvalidInput("The window has already closed", code="invalid_window", field="closes_at")
    pass_score = data.pass_score if data.pass_score is not None else paper.pass_score
    if pass_score > paper.total_score:
        raise InvalidInput(
            f"pass_score {pass_score:g} is above the paper's total {paper.total_score:g}",
            code="invalid_pass_score",
            field="pass_score",
        )
    subjects = await _audience(session, data)
    exam = Exam(
        paper_id=paper.id,
        title=data.title or paper.title,
        opens_at=data.opens_at,
        closes_at=data.closes_at,
        time_limit_minutes=data.time_limit_minutes,
        pass_score=pass_score,
        audience=data.audience.model_dump(),
        created_by=actor.actor,
    )
    session.add(exam)
    await session.flush()
    session.add_all([ExamAudience(exam_id=exam.id, subject=s) for s in subjects])
    record(
        session,
        actor,
        "exam.create",
        "exam",
        exam.id,
        after={
            "paper_id": paper.id,
            "title": exam.title,
            "audience": exam.audience,
            "opens_at": exam.opens_at.isoformat(),
            "closes_at": exam.closes_at.isoformat(),
            "time_limit_minutes": exam.time_limit_minutes,
            "pass_score": pass_score,
        },
    )
    await session.commit()
    return exam


async def get_exam(session: AsyncSession, exam_id: int) -> Exam:
    e = await session.get(Exam, exam_id)
    if e is None:
        raise NotFound(f"No exam with id {exam_id}", code="exam_not_found")
    return e


async def exam_out(session: AsyncSession, e: Exam, paper: Paper | None = None) -> ExamOut:
    paper = paper or await get_paper(session, e.paper_id)
    return ExamOut(
        id=e.id,
        paper_id=e.paper_id,
        title=e.title,
        audience=dict(e.audience),
        opens_at=e.opens_at,
        closes_at=e.closes_at,
        time_limit_minutes=e.time_limit_minutes,
        pass_score=e.pass_score,
        total_score=paper.total_score,
        question_count=len(paper.questions),
        state=e.state,
        created_by=e.created_by,
        created_at=e.created_at,
        etag=etag_of(e),
    )


async def list_exams(session: AsyncSession, page: PageParams) -> tuple[list[Exam], str | None]:
    return await paginate_by_id(session, select(Exam), Exam.id, page)


async def cancel_exam(session: AsyncSession, actor: Principal, e: Exam) -> Exam:
    if e.state == "cancelled":
        raise Conflict("The exam is already cancelled", code="invalid_transition", state=e.state)
    e.state = "cancelled"
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        raise Conflict("Someone changed this exam at the same moment; reload and try again", code="exam_changed")
    record(session, actor, "exam.cancel", "exam", e.id)
    await session.commit()
    return e


# ---------------------------------------------------------------- the examinee's side


def _for_me(principal: Principal) -> Any:
    return Exam.id.in_(select(ExamAudience.exam_id).where(ExamAudience.subject.in_(principal.acl_principals)))


async def my_exam(session: AsyncSession, principal: Principal, exam_id: int) -> Exam:
    """An exam assigned to the caller (404 otherwise, cancelled ones included)."""
    if principal.kind != "user":  # an API client sits no exam
        raise NotFound(f"No exam with id {exam_id}", code="exam_not_found")
    e = await session.scalar(select(Exam).where(Exam.id == exam_id, Exam.state == "published", _for_me(principal)))
    if e is None:
        raise NotFound(f"No exam with id {exam_id}", code="exam_not_found")
    return e


async def _attempt(session: AsyncSession, exam_id: int, user_id: int) -> Attempt | None:
    return await session.scalar(select(Attempt).where(Attempt.exam_id == exam_id, Attempt.user_id == user_id))


def _status(e: Exam, a: Attempt | None, now: datetime) -> str:
    if a is not None:
        if a.state == "in_progress" and a.deadline > now:
            return "in_progress"
        return "submitted"
    if now < e.opens_at:
        return "upcoming"
    return "open" if now < e.closes_at else "missed"


async def my_exams(
    session: AsyncSession, principal: Principal, page: PageParams, status: str | None
) -> tuple[list[MyExamOut], str | None]:
    now = utcnow()
    stmt = select(Exam).where(Exam.state == "published", _for_me(principal))
    if status in ("open", "in_progress", "upcoming"):
        stmt = stmt.where(Exam.closes_at > now)
    rows, nxt = await paginate_by_id(session, stmt, Exam.id, page)
    attempts = (
        {
            a.exam_id: a
            for a in (
                await session.scalars(
                    select(Attempt).where(Attempt.user_id == principal.id, Attempt.exam_id.in_([e.id for e in rows]))
                )
            ).all()
        }
        if rows
        else {}
    )
    papers = (
        {p.id: p for p in (await session.scalars(select(Paper).where(Paper.id.in_({e.paper_id for e in rows})))).all()}
        if rows
        else {}
    )
    out = []
    for e in rows:
        a = attempts.get(e.id)
        st = _status(e, a, now)
        if status and st != status:
            continue
        p = papers[e.paper_id]
        done = a is not None and a.state == "completed"
        out.append(
            MyExamOut(
                id=e.id,
                title=e.title,
                opens_at=e.opens_at,
                closes_at=e.closes_at,
                time_limit_minutes=e.time_limit_minutes,
                total_score=p.total_score,
                pass_score=e.pass_score,
                question_count=len(p.questions),
                status=st,
                attempt_id=a.id if a else None,
                deadline=a.deadline if a else None,
                score=a.score if a and a.state != "in_progress" else None,
                passed=a.passed if done else None,
            )
        )
    return out, nxt


def attempt_out(e: Exam, p: Paper, a: Attempt, now: datetime | None = None) -> AttemptOut:
    now = now or utcnow()
    return AttemptOut(
        id=a.id,
        exam_id=e.id,
        title=e.title,
        state=a.state,
        started_at=a.started_at,
        deadline=a.deadline,
        remaining_seconds=max(0, int((a.deadline - now).total_seconds())) if a.state == "in_progress" else 0,
        saved_at=a.saved_at,
        submitted_at=a.submitted_at,
        auto_submitted=a.auto_submitted,
        answers=dict(a.answers),
        questions=[
            AttemptQuestionOut(
                position=q["position"],
                question_id=q["question_id"],
                kind=q["kind"],
                stem=q["stem"],
                options=[OptionOut(**o) for o in q["options"]],
                score=q["score"],
            )
            for q in p.questions
        ],
        etag=attempt_etag(a),
    )


async def _commit_attempt(session: AsyncSession) -> None:
    try:
        await session.commit()
    except StaleDataError:
        await session.rollback()
        raise Conflict(
            "This attempt changed at the same moment (another tab or a submission); reload it", code="attempt_changed"
        )


def finalize(e: Exam, p: Paper, a: Attempt, now: datetime, *, auto: bool) -> None:
    """Submit: objective questions scored, short answers left for a grader (an empty one scores 0)."""
    results: dict[str, Any] = {}
    pending = False
    for q in p.questions:
        qid = str(q["question_id"])
        answer = a.answers.get(qid)
        if is_objective(q["kind"]):
            earned, correct = score_objective(q, answer)
            results[qid] = {"earned": earned, "correct": correct}
        elif answer:
            results[qid] = {"earned": None, "correct": None, "pending": True}
            pending = True
        else:
            results[qid] = {"earned": 0.0, "correct": False}
    a.results = results
    a.submitted_at = min(now, a.deadline) if auto else now
    a.auto_submitted = auto
    _settle(e, a, pending)


def _settle(e: Exam, a: Attempt, pending: bool) -> None:
    a.score = round(sum(r["earned"] or 0 for r in a.results.values()), 2)
    if pending:
        a.state, a.passed = "grading", None
    else:
        a.state, a.passed = "completed", a.score >= e.pass_score
        a.graded_at = a.graded_at or utcnow()


async def expire_if_due(session: AsyncSession, e: Exam, p: Paper, a: Attempt, now: datetime) -> bool:
    """An attempt past its deadline is submitted with what was saved (committed). True if it was."""
    if a.state != "in_progress" or a.deadline > now:
        return False
    finalize(e, p, a, now, auto=True)
    record(session, None, "attempt.auto_submit", "attempt", a.id, exam_id=e.id, user_id=a.user_id, score=a.score)
    await _commit_attempt(session)
    return True


async def start(session: AsyncSession, principal: Principal, exam_id: int) -> tuple[Attempt, bool]:
    """(attempt, created). Resuming an attempt in progress answers it again."""
    e = await my_exam(session, principal, exam_id)
    p = await get_paper(session, e.paper_id)
    now = utcnow()
    a = await _attempt(session, e.id, principal.id)
    if a is not None:
        if await expire_if_due(session, e, p, a, now):
            raise Conflict(
                "The time for this exam is over; what you saved was submitted",
                code="deadline_passed",
                deadline=a.deadline.isoformat(),
            )
        if a.state != "in_progress":
            raise Conflict("You have already submitted this exam", code="already_submitted")
        return a, False
    if now < e.opens_at:
        raise Conflict(
            f"The exam opens at {e.opens_at.isoformat()}", code="exam_not_open", opens_at=e.opens_at.isoformat()
        )
    if now >= e.closes_at:
        raise Conflict("The exam has closed", code="exam_closed", closes_at=e.closes_at.isoformat())
    user = await session.get(User, principal.id)
    a = Attempt(
        exam_id=e.id,
        user_id=principal.id,
        department_id=user.department_id if user else None,
        started_at=now,
        deadline=min(now + timedelta(minutes=e.time_limit_minutes), e.closes_at),
        answers={},
        results={},
    )
    session.add(a)
    try:
        await session.flush()
    except IntegrityError:  # the same agent started twice at once: the first one stands
        await session.rollback()
        existing = await _attempt(session, e.id, principal.id)
        if existing is None:
            raise
        return existing, False
    record(session, principal, "attempt.start", "attempt", a.id, exam_id=e.id, deadline=a.deadline.isoformat())
    await session.commit()
    return a, True


async def load_mine(session: AsyncSession, principal: Principal, exam_id: int) -> tuple[Exam, Paper, Attempt]:
    e = await my_exam(session, principal, exam_id)
    a = await _attempt(session, e.id, principal.id)
    if a is None:
        raise NotFound("You have not started this exam: POST /me/exams/{id}/attempt first", code="attempt_not_found")
    return e, await get_paper(session, e.paper_id), a


def _checked(p: Paper, answers: dict[str, Any]) -> dict[str, Any]:
    by_id = {str(q["question_id"]): q for q in p.questions}
    unknown = [k for k in answers if k not in by_id]
    if unknown:
        raise InvalidInput(
            f"Questions not in this paper: {', '.join(unknown)}",
            code="unknown_question",
            field="answers",
            unknown=unknown,
        )
    out: dict[str, Any] = {}
    for k, v in answers.items():
        value = check_answer(by_id[k], v, f"answers.{k}")
        if value is not None and value != "" and value != []:
            out[k] = value
    return out


async def _open_for_writing(session: AsyncSession, e: Exam, p: Paper, a: Attempt, now: datetime) -> None:
    if await expire_if_due(session, e, p, a, now):
        raise Conflict(
            "The time for this exam is over; what you saved before the deadline was submitted",
            code="deadline_passed",
            deadline=a.deadline.isoformat(),
        )
    if a.state != "in_progress" and a.auto_submitted:
        raise Conflict(
            "The time for this exam ran out; what you saved before the deadline was submitted",
            code="deadline_passed",
            deadline=a.deadline.isoformat(),
        )
    if a.state != "in_progress":
        raise Conflict("You have already submitted this exam", code="already_submitted")


async def save(session: AsyncSession, principal: Principal, exam_id: int, answers: dict[str, Any]) -> AttemptOut:
    e, p, a = await load_mine(session, principal, exam_id)
    now = utcnow()
    await _open_for_writing(session, e, p, a, now)
    a.answers = _checked(p, answers)
    a.saved_at = now
    await _commit_attempt(session)
    return attempt_out(e, p, a, now)


async def submit(session: AsyncSession, principal: Principal, exam_id: int, answers: dict[str, Any] | None) -> Attempt:
    e, p, a = await load_mine(session, principal, exam_id)
    now = utcnow()
    await _open_for_writing(session, e, p, a, now)
    if answers is not None:
        a.answers = _checked(p, answers)
        a.saved_at = now
    finalize(e, p, a, now, auto=False)
    record(session, principal, "attempt.submit", "attempt", a.id, exam_id=e.id, score=a.score, state=a.state)
    await _commit_attempt(session)
    return a


async def my_attempt(session: AsyncSession, principal: Principal, exam_id: int) -> AttemptOut:
    e, p, a = await load_mine(session, principal, exam_id)
    now = utcnow()
    await expire_if_due(session, e, p, a, now)
    return attempt_out(e, p, a, now)


# ---------------------------------------------------------------- results


def answers_released(e: Exam, now: datetime | None = None) -> bool:
    return (now or utcnow()) >= e.closes_at


def result_out(
    e: Exam, p: Paper, a: Attempt, *, key: bool, detail: bool = False, username: str | None = None
) -> ResultOut:
    """`key`: show right answers and explanations (managers always; examinees once released)."""
    rows: list[ResultQuestionOut] = []
    for q in p.questions:
        qid = str(q["question_id"])
        r = a.results.get(qid, {})
        rows.append(
            ResultQuestionOut(
                position=q["position"],
                question_id=q["question_id"],
                kind=q["kind"],
                stem=q["stem"],
                score=q["score"],
                earned=r.get("earned"),
                correct=r.get("correct"),
                your_answer=a.answers.get(qid),
                right_answer=list(q["answer"]) if key else None,
                explanation=q["explanation"] if key else None,
                study=[LinkOut(**lk) for lk in q["items"] if lk["role"] == "source"],
                grader_comment=r.get("comment"),
            )
        )
    objective = round(
        sum(r.get("earned") or 0 for qid, r in a.results.items() if not r.get("graded_by") and not r.get("pending")), 2
    )
    return ResultOut(
        attempt_id=a.id,
        exam_id=e.id,
        user_id=a.user_id,
        username=username,
        department_id=a.department_id,
        state=a.state,
        score=a.score,
        objective_score=objective,
        total_score=p.total_score,
        pass_score=e.pass_score,
        passed=a.passed,
        submitted_at=a.submitted_at,
        auto_submitted=a.auto_submitted,
        answers_released=answers_released(e),
        wrong=[r for r in rows if r.correct is False],
        questions=rows if detail else None,
    )


async def my_result(session: AsyncSession, principal: Principal, exam_id: int) -> ResultOut:
    e, p, a = await load_mine(session, principal, exam_id)
    await expire_if_due(session, e, p, a, utcnow())
    if a.state == "in_progress":
        raise Conflict("Submit the exam first", code="not_submitted")
    return result_out(e, p, a, key=answers_released(e), detail=answers_released(e))


async def get_attempt(session: AsyncSession, attempt_id: int) -> Attempt:
    a = await session.get(Attempt, attempt_id)
    if a is None:
        raise NotFound(f"No attempt with id {attempt_id}", code="attempt_not_found")
    return a


async def attempt_detail(session: AsyncSession, a: Attempt) -> ResultOut:
    e = await get_exam(session, a.exam_id)
    p = await get_paper(session, e.paper_id)
    await expire_if_due(session, e, p, a, utcnow())
    user = await session.get(User, a.user_id)
    return result_out(e, p, a, key=True, detail=True, username=user.username if user else None)


async def exam_attempts(
    session: AsyncSession, e: Exam, page: PageParams, state: str | None
) -> tuple[list[ResultRow], str | None]:
    stmt = select(Attempt).where(Attempt.exam_id == e.id)
    if state:
        stmt = stmt.where(Attempt.state == state)
    rows, nxt = await paginate_by_id(session, stmt, Attempt.id, page, descending=False)
    names = (
        dict(
            (await session.execute(select(User.id, User.username).where(User.id.in_({a.user_id for a in rows})))).all()
        )
        if rows
        else {}
    )
    return [
        ResultRow(
            attempt_id=a.id,
            user_id=a.user_id,
            username=names.get(a.user_id, ""),
            department_id=a.department_id,
            state=a.state,
            score=a.score if a.state != "in_progress" else None,
            passed=a.passed,
            started_at=a.started_at,
            submitted_at=a.submitted_at,
            auto_submitted=a.auto_submitted,
        )
        for a in rows
    ], nxt


async def exam_results(session: AsyncSession, e: Exam) -> ExamResultsOut:
    """Per department (the agent's when they started): attempts, completed, passed, scores."""
    p = await get_paper(session, e.paper_id)
    rows = (
        await session.execute(
            select(Attempt.department_id, Attempt.state, Attempt.passed, Attempt.score).where(Attempt.exam_id == e.id)
        )
    ).all()
    groups: dict[int | None, list[Any]] = {}
    for r in rows:
        groups.setdefault(r.department_id, []).append(r)
    known = [d for d in groups if d is not None]
    names = (
        dict((await session.execute(select(Department.id, Department.name).where(Department.id.in_(known)))).all())
        if known
        else {}
    )
    depts = []
    for dept, members in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        done = [m for m in members if m.state == "completed"]
        scores = [m.score for m in done]
        passed = sum(1 for m in done if m.passed)
        depts.append(
            DepartmentResult(
                department_id=dept,
                department=names.get(dept) if dept is not None else None,
                attempts=len(members),
                completed=len(done),
                passed=passed,
                pass_rate=round(passed / len(done), 4) if done else None,
                average_score=round(sum(scores) / len(scores), 2) if scores else None,
                max_score=max(scores) if scores else None,
                min_score=min(scores) if scores else None,
            )
        )
    return ExamResultsOut(
        exam_id=e.id,
        total_score=p.total_score,
        pass_score=e.pass_score,
        attempts=len(rows),
        completed=sum(1 for r in rows if r.state == "completed"),
        waiting_for_grading=sum(1 for r in rows if r.state == "grading"),
        passed=sum(1 for r in rows if r.state == "completed" and r.passed),
        departments=depts,
    )


# ---------------------------------------------------------------- grading


def grading_stmt() -> Any:
    return select(Attempt).where(Attempt.state == "grading")


async def grading_queue(session: AsyncSession, page: PageParams) -> tuple[list[GradingEntry], str | None]:
    rows, nxt = await paginate_by_id(session, grading_stmt(), Attempt.id, page, descending=False)
    exams = (
        {e.id: e for e in (await session.scalars(select(Exam).where(Exam.id.in_({a.exam_id for a in rows})))).all()}
        if rows
        else {}
    )
    papers = (
        {
            p.id: p
            for p in (
                await session.scalars(select(Paper).where(Paper.id.in_({e.paper_id for e in exams.values()})))
            ).all()
        }
        if exams
        else {}
    )
    out = []
    for a in rows:
        e = exams[a.exam_id]
        p = papers[e.paper_id]
        waiting = [
            {
                "question_id": q["question_id"],
                "stem": q["stem"],
                "score": q["score"],
                "reference": q["answer"][0] if q["answer"] else None,
                "answer": a.answers.get(str(q["question_id"])),
            }
            for q in p.questions
            if a.results.get(str(q["question_id"]), {}).get("pending")
        ]
        out.append(
            GradingEntry(
                attempt_id=a.id,
                exam_id=e.id,
                exam_title=e.title,
                user_id=a.user_id,
                submitted_at=a.submitted_at,
                questions=waiting,
            )
        )
    return out, nxt


async def grade(session: AsyncSession, actor: Principal, a: Attempt, data: GradesIn) -> ResultOut:
    """Score short answers (0 … the question's score); a grade may be corrected later. The attempt
    is completed, with pass or fail, when no short answer waits any more."""
    if a.state == "in_progress":
        raise Conflict("The attempt has not been submitted yet", code="not_submitted")
    e = await get_exam(session, a.exam_id)
    p = await get_paper(session, e.paper_id)
    by_id = {q["question_id"]: q for q in p.questions}
    results = {k: dict(v) for k, v in a.results.items()}
    for i, g in enumerate(data.grades):
        q = by_id.get(g.question_id)
        if q is None:
            raise InvalidInput(
                f"Question {g.question_id} is not in this paper",
                code="unknown_question",
                field=f"grades.{i}.question_id",
            )
        if q["kind"] != "short_answer":
            raise InvalidInput(
                f"Question {g.question_id} is scored automatically",
                code="not_gradable",
                field=f"grades.{i}.question_id",
            )
        if g.score > q["score"]:
            raise InvalidInput(
                f"Question {g.question_id} is worth {q['score']:g}",
                code="score_too_high",
                field=f"grades.{i}.score",
                max_score=q["score"],
            )
        results[str(g.question_id)] = {
            "earned": g.score,
            "correct": g.score >= q["score"],
            "graded_by": actor.actor,
            "comment": g.comment or None,
        }
    a.results = results
    pending = any(r.get("pending") for r in results.values())
    a.graded_at = None if pending else utcnow()
    _settle(e, a, pending)
    record(
        session,
        actor,
        "attempt.grade",
        "attempt",
        a.id,
        exam_id=e.id,
        grades=[{"question_id": g.question_id, "score": g.score} for g in data.grades],
        score=a.score,
        state=a.state,
    )
    await _commit_attempt(session)
    user = await session.get(User, a.user_id)
    return result_out(e, p, a, key=True, detail=True, username=user.username if user else None)


# ---------------------------------------------------------------- the sweep


async def submit_overdue(session: AsyncSession, now: datetime | None = None) -> int:
    """Submit up to SWEEP_BATCH attempts whose deadline passed with what was saved (no commit)."""
    now = now or utcnow()
    rows = (
        await session.scalars(
            select(Attempt)
            .where(Attempt.state == "in_progress", Attempt.deadline <= now)
            .order_by(Attempt.deadline)
            .limit(SWEEP_BATCH)
        )
    ).all()
    exams: dict[int, Exam] = {}
    papers: dict[int, Paper] = {}
    for a in rows:
        if a.exam_id not in exams:
            exams[a.exam_id] = await get_exam(session, a.exam_id)
        e = exams[a.exam_id]
        if e.paper_id not in papers:
            papers[e.paper_id] = await get_paper(session, e.paper_id)
        finalize(e, papers[e.paper_id], a, now, auto=True)
        record(session, None, "attempt.auto_submit", "attempt", a.id, exam_id=e.id, user_id=a.user_id, score=a.score)
    return len(rows)


async def open_for(session: AsyncSession, principal: Principal, now: datetime) -> list[tuple[Exam, datetime, bool]]:
    """Open exams assigned to the caller that they have not submitted, with their deadline
    (the attempt's, else the window's end), nearest first: the to-do list's `exams` section."""
    exams = (
        await session.scalars(
            select(Exam).where(
                Exam.state == "published", Exam.opens_at <= now, Exam.closes_at > now, _for_me(principal)
            )
        )
    ).all()
    if not exams:
        return []
    attempts = {
        a.exam_id: a
        for a in (
            await session.scalars(
                select(Attempt).where(Attempt.user_id == principal.id, Attempt.exam_id.in_([e.id for e in exams]))
            )
        ).all()
    }
    out = []
    for e in exams:
        a = attempts.get(e.id)
        if a is None:
            out.append((e, e.closes_at, False))
        elif a.state == "in_progress" and a.deadline > now:
            out.append((e, a.deadline, True))
    return sorted(out, key=lambda pair: (pair[1], pair[0].id))


async def grading_count(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(grading_stmt().subquery())) or 0
