"""What people send: CSV saved by Excel (GBK, BOM, CRLF), XLSX with several sheets, merged cells,
date cells and Excel serial numbers. Row numbers in the report are the spreadsheet's."""

from __future__ import annotations

import io
from datetime import date, datetime

from openpyxl import Workbook

from tests.conftest import assert_problem
from tests.imports.conftest import Importer
from tests.knowledge.conftest import Kb

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER = [
    "external_id",
    "title",
    "question",
    "similar_questions",
    "body",
    "categories",
    "attr.region",
    "review_due",
    "valid_to",
]


def excel_csv(rows: list[list[str]], encoding: str) -> bytes:
    lines = [",".join(HEADER)] + [",".join(f'"{c}"' if ("\n" in c or "," in c) else c for c in r) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


ROWS = [
    [
        "BANK-01",
        "信用卡年费怎么减免",
        "年费可以免吗",
        "刷卡免年费\n年费减免条件",
        "<p>每年刷卡满 6 次免次年年费。</p>",
        "信用卡",
        "全国",
        "2027-06-30",
        "2027-12-31 18:00",
    ],
    [
        "BANK-02",
        "信用卡挂失后多久补卡",
        "补卡要几天",
        "",
        "<p>挂失后 7 个工作日内寄出新卡。</p>",
        "信用卡/挂失",
        "北京",
        "",
        "",
    ],
]


async def test_a_gbk_csv_from_excel_imports_with_its_lists_and_dates(importer: Importer, kb: Kb) -> None:
    await importer.source()
    job = await importer.run(excel_csv(ROWS, "gb18030"), ctype=CSV)
    assert job["state"] == "done", job["error"]
    assert job["counts"]["created"] == 2, job["errors"]
    assert job["format"] == "csv" and job["file"]["encoding"] == "gb18030"
    item, versions = (await importer.items())["BANK-01"]
    assert versions[0].similar_questions == ["刷卡免年费", "年费减免条件"]
    assert [n.id for n in versions[0].categories] == [kb.nodes["信用卡"]]
    assert item.review_due == date(2027, 6, 30)
    assert item.valid_to is not None and item.valid_to.isoformat() == "2027-12-31T10:00:00+00:00"  # 18:00 Beijing
    _, versions2 = (await importer.items())["BANK-02"]
    assert [n.id for n in versions2[0].categories] == [kb.nodes["挂失"]]


async def test_a_utf8_bom_csv_keeps_its_first_column_name(importer: Importer) -> None:
    await importer.source()
    job = await importer.run(b"\xef\xbb\xbf" + excel_csv(ROWS, "utf-8"), ctype=CSV)
    assert job["state"] == "done" and job["counts"]["created"] == 2, job


async def test_a_csv_in_an_encoding_we_do_not_read_fails_naming_it(importer: Importer) -> None:
    await importer.source()
    text = "external_id,title\r\nRU-1,Как оплатить счёт за электроэнергию через личный кабинет\r\n" * 40
    job = await importer.run(text.encode("cp1251"), ctype=CSV)
    assert job["state"] == "failed" and job["error"]["code"] == "unsupported_encoding", job
    assert job["error"].get("encoding")
    assert await importer.items() == {}


def workbook() -> bytes:
    wb = Workbook()
    notes = wb.active
    notes.title = "填写说明"
    notes.append(["请在「知识」页填写，每行一条知识"])
    ws = wb.create_sheet("知识")
    ws.append(HEADER)
    ws.append(
        [
            "UT-01",
            "电费怎么交",
            "电费缴纳方式",
            "网上交电费",
            "<p>可通过网上国网 APP 缴纳。</p>",
            "电费缴纳",
            "全国",
            datetime(2027, 3, 1),
            46752,
        ]
    )  # 46752: 2027-12-31 as an Excel serial number
    ws.append(["UT-02", "电费发票怎么开", "", "", "<p>缴费后在 APP 申请电子发票。</p>", None, "上海", None, None])
    ws.append(["UT-03", "阶梯电价怎么算", "", "", "<p>按年用电量分三档计价。</p>", None, "全国", None, None])
    ws.merge_cells("F2:F4")  # one category for the three rows, as people format it
    ws["D5"] = "=A2&B2"  # a formula without a cached value is not its text
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


async def test_an_xlsx_with_notes_sheet_merged_cells_and_dates(importer: Importer, kb: Kb) -> None:
    await importer.source()
    job = await importer.run(workbook(), ctype=XLSX)
    assert job["state"] == "done", job["error"]
    assert job["counts"]["created"] == 3, job["errors"]
    assert job["file"]["sheet"] == "知识"
    assert any("填写说明" in w for w in job["warnings"]), job["warnings"]
    items = await importer.items()
    for ext in ("UT-01", "UT-02", "UT-03"):
        assert [n.id for n in items[ext][1][0].categories] == [kb.nodes["电费缴纳"]], ext  # the merged cell
    first = items["UT-01"][0]
    assert first.review_due == date(2027, 3, 1)
    assert first.valid_to is not None and first.valid_to.date() == date(2027, 12, 30)  # midnight Beijing, in UTC


async def test_xlsx_row_errors_name_the_spreadsheet_row(importer: Importer) -> None:
    await importer.source()
    wb = Workbook()
    ws = wb.active
    ws.append(["external_id", "title", "attr.region"])
    ws.append(["UT-10", "电费查询", "全国"])
    ws.append(["UT-11", "电费查询", "火星"])
    buf = io.BytesIO()
    wb.save(buf)
    job = await importer.run(buf.getvalue(), ctype=XLSX)
    assert job["counts"]["created"] == 1
    assert [(e["row"], e["external_id"], e["field"]) for e in job["errors"]] == [(3, "UT-11", "attr.region")]


async def test_an_xlsx_sheet_that_does_not_exist_is_a_clear_job_error(importer: Importer) -> None:
    await importer.source()
    job = await importer.run(workbook(), ctype=XLSX, sheet="不存在")
    assert job["state"] == "failed" and job["error"]["code"] == "unknown_sheet"


async def test_encoding_is_only_for_csv(importer: Importer) -> None:
    await importer.source()
    assert_problem(await importer.post(workbook(), ctype=XLSX, encoding="gbk"), 422, "encoding_not_applicable")
