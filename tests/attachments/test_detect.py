from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from app.attachments.detect import (
    HEAD_BYTES,
    MAX_FILENAME_BYTES,
    detect_bytes,
    detect_file,
    safe_filename,
)

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

SAMPLE_TYPES = {
    "testWORD.doc": ("application/msword", ".doc"),
    "testWORD.docx": (DOCX, ".docx"),
    "testEXCEL.xls": ("application/vnd.ms-excel", ".xls"),
    "testEXCEL.xlsx": (XLSX, ".xlsx"),
    "testPPT.ppt": ("application/vnd.ms-powerpoint", ".ppt"),
    "testPPT.pptx": (PPTX, ".pptx"),
    "testMSG_chinese.msg": ("application/vnd.ms-outlook", ".msg"),
    "testRTF.rtf": ("application/rtf", ".rtf"),
    "testPDF.pdf": ("application/pdf", ".pdf"),
    "testPDF_protected.pdf": ("application/pdf", ".pdf"),
    "testHTML_utf8.html": ("text/html", ".html"),
    "testTXTNonASCIIUTF8.txt": ("text/plain", ".txt"),
    "testPNG.png": ("image/png", ".png"),
    "testMP3i18n.mp3": ("audio/mpeg", ".mp3"),
    "testMP4Video.mp4": ("video/mp4", ".mp4"),
    "gbk.zip": ("application/zip", ".zip"),
    "testZipEncrypted.zip": ("application/zip", ".zip"),
    "testZIP_corrupted_oom.zip": ("application/zip", ".zip"),
    "testEXCEL_protected_passtika.xls": ("application/vnd.ms-excel", ".xls"),
    "testWORD_protected_passtika.docx": ("application/x-tika-ooxml-protected", ".docx"),
    "testODTnotaZipFile.odt": ("text/plain", ".txt"),  # the name lies, the bytes are text
    "testDBF_gb18030.dbf": ("application/x-dbf", ".dbf"),  # no magic number: the name decides
}


@pytest.mark.parametrize("name", sorted(SAMPLE_TYPES))
def test_real_samples_are_detected_from_their_bytes(samples: Path, name: str) -> None:
    detected = detect_file(samples / name, name)
    assert (detected.mime, detected.extension) == SAMPLE_TYPES[name]


def test_a_misleading_name_does_not_change_the_type(samples: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "季度报表.xlsx"
    renamed.write_bytes((samples / "testPDF.pdf").read_bytes())
    assert detect_file(renamed, "季度报表.xlsx").mime == "application/pdf"
    assert detect_file(samples / "testDBF_gb18030.dbf", "x.txt").mime == "application/octet-stream"


def pe_header() -> bytes:
    dos = bytearray(b"MZ" + b"\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(44))
    dos += struct.pack("<I", 64)  # e_lfanew
    return bytes(dos) + b"PE\x00\x00" + bytes(200)


def test_exe_named_pdf_is_an_executable(tmp_path: Path) -> None:
    fake = tmp_path / "发票.pdf"
    fake.write_bytes(pe_header())
    for detected in (detect_file(fake, fake.name), detect_bytes(fake.read_bytes(), fake.name)):
        assert detected.mime == "application/x-msdownload"
        assert detected.extension == ".exe"
        assert detected.is_executable


def test_elf_is_an_executable() -> None:
    detected = detect_bytes(b"\x7fELF\x02\x01\x01" + bytes(100), "readme.txt")
    assert detected.is_executable


def test_text_starting_with_mz_is_not_an_executable() -> None:
    assert detect_bytes("MZ客服中心简介：宽带故障请拨打 10000。".encode()).mime == "text/plain"


def test_generated_office_files(generated: dict[str, Path]) -> None:
    assert detect_file(generated["docx"]).mime == DOCX
    assert detect_file(generated["xlsx"]).mime == XLSX
    assert detect_file(generated["pptx"]).mime == PPTX
    assert detect_file(generated["pdf"]).mime == "application/pdf"


def test_ooxml_needs_the_container_not_just_the_head(tmp_path: Path) -> None:
    # The first bytes of a docx are a ZIP header; only the entry names say "word processing document".
    path = tmp_path / "x.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("docProps/app.xml", "<x/>" * 5000)  # pushes the telling names past the head
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<w:document/>")
    assert detect_file(path).mime == DOCX
    assert detect_bytes(path.read_bytes()[:HEAD_BYTES]).mime == "application/zip"


def test_odf_by_mimetype_entry(tmp_path: Path) -> None:
    path = tmp_path / "a.odt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", "<office:document-content/>")
    assert detect_file(path).mime == "application/vnd.oasis.opendocument.text"
    assert detect_file(path).extension == ".odt"


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        ("客户来电：宽带无法上网。".encode(), "text/plain"),
        ("客户来电：宽带无法上网。".encode("gb18030"), "text/plain"),
        ("寬頻無法上網".encode("utf-16"), "text/plain"),
        ("\ufeff宽带".encode(), "text/plain"),
        (b"<!-- comment -->\n<html><body>x</body></html>", "text/html"),
        (b"<!DOCTYPE html><p>hi", "text/html"),
        (b'<?xml version="1.0"?><root/>', "application/xml"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (b"", "application/octet-stream"),
        (bytes(range(256)) * 4, "application/octet-stream"),
    ],
)
def test_bytes_only_detection(data: bytes, mime: str) -> None:
    assert detect_bytes(data).mime == mime


def test_utf8_character_cut_at_the_end_of_the_head_is_still_text() -> None:
    data = ("宽带" * 5000).encode()[: HEAD_BYTES - 1]  # ends in the middle of a 3-byte character
    assert detect_bytes(data).mime == "text/plain"


def test_csv_name_refines_text_only() -> None:
    assert detect_bytes("问题,答案\n断网,重启光猫\n".encode(), "话术.csv").mime == "text/csv"
    assert detect_bytes(b"%PDF-1.4\n", "x.csv").mime == "application/pdf"


# ---------------------------------------------------------------------------------------------------
# safe_filename


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("宽带故障处理手册.docx", "宽带故障处理手册.docx"),
        ("寬頻 常見問題.pdf", "寬頻 常見問題.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\话术.xlsx", "话术.xlsx"),
        ("C:\\Users\\张三\\Desktop\\报告.doc", "报告.doc"),
        ("/abs/path/录音.mp3", "录音.mp3"),
        ("bad\x00name\x1f.txt", "badname.txt"),
        ("发票\u202egpj.exe", "发票gpj.exe"),  # bidi override that would display as 发票exe.jpg
        ('a<b>c:d|e?f*g".txt', "a_b_c_d_e_f_g_.txt"),
        ("  .hidden. ", "hidden"),
        ("tab\tand\nnewline.txt", "tabandnewline.txt"),
        ("全角\u3000空格.txt", "全角 空格.txt"),
        ("CON.txt", "_CON.txt"),
        ("nul", "_nul"),
    ],
)
def test_safe_filename(raw: str, safe: str) -> None:
    assert safe_filename(raw) == safe


def test_safe_filename_nfc_normalizes() -> None:
    assert safe_filename("cafe\u0301.txt") == "caf\u00e9.txt"


@pytest.mark.parametrize("raw", ["", "   ", "..", "../", "/", "\\", "\x00\x01", "a/..", "dir/ . "])
def test_safe_filename_rejects_empty_results(raw: str) -> None:
    with pytest.raises(ValueError):
        safe_filename(raw)


def test_safe_filename_limits_utf8_bytes_and_keeps_the_extension() -> None:
    name = "宽带故障" * 40 + ".docx"  # 160 CJK characters = 480 bytes
    safe = safe_filename(name)
    assert len(safe.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert safe.endswith(".docx")
    assert safe.startswith("宽带故障")
    safe.encode("utf-8").decode("utf-8")  # never cut inside a character


def test_safe_filename_long_name_without_extension() -> None:
    safe = safe_filename("说" * 300)
    assert safe == "说" * (MAX_FILENAME_BYTES // 3)
