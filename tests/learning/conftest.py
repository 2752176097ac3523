"""Training and exams: the knowledge fixtures (a 知识分类 tree with 宽带业务), broadband FAQs, staff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.identity.models import Department
from app.workers.outbox import enqueue
from app.workers.worker import Worker
from tests.conftest import Actor, People
from tests.knowledge.conftest import Kb, kb

__all__ = ["BROADBAND", "Kb", "drain", "faq", "iso", "kb", "sweep"]

# Broadband FAQs a new agent must know: similar questions, different answers.
BROADBAND: list[tuple[str, str, str, str]] = [
    (
        "宽带故障",
        "宽带无法上网怎么办",
        "宽带连不上网怎么处理",
        "请先重启光猫和路由器，等待 3 分钟后重试；仍不能上网请报修 10000。",
    ),
    (
        "宽带故障",
        "宽带网速慢怎么办",
        "宽带网速很慢怎么处理",
        "请用有线连接测速，关闭占用带宽的下载；低于签约速率 80% 可申请上门检测。",
    ),
    (
        "宽带故障",
        "光猫 LOS 灯红色闪烁怎么办",
        "光猫红灯闪烁宽带不能用怎么处理",
        "LOS 红灯闪烁表示光纤信号中断，请勿插拔光纤，直接报修，维修人员 24 小时内上门。",
    ),
    (
        "宽带故障",
        "宽带拨号错误 691 怎么办",
        "宽带拨号提示错误691怎么处理",
        "691 表示账号或密码错误或宽带欠费，请核对密码并查询是否欠费停机。",
    ),
    (
        "宽带办理",
        "宽带如何办理移机",
        "宽带搬家移机怎么处理",
        "携带身份证到营业厅或在 APP 申请移机，新地址需有光纤覆盖，移机费 100 元。",
    ),
    (
        "宽带办理",
        "宽带怎么办理提速",
        "宽带升级提速怎么处理",
        "在 APP 选择更高速率套餐即可提速，次月生效，光猫不支持千兆时免费更换。",
    ),
]


def iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def drain(app: Any) -> int:
    return await Worker(app.state.sessionmaker, app.state.settings, services=app.state.services).drain()


async def sweep(app: Any) -> int:
    """Run the learning sweep now (as the recurring job would)."""
    async with app.state.sessionmaker() as s:
        enqueue(s, "learning.sweep", {})
        await s.commit()
    return await drain(app)


async def faq(
    kb: Kb,
    actor: Actor,
    category: str,
    title: str,
    question: str,
    answer: str,
    *,
    agent_answer: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A published FAQ in `category`; the answer is the agent channel's own answer, or the body."""
    fields: dict[str, Any] = {
        "title": title,
        "question": question,
        "similar_questions": [],
        "category_ids": [kb.nodes[category]],
        "body": f"<p>{answer}</p>",
        **extra,
    }
    if agent_answer:
        fields["channel_answers"] = {"agent": answer}
        fields["body"] = f"<p>{answer}</p><p>详细说明见业务规范。</p>"
    return await kb.publish(actor, **fields)


@pytest.fixture
async def supervisor(people: People) -> Actor:
    return await people.make("zhou.banzhang", role="supervisor")


@pytest.fixture
async def publisher(people: People) -> Actor:
    return await people.make("chen.jie", role="publisher")


@pytest.fixture
async def newcomers(app: Any, people: People) -> tuple[int, list[Actor]]:
    """新人培训班 (a sub-department of 客服部) and its two new agents."""
    async with app.state.sessionmaker() as s:
        parent = Department(name="客服部", path="/")
        s.add(parent)
        await s.flush()
        parent.path = f"/{parent.id}/"
        dept = Department(name="新人培训班", parent_id=parent.id, path="/")
        s.add(dept)
        await s.flush()
        dept.path = f"{parent.path}{dept.id}/"
        await s.commit()
        parent_id, dept_id = parent.id, dept.id
    agents = [await people.make(n, role="agent", department_id=dept_id) for n in ("liu.xin", "huang.mei")]
    return parent_id, agents


@pytest.fixture
async def broadband(kb: Kb, publisher: Actor, app: Any) -> list[dict[str, Any]]:
    items = [await faq(kb, publisher, *row) for row in BROADBAND]
    await drain(app)  # the search index
    return items


async def call(
    client: httpx.AsyncClient, method: str, url: str, who: Actor, *, etag: str | None = None, **kw: Any
) -> httpx.Response:
    headers = dict(who.headers)
    if etag:
        headers["If-Match"] = etag
    return await client.request(method, url, headers=headers, **kw)
