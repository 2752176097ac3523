"""GET /api/v1/analytics/report.html without a browser: figures, escaping, CSP, ranges, permission."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import date, timedelta
from typing import Any

import httpx

from app.analytics.report import Period, ReportData, render_report
from app.core.db import utcnow
from tests.analytics.conftest import XSS_QUERY, XSS_TITLE, Seeded
from tests.conftest import Actor, People, assert_problem

REPORT = "/api/v1/analytics/report.html"
SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
STYLE = re.compile(r"<style>(.*?)</style>", re.S)
DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def row(page: str, *cells: object) -> bool:
    """The page has a table row of exactly these cells (as the page escapes them)."""
    tds = "".join(f"<td{' class=n' if isinstance(c, int) or str(c).endswith('%') else ''}>{c}</td>" for c in cells)
    return f"<tr>{tds}</tr>" in page


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_report_shows_the_period_figures_escaped_under_a_strict_csp(
    client: httpx.AsyncClient, admin: Actor, seeded: Seeded
) -> None:
    r = await client.get(REPORT, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.text
    today = utcnow().date()
    assert f"统计期间：{today - timedelta(days=6)} 至 {today}" in page  # the default of every analytics route: 7 days

    # What a manager reads: most viewed, searched, zero-result, least helpful, stale.
    assert row(page, "宽带无法上网怎么办？", 5) and row(page, "信用卡挂失流程", 3) and row(page, "携號轉網辦理條件", 2)
    assert row(page, "宽带", 2) and row(page, "燃气表读数异常", 1)
    assert row(page, "&lt;script&gt;alert(1)&lt;/script&gt;", 2)  # a top query and a zero-result one
    assert row(page, "信用卡挂失流程", 1, 3, "25%")  # least helpful first
    assert not row(page, "宽带无法上网怎么办？", 2, 0, "100%")  # nobody found it unhelpful
    assert row(page, "已过复核日期", 1) and row(page, "即将过期", 1) and row(page, "期间内从未被浏览", 1)
    for heading in ("知识运营报告", "浏览量", "搜索次数", "无结果搜索", "热门知识", "最不满意的答案", "待复核知识"):
        assert heading in page

    # User content never becomes markup: not in the tables, not in the JSON block.
    assert XSS_QUERY not in page and "<img" not in page
    assert "账单查询&lt;img src=x onerror=&quot;window.pwned=true&quot;&gt;" in page
    spec = json.loads(DATA.search(page).group(1))  # type: ignore[union-attr]
    charts = {c["id"]: c for c in spec["charts"]}
    assert set(charts) == {
        "chart-daily",
        "chart-top-items",
        "chart-top-queries",
        "chart-zero-result-queries",
        "chart-least-helpful",
        "chart-stale",
        "chart-throughput",
    }
    assert XSS_QUERY[:23] + "…" in charts["chart-zero-result-queries"]["labels"]  # raw: drawn as text
    assert charts["chart-top-items"]["datasets"][0]["data"] == [5, 3, 2, 1]
    assert XSS_TITLE[:23] + "…" in charts["chart-top-items"]["labels"]
    daily = charts["chart-daily"]
    assert daily["labels"][-1] == today.strftime("%m-%d") and len(daily["labels"]) == 7
    assert [d["data"][-1] for d in daily["datasets"]] == [11, 6, 3]  # views, searches, zero-result today

    # The CSP allows exactly the inlined scripts and style, by hash; nothing may be fetched.
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and "unsafe-inline" not in r.headers["content-security-policy"]
    assert set(csp["script-src"].split()) == {csp_hash(s) for s in SCRIPT.findall(page)}
    assert csp["style-src"] == csp_hash(STYLE.search(page).group(1))  # type: ignore[union-attr]
    assert "http" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # no link to anywhere
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_a_channel_and_a_period_narrow_the_report(
    client: httpx.AsyncClient, admin: Actor, seeded: Seeded
) -> None:
    wechat = await client.get(REPORT, params={"channel": "wechat"}, headers=admin.headers)
    assert wechat.status_code == 200 and "渠道：wechat" in wechat.text
    assert "chart-top-items" not in wechat.text  # nothing was read on WeChat
    last_year = await client.get(REPORT, params={"from": "2025-01-01", "to": "2025-01-31"}, headers=admin.headers)
    assert last_year.status_code == 200
    page = last_year.text
    assert "统计期间：2025-01-01 至 2025-01-31" in page
    assert page.count('<p class="empty">无数据</p>') == 6  # every chart but stale knowledge, which is about now
    assert re.findall(r'<canvas id="([a-z-]+)"', page) == ["chart-stale"]


def test_an_empty_report_says_so_instead_of_drawing_empty_charts() -> None:
    page = render_report(ReportData(period=Period(start=date(2026, 3, 1), end=date(2026, 3, 31), category="信用卡")))
    assert "<canvas" not in page and page.count('<p class="empty">无数据</p>') == 7
    assert "分类：信用卡" in page and "渠道：全部" in page
    assert json.loads(DATA.search(page).group(1))["charts"] == []  # type: ignore[union-attr]


async def test_ranges_must_be_ordered_and_at_most_366_days(client: httpx.AsyncClient, admin: Actor) -> None:
    inverted = await client.get(REPORT, params={"from": "2026-03-02", "to": "2026-03-01"}, headers=admin.headers)
    assert assert_problem(inverted, 422, "invalid_range")["errors"][0]["field"] == "query.from"
    too_long = await client.get(REPORT, params={"from": "2025-01-01", "to": "2026-01-02"}, headers=admin.headers)
    assert assert_problem(too_long, 422, "range_too_long")["errors"][0]["field"] == "query.to"  # 367 days
    leap_year = await client.get(REPORT, params={"from": "2024-01-01", "to": "2024-12-31"}, headers=admin.headers)
    assert leap_year.status_code == 200  # 366 days
    one_day = await client.get(REPORT, params={"from": "2026-03-01", "to": "2026-03-01"}, headers=admin.headers)
    assert one_day.status_code == 200
    bad = await client.get(REPORT, params={"from": "2026-02-30"}, headers=admin.headers)
    assert assert_problem(bad, 422)["errors"][0]["field"].endswith("from")
    assert_problem(await client.get(REPORT, params={"channel": "fax"}, headers=admin.headers), 422)


async def test_only_callers_with_analytics_read_see_the_report(
    client: httpx.AsyncClient, people: People, agent: Actor, app: Any
) -> None:
    assert_problem(await client.get(REPORT), 401)
    assert_problem(await client.get(REPORT, headers=agent.headers), 403, "permission_denied")
    manager = await people.make("wang.fang", permissions=["system:access", "module:analytics", "analytics:read"])
    assert (await client.get(REPORT, headers=manager.headers)).status_code == 200
