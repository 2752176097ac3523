from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.attachments.extraction import InProcessTikaExtractor
from tests.conftest import skip_outside_ci

SIMPLIFIED = "宽带无法上网时，请先重启光猫，再检查指示灯。"
TRADITIONAL = "寬頻無法上網時請重新啟動數據機"
# The team's shared folder sits next to the checkout; KB_SHARED_DIR points elsewhere.
SHARED_DIR = Path(os.environ.get("KB_SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
SAMPLES_DIR = SHARED_DIR / "samples" / "tika"


@pytest.fixture(scope="session")
def samples() -> Path:
    if not SAMPLES_DIR.is_dir():
        skip_outside_ci(
            f"the shared real-world samples are not at {SAMPLES_DIR}: these run when the checkout sits "
            "next to ../shared (as in CI) or KB_SHARED_DIR points to it"
        )
    return SAMPLES_DIR


@pytest.fixture(scope="session")
async def extractor() -> AsyncIterator[InProcessTikaExtractor]:
    ex = InProcessTikaExtractor(max_workers=2)
    try:
        yield ex
    finally:
        await ex.aclose()


def make_docx(path: Path, paragraphs: list[str], heading: str | None = "宽带故障处理") -> Path:
    import docx

    doc = docx.Document()
    if heading:
        doc.add_heading(heading, 1)
    for p in paragraphs:
        doc.add_paragraph(p)
    doc.save(path)
    return path


def make_xlsx(path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "话术"
    ws.append(["问题", "答案"])
    ws.append(["宽带无法上网", SIMPLIFIED])
    ws.append(["寬頻斷線", TRADITIONAL])
    wb.save(path)
    return path


def make_pptx(path: Path) -> Path:
    import pptx

    prs = pptx.Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "宽带故障"
    slide.placeholders[1].text = SIMPLIFIED
    slide2 = prs.slides.add_slide(prs.slide_layouts[1])
    slide2.shapes.title.text = "繁體"
    slide2.placeholders[1].text = TRADITIONAL
    prs.save(path)
    return path


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path))
    for lines in pages:
        c.setFont("STSong-Light", 14)  # reportlab resets the font on every page
        for i, line in enumerate(lines):
            c.drawString(50, 800 - 20 * i, line)
        c.showPage()
    c.save()
    return path


@pytest.fixture(scope="session")
def docx_factory() -> Callable[..., Path]:
    return make_docx


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("generated")
    return {
        "docx": make_docx(d / "故障处理.docx", [SIMPLIFIED, TRADITIONAL]),
        "xlsx": make_xlsx(d / "话术.xlsx"),
        "pptx": make_pptx(d / "培训.pptx"),
        "pdf": make_pdf(d / "手册.pdf", [[SIMPLIFIED, TRADITIONAL], ["第二页：光猫指示灯说明"]]),
        "docx_simplified": make_docx(d / "简体.docx", [SIMPLIFIED * 3]),
        "docx_traditional": make_docx(d / "繁體.docx", [TRADITIONAL * 3], heading="寬頻故障處理"),
    }
