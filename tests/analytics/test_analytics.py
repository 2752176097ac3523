"""Usage analytics: events through the real write paths, the daily rollup, the figures a manager reads."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app.analytics.jobs import ROLLUP_JOB, schedule_rollup
from app.analytics.models import FeedbackDay, RollupState, SearchDay
from app.analytics.rollup import LAG, SEARCHES, rollup
from app.analytics.schemas import ReportData
from app.analytics.service import report_data
from app.core.db import utcnow
from app.identity.principal import Principal
from app.knowledge.models import ItemVersion
from app.search.models import SearchLog
from app.workers.models import Job
from app.workers.worker import Worker
from tests.conftest import DEFAULT_ROLES, Actor, People, assert_problem
from tests.knowledge.conftest import Kb

A = "/api/v1/analytics"


async def drain(app: Any) -> int:
    return await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()


def days_to_today(since: datetime) -> int:
    """UTC days from `since`'s day to today, both included: what a rollup re-rolls."""
    return (utcnow().date() - since.date()).days + 1


async def roll(app: Any) -> dict[str, int]:
    await app.state.search_log.flush()
    await app.state.channel_events.flush()
    return await rollup(app.state.sessionmaker)


async def publish(kb: Kb, admin: Actor, title: str, node: str, **fields: Any) -> int:
    out = await kb.publish(
        admin, title=title, question=f"{title}？", visibility="public", category_ids=[kb.nodes[node]], **fields
    )
    return int(out["item_id"] if "item_id" in out else out["id"])


def logged(app: Any, query: str, total: int, days_ago: int, channel: str | None = "agent") -> None:
    """A search of some days ago, through the search log's batch writer (the search endpoint stamps now)."""
    app.state.search_log.append(
        {
            "search_id": uuid.uuid4().hex,
            "at": utcnow() - timedelta(days=days_ago),
            "actor": "user:1",
            "channel": channel,
            "query": query,
            "normalized": query.lower(),
            "filters": {},
            "total": total,
            "zero_result": total == 0,
            "took_ms": 4.0,
        }
    )


async def search(client: httpx.AsyncClient, actor: Actor, q: str) -> dict[str, Any]:
    r = await client.get("/api/v1/search", params={"q": q}, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def vote(
    client: httpx.AsyncClient, item_id: int, visitor: str, helpful: bool, comment: str | None = None
) -> None:
    r = await client.post(
        f"/api/v1/channels/web/items/{item_id}/feedback",
        json={"helpful": helpful, "comment": comment},
        headers={"X-Visitor-Id": visitor},
    )
    assert r.status_code == 202, r.text


async def read(
    client: httpx.AsyncClient, item_id: int, n: int, channel: str = "web", headers: dict[str, str] | None = None
) -> None:
    for _ in range(n):
        r = await client.get(f"/api/v1/channels/{channel}/items/{item_id}", headers=headers or {})
        assert r.status_code == 200, r.text


async def get(client: httpx.AsyncClient, actor: Actor, path: str, **params: Any) -> dict[str, Any]:
    r = await client.get(f"{A}/{path}", params=params, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()


class Week:
    """A call center's last week: three answers, searches that found them or nothing, reads, votes."""

    def __init__(self, broadband: int, card: int, power: int) -> None:
        self.broadband, self.card, self.power = broadband, card, power


async def last_week(app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor) -> Week:
    broadband = await publish(kb, admin, "宽带无法上网怎么办", "宽带故障")
    card = await publish(kb, admin, "信用卡年费怎么减免", "信用卡")
    power = await publish(kb, admin, "電費帳單查詢", "电费缴纳")
    await drain(app)  # the index
    found = await search(client, agent, "宽带无法上网")
    assert found["total"] >= 1
    r = await client.post(
        "/api/v1/search/click",
        json={"search_id": found["search_id"], "item_id": broadband, "position": 1},
        headers=agent.headers,
    )
    assert r.status_code == 204, r.text
    assert (await search(client, agent, "信用卡年费"))["total"] >= 1  # shown, never opened
    for _ in range(2):
        assert (await search(client, agent, "携号转网需要什么条件"))["total"] == 0
    for days_ago in (2, 3, 5):
        logged(app, "5G套餐 流量不够用 2024", 0, days_ago, channel="wechat")
    logged(app, "ETC卡办理", 0, 12)  # before last week
    await read(client, broadband, 5)
    await read(client, card, 3)
    await read(client, card, 2, channel="agent", headers=agent.headers)
    for i in range(4):
        await vote(client, broadband, f"visitor-bb-{i:02d}", True)
    await vote(client, card, "visitor-cc-00", True)
    for i in range(1, 4):
        await vote(client, card, f"visitor-cc-{i:02d}", False, "年费减免条件写得不清楚")
    await vote(client, card, "visitor-cc-03", False)  # the same visitor again: one vote counts
    await roll(app)
    return Week(broadband, card, power)


async def test_a_manager_sees_last_weeks_gaps_and_least_helpful_answers(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor, supervisor: Actor
) -> None:
    week = await last_week(app, client, kb, admin, agent)

    gaps = await get(client, supervisor, "zero-result-queries")
    assert [(g["query"], g["zero_results"]) for g in gaps["items"]] == [
        ("5G套餐 流量不够用 2024", 3),
        ("携号转网需要什么条件", 2),
    ]
    assert gaps["range"]["from"] == str(utcnow().date() - timedelta(days=6)) and gaps["rolled_up_at"]

    helpful = await get(client, supervisor, "helpfulness")
    assert [(h["title"], h["helpful"], h["not_helpful"], h["ratio"]) for h in helpful["items"]] == [
        ("信用卡年费怎么减免", 1, 3, 0.25),
        ("宽带无法上网怎么办", 4, 0, 1.0),
    ]
    assert helpful["items"][0]["comments"] == 2  # the last vote of visitor-cc-03 has none

    unclicked = await get(client, supervisor, "unclicked-queries")
    assert [q["query"] for q in unclicked["items"]] == ["信用卡年费"]

    top = await get(client, supervisor, "top-queries")
    assert {q["query"]: (q["searches"], q["clicked"]) for q in top["items"]}["宽带无法上网"] == (1, 1)

    searches = await get(client, supervisor, "searches")
    assert (searches["total"], searches["zero_results"]) == (7, 5) and len(searches["days"]) == 7
    assert searches["days"][-1] == {"day": str(utcnow().date()), "searches": 4, "zero_results": 2}

    views = await get(client, supervisor, "views")
    assert views["total"] == 10 and views["days"][-1]["views"] == 10
    items = await get(client, supervisor, "top-items")
    assert sorted((i["title"], i["views"]) for i in items["items"]) == [
        ("信用卡年费怎么减免", 5),
        ("宽带无法上网怎么办", 5),
    ]

    # filters: a channel, a category (its subtree), and a longer range that reaches the old miss
    assert (await get(client, supervisor, "views", channel="agent"))["total"] == 2
    assert [i["item_id"] for i in (await get(client, supervisor, "top-items", channel="web"))["items"]][:1] == [
        week.broadband
    ]
    under = await get(client, supervisor, "top-items", category=kb.nodes["宽带业务"])
    assert [i["item_id"] for i in under["items"]] == [week.broadband]
    assert (await get(client, supervisor, "helpfulness", category=kb.nodes["信用卡"]))["items"][0][
        "item_id"
    ] == week.card
    wechat = await get(client, supervisor, "zero-result-queries", channel="wechat")
    assert [g["query"] for g in wechat["items"]] == ["5G套餐 流量不够用 2024"]
    month = await get(client, supervisor, "zero-result-queries", **{"from": str(utcnow().date() - timedelta(days=29))})
    assert "ETC卡办理" in [g["query"] for g in month["items"]]
    stale = await get(client, supervisor, "stale")
    assert stale["counts"]["never_viewed"] == 1 and [
        i["item_id"] for i in stale["items"] if i["kind"] == "never_viewed"
    ] == [week.power]


async def test_the_rollup_counts_once_however_often_it_runs(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor, supervisor: Actor
) -> None:
    week = await last_week(app, client, kb, admin, agent)

    async def figures() -> list[Any]:
        async with app.state.sessionmaker() as s:
            days = (
                await s.execute(
                    select(
                        SearchDay.day,
                        SearchDay.channel,
                        SearchDay.normalized,
                        SearchDay.searches,
                        SearchDay.zero_results,
                        SearchDay.clicked,
                    ).order_by(SearchDay.day, SearchDay.normalized)
                )
            ).all()
            votes = (
                await s.execute(
                    select(FeedbackDay.day, FeedbackDay.item_id, FeedbackDay.helpful, FeedbackDay.not_helpful).order_by(
                        FeedbackDay.item_id
                    )
                )
            ).all()
        return [days, votes]

    before = await figures()
    async with app.state.sessionmaker() as s:
        watermark = (await s.get(RollupState, SEARCHES)).watermark  # type: ignore[union-attr]
    # today again (and yesterday too when the last run was within LAG of midnight), the items voted on lately
    assert await roll(app) == {"search_days": days_to_today(watermark - LAG), "vote_items": 2}
    await roll(app)
    assert await figures() == before

    # a vote changed (one counts), a search of three days ago clicked today: both re-rolled, never added
    await vote(client, week.card, "visitor-cc-00", False)
    async with app.state.sessionmaker() as s:
        old = await s.scalar(
            select(SearchLog).where(SearchLog.query == "5G套餐 流量不够用 2024").order_by(SearchLog.at).limit(1)
        )
        assert old is not None
        old.clicked_item_id, old.clicked_at = week.broadband, utcnow()  # as POST /search/click writes it
        searched_at = old.at
        await s.commit()
    rolled = await roll(app)
    assert rolled["search_days"] == days_to_today(searched_at) >= 6  # from the clicked search's day to today
    helpful = await get(client, supervisor, "helpfulness")
    least = helpful["items"][0]
    assert (least["item_id"], least["helpful"], least["not_helpful"]) == (week.card, 0, 4)
    top = {q["query"]: q for q in (await get(client, supervisor, "top-queries"))["items"]}
    assert (top["5G套餐 流量不够用 2024"]["searches"], top["5G套餐 流量不够用 2024"]["clicked"]) == (3, 1)
    again = await figures()
    await roll(app)
    assert await figures() == again


async def test_the_rollup_job_is_scheduled_and_runs(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor, supervisor: Actor
) -> None:
    await search(client, agent, "電費帳單 2024年11月")
    await app.state.search_log.flush()
    async with app.state.sessionmaker() as s:
        assert await schedule_rollup(s, 0) is False  # KB_ANALYTICS_ROLLUP_SECONDS=0: off
        assert await schedule_rollup(s, 300) is True
        assert await schedule_rollup(s, 300) is False  # one queued at a time
        await s.execute(update(Job).where(Job.kind == ROLLUP_JOB).values(run_after=utcnow()))
        await s.commit()
    assert (await get(client, supervisor, "searches"))["rolled_up_at"] is None
    await drain(app)
    out = await get(client, supervisor, "searches")
    assert out["total"] == 1 and out["rolled_up_at"]
    async with app.state.sessionmaker() as s:
        jobs = (await s.scalars(select(Job).where(Job.kind == ROLLUP_JOB).order_by(Job.id))).all()
    assert [j.status for j in jobs] == ["done", "pending"]  # and the next one queued


async def test_csv_for_excel(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor, supervisor: Actor
) -> None:
    await last_week(app, client, kb, admin, agent)
    logged(app, '=HYPERLINK("http://evil")', 0, 0)
    await roll(app)
    r = await client.get(f"{A}/zero-result-queries", params={"format": "csv"}, headers=supervisor.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith("\ufeff".encode()) and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == ["query", "normalized", "searches", "zero_results", "clicked", "last_seen"]
    assert [rows[1][0], rows[1][2], rows[1][4]] == ["5G套餐 流量不够用 2024", "3", "0"]
    assert '\'=HYPERLINK("http://evil")' in [row[0] for row in rows]  # never a formula in Excel
    r = await client.get(f"{A}/helpfulness", headers={**supervisor.headers, "Accept": "text/csv"})
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[1][1:5] == ["信用卡年费怎么减免", "published", "1", "3"]
    r = await client.get(
        f"{A}/views", params={"format": "csv", "from": "2026-01-01", "to": "2026-01-03"}, headers=supervisor.headers
    )
    assert r.content.decode("utf-8-sig").splitlines() == ["day,views", "2026-01-01,0", "2026-01-02,0", "2026-01-03,0"]


async def test_ranges_and_filters_are_checked(client: httpx.AsyncClient, kb: Kb, supervisor: Actor) -> None:
    h = supervisor.headers
    body = assert_problem(
        await client.get(f"{A}/views", params={"from": "2026-12-07", "to": "2026-12-01"}, headers=h),
        422,
        "invalid_range",
    )
    assert body["errors"][0]["field"] == "query.from"
    assert_problem(
        await client.get(f"{A}/searches", params={"from": "2025-01-01", "to": "2026-01-02"}, headers=h),
        422,
        "range_too_long",
    )
    ok = await client.get(f"{A}/searches", params={"from": "2025-01-02", "to": "2026-01-02"}, headers=h)
    assert ok.status_code == 200 and len(ok.json()["days"]) == 366
    assert_problem(await client.get(f"{A}/views", params={"to": "9999-12-31"}, headers=h), 422, "invalid_range")
    assert_problem(await client.get(f"{A}/views", params={"from": "2026-13-01"}, headers=h), 422)
    assert_problem(await client.get(f"{A}/views", params={"channel": "fax"}, headers=h), 422)
    assert_problem(await client.get(f"{A}/top-items", params={"category": 999_999}, headers=h), 422, "unknown_category")
    assert_problem(await client.get(f"{A}/top-items", params={"limit": 0}, headers=h), 422)


async def test_who_may_read_the_analytics(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor, people: People
) -> None:
    item = await publish(kb, admin, "5G套餐资费说明", "套餐资费")
    await read(client, item, 2)
    assert_problem(await client.get(f"{A}/views"), 401)
    assert_problem(await client.get(f"{A}/views", headers=agent.headers), 403, "permission_denied")
    manager = await people.make("kb.manager", role="kb_manager")
    assert (await get(client, manager, "top-items"))["items"][0]["title"] == "5G套餐资费说明"
    # analytics without knowledge:read: the numbers, never a title
    analyst = await people.make("data.analyst", permissions=["system:access", "module:analytics", "analytics:read"])
    assert (await get(client, analyst, "views"))["total"] == 2
    assert (await get(client, analyst, "top-items"))["items"] == []
    assert (await get(client, analyst, "stale"))["items"] == []


async def test_stale_knowledge(app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, supervisor: Actor) -> None:
    today = utcnow().date()
    overdue = await publish(kb, admin, "携号转网办理条件", "携号转网", review_due=str(today - timedelta(days=3)))
    expiring = await publish(
        kb, admin, "双十一宽带优惠活动", "宽带办理", valid_to=(utcnow() + timedelta(days=5)).isoformat()
    )
    later = await publish(
        kb, admin, "年度套餐调整公告", "套餐资费", valid_to=(utcnow() + timedelta(days=90)).isoformat()
    )
    await read(client, overdue, 1)
    out = await get(client, supervisor, "stale", expiring_days=30)
    assert out["counts"] == {"review_overdue": 1, "never_viewed": 2, "expiring": 1}
    kinds = {(i["kind"], i["item_id"]) for i in out["items"]}
    assert kinds == {
        ("review_overdue", overdue),
        ("never_viewed", expiring),
        ("never_viewed", later),
        ("expiring", expiring),
    }
    assert (await get(client, supervisor, "stale", expiring_days=120))["counts"]["expiring"] == 2
    assert (await get(client, supervisor, "stale", category=kb.nodes["手机业务"]))["counts"] == {
        "review_overdue": 1,
        "never_viewed": 1,
        "expiring": 0,
    }


async def test_author_and_reviewer_throughput(
    app: Any, client: httpx.AsyncClient, kb: Kb, author: Actor, reviewer: Actor, publisher: Actor, supervisor: Actor
) -> None:
    ids = []
    for title in ("信用卡挂失流程", "寬頻報修電話", "5G套餐升级办理"):
        item = await kb.create(author, title=title, category_ids=[kb.nodes["信用卡"]])
        ids.append(item["id"])
        await kb.ok(author, item["id"], 1, "submit")
    await kb.ok(reviewer, ids[0], 1, "approve")
    await kb.ok(publisher, ids[0], 1, "publish")
    r = await kb.act(reviewer, ids[1], 1, "reject")
    assert r.status_code == 200, r.text
    async with app.state.sessionmaker() as s:  # the first waited two hours in review
        v = await s.scalar(select(ItemVersion).where(ItemVersion.item_id == ids[0]))
        assert v is not None and v.reviewed_at is not None
        v.submitted_at = v.reviewed_at - timedelta(hours=2)
        await s.commit()
    out = await get(client, supervisor, "throughput")
    people = {p["username"]: p for p in out["people"]}
    assert (people["li.na"]["drafts_created"], people["li.na"]["submitted"]) == (3, 3)
    assert people["wang.fang"]["reviews_done"] == 2 and people["chen.jie"]["published"] == 1
    assert (out["drafts_created"], out["reviews_done"], out["published"]) == (3, 2, 1)
    assert 0.9 < out["median_hours_in_review"] < 1.1  # median of 2 h and ~0 h
    assert people["wang.fang"]["median_hours_to_review"] == out["median_hours_in_review"]
    old = await get(client, supervisor, "throughput", **{"from": "2026-01-01", "to": "2026-01-31"})
    assert old["people"] == [] and old["median_hours_in_review"] is None
    assert (await get(client, supervisor, "throughput", category=kb.nodes["电费缴纳"]))["drafts_created"] == 0


async def test_report_data_holds_a_whole_report(
    app: Any, client: httpx.AsyncClient, kb: Kb, admin: Actor, agent: Actor, supervisor: Actor
) -> None:
    await last_week(app, client, kb, admin, agent)
    today = utcnow().date()
    principal = Principal(
        kind="user", id=supervisor.user.id, name="zhao.min", permissions=frozenset(DEFAULT_ROLES["supervisor"][1])
    )
    async with app.state.sessionmaker() as s:
        report = await report_data(s, principal, today - timedelta(days=29), today, None, None)
    assert isinstance(report, ReportData) and report.range.days == 30 and len(report.views.days) == 30
    assert report.searches.total == 8 and report.views.total == 10  # ETC卡办理, 12 days ago, too
    assert report.zero_result_queries[0].query == "5G套餐 流量不够用 2024"
    assert report.least_helpful[0].title == "信用卡年费怎么减免"
    assert report.stale.counts.never_viewed == 1 and report.top_items and report.top_queries
    assert report.throughput.published == 3
    assert date.fromisoformat(report.model_dump(mode="json", by_alias=True)["range"]["from"]) == report.range.start
