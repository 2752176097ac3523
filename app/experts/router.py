"""专家网络 (expert network): managers (`experts:manage`) keep the expert profiles; agents
(`experts:ask`) ask questions that are routed to the experts of their categories and tags (or, with
no expert, to the managers: `routing: "fallback"`); experts (`experts:answer`) answer the questions
routed to them; the asker accepts an answer; an editor (`knowledge:create`) turns an answer into a
knowledge draft that goes through the normal review. See app/experts/service.py for the rules."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status

from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.etag import IfMatch
from app.core.pagination import Page, Paging
from app.core.schemas import Id
from app.experts import service
from app.experts.schemas import (
    AnswerIn,
    AnswerOut,
    CloseIn,
    DraftIn,
    DraftOut,
    ProfileIn,
    ProfileOut,
    QuestionIn,
    QuestionOut,
    QuestionState,
)
from app.identity.deps import Require, RequireAny

router = APIRouter(tags=["experts"], responses=PROBLEMS)

Manager = Require(service.MANAGE)
Asker = Require(service.ASK)
Participant = RequireAny(service.ASK, service.ANSWER, service.MANAGE)
Answerer = RequireAny(service.ANSWER, service.MANAGE)


# ---------------------------------------------------------------- profiles


@router.get("/experts", response_model=Page[ProfileOut])
async def list_experts(
    session: DbSession,
    actor: Participant,
    page: Paging,
    category_id: Annotated[Id | None, Query(description="Experts who get this category's questions")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    available: bool | None = None,
) -> Page[ProfileOut]:
    """Expert profiles by user id (a filter narrows the page it is applied to)."""
    rows, nxt = await service.list_profiles(session, page, category_id, tag, available)
    return Page(items=[service.profile_out(p, u) for p, u in rows], next_cursor=nxt)


@router.get("/experts/{user_id}", response_model=ProfileOut)
async def get_expert(session: DbSession, actor: Participant, user_id: Id, response: Response) -> ProfileOut:
    p = await service.get_profile(session, user_id)
    response.headers["ETag"] = service.profile_etag(p)
    return service.profile_out(p, await service._user(session, user_id))


@router.put(
    "/experts/{user_id}",
    response_model=ProfileOut,
    responses={201: {"model": ProfileOut, "description": "Profile created"}},
)
async def put_expert(
    session: DbSession, actor: Manager, user_id: Id, body: ProfileIn, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Make a user an expert (201) or replace their profile (200; `If-Match` required: 428 without,
    412 when stale). Unknown categories or tags: 422 `unknown_category` / `unknown_tag`; a user
    whose roles do not grant `experts:answer`: 422 `not_an_answerer`."""
    p, user, created = await service.put_profile(session, actor, user_id, body, if_match)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["ETag"] = service.profile_etag(p)
    return service.profile_out(p, user)


@router.delete("/experts/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_expert(session: DbSession, actor: Manager, user_id: Id) -> None:
    """No longer an expert: no new questions (those already routed stay on their list)."""
    await service.delete_profile(session, actor, user_id)


# ---------------------------------------------------------------- questions


async def _out(session: DbSession, q: object, response: Response | None = None) -> QuestionOut:
    out = (await service.out_many(session, [q]))[0]  # type: ignore[list-item]
    if response is not None:
        response.headers["ETag"] = out.etag
    return out


@router.post("/questions", response_model=QuestionOut, status_code=status.HTTP_201_CREATED)
async def ask(session: DbSession, actor: Asker, body: QuestionIn, response: Response) -> QuestionOut:
    """Ask the expert network. Routed at once to the available experts of its categories (their
    subtrees) and tags, or to the managers when none matches (`routing: "fallback"`). Unknown
    categories or tags: 422; `item_id` of an item I may not read: 404 `item_not_found`."""
    return await _out(session, await service.ask(session, actor, body), response)


@router.get("/questions", response_model=Page[QuestionOut])
async def list_questions(
    session: DbSession,
    actor: Participant,
    page: Paging,
    scope: Annotated[
        Literal["mine", "assigned", "all"],
        Query(description="mine: I asked; assigned: routed to me; all: every question I may see"),
    ] = "all",
    state: QuestionState | None = None,
) -> Page[QuestionOut]:
    """Newest first."""
    rows, nxt = await service.list_questions(session, actor, page, scope, state)
    return Page(items=await service.out_many(session, rows), next_cursor=nxt)


@router.get("/questions/{question_id}", response_model=QuestionOut)
async def get_question(session: DbSession, actor: Participant, question_id: Id, response: Response) -> QuestionOut:
    """The asker, the experts it was routed to and managers see it; anyone else gets 404."""
    q, _ = await service.load_visible(session, actor, question_id)
    return await _out(session, q, response)


@router.post("/questions/{question_id}/answers", response_model=AnswerOut, status_code=status.HTTP_201_CREATED)
async def answer(session: DbSession, actor: Answerer, question_id: Id, body: AnswerIn) -> AnswerOut:
    """Answer a question routed to me (open or answered; 409 `invalid_transition` once resolved or
    closed). Not routed to me: 403 `not_routed_to_you` (or 404 when I may not see it)."""
    return AnswerOut.model_validate(await service.answer(session, actor, question_id, body))


@router.post("/questions/{question_id}/answers/{answer_id}/accept", response_model=QuestionOut)
async def accept(session: DbSession, actor: Asker, question_id: Id, answer_id: Id, response: Response) -> QuestionOut:
    """The asker accepts an answer: answered → resolved (409 `invalid_transition` from any other state)."""
    return await _out(session, await service.accept(session, actor, question_id, answer_id), response)


@router.post("/questions/{question_id}/close", response_model=QuestionOut)
async def close(
    session: DbSession, actor: Participant, question_id: Id, response: Response, body: CloseIn | None = None
) -> QuestionOut:
    """The asker (or a manager) closes an open or answered question (409 `invalid_transition` otherwise)."""
    q = await service.close(session, actor, question_id, body.reason if body else "")
    return await _out(session, q, response)


@router.post(
    "/questions/{question_id}/answers/{answer_id}/draft", response_model=DraftOut, status_code=status.HTTP_201_CREATED
)
async def answer_to_draft(
    request: Request,
    session: DbSession,
    actor: Require("knowledge:create"),
    question_id: Id,
    answer_id: Id,
    body: DraftIn | None = None,
) -> DraftOut:
    """Turn an answer into a knowledge draft in one call: an FAQ (by default) with the question as
    title and standard question, the answer as body (Markdown), the question's categories and tags;
    I am its author, it goes through the normal review (`submit: true` submits it at once). The
    question links to the item; a second draft is 409 `draft_exists`."""
    return await service.to_draft(
        session, actor, question_id, answer_id, body or DraftIn(), four_eyes=request.app.state.settings.four_eyes
    )
