"""Export: the import's columns, so that export -> import into an empty instance gives the same
content (proved field by field, and byte for byte for NDJSON); who may export; the job path."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from app.core.config import Settings
from app.identity.models import User
from app.knowledge.models import Item, ItemVersion
from app.main import ensure_defaults
from app.taxonomy.models import Taxonomy, TaxonomyNode
from app.taxonomy.service import forget_node_names
from tests.conftest import Database, People, assert_problem
from tests.imports.conftest import ROWS, Importer, ndjson
from tests.knowledge.conftest import Kb, add_faq_template

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CTYPES = {"ndjson": "application/x-ndjson", "csv": CSV, "xlsx": XLSX}
OWNER = "zhao.lei"
ATTRS = ["attr.region", "attr.since_version", "attr.speed"]


async def export(importer: Importer, fmt: str = "ndjson", actor: Any = None, **params: Any) -> bytes:
    r = await importer.client.get(
        "/api/v1/exports",
        params={"source": "crm", "format": fmt, **params},
        headers=(actor or importer.manager).headers,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(CTYPES[fmt])
    assert r.headers["content-disposition"].startswith('attachment; filename="crm-')
    assert r.headers["content-disposition"].endswith(f'.{fmt}"')
    return r.content


def parse_ndjson(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["external_id"]: r for r in rows}


async def build_content(importer: Importer, kb: Kb, people: People) -> None:
    """Items of the source `crm` made through the editors' API and through an import."""
    owner = await people.make(OWNER, role="author")
    await importer.source(create_categories=True, create_tags=True)
    editor = importer.manager
    # Markdown, published, then a new version waiting in review: the published one is exported.
    first = await kb.publish(
        editor,
        source="crm",
        external_id="KB-0001",
        title="5G套餐如何变更",
        question="5G套餐怎么改",
        # A value holding "|" survives CSV and XLSX too (written as a JSON array in the cell).
        similar_questions=["换5G套餐", "套餐降档怎么办", "换5G套餐", "5G|4G 套餐怎么选"],
        body="## 变更步骤\n\n1. 登录中国移动 APP\n2. 选择 **套餐变更**，次月生效\n",
        body_format="markdown",
        channel_answers={"agent": "您好，套餐变更次月1日生效，我这边帮您登记。", "wechat": "回复【套餐】办理变更"},
        channels=["agent", "wechat", "app"],
        category_ids=[kb.nodes["套餐资费"]],
        tags=["5G", "套餐"],
        attributes={"region": "北京", "since_version": "v2.3", "speed": 500},
        visibility="public",
        valid_from="2026-01-01T00:00:00+08:00",
        valid_to="2027-06-30T23:59:59+08:00",
        review_due="2027-03-31",
        owner_id=owner.user.id,
    )
    r = await kb.edit(editor, first["id"], {"title": "5G套餐变更（草稿）"})
    assert r.status_code == 200, r.text
    assert (await kb.act(editor, first["id"], 2, "submit")).status_code == 200
    # HTML (a script stripped on the way in), traditional characters, two categories, never published.
    await kb.create(
        editor,
        source="crm",
        external_id="KB-0002",
        title="信用卡境外盜刷如何處理",
        question="卡被盜刷了怎麼辦",
        similar_questions=["境外盜刷", "信用卡被盗刷"],
        body='<p>請立即致電 <a href="tel:95588">95588</a> 凍結卡片，並保留交易憑證。</p><script>alert(1)</script>',
        category_ids=[kb.nodes["挂失"], kb.nodes["信用卡"]],
        tags=["盜刷", "信用卡"],
        attributes={"region": "广东"},
        owner_id=owner.user.id,
        review_due="2027-01-15",
    )
    # Another item type, without a template: its attr.* cells are empty.
    await kb.publish(
        editor,
        item_type="notice",
        source="crm",
        external_id="KB-0003",
        title="12月8日凌晨系统升级通知",
        body="<p>12月8日 00:00-04:00 营业厅系统升级，暂停办理携号转网。</p>",
        owner_id=owner.user.id,
    )
    rows = [
        {
            **ROWS[0],
            "owner": OWNER,
            "answer.web": "请在网页端提交报修单，工程师 24 小时内上门。",
            "channels": ["agent", "web"],
            "review_due": "2027-02-01",
            "attr.speed": "1000",
        },
        ROWS[1],
        {
            **ROWS[2],
            "valid_from": "2026-12-01 09:00",
            "valid_to": "2026-12-31T18:00:00+08:00",
            "attr.since_version": "2026版",
        },
        ROWS[3],
        {
            "external_id": "UT-2001",
            "title": "电费如何线上缴纳",
            "question": "電費怎麼線上繳",
            "body": "<p>支付宝搜索“生活缴费”，选择国网电力，输入户号即可。</p>",
            "categories": ["电费缴纳/线上缴费"],
            "tags": ["缴费", "Alipay"],
            "attr.region": "上海",
            "visibility": "public",
        },
        {"external_id": "CRM-1999", "title": "旧版话费查询", "attr.region": "全国"},
    ]
    job = await importer.run(ndjson(rows))
    assert job["counts"]["created"] == 6 and job["counts"]["failed"] == 0, job["errors"]
    job = await importer.run(ndjson([{"external_id": "CRM-1999", "action": "delete"}]))
    assert job["counts"]["deleted"] == 1


async def stored(importer: Importer) -> dict[str, dict[str, Any]]:
    """What the database holds for each exported item, read without the exporter: the published
    version, else the latest."""
    async with importer.app.state.sessionmaker() as s:
        names = {n.id: n.name for n in (await s.scalars(select(TaxonomyNode))).all()}
        users = {u.id: u.username for u in (await s.scalars(select(User))).all()}
        out = {}
        for i in (
            await s.scalars(select(Item).where(Item.source == "crm", Item.status != "archived").order_by(Item.id))
        ).all():
            v = (
                await s.scalar(select(ItemVersion).where(ItemVersion.id == i.published_version_id))
                if i.published_version_id
                else await s.scalar(
                    select(ItemVersion).where(ItemVersion.item_id == i.id, ItemVersion.number == i.latest_version_no)
                )
            )
            assert v is not None
            out[i.external_id] = {
                "title": v.title,
                "question": v.question,
                "similar_questions": v.similar_questions,
                "body": v.body,
                "body_format": v.body_format,
                "channel_answers": v.channel_answers,
                "channels": v.channels,
                "categories": sorted(
                    "/".join(names[int(p)] for p in n.path.strip("/").split("/")) for n in v.categories
                ),
                "tags": sorted(t.name for t in v.tags),
                "attributes": v.attributes,
                "visibility": i.visibility,
                "valid_from": i.valid_from,
                "valid_to": i.valid_to,
                "review_due": i.review_due,
                "owner": users.get(i.owner_id) if i.owner_id else None,
                "item_type": i.item_type,
            }
        return out


async def empty_instance(importer: Importer, db: Database, people: People) -> None:
    """What an empty instance has: default roles and item types, the FAQ template's attributes and
    the notice type, an (empty) category tree, the owner and a knowledge manager. No categories,
    no tags: the source's policy creates them."""
    await db.truncate()
    forget_node_names()
    async with importer.app.state.sessionmaker() as s:
        await ensure_defaults(s)
        s.add(Taxonomy(code="kb_category", name="知识分类"))
        await add_faq_template(s)
        await s.commit()
    await people.make(OWNER, role="author")
    importer.manager = await people.make("kbadmin", role="kb_manager")
    await importer.source(create_categories=True, create_tags=True)
    assert await stored(importer) == {}


async def test_the_export_writes_the_import_columns_with_the_published_or_latest_version(
    importer: Importer, kb: Kb, people: People
) -> None:
    await build_content(importer, kb, people)
    rows = parse_ndjson(await export(importer))
    assert list(rows[0]) == [
        "external_id",
        "title",
        "question",
        "body",
        "body_format",
        "similar_questions",
        "channels",
        "categories",
        "tags",
        "item_type",
        "visibility",
        "valid_from",
        "valid_to",
        "review_due",
        "owner",
        "answer.agent",
        "answer.web",
        "answer.wechat",
        "answer.app",
        *ATTRS,
    ]
    got = by_id(rows)
    assert list(got) == [
        "KB-0001",
        "KB-0002",
        "KB-0003",
        "CRM-1001",
        "CRM-1002",
        "CRM-1003",
        "CRM-1004",
        "UT-2001",
    ]  # by id; the archived CRM-1999 only with include_archived
    first = got["KB-0001"]
    assert first["title"] == "5G套餐如何变更"  # the published version, not the one in review
    assert first["similar_questions"] == ["换5G套餐", "套餐降档怎么办", "5G|4G 套餐怎么选"]
    assert first["body_format"] == "markdown"
    assert first["categories"] == ["手机业务/套餐资费"] and first["tags"] == ["5G", "套餐"]
    assert first["channels"] == ["agent", "wechat", "app"] and first["answer.web"] is None
    assert first["answer.wechat"] == "回复【套餐】办理变更"
    assert (first["valid_from"], first["valid_to"], first["review_due"]) == (
        "2026-01-01T00:00:00+08:00",
        "2027-06-30T23:59:59+08:00",
        "2027-03-31",
    )
    assert first["owner"] == OWNER and first["visibility"] == "public"
    assert [first[a] for a in ATTRS] == ["北京", "v2.3", 500]
    second = got["KB-0002"]  # never published: the latest
    assert second["categories"] == ["信用卡", "信用卡/挂失"] and "<script>" not in second["body"]
    assert second["tags"] == ["信用卡", "盜刷"] and second["review_due"] == "2027-01-15"
    assert got["KB-0003"]["item_type"] == "notice" and [got["KB-0003"][a] for a in ATTRS] == [None] * 3
    assert got["CRM-1003"]["valid_from"] == "2026-12-01T09:00:00+08:00"  # local time, with its offset
    assert got["CRM-1001"]["attr.speed"] == 1000 and got["CRM-1001"]["channels"] == ["agent", "web"]
    assert got["UT-2001"]["categories"] == ["电费缴纳/线上缴费"] and got["UT-2001"]["owner"] is None
    archived = by_id(parse_ndjson(await export(importer, include_archived="true")))
    assert "CRM-1999" in archived and len(archived) == 9

    text = (await export(importer, "csv")).decode("utf-8")
    assert text.startswith("\ufeffexternal_id,title,")
    table = {r["external_id"]: r for r in csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))}
    assert table["KB-0002"]["categories"] == "信用卡\n信用卡/挂失"  # one value per line
    assert table["KB-0001"]["attr.speed"] == "500" and table["KB-0003"]["attr.region"] == ""
    book = load_workbook(io.BytesIO(await export(importer, "xlsx")), read_only=True)
    sheet = [[*r, *[None] * (len(rows[0]) - len(r))] for r in book.active.iter_rows(values_only=True)]
    assert sheet[0] == list(rows[0]) and len(sheet) == 9
    cells = {r[0]: dict(zip(sheet[0], r, strict=True)) for r in sheet[1:]}
    # a value holding "|": the cell is a JSON array (one value per line elsewhere)
    assert cells["KB-0001"]["similar_questions"] == '["换5G套餐", "套餐降档怎么办", "5G|4G 套餐怎么选"]'
    assert cells["KB-0001"]["attr.speed"] == 500
    assert cells["CRM-1004"]["title"] == "帳戶凍結怎麼辦"


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "xlsx"])
async def test_export_then_import_into_an_empty_instance_gives_equal_content(
    importer: Importer, kb: Kb, people: People, db: Database, fmt: str
) -> None:
    await build_content(importer, kb, people)
    before_ndjson = await export(importer)
    before_file = before_ndjson if fmt == "ndjson" else await export(importer, fmt)
    before = await stored(importer)
    assert len(before) == 8

    await empty_instance(importer, db, people)
    job = await importer.run(before_file, ctype=CTYPES[fmt], format=fmt)
    assert job["state"] == "done", (job["error"], job["warnings"])
    assert job["counts"]["created"] == 8 and job["counts"]["failed"] == 0, job["errors"]
    assert job["warnings"] == []  # every column known

    after = await stored(importer)
    assert list(after) == list(before)
    for ext, fields in before.items():
        for name, value in fields.items():
            assert after[ext][name] == value, f"{ext} {name}: {after[ext][name]!r} != {value!r}"
    before_rows, after_ndjson = parse_ndjson(before_ndjson), await export(importer)
    for old, new in zip(before_rows, parse_ndjson(after_ndjson), strict=True):
        for column in old:
            assert new[column] == old[column], f"{old['external_id']} {column}"
    assert after_ndjson == before_ndjson
    if fmt == "csv":
        assert await export(importer, "csv") == before_file
    # Imported again, the same file changes nothing.
    again = await importer.run(before_file, ctype=CTYPES[fmt], format=fmt)
    assert again["counts"]["unchanged"] == 8, again


async def test_who_may_export_a_source(importer: Importer, kb: Kb, people: People) -> None:
    await importer.source("crm")
    await importer.source("tariffs")
    await importer.run(ndjson(ROWS))
    bot = await kb.channel_client(None, scopes=["import:crm"])
    rows = parse_ndjson(await export(importer, actor=bot))
    assert [r["external_id"] for r in rows] == [r["external_id"] for r in ROWS]
    forbidden = await importer.client.get("/api/v1/exports", params={"source": "tariffs"}, headers=bot.headers)
    assert_problem(forbidden, 403, "source_forbidden")
    agent = await people.make(role="agent")
    assert_problem(
        await importer.client.get("/api/v1/exports", params={"source": "crm"}, headers=agent.headers),
        403,
        "permission_denied",
    )  # no import permission at all
    assert_problem(
        await importer.client.get("/api/v1/exports", params={"source": "nosuch"}, headers=importer.manager.headers),
        404,
        "unknown_source",
    )
    assert_problem(
        await importer.client.get(
            "/api/v1/exports", params={"source": "crm", "format": "pdf"}, headers=importer.manager.headers
        ),
        422,
    )
    assert_problem(await importer.client.get("/api/v1/exports", headers=importer.manager.headers), 422)
    assert_problem(await importer.client.get("/api/v1/exports", params={"source": "crm"}), 401)
    # An empty source exports the header only.
    empty = await importer.client.get(
        "/api/v1/exports", params={"source": "tariffs", "format": "csv"}, headers=importer.manager.headers
    )
    assert empty.status_code == 200 and empty.content.decode("utf-8-sig").startswith("external_id,title,")
    assert len(empty.content.decode("utf-8-sig").splitlines()) == 1


async def test_a_large_export_is_a_job_whose_file_matches_the_inline_export(
    importer: Importer, kb: Kb, settings: Settings
) -> None:
    await importer.source()
    await importer.source("tariffs")
    await importer.run(ndjson(ROWS))
    inline = {fmt: await export(importer, fmt) for fmt in ("ndjson", "csv")}
    settings.export_inline_max_items = 3
    jobs = {}
    for fmt in ("ndjson", "csv", "xlsx"):
        r = await importer.client.get(
            "/api/v1/exports", params={"source": "crm", "format": fmt}, headers=importer.manager.headers
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert (
            body["state"] == "queued"
            and body["file"] is None
            and r.headers["location"] == f"/api/v1/exports/{body['id']}"
        )
        jobs[fmt] = body["id"]
    assert_problem(
        await importer.client.get(f"/api/v1/exports/{jobs['csv']}/file", headers=importer.manager.headers),
        409,
        "export_not_ready",
    )
    await importer.drain()
    for fmt, export_id in jobs.items():
        got = (await importer.client.get(f"/api/v1/exports/{export_id}", headers=importer.manager.headers)).json()
        assert got["state"] == "done" and got["rows"] == got["rows_total"] == 4, got
        assert got["file"] == f"/api/v1/exports/{export_id}/file" and got["file_bytes"] > 0
        f = await importer.client.get(got["file"], headers=importer.manager.headers)
        assert f.status_code == 200 and f.headers["content-type"].startswith(CTYPES[fmt])
        assert len(f.content) == got["file_bytes"]
        if fmt in inline:
            assert f.content == inline[fmt]
        else:
            rows = list(load_workbook(io.BytesIO(f.content), read_only=True).active.iter_rows(values_only=True))
            assert [r[0] for r in rows] == ["external_id", *(r["external_id"] for r in ROWS)]
    # Another source's client sees no such export.
    other = await kb.channel_client(None, scopes=["import:tariffs"])
    assert_problem(
        await importer.client.get(f"/api/v1/exports/{jobs['csv']}", headers=other.headers), 404, "export_not_found"
    )
    assert_problem(
        await importer.client.get(f"/api/v1/exports/{jobs['csv']}/file", headers=other.headers), 404, "export_not_found"
    )


async def test_an_export_shows_a_user_only_the_items_their_acl_lets_them_read(
    importer: Importer, kb: Kb, people: People, admin: Any, settings: Settings
) -> None:
    """An item of the source restricted to the supervisors is left out of another user's export,
    inline and as a job, and the job's file is its starter's alone; the source's own sync client and
    a superuser export everything."""
    await importer.source()
    await importer.run(ndjson(ROWS))
    async with importer.app.state.sessionmaker() as s:
        restricted = await s.scalar(
            select(Item).where(Item.source == "crm", Item.external_id == ROWS[0]["external_id"])
        )
        assert restricted is not None
        restricted_id = restricted.id
    supervisors = (await people.roles())["supervisor"]
    r = await importer.client.put(
        f"/api/v1/items/{restricted_id}/acl",
        headers=admin.headers,
        json={"grants": [{"subject": f"role:{supervisors.id}", "access": "read"}]},
    )
    assert r.status_code == 200, r.text
    everyone = [row["external_id"] for row in ROWS]
    others = everyone[1:]
    manager_rows = parse_ndjson(await export(importer))
    assert [row["external_id"] for row in manager_rows] == others
    csv_rows = list(csv.DictReader(io.StringIO((await export(importer, "csv")).decode("utf-8-sig"))))
    assert [row["external_id"] for row in csv_rows] == others
    bot = await kb.channel_client(None, scopes=["import:crm"])
    assert [row["external_id"] for row in parse_ndjson(await export(importer, actor=bot))] == everyone
    assert [row["external_id"] for row in parse_ndjson(await export(importer, actor=admin))] == everyone
    settings.export_inline_max_items = 1
    started = await importer.client.get("/api/v1/exports", params={"source": "crm"}, headers=importer.manager.headers)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    await importer.drain()
    got = (await importer.client.get(f"/api/v1/exports/{job_id}", headers=importer.manager.headers)).json()
    assert got["state"] == "done" and got["rows"] == len(others), got
    f = await importer.client.get(got["file"], headers=importer.manager.headers)
    assert [row["external_id"] for row in parse_ndjson(f.content)] == others
    # Another user who may import the source does not get the manager's file.
    colleague = await people.make(role="kb_manager")
    assert_problem(
        await importer.client.get(f"/api/v1/exports/{job_id}", headers=colleague.headers), 404, "export_not_found"
    )
    assert_problem(await importer.client.get(got["file"], headers=colleague.headers), 404, "export_not_found")


async def test_export_files_are_deleted_after_the_retention(importer: Importer, settings: Settings) -> None:
    """A finished job's file older than KB_EXPORT_RETENTION_HOURS is deleted by the hourly run, the
    job says `expired` and its file answers 410; a younger one and its file stay. An XLSX a crashed
    request left behind goes too."""
    import os
    import time
    from datetime import timedelta
    from pathlib import Path

    from app.core.db import utcnow
    from app.imports.export import EXPIRE_JOB, exports_dir
    from app.imports.jobs import schedule_expiry
    from app.imports.models import ExportJob
    from app.workers.models import Job
    from app.workers.outbox import SCHEDULER, enqueue

    async with importer.app.state.sessionmaker() as s:  # as the start-up does: one run kept queued
        assert await schedule_expiry(s, 0) is False  # retention off: no run
        assert await schedule_expiry(s, settings.export_retention_hours) is True
        await s.commit()
        assert await schedule_expiry(s, settings.export_retention_hours) is False
        queued = await s.scalar(select(Job).where(Job.kind == EXPIRE_JOB, Job.created_by == SCHEDULER))
        assert queued is not None and queued.run_after - utcnow() > timedelta(minutes=59)
    await importer.source()
    await importer.run(ndjson(ROWS))
    settings.export_inline_max_items = 1
    ids = []
    for _ in range(2):
        r = await importer.client.get(
            "/api/v1/exports", params={"source": "crm", "format": "csv"}, headers=importer.manager.headers
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    await importer.drain()
    old, young = ids
    leftover = exports_dir(settings) / "inline-0123456789abcdef.xlsx"
    leftover.write_bytes(b"PK")
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    async with importer.app.state.sessionmaker() as s:
        job = await s.get(ExportJob, old)
        assert job is not None and job.file_path and Path(job.file_path).is_file()
        old_file = Path(job.file_path)
        job.finished_at = utcnow() - timedelta(hours=settings.export_retention_hours + 1)
        enqueue(s, EXPIRE_JOB, {})
        await s.commit()
    await importer.drain()
    h = importer.manager.headers
    gone = (await importer.client.get(f"/api/v1/exports/{old}", headers=h)).json()
    assert gone["state"] == "expired" and gone["file"] is None and not old_file.exists()
    assert_problem(await importer.client.get(f"/api/v1/exports/{old}/file", headers=h), 410, "export_expired")
    kept = (await importer.client.get(f"/api/v1/exports/{young}", headers=h)).json()
    assert kept["state"] == "done"
    assert (await importer.client.get(kept["file"], headers=h)).status_code == 200
    assert not leftover.exists()


def test_a_list_cell_reads_back_as_written() -> None:
    """One value per line, or a JSON array when a value holds `|` or a line break or the cell would
    start with "[" (a plain "[急] ..." question stays one value)."""
    from app.imports.columns import join_cell, split_text

    for values in (
        ["宽带报修", "光猫红灯"],
        ["5G|4G 套餐怎么选", "换套餐"],
        ["[急] 停电报修"],
        ["第一行\n第二行"],
        ['["a"]'],
        ["信用卡", "額度"],
    ):
        assert split_text(join_cell(values)) == values, values
    assert join_cell(["宽带报修", "光猫红灯"]) == "宽带报修\n光猫红灯"
    assert split_text("宽带报修|光猫红灯") == ["宽带报修", "光猫红灯"]  # what people type
    assert split_text("[急] 停电报修") == ["[急] 停电报修"]  # not JSON: one value
