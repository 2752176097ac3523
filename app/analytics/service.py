"""The analytics figures, read from the daily tables (never the raw events).

Scope of every figure: UTC days `start`..`end` (inclusive), optionally one channel and one
category (a taxonomy node and its subtree: items whose published version sits there).
- Per-item rows (top items, helpfulness, stale) show only the items the caller may read under
  the knowledge ACL (`read_filter`, and only with `knowledge:read`); the others are left out of
  the lists. Sums and day series count every item: numbers carry no title.
- Searches have no category: the category narrows the item figures only.
- Searches and votes are as of the last rollup (`rolled_up_at`); views are live (the channel
  event writer keeps `channel_view_days` itself).
- Throughput reads the workflow timestamps on the versions (created, submitted, reviewed,
  published); a version's latest submission and review count, not earlier rounds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.analytics.models import FeedbackDay, SearchDay
from app.analytics.rollup import day_start, rolled_at
from app.analytics.schemas import (
    DaySearches,
    DayViews,
    HelpfulnessOut,
    HelpfulnessRow,
    PersonThroughput,
    QueriesOut,
    QueryRow,
    RangeOut,
    ReportData,
    SearchesOut,
    StaleCounts,
    StaleItem,
    StaleOut,
    ThroughputOut,
    TopItem,
    TopItemsOut,
    ViewsOut,
)
from app.channels.models import ChannelViewDay
from app.core.db import utcnow
from app.core.errors import InvalidInput
from app.identity.models import User
from app.identity.principal import Principal
from app.knowledge.acl import read_filter
from app.knowledge.models import Item, ItemVersion, version_categories
from app.taxonomy.models import TaxonomyNode
from app.taxonomy.service import subtree_ids

DEFAULT_DAYS = 7
MAX_DAYS = 366
REPORT_TOP = 20
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 30)


@dataclass(frozen=True)
class Scope:
    start: date
    end: date
    channel: str | None = None
    category: int | None = None
    nodes: tuple[int, ...] = ()  # the category's subtree

    @property
    def lo(self) -> datetime:
        return day_start(self.start)

    @property
    def hi(self) -> datetime:  # exclusive
        return day_start(self.end + timedelta(days=1))

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def out(self) -> RangeOut:
        return RangeOut(
            start=self.start, end=self.end, days=len(self.days), channel=self.channel, category=self.category
        )


def check_range(start: date | None, end: date | None) -> tuple[date, date]:
    """Default: `to` today (UTC), `from` 6 days before `to` (7 days); `to` before `from` or more than 366 days: 422."""
    for field, value in (("from", start), ("to", end)):
        if value is not None and not FIRST_DAY <= value <= LAST_DAY:
            raise InvalidInput(
                f"'{field}' must be between {FIRST_DAY} and {LAST_DAY}",
                code="invalid_range",
                errors=[{"field": f"query.{field}", "message": "out of range"}],
            )
    end = end or utcnow().date()
    start = start or max(end - timedelta(days=DEFAULT_DAYS - 1), FIRST_DAY)
    if start > end:
        raise InvalidInput(
            f"'from' ({start}) is after 'to' ({end})",
            code="invalid_range",
            errors=[{"field": "query.from", "message": "must not be after 'to'"}],
        )
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput(
            f"The range spans {(end - start).days + 1} days; at most {MAX_DAYS}",
            code="range_too_long",
            errors=[{"field": "query.to", "message": f"at most {MAX_DAYS} days"}],
        )
    return start, end


async def scope_of(
    session: AsyncSession, start: date | None, end: date | None, channel: str | None = None, category: int | None = None
) -> Scope:
    start, end = check_range(start, end)
    nodes: tuple[int, ...] = ()
    if category is not None:
        if await session.get(TaxonomyNode, category) is None:
            raise InvalidInput(
                f"No category {category}",
                code="unknown_category",
                errors=[{"field": "query.category", "message": "no such taxonomy node"}],
            )
        nodes = tuple(await subtree_ids(session, [category]))
    return Scope(start, end, channel, category, nodes)


# ---------------------------------------------------------------- shared pieces


def _in_category(scope: Scope, item_id: Any) -> ColumnElement[bool] | None:
    """Items whose published version sits in the category's subtree."""
    if scope.category is None:
        return None
    return exists().where(
        Item.id == item_id,
        version_categories.c.version_id == Item.published_version_id,
        version_categories.c.node_id.in_(scope.nodes),
    )


def _readable(principal: Principal) -> ColumnElement[bool]:
    return read_filter(principal) if principal.can("knowledge:read") else false()


_Published = aliased(ItemVersion)
_Latest = aliased(ItemVersion)


def _with_titles(stmt: Select[Any], principal: Principal) -> Select[Any]:
    """Join `Item` (already in the statement's FROM or joined on by the caller) to its title: the
    published version's, else the latest version's; only items the caller may read."""
    return (
        stmt.outerjoin(_Published, _Published.id == Item.published_version_id)
        .outerjoin(_Latest, and_(_Latest.item_id == Item.id, _Latest.number == Item.latest_version_no))
        .where(_readable(principal))
    )


_TITLE = func.coalesce(_Published.title, _Latest.title, "")


async def _rolled(session: AsyncSession) -> datetime | None:
    return await rolled_at(session)


# ---------------------------------------------------------------- views


def _view_days(scope: Scope) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [ChannelViewDay.day >= scope.start, ChannelViewDay.day <= scope.end]
    if scope.channel:
        conds.append(ChannelViewDay.channel == scope.channel)
    cat = _in_category(scope, ChannelViewDay.item_id)
    if cat is not None:
        conds.append(cat)
    return conds


async def views(session: AsyncSession, scope: Scope) -> ViewsOut:
    rows = dict(
        (
            await session.execute(
                select(ChannelViewDay.day, func.sum(ChannelViewDay.views))
                .where(*_view_days(scope))
                .group_by(ChannelViewDay.day)
            )
        ).all()
    )
    series = [DayViews(day=d, views=int(rows.get(d, 0))) for d in scope.days]
    return ViewsOut(
        range=scope.out(), rolled_up_at=await _rolled(session), total=sum(d.views for d in series), days=series
    )


async def top_items(session: AsyncSession, principal: Principal, scope: Scope, limit: int = 20) -> TopItemsOut:
    per = (
        select(ChannelViewDay.item_id, func.sum(ChannelViewDay.views).label("views"))
        .where(*_view_days(scope))
        .group_by(ChannelViewDay.item_id)
        .subquery()
    )
    stmt = _with_titles(
        select(per.c.item_id, per.c.views, _TITLE, Item.status).select_from(per).join(Item, Item.id == per.c.item_id),
        principal,
    )
    rows = (await session.execute(stmt.order_by(per.c.views.desc(), per.c.item_id).limit(limit))).all()
    return TopItemsOut(
        range=scope.out(),
        rolled_up_at=await _rolled(session),
        items=[TopItem(item_id=i, title=t, status=s, views=int(v)) for i, v, t, s in rows],
    )


# ---------------------------------------------------------------- searches


def _search_days(scope: Scope) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [SearchDay.day >= scope.start, SearchDay.day <= scope.end]
    if scope.channel:
        conds.append(SearchDay.channel == scope.channel)
    return conds


async def searches(session: AsyncSession, scope: Scope) -> SearchesOut:
    rows = {
        d: (int(n), int(z))
        for d, n, z in (
            await session.execute(
                select(SearchDay.day, func.sum(SearchDay.searches), func.sum(SearchDay.zero_results))
                .where(*_search_days(scope))
                .group_by(SearchDay.day)
            )
        ).all()
    }
    series = [
        DaySearches(day=d, searches=rows.get(d, (0, 0))[0], zero_results=rows.get(d, (0, 0))[1]) for d in scope.days
    ]
    return SearchesOut(
        range=scope.out(),
        rolled_up_at=await _rolled(session),
        total=sum(d.searches for d in series),
        zero_results=sum(d.zero_results for d in series),
        days=series,
    )


async def _queries(session: AsyncSession, scope: Scope, kind: str, limit: int) -> QueriesOut:
    n, z, c = func.sum(SearchDay.searches), func.sum(SearchDay.zero_results), func.sum(SearchDay.clicked)
    last = func.max(SearchDay.last_at)
    stmt = (
        select(func.max(SearchDay.query), SearchDay.normalized, n, z, c, last)
        .where(*_search_days(scope))
        .group_by(SearchDay.normalized)
    )
    if kind == "top":
        stmt = stmt.order_by(n.desc(), SearchDay.normalized)
    elif kind == "zero":
        stmt = stmt.having(z > 0).order_by(z.desc(), last.desc(), SearchDay.normalized)
    else:  # unclicked: results were shown, none ever opened
        stmt = stmt.having(c == 0, n > z).order_by(n.desc(), last.desc(), SearchDay.normalized)
    rows = (await session.execute(stmt.limit(limit))).all()
    return QueriesOut(
        range=scope.out(),
        rolled_up_at=await _rolled(session),
        items=[
            QueryRow(query=q, normalized=k, searches=int(a), zero_results=int(b), clicked=int(x), last_seen=t)
            for q, k, a, b, x, t in rows
        ],
    )


async def top_queries(session: AsyncSession, scope: Scope, limit: int = 20) -> QueriesOut:
    return await _queries(session, scope, "top", limit)


async def zero_result_queries(session: AsyncSession, scope: Scope, limit: int = 20) -> QueriesOut:
    """The gaps to fill: queries that found nothing, most often first."""
    return await _queries(session, scope, "zero", limit)


async def unclicked_queries(session: AsyncSession, scope: Scope, limit: int = 20) -> QueriesOut:
    """Queries whose results were shown and never opened (a click on the search, in the range)."""
    return await _queries(session, scope, "unclicked", limit)


# ---------------------------------------------------------------- helpfulness


async def helpfulness(
    session: AsyncSession, principal: Principal, scope: Scope, min_votes: int = 3, limit: int = 20
) -> HelpfulnessOut:
    """Per item, the votes cast in the range (each voter's latest counts), least helpful first."""
    conds: list[ColumnElement[bool]] = [FeedbackDay.day >= scope.start, FeedbackDay.day <= scope.end]
    if scope.channel:
        conds.append(FeedbackDay.channel == scope.channel)
    cat = _in_category(scope, FeedbackDay.item_id)
    if cat is not None:
        conds.append(cat)
    per = (
        select(
            FeedbackDay.item_id,
            func.sum(FeedbackDay.helpful).label("helpful"),
            func.sum(FeedbackDay.not_helpful).label("not_helpful"),
            func.sum(FeedbackDay.comments).label("comments"),
        )
        .where(*conds)
        .group_by(FeedbackDay.item_id)
        .having(func.sum(FeedbackDay.helpful) + func.sum(FeedbackDay.not_helpful) >= min_votes)
        .subquery()
    )
    ratio = (per.c.helpful * 1.0) / (per.c.helpful + per.c.not_helpful)
    stmt = _with_titles(
        select(per.c.item_id, _TITLE, Item.status, per.c.helpful, per.c.not_helpful, per.c.comments)
        .select_from(per)
        .join(Item, Item.id == per.c.item_id),
        principal,
    )
    rows = (
        await session.execute(
            stmt.order_by(ratio, (per.c.helpful + per.c.not_helpful).desc(), per.c.item_id).limit(limit)
        )
    ).all()
    items = [
        HelpfulnessRow(
            item_id=i,
            title=t,
            status=s,
            helpful=int(h),
            not_helpful=int(u),
            votes=int(h + u),
            comments=int(c),
            ratio=round(int(h) / int(h + u), 4),
        )
        for i, t, s, h, u, c in rows
    ]
    return HelpfulnessOut(range=scope.out(), rolled_up_at=await _rolled(session), min_votes=min_votes, items=items)


# ---------------------------------------------------------------- stale


async def stale(
    session: AsyncSession, principal: Principal, scope: Scope, expiring_days: int = 30, limit: int = 100
) -> StaleOut:
    """Published items past their review date (today), never viewed in the range (on the channel,
    if one is given), and expiring (valid_to) within `expiring_days` from now."""
    now = utcnow()
    viewed = exists().where(*_view_days(scope), ChannelViewDay.item_id == Item.id)
    kinds: dict[str, ColumnElement[bool]] = {
        "review_overdue": and_(Item.review_due.is_not(None), Item.review_due < now.date()),
        "never_viewed": ~viewed,
        "expiring": and_(
            Item.valid_to.is_not(None), Item.valid_to > now, Item.valid_to <= now + timedelta(days=expiring_days)
        ),
    }
    base: list[ColumnElement[bool]] = [Item.status == "published", Item.published_version_id.is_not(None)]
    cat = _in_category(scope, Item.id)
    if cat is not None:
        base.append(cat)
    counts: dict[str, int] = {}
    items: list[StaleItem] = []
    for kind, cond in kinds.items():
        counts[kind] = int(
            await session.scalar(select(func.count()).select_from(Item).where(*base, cond, _readable(principal))) or 0
        )
        order = {"review_overdue": Item.review_due, "expiring": Item.valid_to}.get(kind, Item.id)
        rows = (
            await session.execute(
                _with_titles(
                    select(Item.id, _TITLE, Item.owner_id, Item.review_due, Item.valid_to)
                    .select_from(Item)
                    .where(*base, cond),
                    principal,
                )
                .order_by(order, Item.id)
                .limit(limit)
            )
        ).all()
        items += [
            StaleItem(kind=kind, item_id=i, title=t, owner_id=o, review_due=r, valid_to=v) for i, t, o, r, v in rows
        ]
    return StaleOut(
        range=scope.out(),
        rolled_up_at=await _rolled(session),
        expiring_days=expiring_days,
        counts=StaleCounts(**counts),
        items=items,
    )


# ---------------------------------------------------------------- throughput


def _hours(pairs: list[tuple[datetime, datetime]]) -> float | None:
    return round(median((b - a).total_seconds() / 3600 for a, b in pairs), 2) if pairs else None


async def throughput(session: AsyncSession, scope: Scope) -> ThroughputOut:
    """Per person over the range: versions created, submitted, reviewed, published; and the median
    time versions waited in review (submitted → approved or rejected)."""
    lo, hi = scope.lo, scope.hi
    conds: list[ColumnElement[bool]] = []
    if scope.category is not None:
        conds.append(
            exists().where(
                version_categories.c.version_id == ItemVersion.id, version_categories.c.node_id.in_(scope.nodes)
            )
        )
    touched = or_(
        *(
            and_(col >= lo, col < hi)
            for col in (
                ItemVersion.created_at,
                ItemVersion.submitted_at,
                ItemVersion.reviewed_at,
                ItemVersion.published_at,
            )
        )
    )
    rows = (
        await session.execute(
            select(
                ItemVersion.author_id,
                ItemVersion.reviewed_by,
                ItemVersion.published_by,
                ItemVersion.created_at,
                ItemVersion.submitted_at,
                ItemVersion.reviewed_at,
                ItemVersion.published_at,
            ).where(touched, *conds)
        )
    ).all()

    def inside(at: datetime | None) -> bool:
        return at is not None and lo <= at < hi

    per: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"drafts_created": 0, "submitted": 0, "reviews_done": 0, "published": 0, "waited": [], "reviewed": []}
    )
    waits: list[tuple[datetime, datetime]] = []
    for author, reviewer, publisher, created, submitted, reviewed, published in rows:
        if author is not None and inside(created):
            per[author]["drafts_created"] += 1
        if author is not None and inside(submitted):
            per[author]["submitted"] += 1
        if inside(reviewed):
            if reviewer is not None:
                per[reviewer]["reviews_done"] += 1
            if submitted is not None and submitted <= reviewed:
                waits.append((submitted, reviewed))
                if author is not None:
                    per[author]["waited"].append((submitted, reviewed))
                if reviewer is not None:
                    per[reviewer]["reviewed"].append((submitted, reviewed))
        if publisher is not None and inside(published):
            per[publisher]["published"] += 1
    users = {u.id: u for u in (await session.scalars(select(User).where(User.id.in_(list(per))))).all()} if per else {}
    people = [
        PersonThroughput(
            user_id=uid,
            username=users[uid].username if uid in users else "",
            display_name=users[uid].display_name if uid in users else "",
            drafts_created=p["drafts_created"],
            submitted=p["submitted"],
            reviews_done=p["reviews_done"],
            published=p["published"],
            median_hours_waited=_hours(p["waited"]),
            median_hours_to_review=_hours(p["reviewed"]),
        )
        for uid, p in per.items()
    ]
    people.sort(key=lambda p: (-(p.drafts_created + p.reviews_done + p.published), p.user_id))
    return ThroughputOut(
        range=scope.out(),
        rolled_up_at=await _rolled(session),
        drafts_created=sum(p.drafts_created for p in people),
        reviews_done=sum(p.reviews_done for p in people),
        published=sum(p.published for p in people),
        median_hours_in_review=_hours(waits),
        people=people,
    )


# ---------------------------------------------------------------- the report


async def report_data(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    channel: str | None = None,
    category: int | None = None,
) -> ReportData:
    """Everything a period report shows (top lists of 20, helpfulness with at least 3 votes, stale
    within 30 days). Raises InvalidInput (422 invalid_range / range_too_long / unknown_category)."""
    scope = await scope_of(session, start, end, channel, category)
    search = await searches(session, scope)
    return ReportData(
        range=scope.out(),
        generated_at=utcnow(),
        rolled_up_at=search.rolled_up_at,
        views=await views(session, scope),
        top_items=(await top_items(session, principal, scope, REPORT_TOP)).items,
        searches=search,
        top_queries=(await top_queries(session, scope, REPORT_TOP)).items,
        zero_result_queries=(await zero_result_queries(session, scope, REPORT_TOP)).items,
        unclicked_queries=(await unclicked_queries(session, scope, REPORT_TOP)).items,
        least_helpful=(await helpfulness(session, principal, scope, 3, REPORT_TOP)).items,
        stale=await stale(session, principal, scope, 30, REPORT_TOP),
        throughput=await throughput(session, scope),
    )
