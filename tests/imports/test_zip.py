"""A ZIP import: a manifest plus the files its `attachments` column names, attached to the rows'
versions through the same blob store and extraction as uploads."""

from __future__ import annotations

import io
import json
import zipfile

from sqlalchemy import func, select

from app.attachments.models import Attachment, Blob
from app.workers.models import Job
from tests.imports.conftest import ROWS, Importer

ZIP = "application/zip"
GUIDE = "光猫指示灯说明：PON 灯常亮表示光路正常，LOS 灯红色闪烁表示光纤中断，请拨打 10000 报修。\n".encode()


def bundle(rows: list[dict], files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.ndjson", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


async def test_zip_rows_carry_their_files_and_a_changed_file_makes_a_new_version(importer: Importer) -> None:
    await importer.source()
    row = {**ROWS[0], "attachments": ["附件/光猫指示灯说明.txt"]}
    job = await importer.run(bundle([row, ROWS[1]], {"附件/光猫指示灯说明.txt": GUIDE}), ctype=ZIP)
    assert job["state"] == "done" and job["format"] == "zip", job
    assert job["counts"]["created"] == 2 and job["counts"]["failed"] == 0, job["errors"]
    item, versions = (await importer.items())["CRM-1001"]
    assert [(a.file_name, a.size) for a in versions[0].attachments] == [("光猫指示灯说明.txt", len(GUIDE))]
    async with importer.app.state.sessionmaker() as s:
        blob = await s.get(Blob, versions[0].attachments[0].sha256)
        assert blob is not None and blob.extraction_status == "done"  # extracted by the real job (drained)
        assert await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "attachments.extract")) == 1
    again = await importer.run(bundle([row, ROWS[1]], {"附件/光猫指示灯说明.txt": GUIDE}), ctype=ZIP)
    assert again["counts"]["unchanged"] == 2
    newer = GUIDE + "更新：LOS 灯熄灭后请重启光猫。\n".encode()
    changed = await importer.run(bundle([row], {"附件/光猫指示灯说明.txt": newer}), ctype=ZIP)
    assert changed["counts"]["updated"] == 1
    _, versions = (await importer.items())["CRM-1001"]
    assert len(versions) == 2 and versions[1].attachments[0].size == len(newer)
    async with importer.app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Attachment).where(Attachment.item_id == item.id)) == 2


async def test_a_manifest_naming_a_missing_file_fails_that_row_only(importer: Importer) -> None:
    await importer.source()
    rows = [{**ROWS[0], "attachments": ["不存在.pdf"]}, ROWS[1]]
    job = await importer.run(bundle(rows, {}), ctype=ZIP)
    assert job["counts"]["created"] == 1 and job["counts"]["failed"] == 1
    assert (job["errors"][0]["external_id"], job["errors"][0]["code"], job["errors"][0]["field"]) == (
        "CRM-1001",
        "attachment_missing",
        "attachments",
    )


async def test_attachments_outside_a_zip_are_refused_per_row(importer: Importer) -> None:
    await importer.source()
    from tests.imports.conftest import ndjson

    job = await importer.run(ndjson([{**ROWS[0], "attachments": ["a.pdf"]}]))
    assert job["counts"]["failed"] == 1 and job["errors"][0]["code"] == "attachments_need_zip"


async def test_an_unsafe_zip_fails_the_job_before_any_write(importer: Importer) -> None:
    await importer.source()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.ndjson", json.dumps(ROWS[0], ensure_ascii=False) + "\n")
        z.writestr("../../etc/cron.d/evil", b"* * * * * root rm -rf /")
    job = await importer.run(buf.getvalue(), ctype=ZIP)
    assert job["state"] == "failed" and job["error"]["code"] == "unsafe_zip_entry", job
    assert await importer.items() == {}
