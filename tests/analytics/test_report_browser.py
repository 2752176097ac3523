"""The analytics report in a real headless browser: Debian's chromium driven by Playwright.

The app is served for real (uvicorn, in this test's event loop, on this test's database); the page
is loaded with an administrator's token. It must draw every chart (canvas pixels), log no error,
make no request but its own, show the Chinese headings and show user content as text.

`make test` installs chromium and fonts-noto-cjk when missing (`make browser`). Without chromium the
test is skipped on a developer's machine, never in CI (CI=true): there it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.analytics.conftest import XSS_QUERY, XSS_TITLE, Seeded
from tests.conftest import Actor, skip_outside_ci

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHARTS = {
    "chart-daily",
    "chart-top-items",
    "chart-top-queries",
    "chart-zero-result-queries",
    "chart-least-helpful",
    "chart-stale",
    "chart-throughput",
}
# Per canvas: its size and how many of its pixels were painted (Chart.js leaves the rest transparent).
PAINTED = """() => Array.from(document.querySelectorAll("canvas")).map((c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) { n++; } }
  return {id: c.id, width: c.width, height: c.height, painted: n};
})"""


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return (
            "chromium is not installed: `make browser` (run by `make test`) installs Debian's chromium "
            "and fonts-noto-cjk"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `make install` (the dev extras pin it)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = _missing()
    if reason:
        skip_outside_ci(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def served(app: Any) -> AsyncIterator[str]:
    """The test's app over real HTTP (its lifespan already runs: the conftest's LifespanManager)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_report_draws_every_chart_in_chromium(
    browser: Any, served: str, admin: Actor, seeded: Seeded, tmp_path: Path
) -> None:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN", extra_http_headers=admin.headers
    )
    page = await context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in {"error", "warning"} else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    url = f"{served}/api/v1/analytics/report.html"
    response = await page.goto(url, wait_until="load")
    assert response is not None and response.status == 200
    # The page's script marks <html> when the charts are drawn (a selector: the CSP forbids eval-based waits).
    try:
        await page.wait_for_selector("html[data-charts-drawn]", state="attached", timeout=5000)
    except Exception as e:
        raise AssertionError(f"the charts were not drawn: {problems}") from e
    shot = tmp_path / "report.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000

    drawn = set((await page.get_attribute("html", "data-charts-drawn") or "").split())
    assert drawn == CHARTS
    canvases = {c["id"]: c for c in await page.evaluate(PAINTED)}
    assert set(canvases) == CHARTS
    for c in canvases.values():
        assert c["width"] >= 300 and c["height"] >= 200, c
        assert c["painted"] > 0.01 * c["width"] * c["height"], f"{c['id']} drew (almost) nothing: {c}"

    assert problems == [] and dialogs == []  # no CSP violation, no script error, no alert()
    assert requests == [url]  # the page fetched nothing: no CDN, no font, no image
    assert await page.evaluate("typeof window.pwned") == "undefined"
    assert await page.locator("img").count() == 0 and await page.locator("script").count() == 3

    assert await page.inner_text("h1") == "知识运营报告"
    headings = await page.locator("h2").all_inner_texts()
    assert headings == [
        "每日趋势：浏览量、搜索次数、无结果搜索",
        "热门知识（浏览量）",
        "热门搜索词（搜索次数）",
        "无结果搜索词（待补充的知识）",
        "最不满意的答案",
        "待复核知识",
        "作者与审核员工作量",
    ]
    zero = await page.locator("#zero-result-queries tbody td:first-child").all_inner_texts()
    assert zero == [XSS_QUERY, "燃气表读数异常"]  # the query shows as the text it is
    assert XSS_TITLE in await page.locator("#top-items tbody td:first-child").all_inner_texts()
    await context.close()
