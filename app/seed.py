"""The small realistic demo that `make run` seeds (idempotent)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import hash_secret
from app.identity.models import Department, User
from app.identity.service import ensure_admin, ensure_default_roles
from app.knowledge.demo import seed_knowledge_demo
from app.search.models import SynonymGroup
from app.search.schemas import SynonymIn

DEMO_PASSWORD = "Demo@2026kb"
DEMO_USERS = [
    ("admin", "系统管理员", "admin", None),
    ("zhang.wei", "张伟（坐席）", "agent", "一线坐席组"),
    ("li.na", "李娜（知识编辑）", "author", "知识运营组"),
    ("wang.fang", "王芳（审核员）", "reviewer", "知识运营组"),
    ("chen.jie", "陈杰（发布员）", "publisher", "知识运营组"),
]


async def _department(session: AsyncSession, name: str, parent: Department | None) -> Department:
    dept = await session.scalar(select(Department).where(Department.name == name))
    if dept is None:
        dept = Department(name=name, parent_id=parent.id if parent else None, path="/")
        session.add(dept)
        await session.flush()
        dept.path = f"{parent.path if parent else '/'}{dept.id}/"
    return dept


DEMO_WORDS = ["5G畅享套餐", "光猫", "携号转网", "宽带报修", "网上国网"]
DEMO_SYNONYMS = [
    ["上不了网", "无法上网", "断网", "连不上网"],
    ["宽带", "宽频", "寬頻"],
    ["挂失", "丢卡", "卡丢了"],
    ["电费", "电价", "电钱"],
]


async def _seed_language(session: AsyncSession) -> list[str]:
    from app.identity.service import principal_for_user
    from app.search import service as search

    admin = await session.scalar(select(User).where(User.username == "admin"))
    assert admin is not None
    actor = principal_for_user(admin)
    added = await search.add_words(session, actor, DEMO_WORDS)
    have = {tuple(g) for g in (await session.scalars(select(SynonymGroup.terms))).all()}
    for terms in DEMO_SYNONYMS:
        if tuple(terms) not in have:
            await search.create_synonyms(session, actor, SynonymIn(terms=terms))
    return [f"Search dictionary: {len(added)} words added; synonym groups: {len(DEMO_SYNONYMS)}"]


async def seed_demo(session: AsyncSession) -> list[str]:
    await ensure_admin(session, "admin", DEMO_PASSWORD)
    roles = await ensure_default_roles(session)
    center = await _department(session, "客户服务中心", None)
    depts = {
        "一线坐席组": await _department(session, "一线坐席组", center),
        "知识运营组": await _department(session, "知识运营组", center),
    }
    for username, display, role, dept in DEMO_USERS[1:]:
        if await session.scalar(select(User).where(User.username == username)) is None:
            session.add(
                User(
                    username=username,
                    display_name=display,
                    password_hash=hash_secret(DEMO_PASSWORD),
                    roles=[roles[role]],
                    department_id=depts[dept].id if dept else None,
                )
            )
    await session.commit()
    content = await seed_knowledge_demo(session)
    content += await _seed_language(session)
    lines = ["Demo users (password for all: " + DEMO_PASSWORD + "):"]
    lines += [f"  {u:<10} {role:<10} {d}" for u, d, role, _ in DEMO_USERS]
    return [*lines, *content]
