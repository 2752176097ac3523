"""Contract tests against a real tika-server (3.x, e.g. the apache/tika image): set KB_TIKA_URL to run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.attachments.detect import detect_file
from app.attachments.extraction import ExtractionLimits, ExtractionResult, TikaServerExtractor

TIKA_URL = os.environ.get("KB_TIKA_URL")
SIMPLIFIED = "宽带无法上网时，请先重启光猫，再检查指示灯。"
TRADITIONAL = "寬頻無法上網時請重新啟動數據機"

pytestmark = pytest.mark.skipif(
    not TIKA_URL,
    reason="KB_TIKA_URL is not set: runs only against a live Tika server (apache/tika), which this machine cannot run",
)


@pytest.fixture
async def server() -> AsyncIterator[TikaServerExtractor]:
    assert TIKA_URL is not None
    async with httpx.AsyncClient() as client:
        yield TikaServerExtractor(TIKA_URL, client)


async def extract(server: TikaServerExtractor, path: Path, **limits: object) -> ExtractionResult:
    mime = detect_file(path, path.name).mime
    return await server.extract(path, mime, ExtractionLimits(**limits))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx", "pdf"])
async def test_live_generated_documents(server: TikaServerExtractor, generated: dict[str, Path], kind: str) -> None:
    result = await extract(server, generated[kind])
    assert result.status == "done", result.reason
    assert SIMPLIFIED in result.text and TRADITIONAL in result.text


async def test_live_pdf_page_count(server: TikaServerExtractor, generated: dict[str, Path]) -> None:
    assert (await extract(server, generated["pdf"])).page_count == 2


LIVE_SAMPLES = {
    "testMSG_chinese.msg": ("done", "MSG 格式測試"),
    "testDBF_gb18030.dbf": ("done", "虽然该指令经过重新发布"),
    "testWORD.doc": ("done", "Sample Word Document"),
    "testPDF_protected.pdf": ("done", "RETHINKING THE FINANCIAL NETWORK"),
    "testWORD_protected_passtika.docx": ("failed", None),
    "testEXCEL_protected_passtika.xls": ("failed", None),
    "testZIP_corrupted_oom.zip": ("failed", None),
    "testPNG.png": ("skipped", None),
    "testMP4Video.mp4": ("skipped", None),
}


@pytest.mark.parametrize("name", sorted(LIVE_SAMPLES))
async def test_live_samples(server: TikaServerExtractor, samples: Path, name: str) -> None:
    status, needle = LIVE_SAMPLES[name]
    result = await extract(server, samples / name)
    assert result.status == status, result.reason
    if needle:
        assert needle in result.text
    if status == "failed":
        assert result.reason


async def test_live_protected_documents_say_encrypted(server: TikaServerExtractor, samples: Path) -> None:
    for name in ("testWORD_protected_passtika.docx", "testEXCEL_protected_passtika.xls"):
        result = await extract(server, samples / name)
        assert result.reason is not None and "encrypted" in result.reason, (name, result.reason)


async def test_live_write_limit_truncates(server: TikaServerExtractor, samples: Path) -> None:
    result = await extract(server, samples / "testPDF_protected.pdf", max_chars=500)
    assert result.status == "done"
    assert len(result.text) <= 500 and result.truncated
