"""GET /api/v1/analytics/...: the figures of app/analytics/service.py as JSON, or CSV for Excel
(`?format=csv` or `Accept: text/csv`). Every route needs `analytics:read`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from app.analytics import service
from app.analytics.report import REPORT_CSP, from_figures, render_report
from app.analytics.schemas import (
    HelpfulnessOut,
    QueriesOut,
    SearchesOut,
    StaleOut,
    ThroughputOut,
    TopItemsOut,
    ViewsOut,
)
from app.analytics.service import Scope
from app.channels.events import events_of
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.schemas import Id
from app.identity.deps import Require
from app.imports.export import BOM, csv_lines, text_cell
from app.knowledge.schemas import Channel

router = APIRouter(prefix="/analytics", tags=["analytics"], responses=PROBLEMS)

Analyst = Require("analytics:read")
CSV = "text/csv; charset=utf-8"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or with format=csv (or Accept: text/csv) a CSV file (UTF-8 with BOM, for Excel)",
    }
}
Limit = Annotated[int, Query(ge=1, le=100, description="rows to return")]


async def _scope(
    session: DbSession,
    start: Annotated[
        date | None, Query(alias="from", description="first UTC day (default: 6 days before `to`)")
    ] = None,
    end: Annotated[
        date | None,
        Query(alias="to", description="last UTC day, included (default: today, UTC); at most 366 days in all"),
    ] = None,
    channel: Annotated[Channel | None, Query(description="one channel only")] = None,
    category: Annotated[Id | None, Query(description="taxonomy node id: items in it or below it")] = None,
) -> Scope:
    return await service.scope_of(session, start, end, channel, category)


Range = Annotated[Scope, Depends(_scope)]
Format = Annotated[Literal["json", "csv"] | None, Query(description="csv: a CSV file (default: by Accept, else json)")]


def _cell(value: Any) -> str:
    text = text_cell(value)
    # A cell Excel would run as a formula (a query typed by a visitor may start with "="): kept as text.
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _answer(
    request: Request,
    fmt: str | None,
    name: str,
    scope: Scope,
    out: BaseModel,
    rows: Sequence[BaseModel],
    columns: list[str],
) -> Any:
    if fmt == "csv" or (fmt is None and "text/csv" in request.headers.get("accept", "")):
        table = [columns] + [[_cell(r.model_dump().get(c)) for c in columns] for r in rows]
        filename = f"analytics-{name}-{scope.start}-{scope.end}.csv"
        return Response(
            (BOM + csv_lines(table)).encode(),
            media_type=CSV,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return out


def _columns(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


@router.get("/views", response_model=ViewsOut, responses=CSV_RESPONSE, summary="Item views per day and in all (live)")
async def views(request: Request, session: DbSession, principal: Analyst, scope: Range, format: Format = None) -> Any:
    await events_of(request).flush()  # this process's latest views
    out = await service.views(session, scope)
    return _answer(request, format, "views", scope, out, out.days, ["day", "views"])


@router.get(
    "/top-items",
    response_model=TopItemsOut,
    responses=CSV_RESPONSE,
    summary="The most viewed items the caller may read",
)
async def top_items(
    request: Request, session: DbSession, principal: Analyst, scope: Range, limit: Limit = 20, format: Format = None
) -> Any:
    await events_of(request).flush()  # this process's latest views
    out = await service.top_items(session, principal, scope, limit)
    return _answer(request, format, "top-items", scope, out, out.items, ["item_id", "title", "status", "views"])


@router.get(
    "/searches",
    response_model=SearchesOut,
    responses=CSV_RESPONSE,
    summary="Searches and zero-result searches per day (as of the last rollup)",
)
async def searches(
    request: Request, session: DbSession, principal: Analyst, scope: Range, format: Format = None
) -> Any:
    out = await service.searches(session, scope)
    return _answer(request, format, "searches", scope, out, out.days, ["day", "searches", "zero_results"])


QUERY_COLUMNS = ["query", "normalized", "searches", "zero_results", "clicked", "last_seen"]


@router.get(
    "/top-queries",
    response_model=QueriesOut,
    responses=CSV_RESPONSE,
    summary="The most searched queries (as of the last rollup)",
)
async def top_queries(
    request: Request, session: DbSession, principal: Analyst, scope: Range, limit: Limit = 20, format: Format = None
) -> Any:
    out = await service.top_queries(session, scope, limit)
    return _answer(request, format, "top-queries", scope, out, out.items, QUERY_COLUMNS)


@router.get(
    "/zero-result-queries",
    response_model=QueriesOut,
    responses=CSV_RESPONSE,
    summary="Queries that found nothing: the gaps to fill, most frequent first",
)
async def zero_result_queries(
    request: Request, session: DbSession, principal: Analyst, scope: Range, limit: Limit = 20, format: Format = None
) -> Any:
    out = await service.zero_result_queries(session, scope, limit)
    return _answer(request, format, "zero-result-queries", scope, out, out.items, QUERY_COLUMNS)


@router.get(
    "/unclicked-queries",
    response_model=QueriesOut,
    responses=CSV_RESPONSE,
    summary="Queries that found results none of which was ever opened",
)
async def unclicked_queries(
    request: Request, session: DbSession, principal: Analyst, scope: Range, limit: Limit = 20, format: Format = None
) -> Any:
    out = await service.unclicked_queries(session, scope, limit)
    return _answer(request, format, "unclicked-queries", scope, out, out.items, QUERY_COLUMNS)


@router.get(
    "/helpfulness",
    response_model=HelpfulnessOut,
    responses=CSV_RESPONSE,
    summary="Helpful ratio per item, least helpful first (votes as of the last rollup)",
)
async def helpfulness(
    request: Request,
    session: DbSession,
    principal: Analyst,
    scope: Range,
    limit: Limit = 20,
    min_votes: Annotated[
        int, Query(ge=1, le=10_000, description="items with fewer votes in the range are left out")
    ] = 3,
    format: Format = None,
) -> Any:
    out = await service.helpfulness(session, principal, scope, min_votes, limit)
    return _answer(
        request,
        format,
        "helpfulness",
        scope,
        out,
        out.items,
        ["item_id", "title", "status", "helpful", "not_helpful", "votes", "comments", "ratio"],
    )


@router.get(
    "/stale",
    response_model=StaleOut,
    responses=CSV_RESPONSE,
    summary="Published items past review, never viewed in the range, or expiring soon",
)
async def stale(
    request: Request,
    session: DbSession,
    principal: Analyst,
    scope: Range,
    expiring_days: Annotated[int, Query(ge=1, le=366, description="valid_to within this many days from now")] = 30,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows of each kind")] = 100,
    format: Format = None,
) -> Any:
    await events_of(request).flush()  # this process's latest views
    out = await service.stale(session, principal, scope, expiring_days, limit)
    return _answer(
        request,
        format,
        "stale",
        scope,
        out,
        out.items,
        ["kind", "item_id", "title", "owner_id", "review_due", "valid_to"],
    )


@router.get(
    "/throughput",
    response_model=ThroughputOut,
    responses=CSV_RESPONSE,
    summary="Per author and reviewer: drafts, submissions, reviews, publications, time in review",
)
async def throughput(
    request: Request, session: DbSession, principal: Analyst, scope: Range, format: Format = None
) -> Any:
    out = await service.throughput(session, scope)
    return _answer(
        request,
        format,
        "throughput",
        scope,
        out,
        out.people,
        [
            "user_id",
            "username",
            "display_name",
            "drafts_created",
            "submitted",
            "reviews_done",
            "published",
            "median_hours_waited",
            "median_hours_to_review",
        ],
    )


@router.get(
    "/report.html",
    response_class=Response,
    summary="The analytics report of a period as one self-contained HTML page with charts",
    responses={
        200: {
            "description": "The report page (scripts, style and data inlined; no external request)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
)
async def report_html(request: Request, session: DbSession, principal: Analyst, scope: Range) -> Response:
    """For a manager to look at rather than read JSON: daily views, searches and zero-result
    searches, top items, top and zero-result queries, the least helpful answers, stale knowledge and
    author/reviewer throughput, as charts with tables beside them (the figures of the JSON endpoints).
    Open it in a browser with the bearer token (or save it: it works offline)."""
    await events_of(request).flush()  # this process's latest views (searches: as of the last rollup)
    data = await service.report_data(session, principal, scope.start, scope.end, scope.channel, scope.category)
    return Response(
        render_report(from_figures(data)),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": REPORT_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
