"""The recurring `learning.sweep` (`KB_LEARNING_SWEEP_SECONDS`, 0 = off):

1. questions whose items got a new published version are flagged `needs_review`. The sweep reads
   the change feed (`channel_changes`, written in the publishing transaction by every publish path:
   the workflow, scheduled publication, imports) after its own cursor, and flags the questions
   linked to those items whose link is older than the item's published version. If the feed was
   purged past the cursor (the sweep was off longer than the retention), every link is compared.
2. attempts whose deadline passed are submitted with what was saved.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record
from app.channels.models import ChannelChange, ChannelFeed
from app.core.db import utcnow
from app.identity.principal import Principal
from app.knowledge.models import Item, ItemVersion
from app.learning.exams import submit_overdue
from app.learning.models import LearningState, Question, QuestionItem
from app.workers.outbox import JobContext, handler, schedule_recurring

SWEEP_JOB = "learning.sweep"
FEED_BATCH = 2000
STATE_ROW = 1
SYSTEM = Principal(kind="system", id=0, name="learning.sweep", permissions=frozenset())


async def schedule_sweep(session: AsyncSession, every_seconds: float, *, besides: int | None = None) -> bool:
    return await schedule_recurring(session, SWEEP_JOB, every_seconds, besides=besides)


async def flag_stale(session: AsyncSession, item_ids: list[int] | None) -> int:
    """Flag the questions linked to `item_ids` (None: every item) whose link is older than the item's
    published version. Returns how many questions were flagged (no commit)."""
    stmt = (
        select(QuestionItem.question_id, QuestionItem.item_id, QuestionItem.version, ItemVersion.number)
        .join(Item, Item.id == QuestionItem.item_id)
        .join(ItemVersion, ItemVersion.id == Item.published_version_id)
        .join(Question, Question.id == QuestionItem.question_id)
        .where(ItemVersion.number > QuestionItem.version, Question.needs_review.is_(False), Question.state != "retired")
    )
    if item_ids is not None:
        stmt = stmt.where(QuestionItem.item_id.in_(item_ids))
    reasons: dict[int, str] = {}
    for qid, item_id, was, now in (await session.execute(stmt)).all():
        reasons.setdefault(qid, f"Item {item_id} has a new published version {now} (written against {was})")
    for qid, reason in reasons.items():
        await session.execute(
            update(Question)
            .where(Question.id == qid)
            .values(needs_review=True, review_reason=reason, row_version=Question.row_version + 1)
        )
        record(session, SYSTEM, "question.flag_review", "question", qid, reason=reason)
    return len(reasons)


async def review_flags(session: AsyncSession) -> dict[str, Any]:
    """One step of part 1: the next FEED_BATCH events of the feed after the cursor."""
    state = await session.get(LearningState, STATE_ROW)
    if state is None:
        state = LearningState(id=STATE_ROW, feed_seq=0)
        session.add(state)
        await session.flush()
    floor = await session.scalar(select(ChannelFeed.floor).where(ChannelFeed.id == 1)) or 0
    if state.feed_seq < floor:  # events were purged unread: compare everything once
        flagged = await flag_stale(session, None)
        state.feed_seq = await session.scalar(select(ChannelFeed.seq).where(ChannelFeed.id == 1)) or floor
        return {"flagged": flagged, "full_check": True, "more": False}
    rows = (
        await session.execute(
            select(ChannelChange.seq, ChannelChange.item_id)
            .where(ChannelChange.seq > state.feed_seq, ChannelChange.kind.in_(("published", "updated")))
            .order_by(ChannelChange.seq)
            .limit(FEED_BATCH)
        )
    ).all()
    if not rows:
        return {"flagged": 0, "more": False}
    state.feed_seq = rows[-1].seq
    state.updated_at = utcnow()
    flagged = await flag_stale(session, sorted({r.item_id for r in rows}))
    return {"flagged": flagged, "events": len(rows), "more": len(rows) == FEED_BATCH}


async def sweep_once(session: AsyncSession) -> dict[str, Any]:
    report = await review_flags(session)
    report["auto_submitted"] = await submit_overdue(session)
    return report


@handler(SWEEP_JOB)
async def sweep(ctx: JobContext) -> dict[str, Any]:
    report = await sweep_once(ctx.session)
    settings = ctx.services.get("settings")
    if settings is not None:
        every = settings.learning_sweep_seconds
        if every > 0 and (report["more"] or report["auto_submitted"] >= 500):
            every = min(every, 1.0)
        report["next_scheduled"] = await schedule_sweep(ctx.session, every, besides=ctx.job_id)
    return report
