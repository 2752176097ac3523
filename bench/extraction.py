"""Extraction throughput of InProcessTikaExtractor over generated Office/PDF files and the shared samples.

    .venv/bin/python bench/extraction.py [--docs 40] [--workers 1 2]

Generates Chinese call-center documents of realistic size (docx ~20 pages, xlsx ~2000 rows,
pptx ~20 slides, PDF ~20 pages), adds the Tika corpus samples from shared/samples/tika when present,
detects each type from its bytes and extracts every file once per worker count, after a warm-up
(child start and Tika initialisation are not counted). Prints files/s and MB/s per run, per type
figures, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.attachments.detect import detect_file
from app.attachments.extraction import ExtractionLimits, InProcessTikaExtractor

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "tika"
SENTENCES = [
    "宽带无法上网时，请先重启光猫，再检查指示灯。",
    "寬頻無法上網時請重新啟動數據機。",
    "客户反映话费异常扣费，请核实套餐变更记录并在三个工作日内回访。",
    "信用卡挂失后，新卡将在七个工作日内寄出，请提醒客户注意查收短信。",
    "停电报修请记录客户户号、详细地址和联系电话，派单至属地供电所。",
    "如客户要求办理携号转网，请先确认合约期和未结清费用。",
]


def paragraph(rng: random.Random, n: int = 6) -> str:
    return "".join(rng.choice(SENTENCES) for _ in range(n))


def make_docx(path: Path, rng: random.Random) -> None:
    import docx

    doc = docx.Document()
    for section in range(20):
        doc.add_heading(f"第{section + 1}章 故障处理流程", 1)
        for _ in range(8):
            doc.add_paragraph(paragraph(rng))
    doc.save(path)


def make_xlsx(path: Path, rng: random.Random) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["编号", "问题", "标准答案", "渠道"])
    for i in range(2000):
        ws.append([i, rng.choice(SENTENCES)[:12], paragraph(rng, 2), rng.choice(["微信", "APP", "热线"])])
    wb.save(path)


def make_pptx(path: Path, rng: random.Random) -> None:
    import pptx

    prs = pptx.Presentation()
    for i in range(20):
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = f"培训第{i + 1}页"
        slide.placeholders[1].text = paragraph(rng, 3)
    prs.save(path)


def make_pdf(path: Path, rng: random.Random) -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path))
    for _ in range(20):
        c.setFont("STSong-Light", 11)
        for line in range(40):
            c.drawString(40, 800 - 19 * line, rng.choice(SENTENCES))
        c.showPage()
    c.save()


MAKERS = {"docx": make_docx, "xlsx": make_xlsx, "pptx": make_pptx, "pdf": make_pdf}


async def run(files: list[tuple[Path, str]], workers: int, limits: ExtractionLimits) -> dict[str, object]:
    ex = InProcessTikaExtractor(max_workers=workers)
    try:
        # warm-up: start every child and let Tika initialise
        warm = [files[i % len(files)] for i in range(workers)]
        await asyncio.gather(*(ex.extract(p, m, limits) for p, m in warm))
        per_type: dict[str, list[float]] = defaultdict(list)
        statuses: Counter[str] = Counter()
        sem = asyncio.Semaphore(workers)

        async def one(path: Path, mime: str) -> None:
            async with sem:
                t0 = time.perf_counter()
                result = await ex.extract(path, mime, limits)
                per_type[path.suffix.lstrip(".")].append(time.perf_counter() - t0)
                statuses[result.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(p, m) for p, m in files))
        elapsed = time.perf_counter() - started
    finally:
        await ex.aclose()
    total_bytes = sum(p.stat().st_size for p, _ in files)
    return {
        "workers": workers,
        "files": len(files),
        "seconds": round(elapsed, 3),
        "files_per_s": round(len(files) / elapsed, 2),
        "mb_per_s": round(total_bytes / (1024 * 1024) / elapsed, 2),
        "statuses": dict(statuses),
        "ms_per_file_by_type": {k: round(1000 * sum(v) / len(v), 1) for k, v in sorted(per_type.items())},
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=40, help="generated documents (split over 4 types)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-html", action="store_true", help="skip the XHTML preview pass")
    args = parser.parse_args()
    rng = random.Random(42)
    limits = ExtractionLimits(want_html=not args.no_html)

    with tempfile.TemporaryDirectory(prefix="kb-extract-bench-") as tmp:
        root = Path(tmp)
        files: list[tuple[Path, str]] = []
        kinds = list(MAKERS)
        for i in range(args.docs):
            kind = kinds[i % len(kinds)]
            path = root / f"doc{i:03d}.{kind}"
            MAKERS[kind](path, rng)
            files.append((path, detect_file(path).mime))
        generated_mb = sum(p.stat().st_size for p, _ in files) / (1024 * 1024)
        samples = 0
        if SAMPLES.is_dir():
            for path in sorted(SAMPLES.iterdir()):
                if path.name != "README.md":
                    files.append((path, detect_file(path, path.name).mime))
                    samples += 1
        total_mb = sum(p.stat().st_size for p, _ in files) / (1024 * 1024)
        print(f"{args.docs} generated documents ({generated_mb:.1f} MB) + {samples} samples = {total_mb:.1f} MB")
        runs = []
        for workers in args.workers:
            result = await run(files, workers, limits)
            runs.append(result)
            print(
                f"workers={workers}: {result['files_per_s']} files/s, {result['mb_per_s']} MB/s "
                f"({result['seconds']} s) statuses={result['statuses']}"
            )
            print(f"  ms per file by type: {result['ms_per_file_by_type']}")
    print(
        json.dumps(
            {
                "bench": "extraction",
                "html_preview": not args.no_html,
                "generated_docs": args.docs,
                "samples": samples,
                "total_mb": round(total_mb, 2),
                "runs": runs,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
