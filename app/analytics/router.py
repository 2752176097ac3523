"""Analytics routes: the HTML report (app/analytics/report.py renders it)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.analytics.report import (
    REPORT_CSP,
    DailyPoint,
    ItemHelpfulness,
    ItemViews,
    Period,
    QueryCount,
    ReportData,
    StaleCounts,
    Throughput,
    render_report,
)
from app.channels.models import ChannelFeedback, ChannelViewDay
from app.core.db import utcnow
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, InvalidInput
from app.identity.deps import Require
from app.identity.models import User
from app.knowledge.models import Item, ItemVersion
from app.search.models import SearchLog

router = APIRouter(prefix="/analytics", tags=["analytics"], responses=PROBLEMS)

MAX_DAYS = 366
DEFAULT_DAYS = 30
TOP = 10
EXPIRING_DAYS = 30
Channel = Literal["agent", "web", "wechat", "app"]  # app.search.documents.CHANNELS


def report_range(start: date | None, end: date | None) -> tuple[date, date]:
    """The period, both days included (UTC): `to` defaults to today, `from` to 30 days before it.
    Inverted or longer than 366 days: 422 `invalid_range`, naming the field."""
    end = end or utcnow().date()
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput(f"'from' ({start}) is after 'to' ({end})", code="invalid_range",
                           errors=[{"field": "query.from", "message": "must not be after 'to'",
                                    "type": "invalid_range"}])
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput(f"The period is {(end - start).days + 1} days; at most {MAX_DAYS}", code="invalid_range",
                           errors=[{"field": "query.to", "message": f"the period is at most {MAX_DAYS} days",
                                    "type": "invalid_range"}])
    return start, end


# lead: replaced by app.analytics.service.report_data at merge
async def report_data(session: AsyncSession, start: date, end: date, channel: str | None) -> ReportData:
    """Minimal real figures from the existing tables (channel_view_days, search_log,
    channel_feedback, items, item_versions), so the report has something true to draw."""
    since = datetime.combine(start, time.min, UTC)
    until = datetime.combine(end + timedelta(days=1), time.min, UTC)
    now = utcnow()

    views_q = (select(ChannelViewDay.day, ChannelViewDay.item_id, func.sum(ChannelViewDay.views))
               .where(ChannelViewDay.day >= start, ChannelViewDay.day <= end)
               .group_by(ChannelViewDay.day, ChannelViewDay.item_id))
    searches_q = select(SearchLog.at, SearchLog.normalized, SearchLog.query, SearchLog.zero_result).where(
        SearchLog.at >= since, SearchLog.at < until)
    votes_q = (select(ChannelFeedback.item_id, func.sum(case((ChannelFeedback.helpful, 1), else_=0)),
                      func.sum(case((ChannelFeedback.helpful, 0), else_=1)))
               .where(ChannelFeedback.at >= since, ChannelFeedback.at < until).group_by(ChannelFeedback.item_id))
    if channel:
        views_q = views_q.where(ChannelViewDay.channel == channel)
        searches_q = searches_q.where(SearchLog.channel == channel)
        votes_q = votes_q.where(ChannelFeedback.channel == channel)

    daily: dict[date, DailyPoint] = {}
    item_views: Counter[int] = Counter()
    for day, item_id, n in (await session.execute(views_q)).all():
        daily.setdefault(day, DailyPoint(day=day)).views += int(n)
        item_views[int(item_id)] += int(n)
    queries: Counter[str] = Counter()
    zero: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for at, normalized, query, zero_result in (await session.execute(searches_q)).all():
        point = daily.setdefault(at.date(), DailyPoint(day=at.date()))
        point.searches += 1
        key = normalized or query
        shown.setdefault(key, query)
        queries[key] += 1
        if zero_result:
            point.zero_result_searches += 1
            zero[key] += 1

    votes = [(int(i), int(h), int(u)) for i, h, u in (await session.execute(votes_q)).all()]
    votes.sort(key=lambda v: (v[1] / (v[1] + v[2]), -v[2], v[0]))
    votes = [v for v in votes if v[2]][:TOP]
    top = item_views.most_common(TOP)
    titles = await _titles(session, [i for i, _ in top] + [v[0] for v in votes])

    published = Item.status == "published"
    viewed = select(ChannelViewDay.item_id).where(ChannelViewDay.day >= start, ChannelViewDay.day <= end)
    if channel:
        viewed = viewed.where(ChannelViewDay.channel == channel)
    stale = StaleCounts(
        past_review=await session.scalar(select(func.count()).where(published, Item.review_due < now.date())) or 0,
        never_viewed=await session.scalar(select(func.count()).where(published, Item.id.not_in(viewed))) or 0,
        expiring_soon=await session.scalar(select(func.count()).where(
            published, Item.valid_to >= now, Item.valid_to < now + timedelta(days=EXPIRING_DAYS))) or 0,
    )
    return ReportData(
        period=Period(start=start, end=end, channel=channel),
        daily=sorted(daily.values(), key=lambda p: p.day),
        top_items=[ItemViews(item_id=i, title=titles.get(i, f"#{i}"), views=n) for i, n in top],
        top_queries=[QueryCount(query=shown[k], count=n) for k, n in queries.most_common(TOP)],
        zero_result_queries=[QueryCount(query=shown[k], count=n) for k, n in zero.most_common(TOP)],
        least_helpful=[ItemHelpfulness(item_id=i, title=titles.get(i, f"#{i}"), helpful=h, unhelpful=u,
                                       ratio=h / (h + u)) for i, h, u in votes],
        stale=stale,
        throughput=await _throughput(session, since, until),
        generated_at=now,
    )


async def _titles(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    """The published title of each item, else its latest version's."""
    if not ids:
        return {}
    pub, last = aliased(ItemVersion), aliased(ItemVersion)
    rows = await session.execute(
        select(Item.id, func.coalesce(pub.title, last.title))
        .outerjoin(pub, pub.id == Item.published_version_id)
        .outerjoin(last, and_(last.item_id == Item.id, last.number == Item.latest_version_no))
        .where(Item.id.in_(set(ids))))
    return {int(i): t for i, t in rows.all() if t}


async def _throughput(session: AsyncSession, since: datetime, until: datetime) -> list[Throughput]:
    people: dict[int, Throughput] = {}
    hours: dict[int, list[float]] = defaultdict(list)

    def person(uid: int) -> Throughput:
        return people.setdefault(uid, Throughput(person=f"#{uid}"))

    v = ItemVersion
    for (uid,) in (await session.execute(select(v.author_id).where(
            v.created_at >= since, v.created_at < until, v.author_id.is_not(None)))).all():
        person(uid).drafts += 1
    for uid, submitted, reviewed in (await session.execute(select(v.reviewed_by, v.submitted_at, v.reviewed_at).where(
            v.reviewed_at >= since, v.reviewed_at < until, v.reviewed_by.is_not(None)))).all():
        person(uid).reviews += 1
        if submitted is not None:
            hours[uid].append((reviewed - submitted).total_seconds() / 3600)
    for (uid,) in (await session.execute(select(v.published_by).where(
            v.published_at >= since, v.published_at < until, v.published_by.is_not(None)))).all():
        person(uid).published += 1
    if not people:
        return []
    for uid, name, username in (await session.execute(
            select(User.id, User.display_name, User.username).where(User.id.in_(list(people))))).all():
        people[uid].person = name or username
    for uid, spans in hours.items():
        people[uid].median_review_hours = round(statistics.median(spans), 2)
    return sorted(people.values(), key=lambda t: (-(t.drafts + t.reviews + t.published), t.person))


@router.get(
    "/report.html",
    response_class=Response,
    summary="The analytics report of a period as one self-contained HTML page with charts",
    responses={200: {"description": "The report page (scripts, style and data inlined; no external request)",
                     "content": {"text/html": {"schema": {"type": "string"}}}}},
)
async def report_html(
    request: Request,
    session: DbSession,
    principal: Require("analytics:read"),
    start: Annotated[date | None, Query(alias="from", description="first day (UTC), default: 29 days before `to`")]
    = None,
    end: Annotated[date | None, Query(alias="to", description="last day, included (UTC), default: today")] = None,
    channel: Annotated[Channel | None, Query(description="one channel only; default: every channel")] = None,
) -> Response:
    """For a manager to look at rather than read JSON: daily views, searches and zero-result
    searches, top items, top and zero-result queries, the least helpful answers, stale knowledge and
    author/reviewer throughput, as charts with tables beside them. At most 366 days (422
    `invalid_range` when longer or inverted). Open it in a browser with the bearer token (or save it:
    it works offline). Needs analytics:read."""
    start, end = report_range(start, end)
    for writer in (request.app.state.search_log, request.app.state.channel_events):
        await writer.flush()  # the last half second's searches and views too
    data = await report_data(session, start, end, channel)
    return Response(render_report(data), media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer",
    })
