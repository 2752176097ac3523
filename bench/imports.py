"""Bulk import through `POST /api/v1/imports` into the embedded default (SQLite + Tantivy): rows/s
into the database, end to end until every row is searchable, the unchanged re-import, peak memory.

    .venv/bin/python bench/imports.py                          # 100,000 rows, NDJSON and XLSX
    .venv/bin/python bench/imports.py --rows 10000 --formats ndjson
    .venv/bin/python bench/imports.py --rows 20000 --profile /tmp/import.html   # pyinstrument of the import job

Rows: the 27,696 user questions of ../shared/bench/faq_dev/corpus.jsonl (read, never copied into
the repo), each combined with generated telecom / banking / utilities fields until there are
--rows distinct rows: external_id, title (the question + region and product), question, 2-3
similar questions, an HTML body of a few sentences, an agent script (`answer.agent`), 1-2
categories as paths (`业务/宽带/故障`, a tree of 30 paths, created by the source's policy) and
2-3 tags (created too). Item type `faq` (no template, so no `attr.` columns). The files (NDJSON
and, with openpyxl's write_only mode, XLSX; lists one value per line in a cell) are written to a
temp folder once per size, before anything is measured.

Each measured run is a FRESH child process (so `ru_maxrss` is that run's own high-water mark)
with an empty data folder, the real Alembic migrations and `create_app(Settings(...))` under its
lifespan. An administrator (`knowledge:import`) signed in at `POST /api/v1/auth/token` creates a
taxonomy and the sync source (`publish_mode=publish`, `create_categories`, `create_tags`) and
uploads the file over `httpx.ASGITransport`, streamed from disk. The real `Worker` then runs the
`imports.run` job (claimed and run exactly as `run_once` does it; a round runs the single jobs
first, then one index batch) and drains the index jobs in batches of 500.

Figures per format and size:
  upload     the POST until its 202 (the file streamed to the data folder);
  import     the `imports.run` job from claim to done: rows/s into the database;
  e2e        from the start of the upload until the last index job is done and checked: the
             engine holds exactly --rows documents, every job is done, a search for a few random
             titles finds each one's item in the top 10;
  reimport   the same file again: every row unchanged, rows/s of its job, 0 index jobs queued;
  memory     ru_maxrss after the import job (setup + upload + import) and at the end; in a second
             child per size, tracemalloc's peak over the import job alone (tracemalloc slows
             Python down, so that run is not timed). Sizes: --rows/10 and --rows, to show
             whether memory grows with the file.
`--kinds overlap` adds a run where two `Worker.run_forever` loops share the sessionmaker: one holds the
import job while the other indexes the batches it commits (SQLite serializes their writes).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's `app`, whatever the venv's editable install points at

sys.path.insert(0, str(ROOT / "bench"))
from benchapp import served  # noqa: E402
from relevance import DEFAULT_DATA  # noqa: E402 - where the faq_dev data lies, found one way

SOURCE = "crm"
INDEX_JOB = "search.index_item"
IMPORT_JOB = "imports.run"
CTYPES = {"ndjson": "application/x-ndjson", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
CHUNK = 1024 * 1024
SEARCH_CHECKS = 5

# ---------------------------------------------------------------- rows

# path -> (product words, issue words, tags): a small 知识分类 tree of 30 leaf paths.
TREE: dict[str, tuple[list[str], list[str], list[str]]] = {
    "业务/宽带/故障": (["宽带", "光猫", "千兆宽带"], ["无法上网", "网速慢", "频繁掉线"], ["宽带", "故障", "报修"]),
    "业务/宽带/办理": (["宽带", "融合套餐"], ["新装", "续费", "移机"], ["宽带", "办理"]),
    "业务/宽带/资费": (["宽带包年", "500M宽带"], ["资费", "优惠", "违约金"], ["宽带", "资费"]),
    "业务/手机/套餐": (["5G套餐", "流量包", "畅享套餐"], ["变更", "退订", "叠加"], ["套餐", "5G"]),
    "业务/手机/话费": (["话费", "账单", "余额"], ["查询", "充值未到账", "扣费异常"], ["话费", "账单"]),
    "业务/手机/携号转网": (["携号转网", "号码"], ["资格查询", "授权码", "办理条件"], ["携号转网"]),
    "业务/手机/停复机": (["手机号", "SIM卡"], ["停机", "复机", "挂失"], ["停复机", "挂失"]),
    "业务/手机/国际漫游": (["国际漫游", "出境流量包"], ["开通", "资费", "无信号"], ["漫游", "国际"]),
    "业务/固话/故障": (["固话", "座机"], ["无拨号音", "杂音", "打不出去"], ["固话", "故障"]),
    "业务/增值业务/彩铃": (["彩铃", "视频彩铃"], ["设置", "取消", "扣费"], ["彩铃", "增值业务"]),
    "业务/增值业务/短信": (["短信", "垃圾短信拦截"], ["收不到", "开通", "退订"], ["短信"]),
    "业务/实名认证": (["实名认证", "身份证"], ["补登记", "信息变更", "一证通查"], ["实名", "证件"]),
    "银行/信用卡/挂失": (["信用卡", "副卡"], ["挂失", "补卡", "盗刷"], ["信用卡", "挂失", "风险"]),
    "银行/信用卡/账单": (["信用卡账单", "分期"], ["查询", "分期手续费", "最低还款"], ["信用卡", "账单"]),
    "银行/信用卡/额度": (["信用额度", "临时额度"], ["提额", "降额", "调整"], ["信用卡", "额度"]),
    "银行/储蓄/开户": (["借记卡", "储蓄账户"], ["开户", "销户", "账户冻结"], ["储蓄", "开户"]),
    "银行/储蓄/转账": (["转账", "跨行汇款", "手机银行"], ["未到账", "限额", "手续费"], ["转账", "手机银行"]),
    "银行/贷款/房贷": (["房贷", "公积金贷款"], ["提前还款", "利率调整", "放款进度"], ["贷款", "房贷"]),
    "银行/贷款/消费贷": (["消费贷", "信用贷"], ["申请条件", "还款日", "逾期"], ["贷款", "逾期"]),
    "银行/网银/登录": (["网上银行", "U盾", "手机银行App"], ["登录失败", "密码重置", "证书过期"], ["网银", "密码"]),
    "银行/理财/产品": (["理财产品", "基金定投"], ["赎回", "收益查询", "风险评估"], ["理财"]),
    "公用事业/电费/缴费": (["电费", "预付费电表"], ["缴费", "欠费停电", "发票"], ["电费", "缴费"]),
    "公用事业/电费/停电": (["停电", "供电线路"], ["计划停电查询", "故障报修", "恢复时间"], ["停电", "报修"]),
    "公用事业/电费/峰谷电价": (["峰谷电价", "阶梯电价"], ["申请", "计费规则", "变更"], ["电价"]),
    "公用事业/水费/缴费": (["水费", "水表"], ["缴费", "读数异常", "欠费"], ["水费", "缴费"]),
    "公用事业/水费/水质": (["自来水", "二次供水"], ["水质发黄", "水压低", "停水通知"], ["水质", "停水"]),
    "公用事业/燃气/开通": (["燃气", "天然气"], ["开户", "通气", "过户"], ["燃气", "开户"]),
    "公用事业/燃气/安全": (["燃气", "燃气灶", "报警器"], ["漏气", "安检预约", "软管更换"], ["燃气", "安全"]),
    "公用事业/燃气/缴费": (["燃气费", "IC卡燃气表"], ["充值", "缴费未到账", "卡表故障"], ["燃气", "缴费"]),
    "服务/投诉建议": (["投诉", "服务评价"], ["进度查询", "升级处理", "回访"], ["投诉", "高频"]),
}
PATHS = list(TREE)
REGIONS = ["北京", "上海", "广东", "四川", "浙江", "江苏", "湖北", "山东", "臺灣", "香港"]
HOTLINES = {"业务": "10086", "银行": "95588", "公用事业": "95598", "服务": "12315"}
STEPS = [
    "请先核实客户身份（姓名、证件号后四位）",
    "在系统中查询最近 30 天的办理记录",
    "如为系统故障，请创建工单并告知客户 24 小时内回复",
    "提醒客户可通过 App 自助办理",
    "涉及费用争议的，按规定先行挂账再核实",
    "夜间 22:00 后的申请次日 9:00 处理",
]


def load_questions(data: Path) -> list[str]:
    out = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["question"].strip())
    return out


def rows(n: int, questions: list[str], seed: int = 20240611) -> Iterator[dict[str, Any]]:
    """n distinct rows: row i takes question i % len(questions) and the (i // len)-th region x
    path combination for it, so the same question never comes twice with the same fields."""
    rng = random.Random(seed)
    combos = len(REGIONS) * len(PATHS)
    for i in range(n):
        qi, k = i % len(questions), i // len(questions)
        combo = (qi * 37 + k) % combos
        region, path = REGIONS[combo % len(REGIONS)], PATHS[combo // len(REGIONS)]
        products, issues, tags = TREE[path]
        product, issue = products[(qi + k) % len(products)], issues[(qi + 2 * k) % len(issues)]
        q = questions[qi][:200]
        hotline = HOTLINES[path.split("/")[0]]
        steps = rng.sample(STEPS, 2)
        cats = [path] if rng.random() < 0.8 else [path, rng.choice(PATHS)]
        yield {
            "external_id": f"CRM-{i + 1:07d}",
            "title": f"{q}（{region}·{product}）",
            "question": q,
            "similar_questions": [f"{region}{product}{issue}怎么办", f"请问{product}{issue}如何处理", f"{q}？"][
                : 2 + i % 2
            ],
            "body": f"<p>关于{region}地区{product}{issue}：{steps[0]}。</p><p>{steps[1]}；"
            f"仍未解决请拨打 {hotline} 或到营业厅办理。</p><p>知识编号 KB-{i + 1:07d}，适用 {region}。</p>",
            "answer.agent": f"您好，关于{product}{issue}，我这边先帮您查询一下，请稍等。",
            "categories": cats,
            "tags": sorted({*tags[: 1 + i % len(tags)], region}),
        }


def write_ndjson(path: Path, it: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in it:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


XLSX_COLUMNS = ["external_id", "title", "question", "similar_questions", "body", "answer.agent", "categories", "tags"]


def write_xlsx(path: Path, it: Iterator[dict[str, Any]]) -> int:
    """openpyxl write_only: rows streamed to the file; lists one value per line in their cell."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("FAQ")
    ws.append(XLSX_COLUMNS)
    n = 0
    for row in it:
        ws.append(["\n".join(v) if isinstance(v, list) else v for v in (row[c] for c in XLSX_COLUMNS)])
        n += 1
    wb.save(path)
    return n


def sample_rows(n: int, questions: list[str], k: int, seed: int) -> list[dict[str, Any]]:
    """k random rows of the file (regenerated: the generator is deterministic)."""
    wanted = set(random.Random(seed).sample(range(n), min(k, n)))
    return [r for i, r in enumerate(rows(n, questions)) if i in wanted]


# ---------------------------------------------------------------- one run (child process)


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def rss_now_mb() -> float:
    """Resident now (ru_maxrss cannot show growth below the high-water of startup)."""
    with open("/proc/self/statm") as fh:
        return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk


async def job_counts(app: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.workers.models import Job

    async with app.state.sessionmaker() as s:
        got = await s.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
        return {f"{kind}:{status}": int(n) for kind, status, n in got.all()}


async def upload(client: Any, headers: dict[str, str], path: Path, fmt: str) -> tuple[int, float]:
    t = time.perf_counter()
    r = await client.post(
        "/api/v1/imports",
        params={"source": SOURCE, "file_name": path.name},
        content=file_chunks(path),
        headers={**headers, "Content-Type": CTYPES[fmt]},
    )
    seconds = time.perf_counter() - t
    if r.status_code != 202:
        raise SystemExit(f"upload refused: {r.status_code} {r.text[:500]}")
    return r.json()["id"], seconds


async def run_import_job(worker: Any, profile: str | None = None) -> float:
    """Claim and run the queued `imports.run` job, as the first step of `Worker.run_once`."""
    ids = await worker.claim()
    if len(ids) != 1:
        raise SystemExit(f"expected one import job to claim, got {ids}")
    t = time.perf_counter()
    if profile:
        from pyinstrument import Profiler

        with Profiler(async_mode="enabled", interval=0.002) as prof:
            outcome = await worker.run_job(ids[0])
        Path(profile).write_text(
            prof.output_html()
            if profile.endswith(".html")
            else prof.output_text(unicode=True, color=False, show_all=False),
            encoding="utf-8",
        )
    else:
        outcome = await worker.run_job(ids[0])
    if outcome != "done":
        raise SystemExit(f"the import job ended {outcome}")
    return time.perf_counter() - t


async def drain(worker: Any) -> int:
    total = 0
    while n := await worker.run_once():
        total += n
    return total


async def check_searchable(
    app: Any, client: Any, headers: dict[str, str], n: int, samples: list[dict[str, Any]]
) -> dict[str, Any]:
    from sqlalchemy import select

    from app.knowledge.models import Item

    indexed = await app.state.services["search"].document_count()
    jobs = await job_counts(app)
    not_done = {k: v for k, v in jobs.items() if k.startswith((INDEX_JOB, IMPORT_JOB)) and not k.endswith(":done")}
    if indexed != n or not_done:
        raise SystemExit(f"not everything is searchable: {indexed:,} of {n:,} documents; jobs {jobs}")
    async with app.state.sessionmaker() as s:
        ids = dict(
            (
                await s.execute(
                    select(Item.external_id, Item.id).where(
                        Item.source == SOURCE, Item.external_id.in_([r["external_id"] for r in samples])
                    )
                )
            ).all()
        )
    for row in samples:
        r = await client.get("/api/v1/search", params={"q": row["title"], "limit": 10}, headers=headers)
        r.raise_for_status()
        hits = [h["item_id"] for h in r.json()["items"]]
        if ids.get(row["external_id"]) not in hits:
            raise SystemExit(f"{row['external_id']} ({row['title']}) is not in the top 10 for its title: {hits}")
    return {"indexed": indexed, "searched": len(samples)}


async def import_state(client: Any, headers: dict[str, str], import_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/imports/{import_id}", headers=headers)
    r.raise_for_status()
    return r.json()


async def one_run(spec: dict[str, Any]) -> dict[str, Any]:
    from app.core.config import Settings
    from app.workers.worker import Worker

    path, fmt, n = Path(spec["path"]), spec["format"], spec["rows"]
    data_dir = Path(tempfile.mkdtemp(prefix="kb-bench-imports-", dir=spec.get("tmp")))
    out: dict[str, Any] = {
        "format": fmt,
        "rows": n,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "kind": spec["kind"],
    }
    try:
        settings = Settings(
            _env_file=None,
            env="dev",
            data_dir=data_dir,
            worker_embedded=False,
            job_backoff_seconds=0,
            worker_poll_seconds=0.05,
            jwt_secret=secrets.token_urlsafe(48),
            log_level="WARNING",
        )
        async with served(settings) as (app, client, headers):
            r = await client.post("/api/v1/taxonomies", json={"code": "kb", "name": "知识分类"}, headers=headers)
            r.raise_for_status()
            r = await client.post(
                "/api/v1/sync-sources",
                headers=headers,
                json={
                    "name": SOURCE,
                    "description": "CRM 知识库夜间同步 (bench)",
                    "publish_mode": "publish",
                    "create_categories": True,
                    "create_tags": True,
                    "item_type": "faq",
                },
            )
            r.raise_for_status()
            sm, services = app.state.sessionmaker, app.state.services
            worker = Worker(sm, settings, services=services)
            await drain(worker)  # whatever the setup queued (an empty reindex, the language)
            out["rss_setup_mb"] = rss_mb()
            if spec["kind"] == "memory":
                return await memory_run(client, headers, worker, path, fmt, n, out)
            if spec["kind"] == "overlap":
                return await overlap_run(app, client, headers, sm, settings, services, path, fmt, n, out, spec)

            t0 = time.perf_counter()
            import_id, out["upload_s"] = await upload(client, headers, path, fmt)
            out["rss_upload_mb"] = rss_mb()
            out["import_s"] = await run_import_job(worker, spec.get("profile"))
            out["rss_import_mb"], out["rss_now_import_mb"] = rss_mb(), rss_now_mb()
            out["import_batches"] = batch_summary(BATCH_TIMES)
            BATCH_TIMES.clear()
            job = await import_state(client, headers, import_id)
            if job["state"] != "done" or job["counts"]["created"] != n:
                raise SystemExit(
                    f"import {import_id}: {job['state']} {job['counts']} {job['error']} {job['errors'][:3]}"
                )
            jobs = await job_counts(app)
            out["index_jobs"] = jobs.get(f"{INDEX_JOB}:pending", 0)
            t = time.perf_counter()
            await drain(worker)
            out["index_s"] = time.perf_counter() - t
            out["check"] = await check_searchable(app, client, headers, n, spec["samples"])
            out["e2e_s"] = time.perf_counter() - t0
            out["rss_indexed_mb"] = rss_mb()
            out["tantivy_commits"] = services["search"].commits

            # the same file again: every row unchanged, nothing to index
            before = await job_counts(app)
            t = time.perf_counter()
            again_id, out["reupload_s"] = await upload(client, headers, path, fmt)
            out["reimport_s"] = await run_import_job(worker, spec.get("profile_reimport"))
            out["reimport_total_s"] = time.perf_counter() - t
            out["reimport_batches"] = batch_summary(BATCH_TIMES)
            job = await import_state(client, headers, again_id)
            after = await job_counts(app)
            out["reimport_counts"] = {k: v for k, v in job["counts"].items() if v}
            out["reimport_index_jobs"] = sum(
                after.get(f"{INDEX_JOB}:{st}", 0) - before.get(f"{INDEX_JOB}:{st}", 0)
                for st in ("pending", "running", "done", "failed")
            )
            if job["state"] != "done" or job["counts"]["unchanged"] != n:
                raise SystemExit(f"re-import {again_id}: {job['state']} {job['counts']}")
            out["rss_end_mb"] = rss_mb()
        for key in [k for k in out if k.endswith("_s")]:
            out[key] = round(out[key], 2)
        out["import_rows_per_s"] = round(n / out["import_s"])
        out["e2e_rows_per_s"] = round(n / out["e2e_s"])
        out["reimport_rows_per_s"] = round(n / out["reimport_s"])
        return out
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def memory_run(
    client: Any, headers: dict[str, str], worker: Any, path: Path, fmt: str, n: int, out: dict[str, Any]
) -> dict[str, Any]:
    """tracemalloc over the import job alone (no indexing: its index jobs stay queued)."""
    import tracemalloc

    import_id, _ = await upload(client, headers, path, fmt)
    out["rss_now_before_mb"] = rss_now_mb()
    tracemalloc.start()
    await run_import_job(worker)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    job = await import_state(client, headers, import_id)
    if job["state"] != "done" or job["counts"]["created"] != n:
        raise SystemExit(f"import {import_id}: {job['state']} {job['counts']}")
    out["tracemalloc_peak_mb"] = round(peak / 1e6, 1)
    out["rss_now_after_mb"] = rss_now_mb()
    out["rss_import_mb"] = rss_mb()
    return out


async def overlap_run(
    app: Any,
    client: Any,
    headers: dict[str, str],
    sm: Any,
    settings: Any,
    services: Any,
    path: Path,
    fmt: str,
    n: int,
    out: dict[str, Any],
    spec: dict[str, Any],
) -> dict[str, Any]:
    """Two `run_forever` loops: while one runs the import job, the other indexes its batches."""
    import logging

    from app.workers.worker import Worker

    failures: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            trace = getattr(record, "trace", "") or ""
            failures.append(f"{getattr(record, 'kind', '?')}: {trace.strip().splitlines()[-1][:300] if trace else ''}")

    logging.getLogger("app.worker").addHandler(Keep(logging.WARNING))
    stop = asyncio.Event()
    loops = [asyncio.create_task(Worker(sm, settings, services=services).run_forever(stop)) for _ in range(2)]
    try:
        t0 = time.perf_counter()
        import_id, out["upload_s"] = await upload(client, headers, path, fmt)
        while True:
            job = await import_state(client, headers, import_id)
            if job["state"] in ("done", "failed", "needs_confirmation"):
                break
            await asyncio.sleep(0.2)
        out["import_s"] = time.perf_counter() - t0 - out["upload_s"]  # within 0.2 s
        while True:
            jobs = await job_counts(app)
            if not any(k.startswith((INDEX_JOB, IMPORT_JOB)) and k.endswith((":pending", ":running")) for k in jobs):
                break
            await asyncio.sleep(0.1)
        out["e2e_s"] = time.perf_counter() - t0
    finally:
        stop.set()
        await asyncio.gather(*loops)
    from sqlalchemy import select

    from app.workers.models import Job

    async with sm() as s:  # a job that failed once and was retried (SQLite: the two loops' writes collide)
        out["retried"] = [
            f"{k} attempt {a}: {(e or '')[:160]}"
            for k, a, e in (
                await s.execute(select(Job.kind, Job.attempts, Job.last_error).where(Job.attempts > 1))
            ).all()
        ]
    out["failures_logged"] = failures
    out["check"] = await check_searchable(app, client, headers, n, spec["samples"])
    out["rss_indexed_mb"] = rss_mb()
    out["tantivy_commits"] = services["search"].commits
    for key in [k for k in out if k.endswith("_s")]:
        out[key] = round(out[key], 2)
    out["import_rows_per_s"] = round(n / out["import_s"])
    out["e2e_rows_per_s"] = round(n / out["e2e_s"])
    return out


BATCH_TIMES: list[float] = []


def time_batches() -> None:
    """Record how long each committed batch of an import takes (wrapping, not changing, the
    engine's `ImportRun._commit_batch`): a batch slower at the end of a file than at its start
    is work that grows with what the database already holds."""
    from app.imports.engine import ImportRun

    inner = ImportRun._commit_batch

    async def timed(self: Any, *a: Any, **kw: Any) -> None:
        t = time.perf_counter()
        await inner(self, *a, **kw)
        BATCH_TIMES.append(time.perf_counter() - t)

    ImportRun._commit_batch = timed  # type: ignore[method-assign]


def batch_summary(times: list[float]) -> dict[str, Any]:
    k = max(min(10, len(times) // 4), 1)
    return (
        {
            "batches": len(times),
            "first_ms": round(1000 * sum(times[:k]) / k),
            "last_ms": round(1000 * sum(times[-k:]) / k),
        }
        if times
        else {}
    )


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import logging

    logging.basicConfig(level=logging.WARNING)
    time_batches()
    return asyncio.run(one_run(spec))


def in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a fresh process: its own ru_maxrss, its own caches."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(child, spec).result()


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--formats", default="ndjson,xlsx", help="comma-separated: ndjson, xlsx")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with faq_dev's corpus.jsonl")
    parser.add_argument("--no-small", action="store_true", help="skip the --rows/10 runs (timed and memory)")
    parser.add_argument(
        "--kinds",
        default="timed,memory",
        help="runs per format and size: timed, memory (tracemalloc), overlap (--rows only)",
    )
    parser.add_argument("--profile", default=None, help="pyinstrument of the --rows import job (.html or .txt)")
    parser.add_argument("--profile-reimport", default=None, help="pyinstrument of the --rows re-import job")
    parser.add_argument("--tmp", default=None, help="folder for the files and data folders (default: system temp)")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if bad := [f for f in formats if f not in CTYPES]:
        raise SystemExit(f"unknown formats: {bad}")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if bad := [k for k in kinds if k not in ("timed", "memory", "overlap")]:
        raise SystemExit(f"unknown kinds: {bad}")
    wall = time.perf_counter()
    questions = load_questions(args.data.resolve())
    sizes = ([max(args.rows // 10, 1)] if not args.no_small else []) + [args.rows]
    work = Path(tempfile.mkdtemp(prefix="kb-bench-imports-files-", dir=args.tmp))
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        files: dict[tuple[str, int], Path] = {}
        for size in sizes:
            for fmt in formats:
                t = time.perf_counter()
                p = work / f"faq-{size}.{fmt}"
                (write_ndjson if fmt == "ndjson" else write_xlsx)(p, rows(size, questions))
                files[fmt, size] = p
                print(
                    f"wrote {p.name}: {size:,} rows, {p.stat().st_size / 1e6:.1f} MB in "
                    f"{time.perf_counter() - t:.1f} s",
                    flush=True,
                )
        for fmt in formats:
            for size in sizes:
                samples = sample_rows(size, questions, SEARCH_CHECKS, seed=size)
                base = {"path": str(files[fmt, size]), "format": fmt, "rows": size, "samples": samples, "tmp": args.tmp}
                for kind in [k for k in kinds if k != "overlap" or size == args.rows]:
                    spec = {**base, "kind": kind}
                    if kind == "timed" and size == args.rows:
                        spec["profile"], spec["profile_reimport"] = args.profile, args.profile_reimport
                    print(f"{fmt} {size:,} rows: {kind} run ...", flush=True)
                    res = in_child(spec)
                    res.pop("check", None)
                    print(f"  {json.dumps(res, ensure_ascii=False)}", flush=True)
                    results.append(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def cell(r: dict[str, Any], key: str, width: int) -> str:
        v = r.get(key, "-")
        return f"{v:>{width},}" if isinstance(v, int) else f"{v:>{width}}"

    print(
        f"\n{'format':<7} {'rows':>8} {'run':>8} {'MB':>6} {'upload s':>9} {'import r/s':>11} {'e2e r/s':>9} "
        f"{'reimport r/s':>13} {'re idx jobs':>12} {'RSS imp MB':>11} {'RSS end MB':>11} {'tracemalloc MB':>15}"
    )
    for r in results:
        print(
            f"{r['format']:<7} {r['rows']:>8,} {r['kind']:>8} {r['file_mb']:>6} {cell(r, 'upload_s', 9)} "
            f"{cell(r, 'import_rows_per_s', 11)} {cell(r, 'e2e_rows_per_s', 9)} {cell(r, 'reimport_rows_per_s', 13)} "
            f"{cell(r, 'reimport_index_jobs', 12)} {cell(r, 'rss_import_mb', 11)} {cell(r, 'rss_end_mb', 11)} "
            f"{cell(r, 'tracemalloc_peak_mb', 15)}"
        )
    print(
        "import r/s: the imports.run job alone (in a memory run: slowed by tracemalloc); e2e: upload start to "
        "every row searchable; RSS: ru_maxrss high-water of the run's own process"
    )
    load_after = os.getloadavg()
    summary = {
        "rows": args.rows,
        "formats": formats,
        "cpus": os.cpu_count(),
        "load_avg_before": round(load_before[0], 2),
        "load_avg_after": round(load_after[0], 2),
        "runs": results,
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; wall {summary['wall_s']} s")
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
