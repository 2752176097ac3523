from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class RangeOut(BaseModel):
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    days: int
    channel: str | None
    category: int | None


class Figures(BaseModel):
    range: RangeOut
    rolled_up_at: datetime | None = Field(
        None,
        description="searches and votes: the figures as of the last rollup (None: never rolled up); "
        "views are live (a second behind at most)",
    )


class DayViews(BaseModel):
    day: date
    views: int


class ViewsOut(Figures):
    total: int
    days: list[DayViews]


class TopItem(BaseModel):
    item_id: int
    title: str
    status: str
    views: int


class TopItemsOut(Figures):
    items: list[TopItem]


class DaySearches(BaseModel):
    day: date
    searches: int
    zero_results: int


class SearchesOut(Figures):
    total: int
    zero_results: int
    days: list[DaySearches]


class QueryRow(BaseModel):
    query: str = Field(description="one of the spellings searched")
    normalized: str
    searches: int
    zero_results: int
    clicked: int = Field(description="searches with a result opened")
    last_seen: datetime


class QueriesOut(Figures):
    items: list[QueryRow]


class HelpfulnessRow(BaseModel):
    item_id: int
    title: str
    status: str
    helpful: int
    not_helpful: int
    votes: int
    comments: int
    ratio: float = Field(description="helpful / votes")


class HelpfulnessOut(Figures):
    min_votes: int
    items: list[HelpfulnessRow]


class StaleItem(BaseModel):
    kind: str = Field(description="review_overdue | never_viewed | expiring")
    item_id: int
    title: str
    owner_id: int | None
    review_due: date | None
    valid_to: datetime | None


class StaleCounts(BaseModel):
    review_overdue: int
    never_viewed: int
    expiring: int


class StaleOut(Figures):
    expiring_days: int
    counts: StaleCounts
    items: list[StaleItem] = Field(description="up to `limit` of each kind")


class PersonThroughput(BaseModel):
    user_id: int
    username: str
    display_name: str
    drafts_created: int = Field(description="versions they created")
    submitted: int = Field(description="versions they submitted for review")
    reviews_done: int = Field(description="versions they approved or rejected")
    published: int = Field(description="versions they published")
    median_hours_waited: float | None = Field(description="their versions: submitted → reviewed")
    median_hours_to_review: float | None = Field(description="versions they reviewed: submitted → reviewed")


class ThroughputOut(Figures):
    drafts_created: int
    reviews_done: int
    published: int
    median_hours_in_review: float | None = Field(description="versions reviewed in the range: submitted → reviewed")
    people: list[PersonThroughput]


class ReportData(BaseModel):
    """Everything a period report shows (GET /analytics/report.html draws it)."""

    range: RangeOut
    generated_at: datetime
    rolled_up_at: datetime | None
    views: ViewsOut
    top_items: list[TopItem]
    searches: SearchesOut
    top_queries: list[QueryRow]
    zero_result_queries: list[QueryRow]
    unclicked_queries: list[QueryRow]
    least_helpful: list[HelpfulnessRow]
    stale: StaleOut
    throughput: ThroughputOut
