"""The analytics report as one self-contained HTML page (`GET /api/v1/analytics/report.html`).

Everything the page needs is in the page: Chart.js (vendored in static/, MIT, its licence header
kept) and the page's own script and style are inlined, the figures travel as JSON in a
`<script type="application/json">` block. The page makes no request of its own, and its
Content-Security-Policy (`REPORT_CSP`) allows nothing else: the scripts and the style are allowed by
their SHA-256 hashes, computed once here, since they never change (the data block is not executed).

Text is the viewer's system font: the CSS and Chart.js font stack names the usual CJK fonts
(Noto Sans CJK SC, Source Han Sans SC, Microsoft YaHei, PingFang SC); no font is downloaded.

Titles, queries and names are user content: the tables escape them (`html.escape`), the JSON block
escapes `<`, `>` and `&`, and Chart.js draws labels on a canvas, never as HTML.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field

from app.analytics import schemas as figures

# ---------------------------------------------------------------- what the report shows


class Period(BaseModel):
    start: date
    end: date  # inclusive
    channel: str | None = None  # None: every channel
    category: str | None = None  # the category's label; None: every category


class DailyPoint(BaseModel):
    day: date
    views: int = 0
    searches: int = 0
    zero_result_searches: int = 0


class ItemViews(BaseModel):
    item_id: int | None = None
    title: str
    views: int


class QueryCount(BaseModel):
    query: str
    count: int


class ItemHelpfulness(BaseModel):
    item_id: int | None = None
    title: str
    helpful: int
    unhelpful: int
    ratio: float | None = Field(None, description="helpful / (helpful + unhelpful); None without votes")


class StaleCounts(BaseModel):
    past_review: int = 0  # review_due passed
    never_viewed: int = 0  # published, no view in the period
    expiring_soon: int = 0  # valid_to within the next days


class Throughput(BaseModel):
    person: str
    drafts: int = 0
    reviews: int = 0
    published: int = 0
    median_review_hours: float | None = None  # submitted -> reviewed, of the versions they reviewed


class ReportData(BaseModel):
    period: Period
    daily: list[DailyPoint] = []  # one point per day of the period (missing days count as zero)
    top_items: list[ItemViews] = []
    top_queries: list[QueryCount] = []
    zero_result_queries: list[QueryCount] = []
    least_helpful: list[ItemHelpfulness] = []
    stale: StaleCounts = StaleCounts()
    throughput: list[Throughput] = []
    generated_at: datetime | None = None


def from_figures(f: figures.ReportData) -> ReportData:
    """The page's view of app/analytics/service.report_data (the same figures as the JSON endpoints)."""
    daily = {d.day: DailyPoint(day=d.day, views=d.views) for d in f.views.days}
    for d in f.searches.days:
        point = daily.setdefault(d.day, DailyPoint(day=d.day))
        point.searches, point.zero_result_searches = d.searches, d.zero_results
    category = f"#{f.range.category}" if f.range.category else None
    return ReportData(
        period=Period(start=f.range.start, end=f.range.end, channel=f.range.channel, category=category),
        daily=sorted(daily.values(), key=lambda p: p.day),
        top_items=[ItemViews(item_id=t.item_id, title=t.title, views=t.views) for t in f.top_items],
        top_queries=[QueryCount(query=q.query, count=q.searches) for q in f.top_queries],
        zero_result_queries=[QueryCount(query=q.query, count=q.zero_results) for q in f.zero_result_queries],
        least_helpful=[
            ItemHelpfulness(item_id=h.item_id, title=h.title, helpful=h.helpful, unhelpful=h.not_helpful, ratio=h.ratio)
            for h in f.least_helpful
        ],
        stale=StaleCounts(
            past_review=f.stale.counts.review_overdue,
            never_viewed=f.stale.counts.never_viewed,
            expiring_soon=f.stale.counts.expiring,
        ),
        throughput=[
            Throughput(
                person=p.display_name or p.username,
                drafts=p.drafts_created,
                reviews=p.reviews_done,
                published=p.published,
                median_review_hours=p.median_hours_to_review,
            )
            for p in f.throughput.people
        ],
        generated_at=f.generated_at,
    )


# ---------------------------------------------------------------- the fixed parts of the page

FONT_STACK = (
    '"Noto Sans CJK SC", "Source Han Sans SC", "Source Han Sans CN", "Microsoft YaHei", '
    '"PingFang SC", "Hiragino Sans GB", "WenQuanYi Micro Hei", sans-serif'
)
CHART_JS_VERSION = "4.6.2"
CHART_JS = resources.files("app.analytics").joinpath("static/chart.umd.min.js").read_text(encoding="utf-8")

STYLE = """
*{box-sizing:border-box}
body{margin:0;padding:24px;font-family:FONTS;color:#1f2933;background:#fff;font-size:14px;line-height:1.5}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:0 0 12px;border-left:4px solid #2563eb;padding-left:8px}
.meta{color:#52606d;margin:0 0 20px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:24px}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:12px 16px;min-width:150px}
.card b{display:block;font-size:22px}
section{margin-bottom:28px;break-inside:avoid}
.row{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.chart{position:relative;height:300px;flex:1 1 520px;min-width:320px}
.tbl{flex:1 1 360px;overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#7b8794;border:1px dashed #cbd2d9;border-radius:6px;padding:24px;text-align:center;margin:0}
details{margin-top:8px}
footer{color:#7b8794;font-size:12px;margin-top:32px}
""".replace("FONTS", FONT_STACK)

# Draws every chart the data block describes; the data block holds the chart specs, so this text
# never changes and its hash can sit in the CSP.
INIT = """
(function () {
  "use strict";
  var spec = JSON.parse(document.getElementById("report-data").textContent);
  Chart.defaults.font.family = spec.font;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  var drawn = [];
  spec.charts.forEach(function (c) {
    var canvas = document.getElementById(c.id);
    if (!canvas) { return; }
    var scales = {};
    if (c.type === "bar" || c.type === "line") {
      var value = c.horizontal ? "x" : "y", category = c.horizontal ? "y" : "x";
      scales[value] = {beginAtZero: true, stacked: !!c.stacked, ticks: {precision: 0}};
      scales[category] = {stacked: !!c.stacked};
    }
    new Chart(canvas, {
      type: c.type,
      data: {labels: c.labels, datasets: c.datasets.map(function (d) {
        var line = c.type === "line";
        return {label: d.label, data: d.data, backgroundColor: d.color, borderColor: d.color,
                borderWidth: line ? 2 : 0, pointRadius: line ? 2 : 0, tension: 0.2, maxBarThickness: 32};
      })},
      options: {indexAxis: c.horizontal ? "y" : "x", scales: scales,
                plugins: {legend: {display: c.datasets.length > 1 || c.type === "doughnut"}}}
    });
    drawn.push(c.id);
  });
  document.documentElement.setAttribute("data-charts-drawn", drawn.join(" "));
}());
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


REPORT_CSP = (
    f"default-src 'none'; script-src {_hash(CHART_JS)} {_hash(INIT)}; style-src {_hash(STYLE)}; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

BLUE, ORANGE, RED, GREEN, GREY, PURPLE = "#2563eb", "#f59e0b", "#dc2626", "#16a34a", "#9aa5b1", "#7c3aed"
LABEL_CHARS = 24  # chart axis labels; the tables show the whole text
EMPTY = '<p class="empty">无数据</p>'


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _json_block(value: Any) -> str:
    """JSON that cannot end its <script> element early (`</script>`, `<!--`)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(headers: list[tuple[str, bool]], rows: list[list[object]]) -> str:
    """headers: (text, numeric)."""
    head = "".join(f'<th{" class=n" if num else ""} scope="col">{_esc(h)}</th>' for h, num in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if headers[i][1] else ''}>{_esc(v)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(
    sid: str, title: str, chart: dict[str, Any] | None, table: str, charts: list[dict[str, Any]], extra: str = ""
) -> str:
    """A heading, then the chart beside its table, or the empty state when there is nothing to show."""
    if chart is None:
        return f'<section id="{sid}"><h2>{_esc(title)}</h2>{EMPTY}</section>'
    charts.append(chart)
    canvas = f'<div class="chart"><canvas id="{chart["id"]}" role="img" aria-label="{_esc(title)}"></canvas></div>'
    return (
        f'<section id="{sid}"><h2>{_esc(title)}</h2><div class="row">{canvas}'
        f'<div class="tbl">{table}</div></div>{extra}</section>'
    )


def _bar(
    cid: str,
    labels: list[str],
    datasets: list[dict[str, Any]],
    *,
    horizontal: bool = False,
    stacked: bool = False,
    kind: str = "bar",
) -> dict[str, Any]:
    return {
        "id": cid,
        "type": kind,
        "labels": labels,
        "datasets": datasets,
        "horizontal": horizontal,
        "stacked": stacked,
    }


def _percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.0f}%"


def _hours(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _days(data: ReportData) -> list[DailyPoint]:
    """Every day of the period, in order: the days the data leaves out count as zero."""
    given = {p.day: p for p in data.daily}
    span = (data.period.end - data.period.start).days + 1
    days = [data.period.start + timedelta(days=i) for i in range(max(span, 0))]
    return [given.get(d, DailyPoint(day=d)) for d in days]


def render_report(data: ReportData) -> str:
    charts: list[dict[str, Any]] = []
    p = data.period
    daily = _days(data)
    total_views = sum(d.views for d in daily)
    total_searches = sum(d.searches for d in daily)
    total_zero = sum(d.zero_result_searches for d in daily)
    zero_rate = f"{total_zero / total_searches * 100:.1f}%" if total_searches else "—"
    stale = data.stale

    cards = "".join(
        f'<div class="card">{_esc(k)}<b>{_esc(v)}</b></div>'
        for k, v in (
            ("浏览量", total_views),
            ("搜索次数", total_searches),
            ("无结果搜索", total_zero),
            ("无结果率", zero_rate),
            ("已过复核日期", stale.past_review),
        )
    )

    sections = []
    has_daily = any(d.views or d.searches or d.zero_result_searches for d in daily)
    daily_table = _table(
        [("日期", False), ("浏览量", True), ("搜索次数", True), ("无结果搜索", True)],
        [[d.day.isoformat(), d.views, d.searches, d.zero_result_searches] for d in daily],
    )
    sections.append(
        _section(
            "daily",
            "每日趋势：浏览量、搜索次数、无结果搜索",
            _bar(
                "chart-daily",
                [d.day.strftime("%m-%d") for d in daily],
                [
                    {"label": "浏览量", "data": [d.views for d in daily], "color": BLUE},
                    {"label": "搜索次数", "data": [d.searches for d in daily], "color": GREEN},
                    {"label": "无结果搜索", "data": [d.zero_result_searches for d in daily], "color": RED},
                ],
                kind="line",
            )
            if has_daily
            else None,
            _table(
                [("", False), ("合计", True)],
                [["浏览量", total_views], ["搜索次数", total_searches], ["无结果搜索", total_zero]],
            ),
            charts,
            extra=f"<details><summary>按日明细</summary>{daily_table}</details>",
        )
    )

    sections.append(
        _section(
            "top-items",
            "热门知识（浏览量）",
            _bar(
                "chart-top-items",
                [_short(i.title) for i in data.top_items],
                [{"label": "浏览量", "data": [i.views for i in data.top_items], "color": BLUE}],
                horizontal=True,
            )
            if data.top_items
            else None,
            _table([("知识标题", False), ("浏览量", True)], [[i.title, i.views] for i in data.top_items]),
            charts,
        )
    )

    sections.append(
        _section(
            "top-queries",
            "热门搜索词（搜索次数）",
            _bar(
                "chart-top-queries",
                [_short(q.query) for q in data.top_queries],
                [{"label": "搜索次数", "data": [q.count for q in data.top_queries], "color": GREEN}],
                horizontal=True,
            )
            if data.top_queries
            else None,
            _table([("搜索词", False), ("搜索次数", True)], [[q.query, q.count] for q in data.top_queries]),
            charts,
        )
    )

    sections.append(
        _section(
            "zero-result-queries",
            "无结果搜索词（待补充的知识）",
            _bar(
                "chart-zero-result-queries",
                [_short(q.query) for q in data.zero_result_queries],
                [{"label": "无结果搜索", "data": [q.count for q in data.zero_result_queries], "color": RED}],
                horizontal=True,
            )
            if data.zero_result_queries
            else None,
            _table([("搜索词", False), ("无结果次数", True)], [[q.query, q.count] for q in data.zero_result_queries]),
            charts,
        )
    )

    sections.append(
        _section(
            "least-helpful",
            "最不满意的答案",
            _bar(
                "chart-least-helpful",
                [_short(i.title) for i in data.least_helpful],
                [
                    {"label": "有帮助", "data": [i.helpful for i in data.least_helpful], "color": GREEN},
                    {"label": "没帮助", "data": [i.unhelpful for i in data.least_helpful], "color": RED},
                ],
                horizontal=True,
                stacked=True,
            )
            if data.least_helpful
            else None,
            _table(
                [("知识标题", False), ("有帮助", True), ("没帮助", True), ("满意率", True)],
                [[i.title, i.helpful, i.unhelpful, _percent(i.ratio)] for i in data.least_helpful],
            ),
            charts,
        )
    )

    stale_rows = [
        ("已过复核日期", stale.past_review, ORANGE),
        ("期间内从未被浏览", stale.never_viewed, GREY),
        ("即将过期", stale.expiring_soon, RED),
    ]
    sections.append(
        _section(
            "stale",
            "待复核知识",
            _bar(
                "chart-stale",
                [r[0] for r in stale_rows],
                [{"label": "知识条数", "data": [r[1] for r in stale_rows], "color": [r[2] for r in stale_rows]}],
            )
            if any(r[1] for r in stale_rows)
            else None,
            _table([("类别", False), ("知识条数", True)], [[r[0], r[1]] for r in stale_rows]),
            charts,
        )
    )

    people = data.throughput
    sections.append(
        _section(
            "throughput",
            "作者与审核员工作量",
            _bar(
                "chart-throughput",
                [_short(t.person) for t in people],
                [
                    {"label": "草稿", "data": [t.drafts for t in people], "color": BLUE},
                    {"label": "审核", "data": [t.reviews for t in people], "color": PURPLE},
                    {"label": "发布", "data": [t.published for t in people], "color": GREEN},
                ],
            )
            if people
            else None,
            _table(
                [("人员", False), ("草稿", True), ("审核", True), ("发布", True), ("审核中位时长（小时）", True)],
                [[t.person, t.drafts, t.reviews, t.published, _hours(t.median_review_hours)] for t in people],
            ),
            charts,
        )
    )

    generated = (data.generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"统计期间：{_esc(p.start.isoformat())} 至 {_esc(p.end.isoformat())}"
        f" · 渠道：{_esc(p.channel or '全部')} · 分类：{_esc(p.category or '全部')}"
    )
    spec = {"font": FONT_STACK, "charts": charts}
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>知识运营报告 {_esc(p.start.isoformat())} 至 {_esc(p.end.isoformat())}</title>"
        f"<style>{STYLE}</style></head><body>"
        f'<header><h1>知识运营报告</h1><p class="meta">{meta}</p></header>'
        f'<div class="cards">{cards}</div>'
        + "".join(sections)
        + f"<footer>生成时间 {_esc(generated)} · 图表：Chart.js {CHART_JS_VERSION}（MIT）"
        "· 字体：浏览器所在系统的中文字体</footer>"
        f'<script type="application/json" id="report-data">{_json_block(spec)}</script>'
        f"<script>{CHART_JS}</script><script>{INIT}</script>"
        "</body></html>"
    )
