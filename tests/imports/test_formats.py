"""The file-reading layer of imports: every format as a stream of raw rows, and the files it refuses."""

from __future__ import annotations

import io
import json
import stat
import struct
import tempfile
import tracemalloc
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from app.imports.formats import (
    CONTENT_TYPES,
    FORMATS,
    ImportFileError,
    Limits,
    Reader,
    Row,
    excel_serial_to_datetime,
    open_reader,
    sniff_format,
)

FAQ = [
    {
        "external_id": "TEL-0001",
        "title": "宽带无法上网怎么办",
        "body": "<p>请先重启光猫，等待两分钟后再试。</p>",
        "similar_questions": ["宽带断网", "家里网络连不上"],
        "categories": "业务/宽带/故障",
    },
    {
        "external_id": "TEL-0002",
        "title": "手机欠费停机如何复机",
        "body": "<p>缴清欠费后30分钟内自动复机。</p>",
        "similar_questions": [],
        "categories": "业务/移动/账务",
    },
    {
        "external_id": "BNK-0003",
        "title": "信用卡被冻结怎么办",
        "body": "<p>请携带身份证到柜台办理解冻。</p>",
        "similar_questions": ["卡被锁了"],
        "categories": "业务/银行/信用卡",
    },
]
TRADITIONAL = [
    ("HK-0001", "帳戶凍結怎麼辦", "<p>請攜帶身分證到分行辦理解凍。</p>", "業務/銀行/帳戶"),
    ("HK-0002", "寬頻無法連線", "<p>請先重新啟動數據機，再檢查線路。</p>", "業務/寬頻/故障"),
    ("HK-0003", "信用卡遺失如何掛失", "<p>請致電客服專線辦理掛失。</p>", "業務/銀行/信用卡"),
]


def read(path: Path, fmt: str, tmp_path: Path, **kw: Any) -> tuple[Reader, list[Row]]:
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh folder, as the engine gives
    with open_reader(path, fmt, work_dir=work, **kw) as reader:
        return reader, list(reader.rows())


def refused(path: Path, fmt: str, tmp_path: Path, **kw: Any) -> ImportFileError:
    with pytest.raises(ImportFileError) as info:
        read(path, fmt, tmp_path, **kw)
    return info.value


def csv_text(rows: list[tuple[str, ...]], sep: str = ",", eol: str = "\r\n") -> str:
    return "".join(sep.join(r) + eol for r in rows)


# --- sniffing --------------------------------------------------------------------------------------------------


def test_content_types_map_to_formats() -> None:
    assert set(CONTENT_TYPES.values()) == set(FORMATS)
    assert CONTENT_TYPES["application/jsonl"] == "ndjson"
    assert CONTENT_TYPES["application/x-zip-compressed"] == "zip"


def test_sniff_guesses_every_format_from_the_bytes(tmp_path: Path) -> None:
    files = {
        "ndjson": "\n".join(json.dumps(r, ensure_ascii=False) for r in FAQ) + "\n",
        "json": json.dumps(FAQ, ensure_ascii=False, indent=2),
        "csv": "external_id,title\r\nTEL-0001,宽带无法上网怎么办\r\n",
    }
    for fmt, text in files.items():
        (tmp_path / fmt).write_text(text, encoding="utf-8")
        assert sniff_format(tmp_path / fmt, None) == fmt
        assert sniff_format(tmp_path / fmt, fmt) == fmt
    (tmp_path / "rows.json").write_text(json.dumps({"rows": FAQ}, ensure_ascii=False), encoding="utf-8")
    assert sniff_format(tmp_path / "rows.json", None) == "json"
    assert sniff_format(tmp_path / "rows.json", "json") == "json"
    wb = openpyxl.Workbook()
    wb.active.append(["external_id", "title"])
    wb.save(tmp_path / "a.xlsx")
    assert sniff_format(tmp_path / "a.xlsx", None) == "xlsx"
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("manifest.ndjson", files["ndjson"])
    assert sniff_format(tmp_path / "a.zip", None) == "zip"


def test_sniff_xlsx_declared_but_csv_bytes(tmp_path: Path) -> None:
    path = tmp_path / "faq.xlsx"
    path.write_bytes("external_id,title\r\nTEL-0001,宽带无法上网怎么办\r\n".encode("gb18030"))
    with pytest.raises(ImportFileError) as info:
        sniff_format(path, "xlsx")
    assert info.value.code == "format_mismatch"
    assert info.value.extra == {"declared": "xlsx", "found": "csv"}
    assert "xlsx" in info.value.message and "csv" in info.value.message


def test_sniff_json_declared_but_html(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text("<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>", encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        sniff_format(path, "json")
    assert (info.value.code, info.value.extra["found"]) == ("format_mismatch", "html")


def test_sniff_zip_declared_but_pdf(tmp_path: Path) -> None:
    path = tmp_path / "kb.zip"
    path.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b"\x00" * 100)
    with pytest.raises(ImportFileError) as info:
        sniff_format(path, "zip")
    assert (info.value.code, info.value.extra) == ("format_mismatch", {"declared": "zip", "found": "pdf"})


def test_sniff_xlsx_is_not_a_zip_of_attachments_and_pretty_json_is_not_ndjson(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.save(tmp_path / "a.xlsx")
    with pytest.raises(ImportFileError) as info:
        sniff_format(tmp_path / "a.xlsx", "zip")
    assert info.value.extra["found"] == "xlsx"
    (tmp_path / "p.json").write_text(json.dumps({"rows": FAQ}, indent=2), encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        sniff_format(tmp_path / "p.json", "ndjson")
    assert info.value.extra == {"declared": "ndjson", "found": "json"}
    with pytest.raises(ImportFileError) as info:
        sniff_format(tmp_path / "p.json", "yaml")
    assert info.value.code == "unsupported_format"


# --- NDJSON ----------------------------------------------------------------------------------------------------


def test_ndjson_streams_objects_with_line_numbers_and_reports_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps(FAQ[0], ensure_ascii=False),
        "",
        json.dumps(FAQ[1], ensure_ascii=False),
        "   ",
        '["TEL-0009", "not an object"]',
        json.dumps(
            {"external_id": "TEL-0006", "views": 12, "score": 4.5, "published": True, "owner": None}, ensure_ascii=False
        ),
        '{"external_id": "TEL-0007", "title": "漏了引号}',
        json.dumps(FAQ[2], ensure_ascii=False),
    ]
    path = tmp_path / "faq.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    reader, rows = read(path, "ndjson", tmp_path)
    assert [r.number for r in rows] == [1, 3, 5, 6, 7, 8]
    assert rows[0].values == FAQ[0] and rows[0].error is None
    assert rows[2].values == {} and rows[2].error == "line 5 is not a JSON object (found an array)"
    assert rows[3].values == {"external_id": "TEL-0006", "views": 12, "score": 4.5, "published": True, "owner": None}
    assert rows[4].error is not None and rows[4].error.startswith("line 7 is not valid JSON: ")
    assert rows[5].values["title"] == "信用卡被冻结怎么办"
    assert reader.columns[:5] == ["external_id", "title", "body", "similar_questions", "categories"]
    assert "views" in reader.columns


def test_ndjson_oversized_line_fails_alone_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    huge = json.dumps(
        {"external_id": "TEL-0002", "body": "<p>" + "光猫指示灯说明。" * 20_000 + "</p>"}, ensure_ascii=False
    )
    path.write_text(
        "\n".join([json.dumps(FAQ[0], ensure_ascii=False), huge, json.dumps(FAQ[2], ensure_ascii=False)]),
        encoding="utf-8",
    )
    _, rows = read(path, "ndjson", tmp_path, limits=Limits(max_row_bytes=10_000))
    assert [(r.number, r.error) for r in rows] == [(1, None), (2, "line 2 is longer than 10000 bytes"), (3, None)]
    assert rows[2].values["external_id"] == "BNK-0003"


def test_ndjson_columns_grow_with_keys_seen_after_the_first_thousand_rows(tmp_path: Path) -> None:
    path = tmp_path / "faq.ndjson"
    rows = [{"external_id": f"TEL-{i:04d}", "title": "宽带无法上网"} for i in range(1200)]
    rows[1100]["tags"] = ["宽带"]
    path.write_text(ndjson(rows), encoding="utf-8")
    with open_reader(path, "ndjson", work_dir=tmp_path) as reader:
        assert reader.columns == ["external_id", "title"]
        assert len(list(reader.rows())) == 1200
        assert reader.columns == ["external_id", "title", "tags"]


def test_reader_rows_can_be_read_twice(tmp_path: Path) -> None:
    path = tmp_path / "faq.ndjson"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in FAQ), encoding="utf-8")
    with open_reader(path, "ndjson", work_dir=tmp_path) as reader:
        first = list(reader.rows())
        second = list(reader.rows())
    assert first == second and len(first) == 3


# --- JSON ------------------------------------------------------------------------------------------------------


def test_json_array_streams_objects_and_flags_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "faq.json"
    data: list[Any] = [FAQ[0], "TEL-0002", FAQ[2], [1, 2], {"external_id": "X-1", "n": 3, "rate": 0.5}]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, ensure_ascii=False, indent=1).encode())
    reader, rows = read(path, "json", tmp_path)
    assert [r.number for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].values == FAQ[0]
    assert rows[1].error == "element 2 is not a JSON object (found a string)"
    assert rows[3].error == "element 4 is not a JSON object (found an array)"
    assert rows[4].values == {"external_id": "X-1", "n": 3, "rate": 0.5}
    assert type(rows[4].values["n"]) is int and type(rows[4].values["rate"]) is float
    assert reader.columns[0] == "external_id" and "rate" in reader.columns


def test_json_rows_object_is_streamed_from_its_rows_member(tmp_path: Path) -> None:
    path = tmp_path / "sync.json"
    path.write_text(
        json.dumps(
            {
                "source": "crm",
                "meta": {"exported": "2024-05-01", "ids": [1, 2]},
                "rows": FAQ,
                "watermark": "2024-05-01T00:00:00Z",
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    _, rows = read(path, "json", tmp_path)
    assert [r.values for r in rows] == FAQ


def test_json_without_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(FAQ[0], ensure_ascii=False, indent=2), encoding="utf-8")
    assert refused(path, "json", tmp_path).code == "json_not_rows"
    path.write_text('{"rows": {"external_id": "TEL-0001"}}', encoding="utf-8")
    assert refused(path, "json", tmp_path).code == "json_not_rows"


def test_json_broken_after_some_elements_fails_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    text = json.dumps(FAQ * 400, ensure_ascii=False)
    path.write_text(text[: len(text) - 300], encoding="utf-8")  # a truncated upload
    with open_reader(path, "json", work_dir=tmp_path) as reader, pytest.raises(ImportFileError) as info:
        list(reader.rows())
    assert info.value.code == "invalid_json" and info.value.extra["row"] > 1000


def test_json_oversized_element_is_skipped_as_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    huge = {"external_id": "TEL-0002", "body": "<p>" + "资费说明" * 100_000 + "</p>", "tags": [{"a": [1]}]}
    path.write_text(json.dumps([FAQ[0], huge, FAQ[2]], ensure_ascii=False), encoding="utf-8")
    _, rows = read(path, "json", tmp_path, limits=Limits(max_row_bytes=100_000))
    assert [(r.number, r.error) for r in rows] == [(1, None), (2, "element 2 is longer than 100000 bytes"), (3, None)]
    assert rows[2].values == FAQ[2]


# --- CSV -------------------------------------------------------------------------------------------------------

HEADER = ("external_id", "title", "body", "categories")


def test_csv_gbk_from_excel(tmp_path: Path) -> None:
    rows = [HEADER] + [(f["external_id"], f["title"], f["body"], f["categories"]) for f in FAQ]
    path = tmp_path / "faq.csv"
    path.write_bytes(csv_text(rows).encode("gb18030"))
    reader, out = read(path, "csv", tmp_path)
    assert reader.encoding == "gb18030"
    assert reader.columns == list(HEADER)
    assert [r.number for r in out] == [2, 3, 4]
    assert out[0].values == {
        "external_id": "TEL-0001",
        "title": "宽带无法上网怎么办",
        "body": "<p>请先重启光猫，等待两分钟后再试。</p>",
        "categories": "业务/宽带/故障",
    }


def test_csv_utf8_bom_does_not_reach_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    text = csv_text([(" external_id ", "title\t"), ("TEL-0001", " 宽带无法上网 ")])
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    reader, rows = read(path, "csv", tmp_path)
    assert reader.encoding == "utf-8-sig"
    assert reader.columns == ["external_id", "title"]
    assert rows[0].values == {"external_id": "TEL-0001", "title": " 宽带无法上网 "}  # values are not stripped


def test_csv_big5_traditional(tmp_path: Path) -> None:
    path = tmp_path / "hk.csv"
    path.write_bytes(csv_text([HEADER, *TRADITIONAL]).encode("big5"))
    reader, rows = read(path, "csv", tmp_path)
    assert reader.encoding == "big5"
    assert [r.values["title"] for r in rows] == ["帳戶凍結怎麼辦", "寬頻無法連線", "信用卡遺失如何掛失"]


@pytest.mark.parametrize(
    ("text", "codec", "named"),
    [
        (
            "external_id,title\r\nJP-1,パスワードを忘れました\r\nJP-2,請求書の送付先を変更したい\r\n",
            "shift_jis",
            "cp932",
        ),
        ("external_id,title\r\nRU-1,Как сбросить пароль\r\nRU-2,Не работает интернет дома\r\n", "cp1251", "cp1251"),
    ],
)
def test_csv_in_other_encodings_is_refused_naming_the_encoding(
    tmp_path: Path, text: str, codec: str, named: str
) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode(codec))
    error = refused(path, "csv", tmp_path)
    assert (error.code, error.extra) == ("unsupported_encoding", {"encoding": named})
    assert named in error.message and "UTF-8" in error.message and "?encoding=" in error.message
    _, rows = read(path, "csv", tmp_path, encoding=codec)  # the caller may say what it is
    assert rows[0].values["title"] == text.split("\r\n")[1].split(",")[1]


def test_csv_explicit_gbk_is_read_as_gb18030(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_bytes(csv_text([("external_id", "title"), ("TEL-0001", "宽带无法上网怎么办")]).encode("gb18030"))
    reader, rows = read(path, "csv", tmp_path, encoding="GBK")
    assert reader.encoding == "gb18030" and rows[0].values["title"] == "宽带无法上网怎么办"
    assert refused(path, "csv", tmp_path, encoding="no-such-codec").code == "unsupported_encoding"


def test_csv_decode_error_after_the_sampled_head(tmp_path: Path) -> None:
    good = [(f"TEL-{i:04d}", "宽带无法上网怎么办", "<p>请先重启光猫</p>", "业务/宽带/故障") for i in range(1500)]
    path = tmp_path / "mixed.csv"
    path.write_bytes(csv_text([HEADER, *good]).encode() + "TEL-9999,帐户冻结,x,y\r\n".encode("gb18030"))
    assert path.stat().st_size > 64 * 1024
    with open_reader(path, "csv", work_dir=tmp_path) as reader:
        assert reader.encoding == "utf-8"
        with pytest.raises(ImportFileError) as info:
            list(reader.rows())
    assert info.value.code == "encoding_error"
    assert info.value.extra["encoding"] == "utf-8" and info.value.extra["row"] == 1502


def test_csv_semicolon_and_utf16_tab_delimited(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text(
        csv_text([("external_id", "title", "price"), ("TEL-0001", "套餐资费, 含流量", "19,9")], sep=";"),
        encoding="utf-8",
    )
    _, rows = read(path, "csv", tmp_path)
    assert rows[0].values == {"external_id": "TEL-0001", "title": "套餐资费, 含流量", "price": "19,9"}
    path = tmp_path / "unicode.txt"
    path.write_bytes(csv_text([HEADER, *TRADITIONAL], sep="\t").encode("utf-16"))
    reader, rows = read(path, "csv", tmp_path)
    assert reader.encoding == "utf-16" and reader.columns == list(HEADER)
    assert rows[0].values["title"] == "帳戶凍結怎麼辦"


def test_csv_quoted_newlines_short_and_long_records(tmp_path: Path) -> None:
    text = (
        "external_id,title,body,categories,,\r\n"
        'TEL-0001,宽带无法上网怎么办,"<p>第一步：重启光猫\n第二步：检查网线</p>",业务/宽带/故障,,\r\n'
        "TEL-0002,手机欠费停机如何复机\r\n"
        "\r\n"
        "TEL-0003,信用卡被冻结怎么办,,业务/银行,多余,\r\n"
        ",,,,,\r\n"
        'TEL-0004,"他说""请稍等""",x,y\r\n'
    )
    path = tmp_path / "faq.csv"
    path.write_text(text, encoding="utf-8")
    reader, rows = read(path, "csv", tmp_path)
    assert reader.columns == list(HEADER)  # trailing blank header cells dropped
    assert [r.number for r in rows] == [2, 3, 5, 7]
    assert rows[0].values["body"] == "<p>第一步：重启光猫\n第二步：检查网线</p>" and rows[0].error is None
    assert rows[1].values == {
        "external_id": "TEL-0002",
        "title": "手机欠费停机如何复机",
        "body": None,
        "categories": None,
    }
    assert rows[2].error == "row has 5 cells, header has 4" and rows[2].values["external_id"] == "TEL-0003"
    assert rows[2].values["body"] is None
    assert rows[3].values["title"] == '他说"请稍等"'


@pytest.mark.parametrize("text", ["", "\r\n\r\n", ",,,\r\nTEL-0001,a,b,c\r\n"])
def test_csv_without_header_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(text, encoding="utf-8")
    assert refused(path, "csv", tmp_path).code == "no_header"


def test_csv_duplicate_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("external_id,title,body,title ,tags,tags\r\nTEL-0001,a,b,c,d,e\r\n", encoding="utf-8")
    error = refused(path, "csv", tmp_path)
    assert (error.code, error.extra) == ("duplicate_columns", {"columns": ["title", "tags"]})
    path.write_text("external_id,Title,title\r\nTEL-0001,a,b\r\n", encoding="utf-8")
    assert read(path, "csv", tmp_path)[0].columns == ["external_id", "Title", "title"]  # case-sensitive


def test_csv_unclosed_quote_fails_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    rows = [("TEL-0001", '"宽带无法上网', "x", "y")]
    rows += [(f"TEL-{i:04d}", "标题", "正文", "分类") for i in range(2, 3000)]
    path.write_text(csv_text([HEADER, *rows]), encoding="utf-8")
    limits = Limits(max_row_bytes=20_000)
    with open_reader(path, "csv", work_dir=tmp_path, limits=limits) as reader, pytest.raises(ImportFileError) as info:
        list(reader.rows())
    assert info.value.code == "row_too_large" and info.value.extra["row"] == 2


# --- XLSX ------------------------------------------------------------------------------------------------------


def save(wb: openpyxl.Workbook, path: Path) -> Path:
    wb.save(path)
    return path


def test_xlsx_values_types_and_numbering(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "FAQ"
    ws.append(["external_id", " title ", "views", "rate", "featured", "valid_from", "serial", None, None])
    ws.append(["TEL-0001", "宽带无法上网怎么办", 3.0, 0.25, True, datetime(2024, 5, 1, 9, 30), 45413])
    ws.append([])
    ws.append(["TEL-0002", "", 12, None, False, None, None])
    ws.cell(row=5, column=1, value="TEL-0003")
    ws.cell(row=5, column=8, value="表外备注")
    reader, rows = read(save(wb, tmp_path / "faq.xlsx"), "xlsx", tmp_path)
    assert reader.sheet == "FAQ" and reader.warnings == []
    assert reader.columns == ["external_id", "title", "views", "rate", "featured", "valid_from", "serial"]
    assert [r.number for r in rows] == [2, 4, 5]
    first = rows[0].values
    assert first["views"] == 3 and type(first["views"]) is int
    assert first["rate"] == 0.25 and first["featured"] is True
    assert first["valid_from"] == datetime(2024, 5, 1, 9, 30)
    assert first["serial"] == 45413  # a plain number stays a number; the engine converts date columns
    assert excel_serial_to_datetime(45413) == datetime(2024, 5, 1)
    assert excel_serial_to_datetime(45413.5) == datetime(2024, 5, 1, 12)
    assert rows[1].values["title"] is None and rows[1].values["featured"] is False
    assert rows[2].error == "cell H5 has a value but column H has no header"


def test_xlsx_picks_the_sheet_with_external_id(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.title = "说明"
    wb.active.append(["本表用于导入知识库，请勿修改表头"])
    data = wb.create_sheet("数据")
    data.append(["external_id", "title"])
    data.append(["HK-0001", "帳戶凍結怎麼辦"])
    other = wb.create_sheet("附录")
    other.append(["external_id", "title"])
    other.append(["X-1", "不应读取"])
    path = save(wb, tmp_path / "book.xlsx")
    reader, rows = read(path, "xlsx", tmp_path)
    assert reader.sheet == "数据" and [r.values["title"] for r in rows] == ["帳戶凍結怎麼辦"]
    assert reader.warnings == ["sheets 说明, 附录 ignored"]
    reader, rows = read(path, "xlsx", tmp_path, sheet="附录")
    assert reader.sheet == "附录" and rows[0].values["external_id"] == "X-1"
    error = refused(path, "xlsx", tmp_path, sheet="Sheet1")
    assert (error.code, error.extra["sheets"]) == ("unknown_sheet", ["说明", "数据", "附录"])


def test_xlsx_without_external_id_reads_the_first_sheet(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.title = "一"
    wb.active.append(["编号", "标题"])
    wb.active.append(["1", "宽带"])
    wb.create_sheet("二").append(["编号"])
    reader, rows = read(save(wb, tmp_path / "b.xlsx"), "xlsx", tmp_path)
    assert reader.sheet == "一" and rows[0].values == {"编号": "1", "标题": "宽带"}


def test_xlsx_formula_without_cached_value_is_empty_with_a_warning(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["external_id", "prefix", "title"])
    ws.append(["TEL-0001", "宽带", "=A2&B2"])
    reader, rows = read(save(wb, tmp_path / "f.xlsx"), "xlsx", tmp_path)
    assert rows[0].values["title"] is None
    assert reader.warnings == [
        "formula cell C2 has no cached value (read as empty; open and save the file in Excel to compute it)"
    ]


def test_xlsx_formula_with_cached_value_gives_the_value(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["external_id", "prefix", "title"])
    ws.append(["TEL-0001", "宽带", "=A2&B2"])
    plain = save(wb, tmp_path / "f.xlsx")
    cached = tmp_path / "cached.xlsx"  # what Excel writes: the formula and its last computed value
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(cached, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                old = b'<c r="C2"><f>A2&amp;B2</f><v></v></c>'
                assert old in data
                data = data.replace(old, '<c r="C2" t="str"><f>A2&amp;B2</f><v>TEL-0001宽带</v></c>'.encode())
            dst.writestr(info, data)
    reader, rows = read(cached, "xlsx", tmp_path)
    assert rows[0].values["title"] == "TEL-0001宽带" and reader.warnings == []


def test_xlsx_merged_cells_take_the_top_left_value(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["categories", "external_id", "title", "channels", "note"])
    ws.append(["业务/宽带/故障", "TEL-0001", "宽带无法上网怎么办", "web", "合并说明"])
    ws.append([None, "TEL-0002", "光猫红灯闪烁"])
    ws.append([None, "TEL-0003", "网速很慢"])
    ws.append(["业务/银行/信用卡", "BNK-0001", "信用卡被冻结怎么办"])
    ws.append([None, None, None])  # inside the merge of A5:A6 only: still an empty row
    ws.merge_cells("A2:A4")
    ws.merge_cells("D2:E3")
    ws.merge_cells("A5:A6")
    _, rows = read(save(wb, tmp_path / "m.xlsx"), "xlsx", tmp_path)
    assert [(r.number, r.values["categories"]) for r in rows] == [
        (2, "业务/宽带/故障"),
        (3, "业务/宽带/故障"),
        (4, "业务/宽带/故障"),
        (5, "业务/银行/信用卡"),
    ]
    assert [(r.values["channels"], r.values["note"]) for r in rows] == [
        ("web", "web"),
        ("web", "web"),
        (None, None),
        (None, None),
    ]


def test_xlsx_header_problems(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    assert refused(save(wb, tmp_path / "empty.xlsx"), "xlsx", tmp_path).code == "no_header"
    wb = openpyxl.Workbook()
    wb.active.append(["external_id", "title", "title", None, None])
    error = refused(save(wb, tmp_path / "dup.xlsx"), "xlsx", tmp_path)
    assert (error.code, error.extra["columns"]) == ("duplicate_columns", ["title"])
    assert refused(tmp_path / "dup.xlsx", "xlsx", tmp_path).code == "duplicate_columns"
    (tmp_path / "bad.xlsx").write_bytes(b"PK\x03\x04 not really")
    assert refused(tmp_path / "bad.xlsx", "xlsx", tmp_path).code == "bad_xlsx"


# --- ZIP -------------------------------------------------------------------------------------------------------


def ndjson(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_zip_manifest_and_attachments(tmp_path: Path) -> None:
    path = tmp_path / "kb.zip"
    rows = [dict(FAQ[0], attachments=["images/光猫.png", "手册.pdf"])]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.ndjson", ndjson(rows))
        zf.writestr("images/光猫.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
        zf.writestr("手册.pdf", b"%PDF-1.4 manual")
        zf.writestr("__MACOSX/._手册.pdf", b"junk")
    work = tmp_path / "work"
    work.mkdir()
    with open_reader(path, "zip", work_dir=work) as reader:
        assert [r.values for r in reader.rows()] == rows
        png = reader.attachment("images/光猫.png")
        assert png is not None and png.read_bytes().startswith(b"\x89PNG") and png.is_relative_to(work)
        assert reader.attachment("./手册.pdf").read_bytes() == b"%PDF-1.4 manual"  # type: ignore[union-attr]
        assert reader.attachment("missing.png") is None
        assert reader.attachment("manifest.ndjson") is None
        assert reader.attachment("../manifest.ndjson") is None
        assert reader.format == "zip" and reader.columns[0] == "external_id"


def test_zip_csv_manifest_inside_one_top_folder(tmp_path: Path) -> None:
    path = tmp_path / "kb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("导出/", b"")
        zf.writestr(
            "导出/manifest.csv",
            csv_text([("external_id", "title", "attachments"), ("TEL-0001", "宽带无法上网怎么办", "图/1.png")]).encode(
                "gb18030"
            ),
        )
        zf.writestr("导出/图/1.png", b"png")
    reader, rows = read(path, "zip", tmp_path)
    assert reader.encoding == "gb18030" and rows[0].values["title"] == "宽带无法上网怎么办"
    with open_reader(path, "zip", work_dir=tmp_path / "w2") as reader:
        assert reader.attachment("图/1.png").read_bytes() == b"png"  # type: ignore[union-attr]
        assert reader.attachment("导出/图/1.png") is not None


def test_zip_without_manifest(tmp_path: Path) -> None:
    path = tmp_path / "kb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("faq.ndjson", ndjson(FAQ))
    assert refused(path, "zip", tmp_path).code == "no_manifest"


def test_zip_manifest_in_the_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "kb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "<html>not json</html>")
    error = refused(path, "zip", tmp_path)
    assert (error.code, error.extra["entry"], error.extra["found"]) == ("format_mismatch", "manifest.json", "html")


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/cron.d/evil",
        "/etc/passwd",
        "C:\\Windows\\evil.dll",
        "C:/evil.txt",
        "images\\..\\..\\evil.png",
        "a/../../b.txt",
    ],
)
def test_zip_entries_escaping_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # ZipInfo would rewrite some of these; keep the raw name as an attacker does
        zf.writestr(info, b"pwned")
    work = tmp_path / "work"
    work.mkdir()
    error = refused(path, "zip", work)
    assert error.code == "unsafe_zip_entry" and error.extra["entry"] == name
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p.name in {"evil", "passwd", "evil.png", "b.txt"})


def test_zip_backslash_separators_from_windows_are_folders(tmp_path: Path) -> None:
    path = tmp_path / "win.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        info = zipfile.ZipInfo("x")
        info.filename = "images\\modem.png"
        zf.writestr(info, b"png")
    with open_reader(path, "zip", work_dir=tmp_path) as reader:
        assert reader.attachment("images/modem.png").read_bytes() == b"png"  # type: ignore[union-attr]


def test_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        info = zipfile.ZipInfo("images/passwd.png")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    error = refused(path, "zip", tmp_path)
    assert (error.code, error.extra["entry"], error.extra["reason"]) == (
        "unsafe_zip_entry",
        "images/passwd.png",
        "symlink",
    )


def test_zip_encrypted_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "enc.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        zf.writestr("secret.pdf", b"x" * 100)
    data = bytearray(path.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # set the "encrypted" flag bit where secret.pdf is described
        at = data.find(sig, data.find(sig) + 1)
        flag_at = at + (6 if sig == b"PK\x03\x04" else 8)
        data[flag_at] |= 0x1
    path.write_bytes(bytes(data))
    error = refused(path, "zip", tmp_path)
    assert (error.code, error.extra["entry"]) == ("zip_encrypted", "secret.pdf")


def test_zip_bombs_are_refused(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.zip"
    with zipfile.ZipFile(zeros, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        zf.writestr("zeros.bin", bytes(50 * 1024 * 1024))
    assert zeros.stat().st_size < 200_000
    error = refused(zeros, "zip", tmp_path)  # default limits: 50 MB of zeros inflate ~1000 times
    assert (error.code, error.extra["entry"]) == ("zip_bomb", "zeros.bin")
    error = refused(zeros, "zip", tmp_path, limits=Limits(max_unzipped_bytes=10 * 1024 * 1024, max_ratio=10**6))
    assert error.code == "zip_bomb" and error.extra["max_unzipped_bytes"] == 10 * 1024 * 1024
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        for i in range(30):
            zf.writestr(f"img/{i}.png", b"png")
    assert refused(many, "zip", tmp_path, limits=Limits(max_entries=20)).code == "zip_bomb"
    assert read(many, "zip", tmp_path, limits=Limits(max_entries=40))[1]


def test_zip_header_lying_about_sizes_gets_nothing_onto_disk(tmp_path: Path) -> None:
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.ndjson", ndjson(FAQ))
        zf.writestr("zeros.bin", bytes(20 * 1024 * 1024))
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 1)  # zeros.bin's central record
    struct.pack_into("<I", data, central + 24, 1000)  # "uncompressed size: 1000 bytes"
    path.write_bytes(bytes(data))
    work = tmp_path / "work"
    work.mkdir()
    error = refused(path, "zip", work)
    assert error.code in {"zip_bomb", "bad_zip"}
    assert sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) == 0


def test_zip_entry_with_gbk_name_from_old_windows(tmp_path: Path) -> None:
    gbk_name = "宽带故障说明.pdf".encode("gb18030")
    placeholder = b"Q" * (len(gbk_name) - 4) + b".pdf"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.csv", "external_id,title,attachments\r\nTEL-0001,宽带无法上网怎么办,宽带故障说明.pdf\r\n")
        zf.writestr(placeholder.decode(), b"%PDF-1.4")
    data = buf.getvalue()
    assert data.count(placeholder) == 2  # local header and central directory; no UTF-8 flag (ASCII name)
    path = tmp_path / "old.zip"
    path.write_bytes(data.replace(placeholder, gbk_name))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[1] != "宽带故障说明.pdf"  # what zipfile alone makes of it (cp437)
    with open_reader(path, "zip", work_dir=tmp_path) as reader:
        rows = list(reader.rows())
        attached = reader.attachment(rows[0].values["attachments"])
        assert attached is not None and attached.read_bytes() == b"%PDF-1.4"
        assert attached.name == "宽带故障说明.pdf"


# --- memory ----------------------------------------------------------------------------------------------------

ROWS = 20_000  # tracemalloc makes Python ~4x slower; the bound is what matters, not the row count
BOUND = 3 * 1024 * 1024 // 2


def _peak_while_reading(path: Path, fmt: str, tmp_path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = 0
        with open_reader(path, fmt, work_dir=tmp_path) as reader:
            for row in reader.rows():
                count += row.error is None
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_for_large_ndjson_json_and_csv(tmp_path: Path) -> None:
    body = "<p>请先重启光猫，等待两分钟后再试；如仍无法上网，请拨打10000号报修。</p>"
    nd, js, big_csv = tmp_path / "big.ndjson", tmp_path / "big.json", tmp_path / "big.csv"
    with open(nd, "w", encoding="utf-8") as f, open(js, "w", encoding="utf-8") as j:
        j.write("[")
        for i in range(ROWS):
            line = (
                f'{{"external_id": "TEL-{i:06d}", "title": "宽带无法上网怎么办{i}", "body": "{body}", '
                f'"categories": "业务/宽带/故障", "similar_questions": ["断网了", "网络连不上"]}}'
            )
            f.write(line + "\n")
            j.write(("," if i else "") + line)
        j.write("]")
    with open(big_csv, "w", encoding="gb18030", newline="") as f:
        f.write("external_id,title,body,categories\r\n")
        for i in range(ROWS):
            f.write(f'TEL-{i:06d},宽带无法上网怎么办{i},"{body}",业务/宽带/故障\r\n')
    for path, fmt in ((nd, "ndjson"), (js, "json"), (big_csv, "csv")):
        assert path.stat().st_size > 1.5 * BOUND  # holding the file (or its rows) would pass the bound
        count, peak = _peak_while_reading(path, fmt, tmp_path)
        assert count == ROWS
        assert peak < BOUND, f"{fmt}: peak {peak / 1e6:.1f} MB"
