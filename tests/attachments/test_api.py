"""Attachments over the API, on SQLite and PostgreSQL, with the real worker and real in-process Tika:
upload (streamed, deduplicated, typed from the bytes), extraction, search, download with ranges,
previews, and the permission and version rules."""

from __future__ import annotations

import asyncio
import functools
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.attachments.extraction import InProcessTikaExtractor, TikaServerExtractor
from app.core.config import Settings
from app.main import create_app
from tests.attachments.api_helpers import (
    BOUNDARY,
    CTYPE,
    act,
    blob_files,
    counts,
    create_item,
    drain,
    etag,
    exe_bytes,
    jobs,
    mp4_bytes,
    multipart,
    part_head,
    publish,
    random_chunks,
    sha,
    streamed,
    temp_files,
    upload,
    upload_ok,
)
from tests.attachments.conftest import SIMPLIFIED, TRADITIONAL
from tests.conftest import Actor, People, assert_problem

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


@pytest.fixture
async def tika(app: Any, extractor: InProcessTikaExtractor) -> AsyncIterator[Any]:
    """The app's worker uses the session's in-process Tika pool (one warm child instead of one per test)."""
    own = app.state.services["extractor"]
    app.state.services["extractor"] = extractor
    yield app
    app.state.services["extractor"] = own


async def attachment(client: httpx.AsyncClient, h: dict[str, str], att_id: int, sub: str = "") -> httpx.Response:
    return await client.get(f"/api/v1/attachments/{att_id}{sub}", headers=h)


async def test_office_files_extracted_searchable_downloadable_and_previewed(
    client: httpx.AsyncClient, admin: Actor, people: People, tika: Any, generated: dict[str, Path]
) -> None:
    h = admin.headers
    item = await create_item(client, h, title="网络故障处理手册", visibility="public")
    names = {"docx": "宽带故障处理.docx", "xlsx": "客服话术.xlsx", "pptx": "培训课件.pptx", "pdf": "光猫手册.pdf"}
    data = {k: generated[k].read_bytes() for k in names}
    up = await upload_ok(client, h, item["id"], [(names[k], data[k]) for k in names])
    assert up["version"] == 1 and up["created_draft"] is False
    got = {a["file_name"]: a for a in up["attachments"]}
    assert set(got) == set(names.values())
    assert got["宽带故障处理.docx"]["mime"] == DOCX and got["客服话术.xlsx"]["mime"] == XLSX
    assert got["培训课件.pptx"]["mime"] == PPTX and got["光猫手册.pdf"]["mime"] == "application/pdf"
    pdf = got["光猫手册.pdf"]
    assert pdf["sha256"] == sha(data["pdf"]) and pdf["size"] == len(data["pdf"])
    assert pdf["extraction_status"] == "pending" and pdf["versions"] == [1]
    docx = got["宽带故障处理.docx"]
    assert_problem(await attachment(client, h, docx["id"], "/preview"), 409, "preview_not_ready")

    await drain(tika)
    for a in up["attachments"]:
        text = (await attachment(client, h, a["id"], "/text")).json()
        assert text["status"] == "done", text
        assert SIMPLIFIED in text["text"] and TRADITIONAL in text["text"], (a["file_name"], text["text"][:200])
    meta = (await attachment(client, h, pdf["id"])).json()
    assert meta["extraction_status"] == "done" and meta["page_count"] == 2 and meta["language"] == "zh-Hans"
    assert meta["item_id"] == item["id"] and meta["versions"] == [1] and meta["preview"] == "inline"
    assert meta["metadata"].get("Content-Type", "").startswith("application/pdf")

    # published: the attachment text is searchable, the highlight names the file
    await publish(client, h, item["id"], 1)
    await drain(tika)
    agent = await people.make("zhang.wei", role="agent")
    r = await client.get("/api/v1/search", params={"q": "指示灯"}, headers=agent.headers)
    assert r.status_code == 200, r.text
    hits = r.json()["items"]
    assert [x["item_id"] for x in hits] == [item["id"]]
    marks = [x for x in hits[0]["highlights"] if x["field"] == "attachment"]
    assert marks and {m["file_name"] for m in marks} <= set(names.values()), hits[0]["highlights"]
    assert any("<em>指示灯</em>" in f for m in marks for f in m["fragments"])

    # download: whole, one range, a suffix, unsatisfiable, conditional
    url = f"/api/v1/attachments/{pdf['id']}/content"
    r = await client.get(url, headers=agent.headers)
    assert r.status_code == 200 and r.content == data["pdf"]
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["accept-ranges"] == "bytes" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["etag"] == f'"{pdf["sha256"]}"'
    assert r.headers["content-disposition"] == (
        f"attachment; filename=\"attachment-{pdf['id']}.pdf\"; filename*=UTF-8''{quote('光猫手册.pdf')}"
    )
    r = await client.get(url, headers={**agent.headers, "Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.content == data["pdf"][100:1100]
    assert r.headers["content-range"] == f"bytes 100-1099/{len(data['pdf'])}" and r.headers["content-length"] == "1000"
    r = await client.get(url, headers={**agent.headers, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data["pdf"][-10:]
    r = await client.get(url, headers={**agent.headers, "Range": f"bytes={len(data['pdf'])}-"})
    assert_problem(r, 416, "range_not_satisfiable")
    assert r.headers["content-range"] == f"bytes */{len(data['pdf'])}"
    r = await client.get(url, headers={**agent.headers, "If-None-Match": f'"{pdf["sha256"]}"'})
    assert r.status_code == 304 and not r.content
    r = await client.get(url, headers={**agent.headers, "Range": "bytes=0-9", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == data["pdf"]

    # previews: the PDF inline, the Word file as sanitized HTML in a locked-down page
    r = await attachment(client, agent.headers, pdf["id"], "/preview")
    assert r.status_code == 200 and r.content == data["pdf"]
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"].startswith("inline; ")
    r = await attachment(client, agent.headers, docx["id"], "/preview")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<h1>宽带故障处理</h1>" in r.text and f"<p>{SIMPLIFIED}</p>" in r.text
    assert "<script" not in r.text.lower()
    r = await attachment(client, agent.headers, got["客服话术.xlsx"]["id"], "/preview")
    assert r.status_code == 200 and "<table>" in r.text and TRADITIONAL in r.text


REAL = {  # sample -> (detected type, extraction status, a needle in /text or the reason's start, preview)
    "testWORD.doc": ("application/msword", "done", "Sample Word Document", "html"),
    "testMSG_chinese.msg": ("application/vnd.ms-outlook", "done", "張毓倫", "html"),
    "gbk.zip": ("application/zip", "done", "审计压缩包文件检索测试", "html"),
    "testTXTNonASCIIUTF8.txt": ("text/plain", "done", "Der schnelle braune Fuchs", "text"),
    "testHTML_utf8.html": ("text/html", "done", "åäö", "text"),
    "testPNG.png": ("image/png", "skipped", "media type image/png", "inline"),
    "testMP3i18n.mp3": ("audio/mpeg", "skipped", "media type audio/mpeg", "inline"),
    "testWORD_protected_passtika.docx": ("application/x-tika-ooxml-protected", "failed", "encrypted", "none"),
    "testZIP_corrupted_oom.zip": ("application/zip", "failed", "corrupt archive", "none"),
}


async def test_real_world_samples(client: httpx.AsyncClient, admin: Actor, tika: Any, samples: Path) -> None:
    h = admin.headers
    item = await create_item(client, h)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script><circle r="4"/></svg>'
    up = await upload_ok(client, h, item["id"], [*((n, (samples / n).read_bytes()) for n in REAL), ("图标.svg", svg)])
    by_name = {a["file_name"]: a for a in up["attachments"]}
    assert {n: by_name[n]["mime"] for n in REAL} == {n: REAL[n][0] for n in REAL}
    # SVG can carry scripts: its preview is its source as plain text, never an image
    r = await attachment(client, h, by_name["图标.svg"]["id"], "/preview")
    assert r.headers["content-type"] == "text/plain; charset=utf-8" and r.content == svg
    assert by_name["图标.svg"]["mime"] == "image/svg+xml" and by_name["图标.svg"]["preview"] == "text"
    await drain(tika)
    failed_jobs = [j for j in await jobs(tika, "attachments.extract") if j.status != "done"]
    assert failed_jobs == []
    for name, (_, status, needle, preview) in REAL.items():
        att = by_name[name]
        text = (await attachment(client, h, att["id"], "/text")).json()
        assert text["status"] == status, (name, text["reason"])
        if status == "done":
            assert needle in text["text"], (name, text["text"][:300])
        else:
            assert text["reason"] and needle in text["reason"], (name, text["reason"])
        meta = (await attachment(client, h, att["id"])).json()
        assert meta["preview"] == preview, name
        r = await attachment(client, h, att["id"], "/preview")
        if preview == "none":
            assert_problem(r, 415, "no_preview")
        else:
            assert r.status_code == 200, (name, r.text[:300])
    txt = await attachment(client, h, by_name["testTXTNonASCIIUTF8.txt"]["id"], "/preview")
    assert txt.headers["content-type"] == "text/plain; charset=utf-8" and "Fuchs" in txt.text
    page = await attachment(client, h, by_name["testHTML_utf8.html"]["id"], "/preview")
    assert page.headers["content-type"].startswith("text/plain")  # the source, never rendered
    msg = await attachment(client, h, by_name["testMSG_chinese.msg"]["id"], "/preview")
    assert msg.headers["content-type"] == "text/html; charset=utf-8" and "張毓倫" in msg.text
    png = await attachment(client, h, by_name["testPNG.png"]["id"], "/preview")
    assert png.headers["content-type"] == "image/png" and png.content == (samples / "testPNG.png").read_bytes()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@functools.cache
def nested_zip_bomb() -> bytes:
    leaf = zip_bytes({"话术.txt": (SIMPLIFIED + "\n").encode() * 400_000})  # ~27 MB of text
    bomb = leaf
    for level in range(6):  # 64 copies nested six deep: 1.7 GB of text if nothing stopped it
        bomb = zip_bytes({f"{level}a.zip": bomb, f"{level}b.zip": bomb})
    return bomb


def encrypted_pdf(path: Path) -> bytes:
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(
        str(path), encrypt=pdfencrypt.StandardEncryption("user-pw", ownerPassword="owner-pw", strength=128)
    )
    c.drawString(50, 800, "confidential tariff sheet")
    c.showPage()
    c.save()
    return path.read_bytes()


async def test_hostile_and_broken_files_end_in_a_clear_status(
    client: httpx.AsyncClient, admin: Actor, tika: Any, generated: dict[str, Path], tmp_path: Path
) -> None:
    h = admin.headers
    item = await create_item(client, h)
    docx = generated["docx"].read_bytes()
    bomb = nested_zip_bomb()
    exe = exe_bytes()
    files = {
        "账单.pdf": exe,  # lies about its type
        "截断.docx": docx[:300],
        "半个.docx": docx[: len(docx) // 2],
        "加密.pdf": encrypted_pdf(tmp_path / "enc.pdf"),
        "炸弹.zip": bomb,
    }
    up = await upload_ok(client, h, item["id"], list(files.items()))
    got = {a["file_name"]: a for a in up["attachments"]}
    assert got["账单.pdf"]["mime"] == "application/x-msdownload"
    await drain(tika)
    assert [j.status for j in await jobs(tika, "attachments.extract")] == ["done"] * 5  # none crashed

    async def status(name: str) -> dict[str, Any]:
        return (await attachment(client, h, got[name]["id"], "/text")).json()

    exe_text = await status("账单.pdf")
    assert (exe_text["status"], exe_text["reason"]) == ("skipped", "unsupported type application/x-msdownload")
    broken = await status("截断.docx")
    assert broken["status"] == "failed" and broken["reason"].startswith("corrupt"), broken
    half = await status("半个.docx")  # the local headers survive: Tika recovers the text
    assert half["status"] == "done" and SIMPLIFIED in half["text"]
    locked = await status("加密.pdf")
    assert (locked["status"], locked["reason"]) == ("failed", "encrypted: password-protected document")
    boom = await status("炸弹.zip")
    assert (boom["status"] == "failed" and boom["reason"].startswith("suspected zip bomb")) or (
        boom["status"] == "done" and boom["truncated"]
    ), boom
    assert len(boom["text"]) <= tika.state.settings.extraction_max_chars

    r = await attachment(client, h, got["账单.pdf"]["id"], "/content")
    assert r.headers["content-type"] == "application/x-msdownload" and r.content == exe
    assert r.headers["content-disposition"].startswith('attachment; filename="attachment-')
    assert_problem(await attachment(client, h, got["账单.pdf"]["id"], "/preview"), 415, "no_preview")

    # a blob lost from storage before extraction: a status, not a crash; the download says what happened
    lost = (await upload_ok(client, h, item["id"], [("丢失.txt", b"lost before extraction")]))["attachments"][0]
    tika.state.services["blobs"].path_for(lost["sha256"]).unlink()
    # the worker is still fine: the next file is extracted as usual
    more = await upload_ok(client, h, item["id"], [("正常.docx", docx)])
    await drain(tika)
    assert (await attachment(client, h, more["attachments"][0]["id"], "/text")).json()["status"] == "done"
    gone = (await attachment(client, h, lost["id"], "/text")).json()
    assert (gone["status"], gone["reason"]) == ("failed", "file missing")
    assert_problem(await attachment(client, h, lost["id"], "/content"), 404, "content_missing")
    assert {j.status for j in await jobs(tika, "attachments.extract")} == {"done"}


async def test_large_video_is_streamed_in_and_out_not_extracted(
    client: httpx.AsyncClient, admin: Actor, tika: Any
) -> None:
    h = admin.headers
    item = await create_item(client, h)
    video = mp4_bytes(5 * 1024 * 1024 + 123)
    chunks = [video[i : i + 64 * 1024] for i in range(0, len(video), 64 * 1024)]
    r = await client.post(
        f"/api/v1/items/{item['id']}/attachments",
        content=streamed([("培训录像.mp4", chunks)]),
        headers={**h, "Content-Type": CTYPE},
    )
    assert r.status_code == 201, r.text
    att = r.json()["attachments"][0]
    assert (att["mime"], att["size"], att["sha256"]) == ("video/mp4", len(video), sha(video))
    await drain(tika)
    meta = (await attachment(client, h, att["id"])).json()
    assert meta["extraction_status"] == "skipped" and meta["extraction_reason"].startswith("media type video/mp4")
    assert meta["preview"] == "inline"
    url = f"/api/v1/attachments/{att['id']}/preview"
    r = await client.get(url, headers={**h, "Range": "bytes=1048576-2097151"})
    assert r.status_code == 206 and r.content == video[1048576:2097152]
    assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-range"] == f"bytes 1048576-2097151/{len(video)}"
    r = await client.get(url, headers={**h, "Range": f"bytes={len(video) - 100}-"})
    assert r.status_code == 206 and r.content == video[-100:]
    r = await client.get(url, headers={**h, "Range": "bytes=0-1,5-9"})  # several ranges: the whole file
    assert r.status_code == 200 and len(r.content) == len(video)
    r = await client.get(f"/api/v1/attachments/{att['id']}/content", headers=h)
    assert r.status_code == 200 and sha(r.content) == att["sha256"]
    assert r.headers["content-disposition"] == (
        f"attachment; filename=\"attachment-{att['id']}.mp4\"; filename*=UTF-8''{quote('培训录像.mp4')}"
    )


async def test_bad_names_and_bodies(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    h = admin.headers
    item = await create_item(client, h)
    iid = item["id"]
    url = f"/api/v1/items/{iid}/attachments"
    body = b"hello"

    assert_problem(await upload(client, h, iid, [("空文件.txt", b"")]), 422, "empty_file")
    assert_problem(await upload(client, h, iid, [("", body)]), 422, "invalid_file_name")
    assert_problem(await upload(client, h, iid, [(None, body)]), 422, "invalid_file_name")
    assert_problem(await upload(client, h, iid, [("\x01\x02\x7f", body)]), 422, "invalid_file_name")
    assert_problem(await upload(client, h, iid, [("../..", body)]), 422, "invalid_file_name")
    # a good file and an empty one: the request fails as a whole, the good blob is not left behind
    assert_problem(await upload(client, h, iid, [("好.txt", b"good file"), ("坏.txt", b"")]), 422, "empty_file")
    r = await client.post(
        url, headers={**h, "Content-Type": CTYPE}, content=multipart([("x.txt", body)], field="attachment")
    )
    assert_problem(r, 422, "unexpected_field")
    r = await client.post(url, headers={**h, "Content-Type": CTYPE}, content=f"--{BOUNDARY}--\r\n".encode())
    assert_problem(r, 422, "no_files")
    r = await client.post(url, headers={**h, "Content-Type": CTYPE}, content=part_head("cut.txt") + b"no end")
    assert_problem(r, 422, "malformed_multipart")
    r = await client.post(url, headers={**h, "Content-Type": "multipart/form-data"}, content=b"x")
    assert_problem(r, 422, "malformed_multipart")
    assert_problem(await client.post(url, headers=h, json={"files": ["x"]}), 415, "unsupported_media_type")
    assert blob_files(app) == [] and temp_files(app) == []
    assert await counts(app) == {"blobs": 0, "blob_texts": 0, "attachments": 0, "links": 0, "extract_jobs": 0}

    # names: path parts dropped, control and bidi characters removed, Chinese kept, raw GBK understood
    up = await upload_ok(
        client,
        h,
        iid,
        [
            ("../../etc/passwd", b"root:x:0:0"),
            ("C:\\Users\\坐席\\报表\x01\x1f.txt", b"report"),
            ("发票\u202egpj.exe", b"invoice"),
            ("投诉记录.txt".encode("gbk"), b"complaint"),
        ],
    )
    assert [a["file_name"] for a in up["attachments"]] == ["passwd", "报表.txt", "发票gpj.exe", "投诉记录.txt"]
    r = await client.post(
        url,
        headers={**h, "Content-Type": CTYPE},
        content=multipart([(None, b"extended")], extra="; filename*=UTF-8''%E5%B7%A5%E5%8D%95.txt"),
    )
    assert r.status_code == 201 and r.json()["attachments"][0]["file_name"] == "工单.txt"
    assert r.json()["attachments"][0]["mime"] == "text/plain"


async def test_limits_and_disconnects_leave_no_blob_and_no_row(
    client: httpx.AsyncClient, admin: Actor, app: Any, settings: Settings
) -> None:
    h = admin.headers
    item = await create_item(client, h)
    url = f"/api/v1/items/{item['id']}/attachments"
    app.state.settings.max_upload_file_bytes = 1_000_000
    nothing = {"blobs": 0, "blob_texts": 0, "attachments": 0, "links": 0, "extract_jobs": 0}

    async def post(body: AsyncIterator[bytes], **headers: str) -> httpx.Response:
        return await client.post(url, content=body, headers={**h, "Content-Type": CTYPE, **headers})

    # over the per-file limit: refused as soon as the limit is passed, long before the end of the body
    pulled: list[int] = []
    r = await post(streamed([("大文件.bin", random_chunks(3_000_000))], pulled=pulled))
    body = assert_problem(r, 413, "file_too_large")
    assert body["limit"] == 1_000_000 and body["file_name"] == "大文件.bin"
    assert 1_000_000 < sum(pulled) < 1_200_000
    # a good file first, then one over the limit: the good one goes too
    r = await post(streamed([("小.bin", random_chunks(50_000, seed=2)), ("大.bin", random_chunks(3_000_000, seed=3))]))
    assert_problem(r, 413, "file_too_large")
    assert blob_files(app) == [] and temp_files(app) == [] and await counts(app) == nothing

    # a declared Content-Length over the request limit is refused before anything is read
    r = await client.post(
        url,
        content=b"x",
        headers={**h, "Content-Type": CTYPE, "Content-Length": str(settings.max_upload_request_bytes + 1)},
    )
    assert_problem(r, 413, "payload_too_large")

    # no Content-Length (chunked): the middleware stops the body at the request limit, mid-file
    small = create_app(settings.model_copy(update={"max_upload_request_bytes": 400_000}))
    async with LifespanManager(small):
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            body = streamed([("a.bin", random_chunks(200_000, seed=8)), ("b.bin", random_chunks(900_000, seed=9))])
            r = await c.post(url, headers={**h, "Content-Type": CTYPE}, content=body)
            assert_problem(r, 413, "payload_too_large")
    assert blob_files(app) == [] and temp_files(app) == [] and await counts(app) == nothing

    # the client dies in the middle of the second file (after the first was stored)
    r = await post(
        streamed([("一.bin", random_chunks(200_000, seed=4)), ("二.bin", random_chunks(500_000, seed=5))], fail_after=6)
    )
    assert r.status_code >= 400
    assert blob_files(app) == [] and temp_files(app) == [] and await counts(app) == nothing

    # a real disconnect message from the server (Starlette raises ClientDisconnect)
    head = streamed([("三.bin", random_chunks(300_000, seed=6))])
    chunks = [c async for c in head][:4]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("test", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", CTYPE.encode()), *((k.lower().encode(), v.encode()) for k, v in h.items())],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert blob_files(app) == [] and temp_files(app) == [] and await counts(app) == nothing


async def test_who_may_upload_see_and_fetch(
    client: httpx.AsyncClient, admin: Actor, people: People, app: Any, generated: dict[str, Path]
) -> None:
    h = admin.headers
    item = await create_item(client, h, title="信用卡挂失流程")
    iid = item["id"]
    a = (await upload_ok(client, h, iid, [("挂失说明.docx", generated["docx"].read_bytes())]))["attachments"][0]
    agent = await people.make("zhang.wei", role="agent")
    # a draft-only attachment does not exist for an agent, by any route
    for sub in ("", "/text", "/content", "/preview"):
        assert_problem(await attachment(client, agent.headers, a["id"], sub), 404, "attachment_not_found")
    assert_problem(await client.get(f"/api/v1/items/{iid}/attachments", headers=agent.headers), 404)
    await publish(client, h, iid, 1)
    assert (await attachment(client, agent.headers, a["id"])).json()["versions"] == [1]
    assert (await attachment(client, agent.headers, a["id"], "/content")).status_code == 200

    # knowledge:read without attachments:download: metadata and text, never the file
    reader = await people.make(
        "li.na", permissions=["system:access", "module:knowledge", "module:attachments", "knowledge:read"]
    )
    assert (await attachment(client, reader.headers, a["id"])).status_code == 200
    assert (await attachment(client, reader.headers, a["id"], "/text")).status_code == 200
    for sub in ("/content", "/preview"):
        for extra in ({}, {"Range": "bytes=0-99"}):
            r = await client.get(f"/api/v1/attachments/{a['id']}{sub}", headers={**reader.headers, **extra})
            body = assert_problem(r, 403, "permission_denied")
            assert body["required_permission"] == "attachments:download"
    # the download permission alone does not replace the right to read content
    fetcher = await people.make("dl.only", permissions=["system:access", "module:attachments", "attachments:download"])
    r = await attachment(client, fetcher.headers, a["id"], "/content")
    assert assert_problem(r, 403, "permission_denied")["required_permission"] == "knowledge:read"

    # uploads: an agent may not edit at all; an author outside the item's edit grant may read (403);
    # with a read grant that leaves them out, the item does not exist for them (404)
    author = await people.make("wang.fang", role="author")
    assert_problem(await upload(client, agent.headers, iid, [("x.txt", b"x")]), 403, "permission_denied")
    r = await client.put(
        f"/api/v1/items/{iid}/acl",
        headers=h,
        json={
            "grants": [
                {"subject": f"user:{admin.user.id}", "access": "edit"},
                {"subject": "internal", "access": "read"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert_problem(await upload(client, author.headers, iid, [("x.txt", b"x")]), 403, "permission_denied")
    assert_problem(await client.delete(f"/api/v1/items/{iid}/attachments/{a['id']}", headers=author.headers), 403)
    r = await client.put(
        f"/api/v1/items/{iid}/acl", headers=h, json={"grants": [{"subject": f"user:{admin.user.id}", "access": "read"}]}
    )
    assert r.status_code == 200, r.text
    assert_problem(await upload(client, author.headers, iid, [("x.txt", b"x")]), 404, "item_not_found")
    assert_problem(await attachment(client, author.headers, a["id"]), 404, "attachment_not_found")
    assert_problem(await attachment(client, agent.headers, a["id"], "/content"), 404, "attachment_not_found")
    assert blob_files(app) and len(blob_files(app)) == 1  # the refused uploads stored nothing


async def test_versions_carry_their_own_attachment_sets(
    client: httpx.AsyncClient, admin: Actor, people: People, app: Any, generated: dict[str, Path]
) -> None:
    h = admin.headers
    agent = await people.make("zhang.wei", role="agent")
    item = await create_item(client, h, title="携号转网办理")
    iid = item["id"]
    a = (await upload_ok(client, h, iid, [("办理指南.docx", generated["docx"].read_bytes())]))["attachments"][0]
    await publish(client, h, iid, 1)

    async def listed(actor: Actor, version: int | None = None) -> list[str]:
        params = {"version": version} if version else {}
        r = await client.get(f"/api/v1/items/{iid}/attachments", params=params, headers=actor.headers)
        assert r.status_code == 200, r.text
        return [x["file_name"] for x in r.json()["items"]]

    # adding to a published item opens a new draft; the published version does not change
    before = await etag(client, h, iid)
    up = await upload_ok(client, h, iid, [("补充话术.txt", "携号转网需满足在网时长。".encode())])
    b = up["attachments"][0]
    assert (up["version"], up["created_draft"]) == (2, True) and up["etag"] != before
    assert await listed(admin, 1) == ["办理指南.docx"] and await listed(admin, 2) == ["办理指南.docx", "补充话术.txt"]
    assert await listed(admin) == ["办理指南.docx", "补充话术.txt"] and await listed(agent) == ["办理指南.docx"]
    assert_problem(
        await client.get(f"/api/v1/items/{iid}/attachments", params={"version": 2}, headers=agent.headers),
        404,
        "version_not_found",
    )
    assert_problem(await attachment(client, agent.headers, b["id"]), 404, "attachment_not_found")
    assert (await attachment(client, h, a["id"])).json()["versions"] == [1, 2]

    # the same bytes under the same name attach once; under another name they share the blob
    again = await upload_ok(client, h, iid, [("补充话术.txt", "携号转网需满足在网时长。".encode())])
    assert again["attachments"][0]["id"] == b["id"] and again["version"] == 2 and not again["created_draft"]
    copy = (await upload_ok(client, h, iid, [("话术副本.txt", "携号转网需满足在网时长。".encode())]))["attachments"][0]
    assert copy["id"] != b["id"] and copy["sha256"] == b["sha256"]
    c = await counts(app)
    assert (c["blobs"], c["attachments"], c["extract_jobs"], len(blob_files(app))) == (2, 3, 2, 2)
    # two uploads of the same new bytes at the same moment, to two items: one blob, one extraction
    other = await create_item(client, h, title="另一条知识")
    same = [("同一文件.bin", b"\x00\x01identical bytes" * 1000)]
    r1, r2 = await asyncio.gather(upload(client, h, iid, same), upload(client, h, other["id"], same))
    assert (r1.status_code, r2.status_code) == (201, 201), (r1.text, r2.text)
    c = await counts(app)
    assert (c["blobs"], c["attachments"], c["extract_jobs"], len(blob_files(app))) == (3, 5, 3, 3)

    # removing from the draft leaves the published version alone
    url = f"/api/v1/items/{iid}/attachments/{a['id']}"
    assert_problem(await client.delete(url, headers=h), 428, "precondition_required")
    assert_problem(await client.delete(url, headers={**h, "If-Match": '"item-1-1"'}), 412)
    r = await client.delete(url, headers={**h, "If-Match": await etag(client, h, iid)})
    assert r.status_code == 204 and r.headers["etag"] == await etag(client, h, iid)
    assert_problem(await client.delete(url, headers={**h, "If-Match": r.headers["etag"]}), 404, "attachment_not_found")
    assert await listed(admin, 2) == ["补充话术.txt", "话术副本.txt", "同一文件.bin"]
    assert await listed(agent) == ["办理指南.docx"]
    assert (await attachment(client, agent.headers, a["id"], "/content")).status_code == 200

    # publishing the draft switches what readers see
    await publish(client, h, iid, 2)
    assert await listed(agent) == ["补充话术.txt", "话术副本.txt", "同一文件.bin"]
    assert_problem(await attachment(client, agent.headers, a["id"]), 404, "attachment_not_found")
    # restoring version 1 restores its attachment set
    r = await client.post(
        f"/api/v1/items/{iid}/versions/1/restore", headers={**h, "If-Match": await etag(client, h, iid)}
    )
    assert r.status_code == 201, r.text
    assert await listed(admin, 3) == ["办理指南.docx"]
    assert await listed(agent) == ["补充话术.txt", "话术副本.txt", "同一文件.bin"]
    # an open draft restored over (replace=true) takes the old set too
    await upload_ok(client, h, iid, [("临时.txt", b"tmp")])
    r = await client.post(
        f"/api/v1/items/{iid}/versions/2/restore",
        params={"replace": "true"},
        headers={**h, "If-Match": await etag(client, h, iid)},
    )
    assert r.status_code == 201, r.text
    assert await listed(admin, 3) == ["补充话术.txt", "话术副本.txt", "同一文件.bin"]

    # a version in review is locked; an archived item takes no files
    await act(client, h, iid, 3, "submit")
    assert_problem(await upload(client, h, iid, [("x.txt", b"x")]), 409, "version_locked")
    assert_problem(
        await client.delete(
            f"/api/v1/items/{iid}/attachments/{b['id']}", headers={**h, "If-Match": await etag(client, h, iid)}
        ),
        409,
        "version_locked",
    )
    await act(client, h, iid, 3, "withdraw")
    await act(client, h, iid, 2, "archive")
    assert_problem(await upload(client, h, iid, [("x.txt", b"x")]), 409, "item_archived")
    r = await client.get("/api/v1/audit", params={"target_type": "item", "target_id": str(iid)}, headers=h)
    actions = [e["action"] for e in r.json()["items"]]
    assert actions.count("item.attachments_add") == 6 and actions.count("item.attachment_remove") == 1


async def test_orphans_are_collected_after_the_grace_period(
    client: httpx.AsyncClient, admin: Actor, tika: Any, generated: dict[str, Path]
) -> None:
    app = tika
    h = admin.headers
    item = await create_item(client, h)
    up = await upload_ok(client, h, item["id"], [("留.docx", generated["docx"].read_bytes()), ("删.txt", b"remove me")])
    keep, gone = up["attachments"]
    r = await client.delete(
        f"/api/v1/items/{item['id']}/attachments/{gone['id']}",
        headers={**h, "If-Match": await etag(client, h, item["id"])},
    )
    assert r.status_code == 204
    assert (await counts(app))["attachments"] == 1  # no version carries it: the row went at once
    store = app.state.services["blobs"]
    stray = store.path_for(sha(b"stray"))
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"stray")  # a file without a row (a crash between rename and commit)
    store.temp_dir.mkdir(parents=True, exist_ok=True)
    (store.temp_dir / "upload-crashed").write_bytes(b"half")

    async def collect(body: dict[str, Any] | None) -> dict[str, Any]:
        r = await client.post("/api/v1/attachments/collect-orphans", headers=h, json=body)
        assert r.status_code == 202, r.text
        await drain(app)
        job = (await client.get(r.json()["href"], headers=h)).json()
        assert job["status"] == "done", job
        return job["result"]

    young = await collect(None)  # the default hour of grace: everything is too young to go
    assert young["blob_rows"] == 0 and young["stray_files"] == 0 and young["temp_files"] == 0
    assert len(blob_files(app)) == 3
    report = await collect({"grace_seconds": 0})
    assert (report["blob_rows"], report["blob_files"], report["stray_files"], report["temp_files"]) == (1, 1, 1, 1)
    assert blob_files(app) == [store.path_for(keep["sha256"])] and temp_files(app) == []
    c = await counts(app)
    assert (c["blobs"], c["blob_texts"], c["attachments"]) == (1, 1, 1)  # the text went with its blob
    assert (await attachment(client, h, keep["id"], "/content")).content == generated["docx"].read_bytes()
    assert_problem(
        await client.post("/api/v1/attachments/collect-orphans", headers=h, json={"grace_seconds": -1}),
        422,
        "validation_error",
    )


async def test_orphan_collection_keeps_one_run_scheduled(app: Any, client: httpx.AsyncClient, admin: Actor) -> None:
    from datetime import timedelta

    from sqlalchemy import select, update

    from app.attachments.jobs import schedule_orphan_collection
    from app.core.db import utcnow
    from app.workers.models import Job
    from app.workers.outbox import SCHEDULER

    async def scheduled() -> list[Job]:
        async with app.state.sessionmaker() as s:
            return list((await s.scalars(select(Job).where(Job.created_by == SCHEDULER).order_by(Job.id))).all())

    async with app.state.sessionmaker() as s:
        assert await schedule_orphan_collection(s, 0) is False  # off
        assert await schedule_orphan_collection(s, 24) is True
        await s.commit()
        assert await schedule_orphan_collection(s, 24) is False  # one is queued already
    [first] = await scheduled()
    assert first.kind == "attachments.collect_orphans" and first.status == "pending"
    assert timedelta(hours=23.9) < first.run_after - utcnow() <= timedelta(hours=24)
    # its time comes: it collects, and queues the next run
    async with app.state.sessionmaker() as s:
        await s.execute(update(Job).where(Job.id == first.id).values(run_after=utcnow()))
        await s.commit()
    await drain(app)
    done, second = await scheduled()
    assert (done.status, done.result["next_scheduled"], second.status) == ("done", True, "pending")
    assert second.run_after - utcnow() > timedelta(hours=23.9)
    # a collection asked for by hand leaves that one scheduled run alone
    r = await client.post("/api/v1/attachments/collect-orphans", headers=admin.headers, json={"grace_seconds": 0})
    assert r.status_code == 202, r.text
    await drain(app)
    job = (await client.get(r.json()["href"], headers=admin.headers)).json()
    assert (job["status"], job["result"]["next_scheduled"]) == ("done", False)
    assert [j.status for j in await scheduled()] == ["done", "pending"]


async def test_start_up_schedules_the_orphan_collection_once(settings: Settings) -> None:
    from sqlalchemy import func, select

    from app.workers.models import Job

    async def scheduled_after_start(hours: float) -> int:
        application = create_app(settings.model_copy(update={"orphan_collect_hours": hours}))
        async with LifespanManager(application), application.state.sessionmaker() as s:
            return (
                await s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.created_by == "scheduler", Job.kind == "attachments.collect_orphans")
                )
                or 0
            )

    assert await scheduled_after_start(0) == 0  # off: collected only when asked
    assert await scheduled_after_start(24) == 1
    assert await scheduled_after_start(24) == 1  # a restart (or a second API process) finds it queued


async def test_extractor_outage_is_retried_and_reindexes_when_it_ends(
    client: httpx.AsyncClient, admin: Actor, tika: Any, generated: dict[str, Path]
) -> None:
    """tika-server down: the job retries with backoff, then parks failed and says so on the blob; the
    item is published and indexed meanwhile; a retry after the outage extracts and reindexes it."""
    h = admin.headers
    real = tika.state.services["extractor"]
    tika.state.services["extractor"] = TikaServerExtractor("http://127.0.0.1:9")  # nothing listens there
    try:
        item = await create_item(client, h, title="停机公告")
        att = await upload_ok(client, h, item["id"], [("停机维护.docx", generated["docx"].read_bytes())])
        att = att["attachments"][0]
        await drain(tika)
        [job] = await jobs(tika, "attachments.extract")
        assert (job.status, job.attempts) == ("failed", job.max_attempts)
        assert "ExtractorUnavailable" in (job.last_error or "")
        meta = (await attachment(client, h, att["id"])).json()
        assert meta["extraction_status"] == "failed" and meta["extraction_reason"].startswith("extractor unavailable")
        await publish(client, h, item["id"], 1)
        await drain(tika)
        r = await client.get("/api/v1/search", params={"q": "指示灯"}, headers=h)
        assert r.json()["items"] == []
    finally:
        tika.state.services["extractor"] = real
    r = await client.post(f"/api/v1/jobs/{job.id}/retry", headers=h)
    assert r.status_code == 200, r.text
    await drain(tika)
    assert (await attachment(client, h, att["id"])).json()["extraction_status"] == "done"
    index_jobs = await jobs(tika, "search.index_item")
    assert index_jobs[-1].payload == {"item_id": item["id"]} and index_jobs[-1].status == "done"
    r = await client.get("/api/v1/search", params={"q": "指示灯"}, headers=h)
    assert [x["item_id"] for x in r.json()["items"]] == [item["id"]]
