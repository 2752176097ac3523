"""The question bank and papers. Questions are written by hand or generated from the knowledge
(app/learning/generation.py); each goes draft → approved (→ retired). A paper is assembled from
approved questions, by rules or by hand, and keeps a frozen snapshot of them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import changes, record
from app.core.db import like_pattern, utcnow
from app.core.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from app.core.etag import make_etag
from app.core.pagination import PageParams, paginate_by_id
from app.identity.principal import Principal
from app.knowledge import acl
from app.knowledge.models import Item, ItemReader, ItemVersion
from app.learning.models import OBJECTIVE, Paper, Question, QuestionCategory, QuestionItem
from app.learning.schemas import (
    ItemLink,
    LinkOut,
    OptionOut,
    PaperCreate,
    PaperOut,
    PaperQuestionOut,
    PaperRule,
    PaperSummary,
    QuestionCreate,
    QuestionOut,
    QuestionUpdate,
)
from app.learning.scoring import FALSE, TRUE, fold
from app.taxonomy.models import TaxonomyNode
from app.taxonomy.service import node_names

STUDY = "learning:study"
MANAGE = "learning:manage"
KEYS = "ABCDEFGH"
CHOICE = frozenset({"single_choice", "multiple_choice"})
DIFFICULTY_WORDS = {"easy": 1, "medium": 3, "hard": 5}
DIFFICULTY_NAMES = {1: "easy", 2: "easy-medium", 3: "medium", 4: "medium-hard", 5: "hard"}


def etag_of(q: Question) -> str:
    return make_etag("question", q.id, q.row_version)


def difficulty_of(value: int | str) -> int:
    return DIFFICULTY_WORDS[value] if isinstance(value, str) else value


def item_link(item_id: int) -> str:
    return f"/api/v1/items/{item_id}"


def options_of(texts: Sequence[str]) -> list[dict[str, str]]:
    return [{"key": KEYS[i], "text": t} for i, t in enumerate(texts)]


# ---------------------------------------------------------------- validation


def duplicate_options(texts: Sequence[str]) -> tuple[int, int] | None:
    """The positions of the first two options that are the same text after folding, if any."""
    seen: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = fold(t)
        if key in seen:
            return seen[key], i
        seen[key] = i
    return None


def check_content(kind: str, options: list[str], answer: list[str]) -> list[str]:
    """The answer key in its stored form, or 422 naming the field."""
    if kind in CHOICE:
        if not 2 <= len(options) <= len(KEYS):
            raise InvalidInput(
                f"A {kind} question needs 2 to {len(KEYS)} options", code="invalid_options", field="options"
            )
        dup = duplicate_options(options)
        if dup:
            a, b = dup
            raise InvalidInput(
                f"Options {KEYS[a]} and {KEYS[b]} say the same thing: {options[b]!r}",
                code="duplicate_options",
                field="options",
                options=[KEYS[a], KEYS[b]],
            )
        keys = KEYS[: len(options)]
        chosen = sorted({a.strip().upper() for a in answer})
        unknown = [k for k in chosen if k not in keys]
        if unknown or not chosen:
            raise InvalidInput(
                f"answer must name option keys among {list(keys)}", code="invalid_answer_key", field="answer"
            )
        if kind == "single_choice" and len(chosen) != 1:
            raise InvalidInput(
                "A single-choice question has exactly one right option", code="invalid_answer_key", field="answer"
            )
        return chosen
    if options:
        raise InvalidInput(f"A {kind} question has no options", code="invalid_options", field="options")
    if kind == "true_false":
        if len(answer) != 1 or answer[0].lower() not in (TRUE, FALSE):
            raise InvalidInput('answer is ["true"] or ["false"]', code="invalid_answer_key", field="answer")
        return [answer[0].lower()]
    cleaned = list(dict.fromkeys(a for a in answer if a))
    if kind == "fill_in" and not cleaned:
        raise InvalidInput(
            "A fill-in question needs at least one accepted answer", code="invalid_answer_key", field="answer"
        )
    if kind == "short_answer" and len(cleaned) > 1:
        raise InvalidInput(
            "A short answer has one reference answer for the grader", code="invalid_answer_key", field="answer"
        )
    return cleaned


async def check_categories(session: AsyncSession, ids: Iterable[int], field: str = "categories") -> list[int]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    unknown = sorted(set(wanted) - set(await node_names(session, wanted)))
    if unknown:
        raise InvalidInput(f"Unknown categories: {unknown}", code="unknown_category", field=field, unknown=unknown)
    return wanted


async def resolve_links(session: AsyncSession, actor: Principal, links: list[ItemLink]) -> list[tuple[int, int]]:
    """(item id, version) for each link the caller may read; 422 naming the unknown ones."""
    out: list[tuple[int, int]] = []
    for i, link in enumerate(dict((lk.item_id, lk) for lk in links).values()):
        item = await session.get(Item, link.item_id)
        if item is None or not await acl.can_read(session, actor, item):
            raise InvalidInput(
                f"Unknown item {link.item_id}", code="unknown_item", field=f"items.{i}.item_id", item_id=link.item_id
            )
        number = link.version
        if number is None:
            number = await current_version_no(session, item)
        elif number > item.latest_version_no:
            raise InvalidInput(
                f"Item {item.id} has no version {number}", code="version_not_found", field=f"items.{i}.version"
            )
        out.append((item.id, number))
    return out


async def current_version_no(session: AsyncSession, item: Item) -> int:
    """The version a question is checked against: the published one, else the latest."""
    if item.published_version_id is not None:
        number = await session.scalar(select(ItemVersion.number).where(ItemVersion.id == item.published_version_id))
        if number is not None:
            return number
    return item.latest_version_no


# ---------------------------------------------------------------- reading


async def _categories_of(session: AsyncSession, ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for qid, node in (
            await session.execute(
                select(QuestionCategory.question_id, QuestionCategory.node_id)
                .where(QuestionCategory.question_id.in_(ids))
                .order_by(QuestionCategory.node_id)
            )
        ).all():
            out[qid].append(node)
    return out


async def _links_of(session: AsyncSession, ids: list[int]) -> dict[int, list[LinkOut]]:
    out: dict[int, list[LinkOut]] = {i: [] for i in ids}
    if ids:
        rows = (
            await session.scalars(
                select(QuestionItem)
                .where(QuestionItem.question_id.in_(ids))
                .order_by(QuestionItem.role.desc(), QuestionItem.item_id)
            )
        ).all()
        for r in rows:
            out[r.question_id].append(
                LinkOut(item_id=r.item_id, version=r.version, role=r.role, link=item_link(r.item_id))
            )
    return out


async def outs(session: AsyncSession, rows: Sequence[Question]) -> list[QuestionOut]:
    ids = [q.id for q in rows]
    cats, links = await _categories_of(session, ids), await _links_of(session, ids)
    return [
        QuestionOut(
            id=q.id,
            kind=q.kind,
            stem=q.stem,
            options=[OptionOut(**o) for o in q.options],
            answer=list(q.answer),
            explanation=q.explanation,
            difficulty=q.difficulty,
            categories=cats[q.id],
            items=links[q.id],
            state=q.state,
            needs_review=q.needs_review,
            review_reason=q.review_reason,
            source=q.source,
            created_by=q.created_by,
            updated_by=q.updated_by,
            approved_by=q.approved_by,
            approved_at=q.approved_at,
            created_at=q.created_at,
            updated_at=q.updated_at,
            row_version=q.row_version,
            etag=etag_of(q),
        )
        for q in rows
    ]


async def out(session: AsyncSession, q: Question) -> QuestionOut:
    return (await outs(session, [q]))[0]


def readable_by(principal: Principal) -> Any:
    """SQL condition on `Question`: the caller may read every item it is linked to (its answer
    and its wrong options are those items' content), so the bank never shows a manager the
    answer of an item their ACL hides."""
    if principal.is_superuser:
        return true()
    hidden = select(QuestionItem.question_id).where(
        QuestionItem.question_id == Question.id,
        ~exists().where(ItemReader.item_id == QuestionItem.item_id, ItemReader.subject.in_(acl.subjects_of(principal))),
    )
    return ~exists(hidden)


async def get_question(session: AsyncSession, question_id: int, principal: Principal | None = None) -> Question:
    q = await session.get(Question, question_id)
    if q is not None and principal is not None and not principal.is_superuser:
        visible = await session.scalar(select(Question.id).where(Question.id == q.id, readable_by(principal)))
        q = q if visible is not None else None
    if q is None:
        raise NotFound(f"No question with id {question_id}", code="question_not_found")
    return q


async def subtree(session: AsyncSession, node_ids: Iterable[int]) -> list[int]:
    """The nodes and every node below them."""
    ids = list(node_ids)
    if not ids:
        return []
    paths = (await session.scalars(select(TaxonomyNode.path).where(TaxonomyNode.id.in_(ids)))).all()
    return list(
        (
            await session.scalars(
                select(TaxonomyNode.id).where(
                    or_(*[TaxonomyNode.path.like(p.replace("%", "\\%") + "%", escape="\\") for p in paths])
                )
            )
        ).all()
    )


async def list_questions(
    session: AsyncSession,
    page: PageParams,
    principal: Principal,
    *,
    state: str | None,
    kind: str | None,
    difficulty: int | None,
    category: int | None,
    needs_review: bool | None,
    item_id: int | None,
    q: str | None,
) -> tuple[list[Question], str | None]:
    stmt = select(Question).where(readable_by(principal))
    if state:
        stmt = stmt.where(Question.state == state)
    if kind:
        stmt = stmt.where(Question.kind == kind)
    if difficulty:
        stmt = stmt.where(Question.difficulty == difficulty)
    if needs_review is not None:
        stmt = stmt.where(Question.needs_review == needs_review)
    if category:
        nodes = await subtree(session, await check_categories(session, [category], "category"))
        stmt = stmt.where(
            Question.id.in_(select(QuestionCategory.question_id).where(QuestionCategory.node_id.in_(nodes)))
        )
    if item_id:
        stmt = stmt.where(Question.id.in_(select(QuestionItem.question_id).where(QuestionItem.item_id == item_id)))
    if q:
        stmt = stmt.where(Question.stem.like(like_pattern(q), escape="\\"))
    return await paginate_by_id(session, stmt, Question.id, page)


# ---------------------------------------------------------------- writing


def summary(
    q: Question, categories: list[int] | None = None, links: list[tuple[int, int]] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": q.kind,
        "stem": q.stem[:200],
        "options": [o["text"][:100] for o in q.options],
        "answer": list(q.answer),
        "difficulty": q.difficulty,
        "state": q.state,
        "needs_review": q.needs_review,
    }
    if categories is not None:
        out["categories"] = categories
    if links is not None:
        out["items"] = [list(lk) for lk in links]
    return out


async def _set_categories(session: AsyncSession, q: Question, ids: list[int]) -> None:
    await session.execute(delete(QuestionCategory).where(QuestionCategory.question_id == q.id))
    session.add_all([QuestionCategory(question_id=q.id, node_id=n) for n in ids])


async def _set_links(
    session: AsyncSession,
    q: Question,
    links: list[tuple[int, int]],
    role: str = "source",
    keep_other_roles: bool = False,
) -> None:
    stmt = delete(QuestionItem).where(QuestionItem.question_id == q.id)
    if keep_other_roles:
        stmt = stmt.where(QuestionItem.role == role)
    await session.execute(stmt)
    session.add_all([QuestionItem(question_id=q.id, item_id=i, version=v, role=role) for i, v in links])


async def add_question(
    session: AsyncSession,
    actor: Principal,
    *,
    kind: str,
    stem: str,
    options: list[str],
    answer: list[str],
    explanation: str,
    difficulty: int,
    categories: list[int],
    links: list[tuple[int, int]],
    distractor_links: Sequence[tuple[int, int]] = (),
    source: str = "manual",
) -> Question:
    """Insert a checked question with its categories and links (no commit)."""
    now = utcnow()
    q = Question(
        kind=kind,
        stem=stem,
        options=options_of(options),
        answer=answer,
        explanation=explanation,
        difficulty=difficulty,
        state="draft",
        source=source,
        created_by=actor.actor,
        updated_by=actor.actor,
        created_at=now,
        updated_at=now,
    )
    session.add(q)
    await session.flush()
    session.add_all([QuestionCategory(question_id=q.id, node_id=n) for n in categories])
    session.add_all([QuestionItem(question_id=q.id, item_id=i, version=v, role="source") for i, v in links])
    source_ids = {i for i, _ in links}
    session.add_all(
        [
            QuestionItem(question_id=q.id, item_id=i, version=v, role="distractor")
            for i, v in dict(distractor_links).items()
            if i not in source_ids
        ]
    )
    return q


async def create_question(session: AsyncSession, actor: Principal, data: QuestionCreate) -> Question:
    answer = check_content(data.kind, data.options, data.answer)
    categories = await check_categories(session, data.categories)
    links = await resolve_links(session, actor, data.items)
    q = await add_question(
        session,
        actor,
        kind=data.kind,
        stem=data.stem,
        options=data.options,
        answer=answer,
        explanation=data.explanation,
        difficulty=difficulty_of(data.difficulty),
        categories=categories,
        links=links,
    )
    record(session, actor, "question.create", "question", q.id, after=summary(q, categories, links))
    await session.commit()
    return q


async def _flush(session: AsyncSession, q: Question) -> None:
    id_ = q.id
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        current = await session.scalar(select(Question.row_version).where(Question.id == id_))
        raise PreconditionFailed(
            "Someone changed this question at the same moment; reload and try again",
            current_etag=make_etag("question", id_, current or 0),
            current_version=current,
        )


async def relink_to_current(session: AsyncSession, q: Question) -> None:
    """Move the question's links to the items' current versions (it was checked against them)."""
    for link in (await session.scalars(select(QuestionItem).where(QuestionItem.question_id == q.id))).all():
        item = await session.get(Item, link.item_id)
        if item is not None:
            link.version = await current_version_no(session, item)


async def update_question(session: AsyncSession, actor: Principal, q: Question, data: QuestionUpdate) -> Question:
    if q.state == "retired":
        raise Conflict("A retired question cannot be edited", code="question_retired")
    sent = data.model_fields_set
    for field in ("stem", "options", "answer", "explanation", "difficulty", "categories", "items"):
        if field in sent and getattr(data, field) is None:
            raise InvalidInput(f"{field} cannot be null", code="validation_error", field=field)
    before = summary(q)
    options = data.options if data.options is not None else [o["text"] for o in q.options]
    answer = data.answer if data.answer is not None else list(q.answer)
    content_changed = bool(sent & {"stem", "options", "answer", "explanation", "difficulty"})
    if data.options is not None or data.answer is not None:
        q.answer = check_content(q.kind, options, answer)
        q.options = options_of(options)
    if data.stem is not None:
        q.stem = data.stem
    if data.explanation is not None:
        q.explanation = data.explanation
    if data.difficulty is not None:
        q.difficulty = difficulty_of(data.difficulty)
    info: dict[str, Any] = {}
    if data.categories is not None:
        cats = await check_categories(session, data.categories)
        await _set_categories(session, q, cats)
        info["categories"] = cats
    if data.items is not None:
        links = await resolve_links(session, actor, data.items)
        await _set_links(session, q, links, keep_other_roles=True)
        info["items"] = [list(lk) for lk in links]
    if data.needs_review is False and q.needs_review:
        q.needs_review, q.review_reason = False, None
        await relink_to_current(session, q)
        info["reviewed"] = True
    if content_changed and q.state == "approved":
        q.state = "draft"  # a changed question is approved again before it goes into a paper
        q.approved_by = q.approved_at = None
    q.updated_by, q.updated_at = actor.actor, utcnow()
    await _flush(session, q)
    record(session, actor, "question.update", "question", q.id, **changes(before, summary(q)), **info)
    await session.commit()
    return q


async def approve(session: AsyncSession, actor: Principal, q: Question, *, commit: bool = True) -> bool:
    """draft → approved; an approved question waiting for review is approved again (its links move to
    the items' current versions). False when there was nothing to do."""
    if q.state == "retired":
        raise Conflict("A retired question cannot be approved", code="invalid_transition", state=q.state, allowed=[])
    if q.state == "approved" and not q.needs_review:
        if commit:
            raise Conflict(
                "The question is already approved", code="invalid_transition", state=q.state, allowed=["retire"]
            )
        return False
    from_state = q.state
    now = utcnow()
    q.state, q.approved_by, q.approved_at, q.updated_by, q.updated_at = "approved", actor.actor, now, actor.actor, now
    if q.needs_review:
        q.needs_review, q.review_reason = False, None
        await relink_to_current(session, q)
    await _flush(session, q)
    record(session, actor, "question.approve", "question", q.id, from_state=from_state, to_state="approved")
    if commit:
        await session.commit()
    return True


async def approve_many(session: AsyncSession, actor: Principal, ids: list[int]) -> tuple[list[int], list[int]]:
    rows = {q.id: q for q in (await session.scalars(select(Question).where(Question.id.in_(ids)))).all()}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise InvalidInput(
            f"Unknown questions: {missing}", code="unknown_question", field="question_ids", unknown=missing
        )
    done, already = [], []
    for i in dict.fromkeys(ids):
        (done if await approve(session, actor, rows[i], commit=False) else already).append(i)
    await session.commit()
    return done, already


async def retire(session: AsyncSession, actor: Principal, q: Question) -> Question:
    if q.state == "retired":
        raise Conflict("The question is already retired", code="invalid_transition", state=q.state, allowed=[])
    from_state = q.state
    q.state, q.updated_by, q.updated_at = "retired", actor.actor, utcnow()
    await _flush(session, q)
    record(session, actor, "question.retire", "question", q.id, from_state=from_state, to_state="retired")
    await session.commit()
    return q


# ---------------------------------------------------------------- papers


def _usable() -> Any:
    return (Question.state == "approved") & Question.needs_review.is_(False)


async def _rule_label(session: AsyncSession, rule: PaperRule) -> str:
    parts = [rule.kind]
    if rule.difficulty is not None:
        parts.append(f"difficulty {difficulty_of(rule.difficulty)}")
    if rule.categories:
        names = await node_names(session, rule.categories)
        parts.append("in " + ", ".join(names.get(c, str(c)) for c in rule.categories))
    return " ".join(parts)


async def _pick(session: AsyncSession, rules: list[PaperRule], seed: int | None) -> list[tuple[int, float]]:
    """Question ids and scores by the rules, in rule order; 422 `rule_not_met` naming every shortfall."""
    rng = random.Random(seed)
    chosen: list[tuple[int, float]] = []
    taken: set[int] = set()
    shortfalls: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        stmt = select(Question.id).where(_usable(), Question.kind == rule.kind)
        if rule.difficulty is not None:
            stmt = stmt.where(Question.difficulty == difficulty_of(rule.difficulty))
        if rule.categories:
            nodes = await subtree(session, await check_categories(session, rule.categories, f"rules.{i}.categories"))
            stmt = stmt.where(
                Question.id.in_(select(QuestionCategory.question_id).where(QuestionCategory.node_id.in_(nodes)))
            )
        ids = sorted(set((await session.scalars(stmt)).all()) - taken)
        if len(ids) < rule.count:
            label = await _rule_label(session, rule)
            shortfalls.append(
                {
                    "rule": i,
                    "label": label,
                    "need": rule.count,
                    "approved": len(ids),
                    "message": f"{label}: need {rule.count}, approved {len(ids)}",
                }
            )
            continue
        picked = rng.sample(ids, rule.count)
        taken.update(picked)
        chosen += [(qid, rule.score) for qid in picked]
    if shortfalls:
        raise InvalidInput(
            "Not enough approved questions: " + "; ".join(s["message"] for s in shortfalls),
            code="rule_not_met",
            field="rules",
            shortfalls=shortfalls,
        )
    return chosen


async def _by_hand(session: AsyncSession, data: PaperCreate) -> list[tuple[int, float]]:
    ids = [q.question_id for q in data.questions]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InvalidInput(
            f"Questions listed twice: {dupes}", code="duplicate_question", field="questions", duplicates=dupes
        )
    rows = dict((await session.execute(select(Question.id, Question.state).where(Question.id.in_(ids)))).all())
    flagged = set(
        (await session.scalars(select(Question.id).where(Question.id.in_(ids), Question.needs_review.is_(True)))).all()
    )
    unknown = [i for i in ids if i not in rows]
    if unknown:
        raise InvalidInput(f"Unknown questions: {unknown}", code="unknown_question", field="questions", unknown=unknown)
    unusable = [i for i in ids if rows[i] != "approved" or i in flagged]
    if unusable:
        raise InvalidInput(
            f"Only approved questions not waiting for review go into a paper: {unusable}",
            code="question_not_approved",
            field="questions",
            questions=unusable,
        )
    return [(q.question_id, q.score) for q in data.questions]


async def snapshot(session: AsyncSession, picked: list[tuple[int, float]]) -> list[dict[str, Any]]:
    ids = [qid for qid, _ in picked]
    rows = {q.id: q for q in (await session.scalars(select(Question).where(Question.id.in_(ids)))).all()}
    links = await _links_of(session, ids)
    return [
        {
            "position": n,
            "question_id": qid,
            "kind": rows[qid].kind,
            "stem": rows[qid].stem,
            "options": list(rows[qid].options),
            "answer": list(rows[qid].answer),
            "explanation": rows[qid].explanation,
            "difficulty": rows[qid].difficulty,
            "score": score,
            "items": [lk.model_dump() for lk in links[qid]],
        }
        for n, (qid, score) in enumerate(picked, start=1)
    ]


async def create_paper(session: AsyncSession, actor: Principal, data: PaperCreate) -> Paper:
    if bool(data.rules) == bool(data.questions):
        raise InvalidInput("Send either rules or questions (by hand)", code="paper_mode", field="rules")
    picked = await _pick(session, data.rules, data.seed) if data.rules else await _by_hand(session, data)
    if len(picked) > 500:
        raise InvalidInput("A paper holds at most 500 questions", code="paper_too_long", field="rules")
    total = round(sum(s for _, s in picked), 2)
    if data.total_score is not None and abs(data.total_score - total) > 1e-6:
        raise InvalidInput(
            f"The questions add up to {total:g}, not the total_score {data.total_score:g}",
            code="total_score_mismatch",
            field="total_score",
            questions_total=total,
        )
    pass_score = data.pass_score if data.pass_score is not None else round(total * 0.6, 2)
    if pass_score > total:
        raise InvalidInput(
            f"pass_score {pass_score:g} is above the total {total:g}", code="invalid_pass_score", field="pass_score"
        )
    paper = Paper(
        title=data.title,
        description=data.description,
        mode="rules" if data.rules else "manual",
        rules=[r.model_dump() for r in data.rules],
        questions=await snapshot(session, picked),
        total_score=total,
        pass_score=pass_score,
        created_by=actor.actor,
    )
    session.add(paper)
    await session.flush()
    record(
        session,
        actor,
        "paper.create",
        "paper",
        paper.id,
        after={
            "title": paper.title,
            "mode": paper.mode,
            "questions": [qid for qid, _ in picked],
            "total_score": total,
            "pass_score": pass_score,
            "rules": paper.rules,
        },
    )
    await session.commit()
    return paper


async def get_paper(session: AsyncSession, paper_id: int) -> Paper:
    p = await session.get(Paper, paper_id)
    if p is None:
        raise NotFound(f"No paper with id {paper_id}", code="paper_not_found")
    return p


def paper_out(p: Paper) -> PaperOut:
    return PaperOut(
        id=p.id,
        title=p.title,
        description=p.description,
        mode=p.mode,
        rules=list(p.rules),
        total_score=p.total_score,
        pass_score=p.pass_score,
        question_count=len(p.questions),
        questions=[
            PaperQuestionOut(
                **{
                    **q,
                    "options": [OptionOut(**o) for o in q["options"]],
                    "items": [LinkOut(**lk) for lk in q["items"]],
                }
            )
            for q in p.questions
        ],
        created_by=p.created_by,
        created_at=p.created_at,
    )


def paper_summary(p: Paper) -> PaperSummary:
    return PaperSummary(
        id=p.id,
        title=p.title,
        mode=p.mode,
        total_score=p.total_score,
        pass_score=p.pass_score,
        question_count=len(p.questions),
        created_by=p.created_by,
        created_at=p.created_at,
    )


async def list_papers(session: AsyncSession, page: PageParams) -> tuple[list[Paper], str | None]:
    return await paginate_by_id(session, select(Paper), Paper.id, page)


def is_objective(kind: str) -> bool:
    return kind in OBJECTIVE


async def count_questions(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(Question)) or 0
