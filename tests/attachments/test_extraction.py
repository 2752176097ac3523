from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.attachments.detect import detect_file
from app.attachments.extraction import (
    ExtractionLimits,
    ExtractionResult,
    ExtractorUnavailable,
    InProcessTikaExtractor,
    TikaServerExtractor,
    build_extractor,
    guess_language,
)

SIMPLIFIED = "宽带无法上网时，请先重启光猫，再检查指示灯。"
TRADITIONAL = "寬頻無法上網時請重新啟動數據機"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def extract_detected(ex: InProcessTikaExtractor, path: Path, **limits: object) -> ExtractionResult:
    mime = await asyncio.to_thread(lambda: detect_file(path, path.name).mime)
    return await ex.extract(path, mime, ExtractionLimits(**limits))  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# generated documents with Chinese call-center text


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx", "pdf"])
async def test_generated_documents_give_chinese_text(
    extractor: InProcessTikaExtractor, generated: dict[str, Path], kind: str
) -> None:
    result = await extract_detected(extractor, generated[kind])
    assert result.status == "done", result.reason
    assert result.reason is None
    assert SIMPLIFIED in result.text
    assert TRADITIONAL in result.text
    assert result.metadata.get("truncated") is None


async def test_pdf_has_pages_and_no_html_preview(extractor: InProcessTikaExtractor, generated: dict[str, Path]) -> None:
    result = await extract_detected(extractor, generated["pdf"])
    assert result.page_count == 2
    assert "第二页：光猫指示灯说明" in result.text
    assert result.content_type == "application/pdf"
    assert result.html is None  # browsers show PDFs themselves


async def test_office_files_get_a_sanitized_html_preview(
    extractor: InProcessTikaExtractor, generated: dict[str, Path]
) -> None:
    docx = await extract_detected(extractor, generated["docx"])
    assert docx.html is not None
    assert "<h1>宽带故障处理</h1>" in docx.html
    assert f"<p>{SIMPLIFIED}</p>" in docx.html
    assert "<meta" not in docx.html and "<html" not in docx.html
    xlsx = await extract_detected(extractor, generated["xlsx"])
    assert xlsx.html is not None and "<table>" in xlsx.html and f"<td>{TRADITIONAL}</td>" in xlsx.html
    no_html = await extract_detected(extractor, generated["docx"], want_html=False)
    assert no_html.status == "done" and no_html.html is None


OFFICE_SAMPLES = [
    "testWORD.doc",
    "testWORD.docx",
    "testEXCEL.xls",
    "testEXCEL.xlsx",
    "testPPT.ppt",
    "testPPT.pptx",
    "testRTF.rtf",
    "testMSG_chinese.msg",
]


async def test_text_from_the_preview_pass_equals_tikas_plain_text(
    extractor: InProcessTikaExtractor, samples: Path, generated: dict[str, Path]
) -> None:
    # Office files are parsed once, to XHTML, and the text is taken from it: it must be Tika's text.
    paths = [samples / n for n in OFFICE_SAMPLES] + [generated[k] for k in ("docx", "xlsx", "pptx")]
    for path in paths:
        with_html = await extract_detected(extractor, path)
        plain = await extract_detected(extractor, path, want_html=False)
        assert with_html.html is not None and plain.html is None, path.name
        assert with_html.text == plain.text, path.name
        assert with_html.text.strip(), path.name


async def test_language_guess_tells_simplified_from_traditional(
    extractor: InProcessTikaExtractor, generated: dict[str, Path]
) -> None:
    assert (await extract_detected(extractor, generated["docx_simplified"])).language == "zh-Hans"
    assert (await extract_detected(extractor, generated["docx_traditional"])).language == "zh-Hant"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The quick brown fox", None),
        ("お問い合わせはこちらまでご連絡ください", "ja"),
        ("인터넷이 연결되지 않습니다", "ko"),
        ("", None),
    ],
)
def test_language_guess_other_scripts(text: str, language: str | None) -> None:
    assert guess_language(text) == language


# ---------------------------------------------------------------------------------------------------
# real documents from the Tika test corpus

SAMPLES: dict[str, tuple[str, str | None, list[str]]] = {
    "testWORD.doc": ("done", None, ["Sample Word Document"]),
    "testWORD.docx": ("done", None, ["Sample Word Document"]),
    "testEXCEL.xls": ("done", None, ["Sample Excel Worksheet"]),
    "testEXCEL.xlsx": ("done", None, ["Sample Excel Worksheet"]),
    "testPPT.ppt": ("done", None, ["Sample Powerpoint Slide"]),
    "testPPT.pptx": ("done", None, ["Attachment Test"]),
    "testRTF.rtf": ("done", None, ["indexation Word"]),
    "testPDF.pdf": ("done", None, ["Tika - Content Analysis Toolkit"]),
    "testHTML_utf8.html": ("done", None, ["åäö"]),
    "testTXTNonASCIIUTF8.txt": ("done", None, ["Der schnelle braune Fuchs"]),
    "testMSG_chinese.msg": ("done", None, ["MSG 格式測試", "張毓倫"]),
    "testDBF_gb18030.dbf": ("done", None, ["虽然该指令经过重新发布"]),
    "gbk.zip": ("done", None, ["审计压缩包文件检索测试"]),
    # owner password only: readable by anyone, so text comes out (and the flag is kept)
    "testPDF_protected.pdf": ("done", None, ["RETHINKING THE FINANCIAL NETWORK"]),
    "testZipEncrypted.zip": ("done", None, ["hello world"]),
    "testODTnotaZipFile.odt": ("done", None, ["This is not a zip file!"]),
    "testWORD_protected_passtika.docx": ("failed", "encrypted: password-protected document", []),
    "testEXCEL_protected_passtika.xls": ("failed", "encrypted: password-protected document", []),
    "testZIP_corrupted_oom.zip": ("failed", "corrupt archive: ", []),
    "testPNG.png": ("skipped", "media type image/png: stored and streamed, metadata only", []),
    "testMP3i18n.mp3": ("skipped", "media type audio/mpeg: stored and streamed, metadata only", []),
    "testMP4Video.mp4": ("skipped", "media type video/mp4: stored and streamed, metadata only", []),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_real_samples(extractor: InProcessTikaExtractor, samples: Path, name: str) -> None:
    status, reason, needles = SAMPLES[name]
    result = await extract_detected(extractor, samples / name)
    assert result.status == status, (result.reason, result.metadata)
    if reason is None:
        assert result.reason is None
    else:
        assert result.reason is not None and result.reason.startswith(reason)
    for needle in needles:
        assert needle in result.text
    if status != "done":
        assert result.text == ""


async def test_sample_details(extractor: InProcessTikaExtractor, samples: Path) -> None:
    protected_pdf = await extract_detected(extractor, samples / "testPDF_protected.pdf")
    assert protected_pdf.metadata["encrypted"] is True
    assert protected_pdf.page_count == 41
    partly = await extract_detected(extractor, samples / "testZipEncrypted.zip")
    assert partly.metadata["partially_encrypted"] is True
    msg = await extract_detected(extractor, samples / "testMSG_chinese.msg")
    assert msg.language == "zh-Hant"
    mp3 = await extract_detected(extractor, samples / "testMP3i18n.mp3")
    assert mp3.metadata["dc:title"] == "Une chason en Français"
    mp4 = await extract_detected(extractor, samples / "testMP4Video.mp4")
    assert mp4.metadata["Content-Type"] == "video/mp4"
    png = await extract_detected(extractor, samples / "testPNG.png")
    assert png.metadata["width"] == "100"


async def test_a_lying_type_still_ends_in_a_clear_status(extractor: InProcessTikaExtractor, samples: Path) -> None:
    # stored with the type its name claims: Tika detects the real one and parses it as text
    odt = await extractor.extract(samples / "testODTnotaZipFile.odt", "application/vnd.oasis.opendocument.text")
    assert (odt.status, odt.content_type) == ("done", "text/plain")


# ---------------------------------------------------------------------------------------------------
# empty, broken, hostile and oversized input


async def test_empty_file_is_skipped_without_starting_tika(tmp_path: Path) -> None:
    ex = InProcessTikaExtractor()
    empty = tmp_path / "空.docx"
    empty.write_bytes(b"")
    result = await ex.extract(empty, DOCX)
    assert (result.status, result.reason) == ("skipped", "empty file")
    assert ex.worker_pids == []
    missing = await ex.extract(tmp_path / "gone.pdf", "application/pdf")
    assert (missing.status, missing.reason) == ("failed", "file missing")
    await ex.aclose()


async def test_truncated_docx(extractor: InProcessTikaExtractor, generated: dict[str, Path], tmp_path: Path) -> None:
    data = generated["docx"].read_bytes()
    head = tmp_path / "cut.docx"
    head.write_bytes(data[:300])
    result = await extractor.extract(head, DOCX)
    assert result.status == "failed"
    assert result.reason is not None and result.reason.startswith("corrupt or unreadable")
    half = tmp_path / "half.docx"
    half.write_bytes(data[: len(data) // 2])
    partial = await extractor.extract(half, DOCX)
    # the local headers at the start survive: Tika recovers the text of a half file
    assert partial.status == "done" and SIMPLIFIED in partial.text


async def test_documents_without_text_are_done_with_a_reason(
    extractor: InProcessTikaExtractor, tmp_path: Path, docx_factory: Callable[..., Path]
) -> None:
    from reportlab.pdfgen import canvas

    scanned = tmp_path / "扫描件.pdf"
    c = canvas.Canvas(str(scanned))
    c.rect(50, 50, 400, 600, fill=1)  # a page with graphics only, like a scan without OCR
    c.showPage()
    c.save()
    pdf = await extractor.extract(scanned, "application/pdf")
    assert (pdf.status, pdf.reason, pdf.page_count) == ("done", "no text layer (scanned PDF? OCR is off)", 1)
    blank = await extractor.extract(docx_factory(tmp_path / "空白.docx", [], heading=None), DOCX)
    assert (blank.status, blank.reason, blank.text.strip()) == ("done", "no text content", "")


async def test_executable_named_pdf_is_not_parsed(extractor: InProcessTikaExtractor, tmp_path: Path) -> None:
    fake = tmp_path / "发票.pdf"
    fake.write_bytes(b"MZ\x90\x00\x03" + bytes(59) + b"PE\x00\x00" + bytes(400))
    result = await extract_detected(extractor, fake)
    assert (result.status, result.reason) == ("skipped", "unsupported type application/x-msdownload")
    # even when an older record claims it is a PDF, Tika's own detection refuses it
    lied = await extractor.extract(fake, "application/pdf")
    assert lied.status == "skipped" and lied.reason == "unsupported type application/x-msdownload"


async def test_too_large_for_extraction_is_skipped(tmp_path: Path, generated: dict[str, Path]) -> None:
    ex = InProcessTikaExtractor()
    result = await ex.extract(generated["docx"], DOCX, ExtractionLimits(max_file_bytes=1000))
    assert result.status == "skipped"
    assert result.reason is not None and result.reason.startswith("too large for extraction")
    assert ex.worker_pids == []
    await ex.aclose()


async def test_large_video_is_not_extracted_but_gets_metadata(
    extractor: InProcessTikaExtractor, samples: Path, tmp_path: Path
) -> None:
    video = tmp_path / "录像.mp4"
    with video.open("wb") as f:
        f.write((samples / "testMP4Video.mp4").read_bytes())
        size = 64 * 1024 * 1024
        f.write((size + 8).to_bytes(4, "big") + b"free")
        f.truncate(f.tell() + size)  # sparse: a 64 MB box of zeros
    started = time.monotonic()
    result = await extractor.extract(video, "video/mp4", ExtractionLimits(max_file_bytes=1024 * 1024))
    assert time.monotonic() - started < 10
    assert result.status == "skipped"
    assert result.reason == "media type video/mp4: stored and streamed, metadata only"
    assert result.metadata["xmpDM:duration"] == "1.0"


async def test_text_is_truncated_at_max_chars(
    extractor: InProcessTikaExtractor, tmp_path: Path, docx_factory: Callable[..., Path]
) -> None:
    long_doc = docx_factory(tmp_path / "长文.docx", [f"{i:04d} {SIMPLIFIED}" for i in range(500)])
    result = await extractor.extract(long_doc, DOCX, ExtractionLimits(max_chars=1000))
    assert result.status == "done"
    assert len(result.text) == 1000
    assert result.truncated is True and result.metadata["truncated"] is True
    full = await extractor.extract(long_doc, DOCX)
    assert full.truncated is False and len(full.text) > 10_000


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def test_zip_bomb_of_zeros_is_bounded(extractor: InProcessTikaExtractor, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as f:
        block = bytes(1024 * 1024)
        for _ in range(100):
            f.write(block)
    assert bomb.stat().st_size < 200_000  # 100 MB inflated
    started = time.monotonic()
    result = await extract_detected(extractor, bomb, max_chars=10_000, timeout_seconds=20)
    assert time.monotonic() - started < 10
    assert result.status in ("done", "failed", "skipped")
    assert len(result.text) <= 10_000


async def test_text_bomb_and_nested_zips_are_bounded(extractor: InProcessTikaExtractor, tmp_path: Path) -> None:
    leaf = zip_bytes({"话术.txt": (SIMPLIFIED + "\n").encode() * 400_000})  # ~27 MB of text
    data = leaf
    for level in range(6):  # 2**6 copies of the leaf, 1.7 GB of text if nothing stopped it
        data = zip_bytes({f"{level}a.zip": data, f"{level}b.zip": data})
    nested = tmp_path / "nested.zip"
    nested.write_bytes(data)
    single = tmp_path / "single.zip"
    single.write_bytes(leaf)

    started = time.monotonic()
    one = await extract_detected(extractor, single, max_chars=100_000, timeout_seconds=20)
    assert (one.status, len(one.text), one.truncated) == ("done", 100_000, True)
    assert SIMPLIFIED in one.text

    # Under a small text limit Tika stops writing before its zip-bomb guard trips...
    many = await extract_detected(extractor, nested, max_chars=100_000, timeout_seconds=20)
    assert (many.status, len(many.text), many.truncated) == ("done", 100_000, True)
    # ...under the default one the guard aborts the parse, and we say so.
    guarded = await extract_detected(extractor, nested, timeout_seconds=20)
    assert guarded.status == "failed"
    assert guarded.reason is not None and guarded.reason.startswith("suspected zip bomb")
    assert guarded.text == ""
    assert time.monotonic() - started < 20


# ---------------------------------------------------------------------------------------------------
# the child process is killed on timeout, memory overrun and cancellation; a crash is reported


@pytest.fixture(scope="module")
def slow_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "大文件.txt"
    path.write_bytes((SIMPLIFIED + "\n").encode() * 1_000_000)  # 67 MB: about 2 s for Tika to read
    return path


SLOW = ExtractionLimits(max_file_bytes=10**9, max_chars=10**9, want_html=False)


async def warm(ex: InProcessTikaExtractor, generated: dict[str, Path]) -> int:
    assert (await ex.extract(generated["docx"], DOCX)).status == "done"
    (pid,) = ex.worker_pids
    return pid


async def test_timeout_kills_the_child(generated: dict[str, Path], slow_text: Path) -> None:
    ex = InProcessTikaExtractor()
    try:
        pid = await warm(ex, generated)
        started = time.monotonic()
        limits = ExtractionLimits(timeout_seconds=0.5, max_file_bytes=10**9, max_chars=10**9, want_html=False)
        result = await ex.extract(slow_text, "text/plain", limits)
        assert time.monotonic() - started < 5  # 0.5 s, then the kill; generous for a loaded CI machine
        assert (result.status, result.reason) == ("failed", "timeout after 0.5 s")
        assert not pid_alive(pid)
        assert ex.worker_pids == []
        again = await ex.extract(generated["docx"], DOCX)  # a fresh child takes over
        assert again.status == "done"
        assert ex.worker_pids != [pid]
    finally:
        await ex.aclose()


async def test_memory_limit_kills_the_child(generated: dict[str, Path], slow_text: Path) -> None:
    ex = InProcessTikaExtractor()
    try:
        pid = await warm(ex, generated)
        limits = ExtractionLimits(
            max_memory_bytes=64 * 1024 * 1024, max_file_bytes=10**9, max_chars=10**9, want_html=False
        )
        result = await ex.extract(slow_text, "text/plain", limits)
        assert result.status == "failed"
        assert result.reason is not None and result.reason.startswith("memory limit exceeded")
        assert not pid_alive(pid)
    finally:
        await ex.aclose()


async def test_a_crashing_child_is_reported(generated: dict[str, Path], slow_text: Path) -> None:
    ex = InProcessTikaExtractor()
    try:
        pid = await warm(ex, generated)
        task = asyncio.create_task(ex.extract(slow_text, "text/plain", SLOW))
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer or a native crash looks like
        result = await task
        assert (result.status, result.reason) == ("failed", "extractor process died (exit code -9)")
        assert (await ex.extract(generated["docx"], DOCX)).status == "done"
    finally:
        await ex.aclose()


async def test_cancellation_kills_the_child(generated: dict[str, Path], slow_text: Path) -> None:
    ex = InProcessTikaExtractor()
    try:
        pid = await warm(ex, generated)
        task = asyncio.create_task(ex.extract(slow_text, "text/plain", SLOW))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not pid_alive(pid)
        assert ex.worker_pids == []
    finally:
        await ex.aclose()


async def test_workers_run_in_parallel_and_close_cleanly(generated: dict[str, Path]) -> None:
    ex = InProcessTikaExtractor(max_workers=2, max_tasks_per_worker=2)
    paths = [generated[k] for k in ("docx", "xlsx", "pptx", "pdf", "docx", "xlsx")]
    seen: set[int] = set()
    most = 0
    extracting = asyncio.gather(*(extract_detected(ex, p) for p in paths))
    while not extracting.done():  # which worker processes exist, every few milliseconds
        seen.update(ex.worker_pids)
        most = max(most, len(ex.worker_pids))
        await asyncio.sleep(0.005)
    results = await extracting
    assert [r.status for r in results] == ["done"] * 6
    assert most == 2  # two files were extracted at once, never more than max_workers
    assert len(seen) >= 3  # six files, two per worker: workers were replaced
    pids = ex.worker_pids
    # Idle workers stay warm for the next file, never more than max_workers. (How many are left
    # depends on which finished first: each holds one or two files of the six.)
    assert len(pids) <= 2 and all(pid_alive(p) for p in pids)
    await ex.aclose()
    assert not any(pid_alive(p) for p in pids)
    assert not any(pid_alive(p) for p in seen)  # the replaced ones too
    with pytest.raises(RuntimeError):
        await ex.extract(generated["docx"], DOCX)


def test_build_extractor_chooses_by_url() -> None:
    assert isinstance(build_extractor(None), InProcessTikaExtractor)
    server = build_extractor("http://tika:9998/")
    assert isinstance(server, TikaServerExtractor) and server.base_url == "http://tika:9998"


# ---------------------------------------------------------------------------------------------------
# TikaServerExtractor: a test of OUR request building and response mapping only. The server is an
# httpx.MockTransport answering the way tika-server 3.x documents it; the real contract is checked
# by test_tika_live.py against a running server (KB_TIKA_URL).


class RecordingTika:
    def __init__(self, status: int = 200, body: object = None, text: str | None = None) -> None:
        self.status, self.body, self.text = status, body, text
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.text is not None:
            return httpx.Response(self.status, text=self.text)
        return httpx.Response(self.status, json=self.body)


def server_with(handler: object) -> TikaServerExtractor:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return TikaServerExtractor("http://tika.test:9998/", client)


async def test_request_handling_sends_the_file_and_limits(generated: dict[str, Path]) -> None:
    tika = RecordingTika(body=[{"X-TIKA:content": SIMPLIFIED, "Content-Type": DOCX}])
    ex = server_with(tika)
    limits = ExtractionLimits(timeout_seconds=30, max_chars=5000, max_embedded_resources=50)
    await ex.extract(generated["docx"], DOCX, limits)
    (request,) = tika.requests
    assert request.method == "PUT"
    assert str(request.url) == "http://tika.test:9998/rmeta/text"
    assert request.headers["writeLimit"] == "5001"
    assert request.headers["maxEmbeddedResources"] == "50"
    assert request.headers["X-Tika-Timeout-Millis"] == "30000"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == DOCX
    assert request.content == generated["docx"].read_bytes()


async def test_response_mapping_of_a_parsed_document(generated: dict[str, Path]) -> None:
    body = [
        {
            "X-TIKA:content": f"{SIMPLIFIED}\n",
            "Content-Type": "application/pdf",
            "xmpTPg:NPages": "3",
            "dc:title": ["宽带手册"],
        },
        {"X-TIKA:content": TRADITIONAL, "Content-Type": "image/png", "X-TIKA:embedded_depth": "1"},
    ]
    result = await server_with(RecordingTika(body=body)).extract(generated["pdf"], "application/pdf")
    assert result.status == "done"
    assert SIMPLIFIED in result.text and TRADITIONAL in result.text  # embedded documents' text too
    assert result.page_count == 3
    assert result.metadata["dc:title"] == "宽带手册"
    assert "X-TIKA:content" not in result.metadata


async def test_response_mapping_of_the_write_limit(generated: dict[str, Path]) -> None:
    body = [{"X-TIKA:content": "客" * 120, "X-TIKA:EXCEPTION:write_limit_reached": "true"}]
    result = await server_with(RecordingTika(body=body)).extract(
        generated["docx"], DOCX, ExtractionLimits(max_chars=100)
    )
    assert (result.status, len(result.text), result.truncated) == ("done", 100, True)


@pytest.mark.parametrize(
    ("status", "text", "expected_status", "reason_part"),
    [
        (422, "", "failed", "encrypted or unprocessable"),
        (
            422,
            "org.apache.tika.exception.EncryptedDocumentException: Unable to process",
            "failed",
            "encrypted: password-protected document",
        ),
        (422, "org.apache.tika.exception.TikaException: TIKA-198: Illegal IOException", "failed", "corrupt"),
        (415, "", "skipped", "unsupported type"),
        (400, "bad header", "failed", "tika-server answered 400"),
    ],
)
async def test_response_mapping_of_error_statuses(
    generated: dict[str, Path], status: int, text: str, expected_status: str, reason_part: str
) -> None:
    result = await server_with(RecordingTika(status=status, text=text)).extract(generated["docx"], DOCX)
    assert result.status == expected_status
    assert result.reason is not None and reason_part in result.reason


async def test_response_mapping_of_protected_and_empty_documents(generated: dict[str, Path]) -> None:
    protected = [{"X-TIKA:content": "", "Content-Type": "application/x-tika-ooxml-protected"}]
    result = await server_with(RecordingTika(body=protected)).extract(generated["docx"], DOCX)
    assert (result.status, result.reason) == ("failed", "encrypted: password-protected document")
    broken = [
        {
            "Content-Type": "application/zip",
            "X-TIKA:EXCEPTION:container_exception": "java.util.zip.ZipException: invalid CEN header\n\tat x",
        }
    ]
    result = await server_with(RecordingTika(body=broken)).extract(generated["docx"], "application/zip")
    assert result.status == "failed"
    assert result.reason == "corrupt or unreadable: java.util.zip.ZipException: invalid CEN header"


async def test_request_handling_for_media_asks_for_metadata_only(samples: Path) -> None:
    tika = RecordingTika(body=[{"Content-Type": "audio/mpeg", "xmpDM:duration": "2.45"}])
    result = await server_with(tika).extract(samples / "testMP3i18n.mp3", "audio/mpeg")
    assert str(tika.requests[0].url).endswith("/rmeta/ignore")
    assert "writeLimit" not in tika.requests[0].headers
    assert result.status == "skipped" and result.metadata["xmpDM:duration"] == "2.45"


async def test_request_handling_skips_without_calling_the_server(tmp_path: Path) -> None:
    tika = RecordingTika(body=[])
    empty = tmp_path / "e.txt"
    empty.write_bytes(b"")
    assert (await server_with(tika).extract(empty, "text/plain")).status == "skipped"
    assert tika.requests == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_are_retryable(generated: dict[str, Path], status: int) -> None:
    with pytest.raises(ExtractorUnavailable):
        await server_with(RecordingTika(status=status, text="busy")).extract(generated["docx"], DOCX)


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset")]
)
async def test_transport_errors_are_retryable(generated: dict[str, Path], exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(ExtractorUnavailable):
        await server_with(handler).extract(generated["docx"], DOCX)


async def test_unreachable_server_is_retryable(generated: dict[str, Path]) -> None:
    # a real connection attempt, no mock: nothing listens on the discard port of this machine
    async with httpx.AsyncClient() as client:
        dead = TikaServerExtractor("http://127.0.0.1:9", client)
        with pytest.raises(ExtractorUnavailable, match="unreachable"):
            await dead.extract(generated["docx"], DOCX)


async def test_garbage_from_the_server_is_retryable(generated: dict[str, Path]) -> None:
    with pytest.raises(ExtractorUnavailable):
        await server_with(RecordingTika(text="<html>proxy error</html>")).extract(generated["docx"], DOCX)
    with pytest.raises(ExtractorUnavailable):
        await server_with(RecordingTika(body={"unexpected": json.dumps([1])})).extract(generated["docx"], DOCX)
