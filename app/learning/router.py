"""培训考试: the question bank, papers, exams and grading (`learning:manage`), and the examinee's
side under /me/exams (`learning:study`). An examinee never reaches the answer key: the bank and
the papers are for managers (403), and attempt views carry no answers (see app/learning/exams.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status

from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.etag import IfMatch, check_if_match
from app.core.pagination import Page, Paging
from app.core.schemas import Id
from app.identity.deps import Require
from app.identity.principal import Principal
from app.learning import exams, generation, service
from app.learning.schemas import (
    AnswersIn,
    ApproveManyIn,
    ApproveManyOut,
    AttemptOut,
    ExamCreate,
    ExamOut,
    ExamResultsOut,
    GenerateIn,
    GenerateOut,
    GradesIn,
    GradingEntry,
    Kind,
    MyExamOut,
    PaperCreate,
    PaperOut,
    PaperSummary,
    QuestionCreate,
    QuestionOut,
    QuestionState,
    QuestionUpdate,
    ResultOut,
    ResultRow,
    SubmitIn,
)
from app.search.backends.base import SearchBackend

router = APIRouter(tags=["learning"], responses=PROBLEMS)

Manager = Require(service.MANAGE)
Student = Require(service.STUDY)
AttemptState = Literal["in_progress", "grading", "completed"]


def _backend(request: Request) -> SearchBackend:
    return request.app.state.services["search"]


async def _question(session: DbSession, actor: Principal, question_id: int, response: Response) -> QuestionOut:
    q = await service.get_question(session, question_id, actor)
    response.headers["ETag"] = service.etag_of(q)
    return await service.out(session, q)


# ---------------------------------------------------------------- question bank


@router.post("/learning/questions", response_model=QuestionOut, status_code=status.HTTP_201_CREATED)
async def create_question(session: DbSession, actor: Manager, body: QuestionCreate, response: Response) -> QuestionOut:
    """A question, as a draft. Duplicate options are 422 `duplicate_options`; unknown categories or
    items 422 `unknown_category` / `unknown_item`."""
    q = await service.create_question(session, actor, body)
    response.headers["ETag"] = service.etag_of(q)
    return await service.out(session, q)


@router.get("/learning/questions", response_model=Page[QuestionOut])
async def list_questions(
    session: DbSession,
    actor: Manager,
    page: Paging,
    state: QuestionState | None = None,
    kind: Kind | None = None,
    difficulty: Annotated[int | None, Query(ge=1, le=5)] = None,
    category: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="A taxonomy node (its subtree)")] = None,
    needs_review: bool | None = None,
    item_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Questions linked to this item")] = None,
    q: Annotated[str | None, Query(max_length=100, description="Stem contains")] = None,
) -> Page[QuestionOut]:
    """The bank, newest first."""
    rows, nxt = await service.list_questions(
        session,
        page,
        actor,
        state=state,
        kind=kind,
        difficulty=difficulty,
        category=category,
        needs_review=needs_review,
        item_id=item_id,
        q=q,
    )
    return Page(items=await service.outs(session, rows), next_cursor=nxt)


@router.post("/learning/questions/generate", response_model=GenerateOut, status_code=status.HTTP_201_CREATED)
async def generate_questions(request: Request, session: DbSession, actor: Manager, body: GenerateIn) -> GenerateOut:
    """出题: single-choice drafts from published FAQ items, wrong options from the most confusable
    items the search engine finds (app/learning/generation.py). Items that cannot make a question
    are listed in `skipped` with the reason (e.g. `not_enough_distractors`)."""
    created, skipped = await generation.generate(session, _backend(request), actor, body)
    return GenerateOut(created=await service.outs(session, created), skipped=skipped)


@router.post("/learning/questions/approve", response_model=ApproveManyOut)
async def approve_questions(session: DbSession, actor: Manager, body: ApproveManyIn) -> ApproveManyOut:
    """Approve several drafts at once (and re-approve flagged ones); retired ones are 409."""
    done, already = await service.approve_many(session, actor, body.question_ids)
    return ApproveManyOut(approved=done, already=already)


@router.get("/learning/questions/{question_id}", response_model=QuestionOut)
async def get_question(session: DbSession, actor: Manager, question_id: Id, response: Response) -> QuestionOut:
    return await _question(session, actor, question_id, response)


@router.patch("/learning/questions/{question_id}", response_model=QuestionOut)
async def update_question(
    session: DbSession,
    actor: Manager,
    question_id: Id,
    body: QuestionUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> QuestionOut:
    """If-Match required (428 without, 412 when stale). Changing an approved question's content
    sends it back to draft."""
    q = await service.get_question(session, question_id, actor)
    check_if_match(if_match, service.etag_of(q), q.row_version)
    await service.update_question(session, actor, q, body)
    return await _question(session, actor, question_id, response)


@router.post("/learning/questions/{question_id}/approve", response_model=QuestionOut)
async def approve_question(
    session: DbSession, actor: Manager, question_id: Id, response: Response, if_match: IfMatch = None
) -> QuestionOut:
    """draft → approved; a question flagged `needs_review` is approved again, its links moved to
    the items' current versions."""
    q = await service.get_question(session, question_id, actor)
    check_if_match(if_match, service.etag_of(q), q.row_version)
    await service.approve(session, actor, q)
    return await _question(session, actor, question_id, response)


@router.post("/learning/questions/{question_id}/retire", response_model=QuestionOut)
async def retire_question(
    session: DbSession, actor: Manager, question_id: Id, response: Response, if_match: IfMatch = None
) -> QuestionOut:
    """Out of use: no new paper takes it (papers already made keep their copy)."""
    q = await service.get_question(session, question_id, actor)
    check_if_match(if_match, service.etag_of(q), q.row_version)
    await service.retire(session, actor, q)
    return await _question(session, actor, question_id, response)


# ---------------------------------------------------------------- papers


@router.post("/learning/papers", response_model=PaperOut, status_code=status.HTTP_201_CREATED)
async def create_paper(session: DbSession, actor: Manager, body: PaperCreate) -> PaperOut:
    """组卷, by rules or by hand. A rule that cannot be met is 422 `rule_not_met` naming each
    shortfall (`single_choice difficulty 2 in 宽带业务: need 10, approved 4`)."""
    return service.paper_out(await service.create_paper(session, actor, body))


@router.get("/learning/papers", response_model=Page[PaperSummary])
async def list_papers(session: DbSession, actor: Manager, page: Paging) -> Page[PaperSummary]:
    rows, nxt = await service.list_papers(session, page)
    return Page(items=[service.paper_summary(p) for p in rows], next_cursor=nxt)


@router.get("/learning/papers/{paper_id}", response_model=PaperOut)
async def get_paper(session: DbSession, actor: Manager, paper_id: Id) -> PaperOut:
    """The paper with its answer key (managers only)."""
    return service.paper_out(await service.get_paper(session, paper_id))


# ---------------------------------------------------------------- exams


@router.post("/learning/exams", response_model=ExamOut, status_code=status.HTTP_201_CREATED)
async def create_exam(session: DbSession, actor: Manager, body: ExamCreate, response: Response) -> ExamOut:
    """Assign a paper. Unknown roles, departments or users are 422 (`unknown_role`,
    `unknown_department`, `unknown_user`) naming them."""
    e = await exams.create_exam(session, actor, body)
    response.headers["ETag"] = exams.etag_of(e)
    return await exams.exam_out(session, e)


@router.get("/learning/exams", response_model=Page[ExamOut])
async def list_exams(session: DbSession, actor: Manager, page: Paging) -> Page[ExamOut]:
    rows, nxt = await exams.list_exams(session, page)
    return Page(items=[await exams.exam_out(session, e) for e in rows], next_cursor=nxt)


@router.get("/learning/exams/{exam_id}", response_model=ExamOut)
async def get_exam(session: DbSession, actor: Manager, exam_id: Id, response: Response) -> ExamOut:
    e = await exams.get_exam(session, exam_id)
    response.headers["ETag"] = exams.etag_of(e)
    return await exams.exam_out(session, e)


@router.post("/learning/exams/{exam_id}/cancel", response_model=ExamOut)
async def cancel_exam(
    session: DbSession, actor: Manager, exam_id: Id, response: Response, if_match: IfMatch = None
) -> ExamOut:
    """Withdraw the exam from its audience (attempts and results are kept)."""
    e = await exams.get_exam(session, exam_id)
    check_if_match(if_match, exams.etag_of(e), e.row_version)
    e = await exams.cancel_exam(session, actor, e)
    response.headers["ETag"] = exams.etag_of(e)
    return await exams.exam_out(session, e)


@router.get("/learning/exams/{exam_id}/attempts", response_model=Page[ResultRow])
async def exam_attempts(
    session: DbSession, actor: Manager, exam_id: Id, page: Paging, state: AttemptState | None = None
) -> Page[ResultRow]:
    """Per agent: state, score, pass or fail."""
    rows, nxt = await exams.exam_attempts(session, await exams.get_exam(session, exam_id), page, state)
    return Page(items=rows, next_cursor=nxt)


@router.get("/learning/exams/{exam_id}/results", response_model=ExamResultsOut)
async def exam_results(session: DbSession, actor: Manager, exam_id: Id) -> ExamResultsOut:
    """Aggregated per department (the agent's department when they started)."""
    return await exams.exam_results(session, await exams.get_exam(session, exam_id))


@router.get("/learning/attempts/{attempt_id}", response_model=ResultOut)
async def get_attempt(session: DbSession, actor: Manager, attempt_id: Id) -> ResultOut:
    """One agent's attempt with every answer, score and the answer key."""
    return await exams.attempt_detail(session, await exams.get_attempt(session, attempt_id))


@router.post("/learning/attempts/{attempt_id}/grades", response_model=ResultOut)
async def grade_attempt(session: DbSession, actor: Manager, attempt_id: Id, body: GradesIn) -> ResultOut:
    """Score short answers (0 … the question's score, else 422 `score_too_high`); the attempt is
    completed, with pass or fail, once none waits."""
    return await exams.grade(session, actor, await exams.get_attempt(session, attempt_id), body)


@router.get("/learning/grading", response_model=Page[GradingEntry])
async def grading_queue(session: DbSession, actor: Manager, page: Paging) -> Page[GradingEntry]:
    """阅卷: submitted attempts whose short answers wait for a grader, oldest first."""
    rows, nxt = await exams.grading_queue(session, page)
    return Page(items=rows, next_cursor=nxt)


# ---------------------------------------------------------------- the examinee


@router.get("/me/exams", response_model=Page[MyExamOut])
async def my_exams(
    session: DbSession,
    me: Student,
    page: Paging,
    status_: Annotated[
        Literal["upcoming", "open", "in_progress", "submitted", "missed"] | None, Query(alias="status")
    ] = None,
) -> Page[MyExamOut]:
    """The exams assigned to me (newest first) with my status, score and pass or fail."""
    rows, nxt = await exams.my_exams(session, me, page, status_)
    return Page(items=rows, next_cursor=nxt)


@router.post(
    "/me/exams/{exam_id}/attempt",
    response_model=AttemptOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The attempt in progress, resumed", "model": AttemptOut}},
)
async def start_attempt(session: DbSession, me: Student, exam_id: Id, response: Response) -> AttemptOut:
    """Start (201) or resume (200). The deadline is min(now + time limit, closes_at). 409
    `exam_not_open`, `exam_closed`, `already_submitted`, `deadline_passed`."""
    _, created = await exams.start(session, me, exam_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await exams.my_attempt(session, me, exam_id)


@router.get("/me/exams/{exam_id}/attempt", response_model=AttemptOut)
async def get_my_attempt(session: DbSession, me: Student, exam_id: Id) -> AttemptOut:
    """The questions without answers, what I saved and the time left."""
    return await exams.my_attempt(session, me, exam_id)


@router.put("/me/exams/{exam_id}/attempt/answers", response_model=AttemptOut)
async def save_answers(session: DbSession, me: Student, exam_id: Id, body: AnswersIn) -> AttemptOut:
    """Save progress (replaces what was saved), any number of times before the deadline. A question
    not in the paper is 422 `unknown_question`; after the deadline 409 `deadline_passed`."""
    return await exams.save(session, me, exam_id, body.answers)


@router.post("/me/exams/{exam_id}/attempt/submit", response_model=ResultOut)
async def submit_attempt(session: DbSession, me: Student, exam_id: Id, body: SubmitIn | None = None) -> ResultOut:
    """交卷, once: 409 `already_submitted` the second time, 409 `deadline_passed` after the deadline
    (the answers saved before it were submitted). Objective questions are scored at once."""
    await exams.submit(session, me, exam_id, body.answers if body else None)
    return await exams.my_result(session, me, exam_id)


@router.get("/me/exams/{exam_id}/result", response_model=ResultOut)
async def my_result(session: DbSession, me: Student, exam_id: Id) -> ResultOut:
    """My score, pass or fail, and each wrong answer with the items to study; the right answers
    once the exam has closed."""
    return await exams.my_result(session, me, exam_id)
