"""Bulk import and sync through the API, with a real worker: upserts by external id, unchanged
rows as no-ops, full and incremental sync, deletions, dry runs, per-row errors, permissions."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.core.config import Settings
from app.imports.engine import BATCH
from app.imports.models import ImportJob
from app.knowledge.models import Item
from app.taxonomy.models import TaxonomyNode
from app.workers.models import Job
from tests.conftest import ROOT, People, assert_problem
from tests.imports.conftest import ROWS, Importer, ndjson
from tests.knowledge.conftest import Kb
from tests.ops.served import free_port, kill_all, serve_env


async def test_first_import_publishes_and_is_searchable_then_the_same_file_changes_nothing(
    importer: Importer, kb: Kb, people: People
) -> None:
    await importer.source()
    job = await importer.run(ndjson(ROWS), watermark="2026-12-06T23:00:00+08:00")
    assert job["state"] == "done", job
    assert job["counts"] == {"created": 4, "updated": 0, "unchanged": 0, "archived": 0, "deleted": 0, "failed": 0}, job[
        "errors"
    ]
    assert job["progress"]["rows_done"] == job["progress"]["rows_total"] == 4
    items = await importer.items()
    item, versions = items["CRM-1001"]
    assert item.status == "published" and [v.state for v in versions] == ["published"]
    assert versions[0].similar_questions == ["家里wifi上不了网", "光猫红灯闪烁"]
    assert versions[0].channel_answers == {"agent": "您好，请您先重启光猫，我这边帮您查询线路状态。"}
    assert [n.id for n in versions[0].categories] == [kb.nodes["宽带故障"]]
    assert sorted(t.name for t in versions[0].tags) == ["宽带", "故障"]
    assert items["CRM-1002"][0].visibility == "public" and item.visibility == "internal"
    agent = await people.make(role="agent")
    assert [h["item_id"] for h in await importer.search(agent, "光猫红灯")] == [item.id]
    assert [h["item_id"] for h in await importer.search(agent, "帳戶凍結")] == [items["CRM-1004"][0].id]
    source = (await importer.client.get("/api/v1/sync-sources/crm", headers=importer.manager.headers)).json()
    assert source["watermark"] == "2026-12-06T23:00:00+08:00" and source["items"] == 4
    assert source["last_import"]["id"] == job["id"]

    async with importer.app.state.sessionmaker() as s:
        audited = await s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "item.import"))
        index_jobs = await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "search.index_item"))
    assert audited == 4
    again = await importer.run(ndjson(ROWS))
    assert again["counts"] == {"created": 0, "updated": 0, "unchanged": 4, "archived": 0, "deleted": 0, "failed": 0}
    after = await importer.items()
    assert {k: len(v[1]) for k, v in after.items()} == {k: 1 for k in items}
    async with importer.app.state.sessionmaker() as s:
        assert (
            await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "search.index_item")) == index_jobs
        )  # no index job for an unchanged row
        assert (
            await s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "item.import")) == 4
        )


async def test_a_changed_row_makes_a_new_version_and_columns_the_file_lacks_keep_their_value(
    importer: Importer, people: People
) -> None:
    await importer.source()
    await importer.run(ndjson(ROWS))
    changed = [{"external_id": "CRM-1003", "body": "<p>请立即拨打 95588 挂失；补卡免收工本费。</p>"}]
    job = await importer.run(ndjson(changed))
    assert job["counts"]["updated"] == 1 and job["counts"]["failed"] == 0
    item, versions = (await importer.items())["CRM-1003"]
    assert [(v.number, v.state) for v in versions] == [(1, "superseded"), (2, "published")]
    assert "补卡免收工本费" in versions[1].body
    assert versions[1].title == "信用卡遗失如何挂失" and versions[1].attributes == {"region": "全国"}
    agent = await people.make(role="agent")
    hits = await importer.search(agent, "补卡免收工本费")
    assert [(h["item_id"], h["version"]) for h in hits] == [(item.id, 2)]


async def test_full_sync_archives_what_vanished_and_lists_it(importer: Importer, people: People) -> None:
    await importer.source(max_archive_share=0.5)
    await importer.run(ndjson(ROWS))
    job = await importer.run(ndjson(ROWS[:3]), mode="full")
    assert job["state"] == "done"
    assert job["counts"]["archived"] == 1 and job["counts"]["unchanged"] == 3
    assert job["to_archive"] == 1
    assert [(o["action"], o["external_id"]) for o in job["outcomes"]] == [("archived", "CRM-1004")]
    item, versions = (await importer.items())["CRM-1004"]
    assert item.status == "archived" and versions[-1].state == "archived"  # kept, never deleted
    agent = await people.make(role="agent")
    assert await importer.search(agent, "帳戶凍結") == []
    listed = (
        await importer.client.get(f"/api/v1/imports/{job['id']}/outcomes", headers=importer.manager.headers)
    ).json()
    assert [o["item_id"] for o in listed["items"]] == [item.id]
    # It comes back in the next snapshot: revived as a new published version.
    back = await importer.run(ndjson(ROWS), mode="full")
    assert back["counts"]["updated"] == 1 and back["counts"]["archived"] == 0
    item, versions = (await importer.items())["CRM-1004"]
    assert item.status == "published" and versions[-1].state == "published"


async def test_a_full_sync_that_would_archive_too_much_stops_and_writes_nothing_until_confirmed(
    importer: Importer,
) -> None:
    await importer.source()  # default: at most 20 % archived without confirmation
    await importer.run(ndjson(ROWS))
    changed = [{**ROWS[0], "title": "宽带断网怎么办"}]
    job = await importer.run(ndjson(changed), mode="full")
    assert job["state"] == "needs_confirmation"
    assert job["error"]["code"] == "mass_archive" and job["error"]["to_archive"] == 3
    assert all(v == 0 for v in job["counts"].values())
    items = await importer.items()
    assert all(i.status == "published" for i, _ in items.values())
    assert items["CRM-1001"][1][-1].title == "宽带无法上网怎么办"  # the changed row was not applied either
    confirmed = await importer.run(ndjson(changed), mode="full", confirm_mass_archive=True)
    assert confirmed["state"] == "done"
    assert confirmed["counts"]["archived"] == 3 and confirmed["counts"]["updated"] == 1


async def test_explicit_deletions_archive_and_are_idempotent(importer: Importer) -> None:
    await importer.source()
    await importer.run(ndjson(ROWS))
    rows = [{"external_id": "CRM-1002", "action": "delete"}, {"external_id": "NEVER-SEEN", "action": "delete"}]
    job = await importer.run(ndjson(rows))
    assert job["counts"]["deleted"] == 1 and job["counts"]["unchanged"] == 1 and job["counts"]["failed"] == 0
    assert (await importer.items())["CRM-1002"][0].status == "archived"
    again = await importer.run(ndjson(rows))
    assert again["counts"]["deleted"] == 0 and again["counts"]["unchanged"] == 2


async def test_dry_run_reports_what_would_happen_and_writes_nothing(importer: Importer, kb: Kb) -> None:
    await importer.source(create_categories=True)
    rows = [
        *ROWS,
        {
            "external_id": "CRM-2001",
            "title": "电费如何缴纳",
            "categories": ["电费缴纳/线上缴费"],
            "attr.region": "北京",
        },
        {"external_id": "CRM-2002", "attr.region": "北京"},
    ]
    job = await importer.run(ndjson(rows), dry_run=True)
    assert job["state"] == "done" and job["dry_run"] is True
    assert job["counts"]["created"] == 5 and job["counts"]["failed"] == 1
    assert job["errors"][0]["external_id"] == "CRM-2002" and job["errors"][0]["code"] == "field_required"
    assert await importer.items() == {}
    async with importer.app.state.sessionmaker() as s:
        assert (
            await s.scalar(select(func.count()).select_from(TaxonomyNode).where(TaxonomyNode.name == "线上缴费")) == 0
        )
        assert await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "search.index_item")) == 0
    source = (await importer.client.get("/api/v1/sync-sources/crm", headers=importer.manager.headers)).json()
    assert source["last_import"] is None  # a dry run is not the source's last import


async def test_row_errors_name_the_row_the_field_and_the_reason(importer: Importer, kb: Kb) -> None:
    await importer.source(create_tags=False)
    rows = [
        {k: v for k, v in ROWS[0].items() if k != "tags"},
        {
            "external_id": "CRM-3001",
            "title": "新装宽带",
            "categories": ["宽带业务/不存在的分类"],
            "attr.region": "全国",
        },
        {"external_id": "CRM-3002", "title": "话费查询", "owner": "nobody", "attr.region": "全国"},
        {"external_id": "CRM-3003", "title": "话费查询", "attr.region": "火星"},
        {
            "external_id": "CRM-3004",
            "title": "话费查询",
            "attr.region": "全国",
            "valid_from": "2026-12-31",
            "valid_to": "2026-01-01",
        },
        {"external_id": "CRM-1001", "title": "重复的编号"},
        {"external_id": "", "title": "没有编号"},
        {"external_id": "CRM-3005", "title": "错误的渠道", "channels": ["fax"], "attr.region": "全国"},
        {"external_id": "CRM-3006", "title": "未知标签", "tags": ["没有这个标签"], "attr.region": "全国"},
    ]
    body = ndjson(rows) + b"{not json\n"
    job = await importer.run(body, dry_run=False)
    assert job["state"] == "done"
    assert job["counts"]["created"] == 1 and job["counts"]["failed"] == 9
    got = {(e["row"], e["external_id"], e["field"], e["code"]) for e in job["errors"]}
    assert got == {
        (2, "CRM-3001", "categories", "unknown_category"),
        (3, "CRM-3002", "owner", "unknown_owner"),
        (4, "CRM-3003", "attr.region", "invalid_attribute"),
        (5, "CRM-3004", "valid_to", "invalid_validity"),
        (6, "CRM-1001", "external_id", "duplicate_external_id"),
        (7, None, "external_id", "field_required"),
        (8, "CRM-3005", "channels", "invalid_value"),
        (9, "CRM-3006", "tags", "unknown_tag"),
        (10, None, None, "unreadable_row"),
    }
    dup = next(e for e in job["errors"] if e["code"] == "duplicate_external_id")
    assert "row 1" in dup["message"]
    items = await importer.items()
    assert list(items) == ["CRM-1001"] and items["CRM-1001"][1][0].title == "宽带无法上网怎么办"  # the first wins
    csv_text = (
        await importer.client.get(
            f"/api/v1/imports/{job['id']}/errors", params={"format": "csv"}, headers=importer.manager.headers
        )
    ).content.decode("utf-8-sig")
    lines = csv_text.strip().splitlines()
    assert lines[0] == "row,external_id,field,code,message" and len(lines) == 10
    assert any(line.startswith("3,CRM-3002,owner,unknown_owner,") for line in lines)


async def test_policy_creates_missing_categories_and_tags_when_allowed(importer: Importer, kb: Kb) -> None:
    await importer.source(create_categories=True, create_tags=True)
    row = {
        "external_id": "UT-1",
        "title": "电费如何线上缴纳",
        "categories": ["电费缴纳/线上缴费/支付宝"],
        "tags": ["缴费", "Alipay"],
        "attr.region": "上海",
    }
    job = await importer.run(ndjson([row, {**row, "external_id": "UT-2", "title": "电费发票"}]))
    assert job["counts"]["created"] == 2, job["errors"]
    _, versions = (await importer.items())["UT-1"]
    node = versions[0].categories[0]
    async with importer.app.state.sessionmaker() as s:
        chain = (
            await s.scalars(
                select(TaxonomyNode.name)
                .where(TaxonomyNode.id.in_([int(p) for p in node.path.strip("/").split("/")]))
                .order_by(TaxonomyNode.path)
            )
        ).all()
        assert list(chain) == ["电费缴纳", "线上缴费", "支付宝"]
        assert (
            await s.scalar(select(func.count()).select_from(TaxonomyNode).where(TaxonomyNode.name == "支付宝")) == 1
        )  # created once for both rows
    assert sorted(t.name for t in versions[0].tags) == ["Alipay", "缴费"]


async def test_a_missing_required_column_fails_the_job_before_any_write(importer: Importer) -> None:
    await importer.source()
    rows = [{"id": "1", "title": "宽带", "备注": "x"}]
    job = await importer.run(ndjson(rows))
    assert job["state"] == "failed" and job["error"]["code"] == "missing_columns"
    assert job["error"]["missing"] == ["external_id"]
    assert await importer.items() == {}


async def test_unknown_columns_are_reported_not_silently_dropped(importer: Importer) -> None:
    await importer.source()
    job = await importer.run(ndjson([{**ROWS[0], "remark": "内部备注", "titel": "typo"}]))
    assert job["counts"]["created"] == 1
    assert any("remark" in w and "titel" in w for w in job["warnings"]), job["warnings"]


async def test_review_policy_leaves_rows_in_review_and_never_overwrites_an_editors_draft(
    importer: Importer, kb: Kb, people: People
) -> None:
    await importer.source(publish_mode="review")
    job = await importer.run(ndjson(ROWS[:2]))
    assert job["counts"]["created"] == 2
    item, versions = (await importer.items())["CRM-1001"]
    assert item.status == "draft" and [v.state for v in versions] == ["in_review"]
    # The source sends a correction while its own proposal still waits: the proposal is replaced.
    job = await importer.run(ndjson([{**ROWS[0], "title": "宽带断网怎么办"}]))
    assert job["counts"]["updated"] == 1
    item, versions = (await importer.items())["CRM-1001"]
    assert [(v.number, v.state, v.title) for v in versions] == [(1, "in_review", "宽带断网怎么办")]
    # A reviewer publishes; an editor then opens a draft of their own: the sync must not touch it.
    reviewer = await people.make(role="publisher")
    await kb.ok(reviewer, item.id, 1, "approve", "publish")
    editor = await people.make(role="author")
    r = await kb.edit(editor, item.id, {"body": "<p>编辑正在修改</p>"})
    assert r.status_code == 200, r.text
    job = await importer.run(ndjson([{**ROWS[0], "title": "宽带又断网了"}]))
    assert job["counts"]["failed"] == 1 and job["errors"][0]["code"] == "draft_open"
    _, versions = (await importer.items())["CRM-1001"]
    assert versions[-1].body == "<p>编辑正在修改</p>" and versions[-1].state == "draft"


async def test_the_same_idempotency_key_answers_the_same_job_and_runs_once(importer: Importer) -> None:
    await importer.source()
    key = {"Idempotency-Key": "nightly-2026-12-07"}
    first = await importer.post(ndjson(ROWS), headers=key)
    second = await importer.post(ndjson(ROWS), headers=key)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] and second.headers["idempotent-replayed"] == "true"
    await importer.drain()
    async with importer.app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "imports.run")) == 1
        assert await s.scalar(select(func.count()).select_from(Item)) == 4
    other = await importer.post(ndjson(ROWS[:1]), headers=key)
    assert_problem(other, 409, "idempotency_key_reused")


async def test_a_sync_client_writes_only_its_own_source(importer: Importer, kb: Kb, people: People) -> None:
    await importer.source("crm")
    await importer.source("tariffs")
    bot = await kb.channel_client(None, scopes=["import:crm"])
    job = await importer.run(ndjson(ROWS[:1]), actor=bot)
    assert job["state"] == "done" and job["created_by"].startswith("client:")
    assert_problem(await importer.post(ndjson(ROWS[:1]), actor=bot, source="tariffs"), 403, "source_forbidden")
    assert_problem(
        await importer.client.get(
            f"/api/v1/imports/{job['id']}", headers=(await kb.channel_client(None, scopes=["import:tariffs"])).headers
        ),
        404,
        "import_not_found",
    )
    listed = (await importer.client.get("/api/v1/sync-sources", headers=bot.headers)).json()
    assert [s["name"] for s in listed["items"]] == ["crm"]
    r = await importer.client.put(
        "/api/v1/sync-sources/crm/watermark", json={"watermark": "cursor:884213"}, headers=bot.headers
    )
    assert r.status_code == 200 and r.json()["watermark"] == "cursor:884213"
    assert_problem(
        await importer.client.patch(
            "/api/v1/sync-sources/crm",
            json={"publish_mode": "review"},
            headers={**bot.headers, "If-Match": r.headers["etag"]},
        ),
        403,
    )
    agent = await people.make(role="agent")
    assert_problem(await importer.post(ndjson(ROWS[:1]), actor=agent), 403, "permission_denied")
    assert_problem(await importer.client.get("/api/v1/imports", headers=agent.headers), 403)
    assert_problem(await importer.post(ndjson(ROWS[:1]), source="nosuch"), 404, "unknown_source")


async def test_a_body_that_is_not_the_declared_format_is_refused_at_upload(importer: Importer) -> None:
    await importer.source()
    r = await importer.post(
        b"external_id,title\nA-1,x\n", ctype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert_problem(r, 422, "format_mismatch")
    assert_problem(await importer.post(b"", ctype="application/x-ndjson"), 422, "empty_file")
    assert_problem(await importer.post(b"x", ctype="image/png"), 415, "unsupported_media_type")


async def test_source_policy_is_validated_and_changes_need_if_match(importer: Importer) -> None:
    src = await importer.source()
    bad = await importer.client.post(
        "/api/v1/sync-sources", json={"name": "CRM 系统"}, headers=importer.manager.headers
    )
    assert_problem(bad, 422)
    assert_problem(
        await importer.client.post("/api/v1/sync-sources", json={"name": "crm"}, headers=importer.manager.headers),
        409,
        "source_exists",
    )
    assert_problem(
        await importer.client.patch(
            "/api/v1/sync-sources/crm", json={"publish_mode": "review"}, headers=importer.manager.headers
        ),
        428,
    )
    r = await importer.client.patch(
        "/api/v1/sync-sources/crm",
        json={"publish_mode": "review"},
        headers={**importer.manager.headers, "If-Match": src["etag"]},
    )
    assert r.status_code == 200 and r.json()["publish_mode"] == "review"
    stale = await importer.client.patch(
        "/api/v1/sync-sources/crm",
        json={"create_tags": True},
        headers={**importer.manager.headers, "If-Match": src["etag"]},
    )
    assert_problem(stale, 412)


async def test_a_killed_worker_resumes_the_import_without_duplicates(
    importer: Importer, settings: Settings, tmp_path: Path
) -> None:
    """A real `python -m app worker` is SIGKILLed mid-import; the next worker (once the lease ran
    out) goes on from the last committed batch: every row once, one version per item, exact counts."""
    await importer.source()
    total = 6 * BATCH
    rows = [
        {
            "external_id": f"TEL-{n:05d}",
            "title": f"5G套餐{n}号资费说明",
            "question": f"5G套餐{n}号每月多少钱",
            "body": f"<p>月费 {n % 300 + 58} 元，含国内流量 {n % 50 + 10}GB。</p>",
            "attr.region": "全国",
        }
        for n in range(total)
    ]
    r = await importer.post(ndjson(rows))
    assert r.status_code == 202, r.text
    import_id = r.json()["id"]
    env = serve_env(settings, tmp_path / "worker-data", free_port(), KB_JOB_LEASE_SECONDS="1")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "worker", cwd=ROOT, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            async with importer.app.state.sessionmaker() as s:
                job = await s.get(ImportJob, import_id)
                assert job is not None
                if job.last_row >= BATCH:
                    break
            assert worker.returncode is None and time.monotonic() < deadline, "the worker did not start the import"
            await asyncio.sleep(0.02)
    finally:
        kill_all(worker)
        await worker.wait()
    async with importer.app.state.sessionmaker() as s:
        job = await s.get(ImportJob, import_id)
        assert job is not None
        assert job.state == "running" and BATCH <= job.last_row < total, (job.state, job.last_row)
        committed = job.last_row
    await asyncio.sleep(1.2)  # the killed worker's lease runs out
    settings.job_lease_seconds = 1  # the next worker's view of it
    await importer.drain()
    done = await importer.job(import_id)
    assert done["state"] == "done", done
    assert done["counts"]["created"] == total and done["counts"]["failed"] == 0
    assert done["progress"]["rows_done"] == total
    items = await importer.items()
    assert len(items) == total and all(len(v) == 1 for _, v in items.values())
    assert committed < total


async def test_nul_characters_fail_the_row_not_the_database(importer: Importer) -> None:
    await importer.source()
    job = await importer.run(ndjson([{**ROWS[0], "title": "宽带\u0000故障"}, ROWS[1]]))
    assert job["counts"]["created"] == 1 and job["counts"]["failed"] == 1
    assert job["errors"][0]["code"] == "nul_character" and job["errors"][0]["external_id"] == "CRM-1001"
