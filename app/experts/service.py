"""The expert network: profiles, questions, routing, answers, and an answer turned into a knowledge draft.

Routing (at the moment a question is asked, kept in `expert_question_routes`): the available
experts (active users) whose categories include one of the question's categories or an ancestor
of it (an expert of 宽带业务 gets 宽带故障 questions), or whose tags meet the question's tags; the
asker is never routed their own question. No expert matches: the question goes to the knowledge
managers (active users holding `experts:manage`) and says so (`routing: "fallback"`).

Who sees a question: its asker, the users it was routed to, and holders of `experts:manage`;
anyone else gets 404, as if it did not exist. States (one table, `TRANSITIONS`):

    open ──answer──▶ answered ──accept (the asker)──▶ resolved
      │                 │ (more answers keep it answered)
      └──close──────────┴──close (the asker or a manager)──▶ closed

A move not in the table is 409 `invalid_transition` with the allowed ones. Every change is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import changes, record
from app.core.db import utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed
from app.core.etag import make_etag
from app.core.pagination import PageParams, paginate_by_id
from app.experts.models import ExpertAnswer, ExpertProfile, ExpertQuestion, QuestionRoute
from app.experts.schemas import (
    AnswerIn,
    AnswerOut,
    DraftIn,
    DraftOut,
    ProfileIn,
    ProfileOut,
    QuestionIn,
    QuestionOut,
)
from app.identity.models import Role, User, user_roles
from app.identity.permissions import ALL, OPERATIONS, SYSTEM_ACCESS
from app.identity.principal import Principal
from app.knowledge import acl, workflow
from app.knowledge import service as knowledge
from app.knowledge.models import Item
from app.knowledge.schemas import ItemCreate, TransitionIn
from app.taxonomy import service as taxonomy

ASK, ANSWER, MANAGE = "experts:ask", "experts:answer", "experts:manage"
TRANSITIONS: dict[str, dict[str, str]] = {
    "answer": {"open": "answered", "answered": "answered"},
    "accept": {"answered": "resolved"},
    "close": {"open": "closed", "answered": "closed"},
}


def _move(q: ExpertQuestion, action: str) -> str:
    target = TRANSITIONS[action].get(q.state)
    if target is None:
        allowed = [a for a, moves in TRANSITIONS.items() if q.state in moves]
        raise Conflict(
            f"Cannot {action} a question that is {q.state}; allowed: {', '.join(allowed) or 'nothing'}",
            code="invalid_transition",
            action=action,
            state=q.state,
            allowed=allowed,
        )
    return target


def profile_etag(p: ExpertProfile) -> str:
    return make_etag("expert", p.user_id, p.row_version)


def question_etag(q: ExpertQuestion) -> str:
    return make_etag("question", q.id, q.row_version)


# ---------------------------------------------------------------- profiles


async def _user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}", code="user_not_found")
    return user


async def _check_taxonomy(
    session: AsyncSession, category_ids: list[int], tags: list[str]
) -> tuple[list[int], list[str]]:
    try:
        nodes = await taxonomy.validate_node_ids(session, category_ids)
    except InvalidInput as e:
        e.extra["field"] = "category_ids"
        raise
    try:
        found = await taxonomy.resolve_tags(session, tags, create_missing=False)
    except InvalidInput as e:
        e.extra["field"] = "tags"
        raise
    return [n.id for n in nodes], [t.name for t in found]


def _may_answer(user: User) -> bool:
    """As `Principal.can` combines a user's roles: `*`, or system access, the module and experts:answer."""
    held = {p for r in user.roles for p in r.permissions}
    return ALL in held or {SYSTEM_ACCESS, OPERATIONS[ANSWER][0], ANSWER} <= held


def profile_out(p: ExpertProfile, user: User) -> ProfileOut:
    return ProfileOut(
        user_id=p.user_id,
        username=user.username,
        display_name=user.display_name,
        bio=p.bio,
        category_ids=list(p.categories),
        tags=list(p.tags),
        available=p.available,
        created_at=p.created_at,
        updated_at=p.updated_at,
        row_version=p.row_version,
        etag=profile_etag(p),
    )


async def get_profile(session: AsyncSession, user_id: int) -> ExpertProfile:
    p = await session.get(ExpertProfile, user_id)
    if p is None:
        raise NotFound(f"User {user_id} is not an expert", code="expert_not_found")
    return p


def _profile_summary(p: ExpertProfile) -> dict[str, Any]:
    return {"bio": p.bio, "categories": list(p.categories), "tags": list(p.tags), "available": p.available}


async def put_profile(
    session: AsyncSession, actor: Principal, user_id: int, data: ProfileIn, if_match: str | None
) -> tuple[ExpertProfile, User, bool]:
    """Create (no If-Match needed) or replace (If-Match required) a profile."""
    from app.core.etag import check_if_match

    user = await _user(session, user_id)
    if not _may_answer(user):
        raise InvalidInput(
            f"{user.username} may not answer questions: give them a role with {ANSWER!r} first",
            code="not_an_answerer",
            field="user_id",
        )
    categories, tags = await _check_taxonomy(session, list(data.category_ids), list(data.tags))
    p = await session.get(ExpertProfile, user_id)
    created = p is None
    now = utcnow()
    if p is None:
        p = ExpertProfile(user_id=user_id, created_by=actor.actor, created_at=now)
        session.add(p)
        before: dict[str, Any] = {}
    else:
        check_if_match(if_match, profile_etag(p), p.row_version)
        before = _profile_summary(p)
    p.bio, p.categories, p.tags, p.available, p.updated_at = data.bio, categories, tags, data.available, now
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        raise PreconditionFailed("Someone changed this profile at the same moment; reload and try again")
    record(
        session,
        actor,
        "expert.create" if created else "expert.update",
        "expert",
        user_id,
        **({"after": _profile_summary(p)} if created else changes(before, _profile_summary(p))),
    )
    await session.commit()
    return p, user, created


async def delete_profile(session: AsyncSession, actor: Principal, user_id: int) -> None:
    p = await get_profile(session, user_id)
    record(session, actor, "expert.delete", "expert", user_id, before=_profile_summary(p))
    await session.delete(p)
    await session.commit()


async def list_profiles(
    session: AsyncSession, page: PageParams, category_id: int | None, tag: str | None, available: bool | None
) -> tuple[list[tuple[ExpertProfile, User]], str | None]:
    """By user id. `category_id`: experts of that node or an ancestor of it (who would get its questions)."""
    stmt = select(ExpertProfile)
    if available is not None:
        stmt = stmt.where(ExpertProfile.available.is_(available))
    rows, nxt = await paginate_by_id(session, stmt, ExpertProfile.user_id, page, descending=False)
    if category_id is not None:
        await taxonomy.validate_node_ids(session, [category_id])
        chain = set(await taxonomy.ancestors_and_self(session, [category_id]))
        rows = [p for p in rows if chain & set(p.categories)]
    if tag is not None:
        rows = [p for p in rows if tag in p.tags]
    users = (
        {u.id: u for u in (await session.scalars(select(User).where(User.id.in_([p.user_id for p in rows])))).all()}
        if rows
        else {}
    )
    return [(p, users[p.user_id]) for p in rows], nxt


# ---------------------------------------------------------------- routing


def _holding(roles: Sequence[Role], *perms: str) -> Any:
    ids = [r.id for r in roles if any(p in r.permissions for p in perms)]
    return exists().where(user_roles.c.user_id == User.id, user_roles.c.role_id.in_(ids))


async def _managers(session: AsyncSession) -> list[int]:
    """Active users holding experts:manage by name (system access, the module and the permission);
    administrators (`*`) only when nobody does."""
    roles = (await session.scalars(select(Role))).all()
    module = OPERATIONS[MANAGE][0]
    named = and_(_holding(roles, SYSTEM_ACCESS), _holding(roles, module), _holding(roles, MANAGE))
    ids = list((await session.scalars(select(User.id).where(User.is_active.is_(True), named).order_by(User.id))).all())
    if not ids:
        ids = list(
            (
                await session.scalars(
                    select(User.id).where(User.is_active.is_(True), _holding(roles, ALL)).order_by(User.id)
                )
            ).all()
        )
    return ids


async def route(
    session: AsyncSession,
    category_ids: list[int],
    tags: list[str],
    asker_id: int | None,
) -> tuple[list[int], str]:
    """The user ids a question goes to, and how it was routed (experts | fallback)."""
    chain = set(await taxonomy.ancestors_and_self(session, category_ids)) if category_ids else set()
    wanted_tags = set(tags)
    profiles = (
        (
            await session.execute(
                select(ExpertProfile)
                .join(User, User.id == ExpertProfile.user_id)
                .where(ExpertProfile.available.is_(True), User.is_active.is_(True))
            )
        )
        .scalars()
        .all()
    )
    experts = sorted(
        p.user_id
        for p in profiles
        if p.user_id != asker_id and (chain & set(p.categories) or wanted_tags & set(p.tags))
    )
    if experts:
        return experts, "experts"
    return [u for u in await _managers(session) if u != asker_id], "fallback"


# ---------------------------------------------------------------- questions


def _question_summary(q: ExpertQuestion) -> dict[str, Any]:
    return {
        "title": q.title,
        "categories": list(q.categories),
        "tags": list(q.tags),
        "item_id": q.item_id,
        "state": q.state,
    }


async def ask(session: AsyncSession, actor: Principal, data: QuestionIn) -> ExpertQuestion:
    if actor.kind != "user":
        raise Forbidden("Questions are asked by signed-in users", code="users_only")
    categories, tags = await _check_taxonomy(session, list(data.category_ids), list(data.tags))
    if data.item_id is not None:
        item = await session.get(Item, data.item_id)
        if item is None or not await acl.can_read(session, actor, item):
            raise NotFound(f"No item with id {data.item_id}", code="item_not_found", field="item_id")
    routed, routing = await route(session, categories, tags, actor.id)
    now = utcnow()
    q = ExpertQuestion(
        asker_id=actor.id,
        title=data.title,
        text=data.text,
        categories=categories,
        tags=tags,
        item_id=data.item_id,
        state="open",
        routing=routing,
        created_at=now,
        updated_at=now,
    )
    session.add(q)
    await session.flush()
    for user_id in routed:
        session.add(QuestionRoute(question_id=q.id, user_id=user_id))
    record(
        session,
        actor,
        "question.create",
        "question",
        q.id,
        after=_question_summary(q),
        routing=routing,
        routed_to=routed,
    )
    await session.commit()
    return q


async def routed_to(session: AsyncSession, question_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in question_ids}
    if question_ids:
        for qid, uid in (
            await session.execute(
                select(QuestionRoute.question_id, QuestionRoute.user_id)
                .where(QuestionRoute.question_id.in_(question_ids))
                .order_by(QuestionRoute.user_id)
            )
        ).all():
            out[qid].append(uid)
    return out


def may_see(principal: Principal, q: ExpertQuestion, routes: list[int]) -> bool:
    return principal.can(MANAGE) or (
        principal.kind == "user" and (principal.id == q.asker_id or principal.id in routes)
    )


async def load_visible(
    session: AsyncSession, principal: Principal, question_id: int, *, for_update: bool = False
) -> tuple[ExpertQuestion, list[int]]:
    """The question if the caller may see it, else 404 (as if it did not exist)."""
    stmt = select(ExpertQuestion).where(ExpertQuestion.id == question_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    q = await session.scalar(stmt)
    routes = (await routed_to(session, [question_id]))[question_id] if q is not None else []
    if q is None or not may_see(principal, q, routes):
        raise NotFound(f"No question with id {question_id}", code="question_not_found")
    return q, routes


async def answers_of(session: AsyncSession, question_ids: list[int]) -> dict[int, list[ExpertAnswer]]:
    out: dict[int, list[ExpertAnswer]] = {i: [] for i in question_ids}
    if question_ids:
        for a in (
            await session.scalars(
                select(ExpertAnswer).where(ExpertAnswer.question_id.in_(question_ids)).order_by(ExpertAnswer.id)
            )
        ).all():
            out[a.question_id].append(a)
    return out


async def out_many(session: AsyncSession, questions: list[ExpertQuestion]) -> list[QuestionOut]:
    ids = [q.id for q in questions]
    routes, answers = await routed_to(session, ids), await answers_of(session, ids)
    return [
        QuestionOut(
            id=q.id,
            asker_id=q.asker_id,
            title=q.title,
            text=q.text,
            category_ids=list(q.categories),
            tags=list(q.tags),
            item_id=q.item_id,
            state=q.state,
            routing=q.routing,
            routed_to=routes[q.id],
            accepted_answer_id=q.accepted_answer_id,
            draft_item_id=q.draft_item_id,
            answers=[AnswerOut.model_validate(a) for a in answers[q.id]],
            created_at=q.created_at,
            updated_at=q.updated_at,
            answered_at=q.answered_at,
            resolved_at=q.resolved_at,
            closed_at=q.closed_at,
            row_version=q.row_version,
            etag=question_etag(q),
        )
        for q in questions
    ]


def visible_stmt(principal: Principal, scope: str) -> Any:
    """mine: I asked; assigned: routed to me; all: every question (managers)."""
    stmt = select(ExpertQuestion)
    uid = principal.id if principal.kind == "user" else -1
    assigned = exists().where(QuestionRoute.question_id == ExpertQuestion.id, QuestionRoute.user_id == uid)
    if scope == "mine":
        return stmt.where(ExpertQuestion.asker_id == uid)
    if scope == "assigned":
        return stmt.where(assigned)
    if not principal.can(MANAGE):
        return stmt.where(or_(ExpertQuestion.asker_id == uid, assigned))
    return stmt


async def list_questions(
    session: AsyncSession, principal: Principal, page: PageParams, scope: str, state: str | None
) -> tuple[list[ExpertQuestion], str | None]:
    stmt = visible_stmt(principal, scope)
    if state:
        stmt = stmt.where(ExpertQuestion.state == state)
    return await paginate_by_id(session, stmt, ExpertQuestion.id, page)


async def _save(session: AsyncSession, q: ExpertQuestion) -> None:
    id_ = q.id
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        raise Conflict(
            f"Someone changed question {id_} at the same moment; reload and try again", code="concurrent_update"
        )


async def answer(session: AsyncSession, actor: Principal, question_id: int, data: AnswerIn) -> ExpertAnswer:
    """Routed experts (experts:answer) and managers answer; the asker does not answer their own question."""
    q, routes = await load_visible(session, actor, question_id, for_update=True)
    if not (actor.can(MANAGE) or (actor.can(ANSWER) and actor.id in routes)):
        raise Forbidden(
            "Only the experts this question was routed to (or a manager) answer it", code="not_routed_to_you"
        )
    from_state = q.state
    q.state = _move(q, "answer")
    now = utcnow()
    q.answered_at = q.answered_at or now
    q.updated_at = now
    a = ExpertAnswer(
        question_id=q.id, author_id=knowledge.user_id(actor), body=data.body, created_at=now, updated_at=now
    )
    session.add(a)
    await _save(session, q)
    record(session, actor, "question.answer", "question", q.id, answer_id=a.id, from_state=from_state, to_state=q.state)
    await session.commit()
    return a


async def _answer_of(session: AsyncSession, q: ExpertQuestion, answer_id: int) -> ExpertAnswer:
    a = await session.get(ExpertAnswer, answer_id)
    if a is None or a.question_id != q.id:
        raise NotFound(f"Question {q.id} has no answer {answer_id}", code="answer_not_found")
    return a


async def accept(session: AsyncSession, actor: Principal, question_id: int, answer_id: int) -> ExpertQuestion:
    q, _ = await load_visible(session, actor, question_id, for_update=True)
    a = await _answer_of(session, q, answer_id)
    if actor.kind != "user" or actor.id != q.asker_id:
        raise Forbidden("Only the asker accepts an answer", code="not_asker")
    from_state = q.state
    q.state = _move(q, "accept")
    a.accepted = True
    q.accepted_answer_id, q.resolved_at = a.id, utcnow()
    q.updated_at = q.resolved_at
    await _save(session, q)
    record(session, actor, "question.accept", "question", q.id, answer_id=a.id, from_state=from_state, to_state=q.state)
    await session.commit()
    return q


async def close(session: AsyncSession, actor: Principal, question_id: int, reason: str) -> ExpertQuestion:
    q, _ = await load_visible(session, actor, question_id, for_update=True)
    if not (actor.can(MANAGE) or (actor.kind == "user" and actor.id == q.asker_id)):
        raise Forbidden("Only the asker or a manager closes a question", code="not_asker")
    from_state = q.state
    q.state = _move(q, "close")
    q.closed_at = q.updated_at = utcnow()
    await _save(session, q)
    record(
        session,
        actor,
        "question.close",
        "question",
        q.id,
        from_state=from_state,
        to_state=q.state,
        reason=reason or None,
    )
    await session.commit()
    return q


async def to_draft(
    session: AsyncSession, actor: Principal, question_id: int, answer_id: int, data: DraftIn, four_eyes: bool
) -> DraftOut:
    """A knowledge item whose first version holds the question (standard question, title) and the
    answer (body): the caller is its author, it goes through the normal review. One per question."""
    q, _ = await load_visible(session, actor, question_id, for_update=True)
    a = await _answer_of(session, q, answer_id)
    if q.draft_item_id is not None:
        raise Conflict(
            f"Question {q.id} was already turned into item {q.draft_item_id}",
            code="draft_exists",
            item_id=q.draft_item_id,
        )
    if q.state == "closed":
        raise Conflict("This question is closed", code="invalid_transition", action="draft", state=q.state, allowed=[])
    if data.submit and not actor.can("knowledge:submit"):
        raise Forbidden(
            "You lack the permission 'knowledge:submit'",
            code="permission_denied",
            required_permission="knowledge:submit",
        )
    # The question's tags and categories as they are now (one may have been deleted since it was asked).
    tags = [t.name for t in await taxonomy.resolve_tags(session, list(q.tags), create_missing=False)] if q.tags else []
    body = ItemCreate(
        item_type=data.item_type,
        title=data.title or q.title,
        question=q.title[:500],
        body=a.body,
        body_format="markdown",
        category_ids=list(q.categories),
        tags=tags,
        attributes=data.attributes,
        change_note=f"来自专家问答 #{q.id} (from expert question {q.id})",
    )
    record(session, actor, "question.draft", "question", q.id, answer_id=a.id)
    item, version = await knowledge.create_item(session, actor, body)  # commits, with the audit entry above
    q = (await load_visible(session, actor, question_id, for_update=True))[0]
    q.draft_item_id = item.id
    q.updated_at = utcnow()
    await _save(session, q)
    record(session, actor, "question.link_item", "question", q.id, item_id=item.id, answer_id=a.id)
    await session.commit()
    if data.submit:
        item = await knowledge.load_item(session, item.id, for_update=True)
        assert item is not None
        version = await knowledge.latest_version(session, item)
        await workflow.transition(session, actor, item, version, "submit", TransitionIn(), four_eyes=four_eyes)
    return DraftOut(
        question_id=q.id,
        answer_id=a.id,
        item_id=item.id,
        version=version.number,
        state=version.state,
        link=f"/api/v1/items/{item.id}",
    )


# ---------------------------------------------------------------- to-do list


def waiting_for_expert(user_id: int) -> Any:
    """Open or answered questions routed to me that I have not answered."""
    mine = exists().where(ExpertAnswer.question_id == ExpertQuestion.id, ExpertAnswer.author_id == user_id)
    return select(ExpertQuestion).where(
        exists().where(QuestionRoute.question_id == ExpertQuestion.id, QuestionRoute.user_id == user_id),
        ExpertQuestion.state.in_(("open", "answered")),
        ~mine,
    )


def answered_for_asker(user_id: int) -> Any:
    """My questions with an answer to accept."""
    return select(ExpertQuestion).where(ExpertQuestion.asker_id == user_id, ExpertQuestion.state == "answered")
