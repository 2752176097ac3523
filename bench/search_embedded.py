"""Speed of the embedded (Tantivy) search backend on synthetic call-center items.

    .venv/bin/python bench/search_embedded.py --items 20000

Generates items from templates (telecom, banking, utilities: title, 2-5 similar questions,
a ~600-character body, channel answers, attachment text on some), indexes them through
`EmbeddedBackend.upsert` in batches (the worker's path), then measures in-process latency
of `search` and `suggest` through the async API (both run on the calling event loop). Every figure is
given as wall time and as process CPU time: on a shared machine the first includes waiting
for a core. The last line of output is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from app.search.backends.embedded import EmbeddedBackend
from app.search.documents import (
    AttachmentText,
    LanguageResources,
    SearchDocument,
    SearchFilters,
    SearchQuery,
)

DOMAINS: dict[str, dict[str, list[str]]] = {
    "telecom": {
        "products": [
            "宽带",
            "光猫",
            "5G畅享套餐",
            "流量包",
            "携号转网",
            "固话",
            "国际漫游",
            "副卡",
            "宽带提速",
            "IPTV",
            "iPhone 15",
            "WiFi路由器",
            "话费",
            "积分兑换",
            "家庭融合套餐",
        ],
        "problems": [
            "无法上网",
            "网速慢",
            "办理",
            "取消",
            "资费",
            "故障报修",
            "信号差",
            "欠费停机",
            "开通",
            "变更",
            "升级",
            "账单查询",
            "密码重置",
            "退订",
            "安装",
        ],
    },
    "banking": {
        "products": [
            "信用卡",
            "借记卡",
            "网上银行",
            "手机银行",
            "分期付款",
            "房贷",
            "转账汇款",
            "理财产品",
            "外汇",
            "U盾",
            "账户冻结",
            "积分",
            "年费",
            "额度",
            "ETC",
        ],
        "problems": [
            "挂失",
            "激活",
            "提额",
            "还款",
            "逾期",
            "注销",
            "申请",
            "限额",
            "手续费",
            "利率",
            "密码锁定",
            "账单分期",
            "解冻",
            "开户",
            "异常交易",
        ],
    },
    "utilities": {
        "products": [
            "电费",
            "水费",
            "燃气费",
            "95598",
            "智能电表",
            "停电",
            "阶梯电价",
            "过户",
            "预付费电表",
            "燃气表",
            "水表",
            "发票",
            "自动扣款",
            "电动汽车充电桩",
            "光伏并网",
        ],
        "problems": [
            "缴纳",
            "查询",
            "报修",
            "异常",
            "申请",
            "退费",
            "变更",
            "催缴",
            "计量错误",
            "安装",
            "预约",
            "投诉",
            "补缴",
            "停用",
            "迁移",
        ],
    },
}
TITLE_FORMS = [
    "{p}{q}怎么办",
    "如何{q}{p}",
    "{p}{q}的流程",
    "{p}{q}需要什么材料",
    "关于{p}{q}的说明",
    "{p}{q}常见问题",
    "{p}为什么{q}",
]
QUESTION_FORMS = [
    "我的{p}{q}了怎么处理",
    "{p}怎么{q}",
    "请问{p}{q}要多久",
    "{p}{q}收费吗",
    "想{q}{p}找谁",
    "{p}一直{q}",
    "{p}{q}在哪里办",
    "手机上能{q}{p}吗",
]
SENTENCES = [
    "客户来电咨询{p}{q}时，坐席应先核实客户身份，确认机主姓名和身份证号码后四位。",
    "如客户反映{p}{q}，请指导客户通过手机营业厅或拨打客服热线进行自助处理。",
    "{p}{q}一般在1至3个工作日内完成，特殊情况以系统通知为准。",
    "办理{p}{q}需携带本人有效身份证件原件，代办需提供委托书及代办人证件。",
    "若系统提示{q}失败，请记录错误代码并转交二线支撑组处理，工单类型选择{p}类。",
    "根据最新资费政策，{p}相关业务自本月起按新标准执行，老用户可保留原有{p}方案。",
    "请勿向客户承诺具体处理时限，可告知预计时间并提醒客户留意短信通知。",
    "对于投诉升级的{p}问题，需在工单中注明客户诉求和已采取的安抚措施。",
    "如遇系统故障导致无法{q}，请安抚客户情绪并登记回访电话，故障恢复后主动回电。",
    "客户询问{p}是否收费时，请以营业厅公示的收费标准为准，不得随意减免。",
    "夜间及节假日期间，{p}{q}业务可通过线上渠道受理，线下网点按营业时间办理。",
    "如果客户使用iPhone或安卓手机，可在APP首页搜索{p}进入办理页面。",
]
ATTACHMENT_LINES = [
    "附件：{p}{q}操作手册（第{n}版）。第一章 业务概述。第二章 受理流程。第三章 常见问题及解答。",
    "表{n}：{p}{q}收费标准一览，单位为元，含税价格，执行日期见正文。",
    "注意事项：{p}{q}过程中如遇异常，请截图保存并上报，编号规则为KB-{n}。",
]
T = TypeVar("T")

PRINCIPALS = ["public", "role:agent", "role:supervisor", "dept:12", "dept:15", "client:7"]
CHANNEL_SETS = [["agent"], ["agent", "web", "wechat", "app"], ["web", "app"], ["agent", "web"]]
TYPES = ["faq", "faq", "faq", "article", "policy", "announcement"]
SYNONYMS = [
    ["上不了网", "无法上网", "断网", "网络中断"],
    ["宽带", "寬頻", "宽频"],
    ["挂失", "冻结卡片"],
    ["电费", "电费账单"],
    ["携号转网", "转网"],
]


def _words() -> list[str]:
    words = [w for d in DOMAINS.values() for w in d["products"]]
    return [w for w in words if not w.isascii()] + ["光猫", "携号转网", "5G畅享套餐", "智能电表", "阶梯电价"]


def make_item(item_id: int, rng: random.Random, now: datetime) -> SearchDocument:
    domain_no = rng.randrange(len(DOMAINS))
    domain = list(DOMAINS.values())[domain_no]
    product = rng.choice(domain["products"])
    problem = rng.choice(domain["problems"])

    def fill(form: str) -> str:
        return form.format(p=product, q=problem, n=rng.randint(1, 99))

    title = fill(rng.choice(TITLE_FORMS))
    questions = [fill(f) for f in rng.sample(QUESTION_FORMS, rng.randint(3, 6))]
    body_parts: list[str] = []
    while sum(map(len, body_parts)) < 600:
        body_parts.append(fill(rng.choice(SENTENCES)))
    attachments = []
    if rng.random() < 0.3:
        text = "".join(fill(rng.choice(ATTACHMENT_LINES)) for _ in range(rng.randint(5, 30)))
        attachments.append(AttachmentText(item_id * 10, f"{product}手册.pdf", text))
    top = 1 + domain_no
    sub = 10 + domain_no * 10 + rng.randrange(10)
    leaf = 100 + sub * 10 + rng.randrange(10)
    updated = now - timedelta(minutes=rng.randrange(60 * 24 * 720))
    valid_to = updated + timedelta(days=rng.randrange(30, 900)) if rng.random() < 0.3 else None
    return SearchDocument(
        item_id=item_id,
        version_id=item_id * 3,
        version_no=rng.randint(1, 5),
        item_type=rng.choice(TYPES),
        status="published",
        title=title,
        question=questions[0],
        similar_questions=questions[1:],
        body_text="".join(body_parts),
        channel_answers={"wechat": fill(rng.choice(SENTENCES)), "agent": fill(rng.choice(SENTENCES))},
        attachments=attachments,
        category_ids=[top, sub, leaf],
        category_paths=[f"{top}/{sub}/{leaf}"],
        tags=rng.sample(["热点", "新政", "资费", "故障", "办理", "投诉", "VIP", "夜间"], rng.randint(0, 3)),
        attributes={"region": [rng.choice(["北京", "上海", "广东", "四川"])], "level": [rng.randint(1, 3)]},
        acl_principals=rng.sample(PRINCIPALS, rng.randint(1, 2)),
        channels=rng.choice(CHANNEL_SETS),
        valid_from=updated - timedelta(days=1),
        valid_to=valid_to,
        updated_at=updated,
    )


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2), "max": round(ordered[-1], 2)}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Timings:
    """Wall-clock and process-CPU milliseconds per call.

    CPU time is reported beside wall time because this bench often shares a small machine
    with other work: wall time then measures the queue for a core, CPU time the work.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    async def time(self, call: Awaitable[T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = await call
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        return {"wall": percentiles(self.wall), "cpu": percentiles(self.cpu)}


async def run(items: int, queries: int, batch: int, keep: Path | None) -> dict[str, object]:
    rng = random.Random(20251124)
    now = datetime.now(UTC)
    workdir = keep or Path(tempfile.mkdtemp(prefix="kb-bench-"))
    resources = LanguageResources(words=_words(), synonym_groups=SYNONYMS)
    backend = EmbeddedBackend(workdir, resources)
    await backend.open()
    load_before = os.getloadavg()[0]
    try:
        index_seconds = index_cpu = 0.0
        for first in range(1, items + 1, batch):
            docs = [make_item(i, rng, now) for i in range(first, min(first + batch, items + 1))]
            wall, cpu = time.perf_counter(), time.process_time()
            failed = {k: v for k, v in (await backend.upsert(docs)).items() if v}
            index_seconds += time.perf_counter() - wall
            index_cpu += time.process_time() - cpu
            if failed:
                raise SystemExit(f"indexing failed: {list(failed.items())[:3]}")
        rate = items / index_seconds
        size = dir_size(workdir)
        print(
            f"indexed {items} items in {index_seconds:.1f} s: {rate:,.0f} items/s "
            f"({items / index_cpu:,.0f} items per CPU-second, all threads), index {size / 1e6:.1f} MB"
        )

        vocabulary = _words() + [q for d in DOMAINS.values() for q in d["problems"]] + ["上不了网", "寬頻"]
        principals = ["public", "role:agent", "dept:12"]
        figures: dict[str, object] = {}
        for words in (1, 2, 4):
            for filtered in (False, True):
                timings = Timings()
                for _ in range(queries):
                    text = " ".join(rng.sample(vocabulary, words))
                    filters = SearchFilters()
                    if filtered:
                        filters = SearchFilters(
                            item_types=["faq", "article"],
                            category_ids=[rng.randint(1, 3)],
                            valid_at=now,
                            tags=[] if rng.random() < 0.5 else ["资费"],
                        )
                    query = SearchQuery(text=text, principals=principals, channel="agent", filters=filters)
                    await timings.time(backend.search(query))
                name = f"search_{words}w_{'filtered' if filtered else 'plain'}_ms"
                figures[name] = timings.summary()
                print(f"{name}: {figures[name]}")
        timings = Timings()
        for _ in range(queries):
            query = SearchQuery(text="", principals=principals, filters=SearchFilters(category_ids=[2]))
            await timings.time(backend.search(query))
        figures["browse_ms"] = timings.summary()
        print(f"browse_ms: {figures['browse_ms']}")
        prefixes = ["宽", "宽带", "信用卡挂", "kuandai", "kd", "xyk", "dianfei", "95598", "携号", "zhinengdianbiao"]
        timings = Timings()
        for _ in range(queries):
            await timings.time(backend.suggest(rng.choice(prefixes), principals, "agent"))
        figures["suggest_ms"] = timings.summary()
        print(f"suggest_ms: {figures['suggest_ms']}")
        t = time.perf_counter()
        doc = dataclasses.replace(make_item(1, rng, now), version_no=1_000, title="光猫更换后无法上网")
        await backend.upsert([doc])
        assert (await backend.search(SearchQuery(text="光猫更换", principals=doc.acl_principals))).total
        figures["single_upsert_visible_ms"] = round((time.perf_counter() - t) * 1000, 1)
        print(f"single upsert until searchable: {figures['single_upsert_visible_ms']} ms")
        t = time.perf_counter()
        assert len(await backend.indexed_versions()) == items
        figures["indexed_versions_ms"] = round((time.perf_counter() - t) * 1000, 1)
        return {
            "items": items,
            "index_items_per_s": round(rate, 1),
            "index_items_per_cpu_s": round(items / index_cpu, 1),
            "index_seconds": round(index_seconds, 1),
            "index_bytes": size,
            "queries_per_case": queries,
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count(),
            **figures,
        }
    finally:
        await backend.close()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500, help="queries per case")
    parser.add_argument("--batch", type=int, default=500, help="documents per upsert call")
    parser.add_argument("--keep", type=Path, default=None, help="index directory to keep (default: temporary)")
    args = parser.parse_args()
    figures = asyncio.run(run(args.items, args.queries, args.batch, args.keep))
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
