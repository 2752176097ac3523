"""Attachments over the API with `KB_BLOB_BACKEND=s3`, against a real S3 protocol server (moto in a
child process; no live AWS S3 or MinIO here): upload, extraction by the real in-process Tika, download
with ranges, previews, orphan collection; and two API hosts on one PostgreSQL database sharing the files."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.attachments.storage import S3BlobStore
from app.core.config import Settings
from app.main import create_app
from tests.attachments.api_helpers import CTYPE, create_item, drain, publish, random_chunks, sha, streamed, upload_ok
from tests.attachments.conftest import SIMPLIFIED, TRADITIONAL
from tests.conftest import Actor, Database, People, assert_problem
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
GBK_SCRIPT = "客户来电反映宽带断线：请先核对账户欠费，再远程重启光猫。工单号 TK-20240318-0091。\n".encode("gb18030")


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str) -> Settings:
    return settings.model_copy(
        update={
            "blob_backend": "s3",
            "s3_endpoint_url": s3_endpoint,
            "s3_bucket": "kb-api-blobs",
            "s3_region": REGION,
            "s3_access_key": ACCESS_KEY,
            "s3_secret_key": SECRET_KEY,
            "s3_prefix": f"host-test-{uuid.uuid4().hex[:8]}/",
            "s3_create_bucket": True,
        }
    )


@pytest.fixture
async def tika(app: Any, extractor: Any) -> AsyncIterator[Any]:
    own = app.state.services["extractor"]
    app.state.services["extractor"] = extractor
    yield app
    app.state.services["extractor"] = own


def s3_of(app: Any) -> S3BlobStore:
    store = app.state.services["blobs"]
    assert isinstance(store, S3BlobStore)
    return store


async def test_upload_extract_download_preview_and_collect_on_s3(
    client: httpx.AsyncClient, admin: Actor, people: People, tika: Any, generated: dict[str, Path], settings: Settings
) -> None:
    h = admin.headers
    store = s3_of(tika)
    item = await create_item(client, h, title="宽带断线处理（S3 附件）", visibility="public")
    docx, pdf = generated["docx"].read_bytes(), generated["pdf"].read_bytes()
    up = await upload_ok(client, h, item["id"], [("故障处理.docx", docx), ("手册.pdf", pdf), ("话术.txt", GBK_SCRIPT)])
    got = {a["file_name"]: a for a in up["attachments"]}
    assert got["故障处理.docx"]["mime"] == DOCX and got["手册.pdf"]["mime"] == "application/pdf"  # typed from S3
    assert {k async for k in store.iter_keys()} == {sha(docx), sha(pdf), sha(GBK_SCRIPT)}
    assert not (settings.data_dir / "blobs").exists()  # nothing on the host's disk

    await drain(tika)  # extraction downloads each blob to a temp file for Tika
    for a in up["attachments"][:2]:
        text = (await client.get(f"/api/v1/attachments/{a['id']}/text", headers=h)).json()
        assert text["status"] == "done" and SIMPLIFIED in text["text"] and TRADITIONAL in text["text"], text
    await publish(client, h, item["id"], 1)
    await drain(tika)
    agent = await people.make("li.na", role="agent")
    hits = (await client.get("/api/v1/search", params={"q": "指示灯"}, headers=agent.headers)).json()["items"]
    assert [x["item_id"] for x in hits] == [item["id"]]

    url = f"/api/v1/attachments/{got['手册.pdf']['id']}/content"
    r = await client.get(url, headers=agent.headers)
    assert r.status_code == 200 and r.content == pdf and r.headers["etag"] == f'"{sha(pdf)}"'
    r = await client.get(url, headers={**agent.headers, "Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.content == pdf[100:1100]
    assert r.headers["content-range"] == f"bytes 100-1099/{len(pdf)}"
    r = await client.get(url, headers={**agent.headers, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == pdf[-10:]
    assert_problem(
        await client.get(url, headers={**agent.headers, "Range": f"bytes={len(pdf)}-"}), 416, "range_not_satisfiable"
    )

    r = await client.get(f"/api/v1/attachments/{got['手册.pdf']['id']}/preview", headers=agent.headers)
    assert r.status_code == 200 and r.content == pdf and r.headers["content-type"] == "application/pdf"
    r = await client.get(f"/api/v1/attachments/{got['故障处理.docx']['id']}/preview", headers=agent.headers)
    assert r.status_code == 200 and f"<p>{SIMPLIFIED}</p>" in r.text
    r = await client.get(f"/api/v1/attachments/{got['话术.txt']['id']}/content", headers=agent.headers)
    assert r.headers["content-type"] == "text/plain; charset=gb18030"  # sniffed from the object's first bytes
    assert r.content.decode("gb18030") == GBK_SCRIPT.decode("gb18030")

    # orphan collection: an object without a row goes, the attached blobs stay
    s3 = await store._s3()
    await s3.put_object(Bucket=store.bucket, Key=store.object_key(sha(b"stray")), Body=b"stray")
    r = await client.post("/api/v1/attachments/collect-orphans", headers=h, json={"grace_seconds": 0})
    assert r.status_code == 202, r.text
    await drain(tika)
    job = (await client.get(r.json()["href"], headers=h)).json()
    assert job["status"] == "done" and job["result"]["stray_files"] == 1, job
    assert {k async for k in store.iter_keys()} == {sha(docx), sha(pdf), sha(GBK_SCRIPT)}


async def test_a_failed_upload_leaves_no_object(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    store = s3_of(app)
    item = await create_item(client, admin.headers)
    assert store.part_size == 8 * 1024 * 1024
    # sent in 64 KiB chunks: one 8 MiB part is on S3 when the 9 MiB limit is passed
    app.state.settings.max_upload_file_bytes = 9 * 1024 * 1024
    body = streamed([("录音.wav", random_chunks(10 * 1024 * 1024))])
    r = await client.post(
        f"/api/v1/items/{item['id']}/attachments", content=body, headers={**admin.headers, "Content-Type": CTYPE}
    )
    assert_problem(r, 413, "file_too_large")
    assert [k async for k in store.iter_keys()] == []
    s3 = await store._s3()
    uploads = await s3.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == []  # aborted, no parts kept


async def test_two_api_hosts_on_postgresql_share_attachments_through_s3(
    db: Database, settings: Settings, client: httpx.AsyncClient, admin: Actor, app: Any, tmp_path: Path
) -> None:
    if db.kind != "postgresql":
        pytest.skip("two API hosts need a shared database server: this runs in the PostgreSQL leg of every run")
    # host B: its own process state and its own (empty) data folder; only the database and the bucket are shared
    host_b = create_app(settings.model_copy(update={"data_dir": tmp_path / "host-b"}))
    async with (
        LifespanManager(host_b),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=host_b), base_url="http://host-b") as b,
    ):
        item = await create_item(client, admin.headers, title="信用卡挂失流程", visibility="public")
        notice = "信用卡遗失请立即致电 95588 挂失，臨時額度於 24 小時內恢復。".encode() * 200
        up = await upload_ok(client, admin.headers, item["id"], [("挂失须知.txt", notice)])
        att = up["attachments"][0]
        r = await b.get(f"/api/v1/attachments/{att['id']}/content", headers=admin.headers)
        assert r.status_code == 200 and r.content == notice
        r = await b.get(f"/api/v1/attachments/{att['id']}/content", headers={**admin.headers, "Range": "bytes=3-20"})
        assert r.status_code == 206 and r.content == notice[3:21]
        # and the other way round: host B uploads, host A serves
        up_b = await upload_ok(b, admin.headers, item["id"], [("补卡.txt", "补办新卡需携带身份证原件。".encode())])
        new = next(a for a in up_b["attachments"] if a["file_name"] == "补卡.txt")
        r = await client.get(f"/api/v1/attachments/{new['id']}/content", headers=admin.headers)
        assert r.status_code == 200 and r.content.decode() == "补办新卡需携带身份证原件。"
        assert not (tmp_path / "host-b" / "blobs").exists() and not (settings.data_dir / "blobs").exists()
