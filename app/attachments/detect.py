"""Content-type detection from the bytes of a file, and safe display names.

The client's Content-Type and file name are never trusted for the type: `detect_bytes` looks at the
first bytes (magic numbers via `filetype`, then a text sniff), and `detect_file` also opens the
containers that share one magic number (ZIP: docx/xlsx/pptx/odt/epub/jar; OLE2: doc/xls/ppt/msg and
password-protected OOXML) to tell them apart. The file name is used only as a last hint for a few
binary formats without a magic number (dBASE), never to override what the bytes say.
"""

from __future__ import annotations

import codecs
import mimetypes
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import filetype
import olefile

HEAD_BYTES = 8192
OCTET_STREAM = "application/octet-stream"
MAX_FILENAME_BYTES = 255

EXECUTABLE_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-dosexec",
        "application/vnd.microsoft.portable-executable",
        "application/x-executable",
        "application/x-sharedlib",
        "application/x-mach-binary",
        "application/x-elf",
    }
)

# Extensions for types that `mimetypes` does not know or maps oddly.
_EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.ms-outlook": ".msg",
    "application/vnd.visio": ".vsd",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.ms-word.document.macroenabled.12": ".docm",
    "application/vnd.ms-excel.sheet.macroenabled.12": ".xlsm",
    "application/vnd.ms-excel.sheet.binary.macroenabled.12": ".xlsb",
    "application/vnd.ms-powerpoint.presentation.macroenabled.12": ".pptm",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/vnd.oasis.opendocument.presentation": ".odp",
    "application/epub+zip": ".epub",
    "application/java-archive": ".jar",
    "application/vnd.android.package-archive": ".apk",
    "application/zip": ".zip",
    "application/x-7z-compressed": ".7z",
    "application/x-rar-compressed": ".rar",
    "application/gzip": ".gz",
    "application/x-tar": ".tar",
    "application/rtf": ".rtf",
    "application/x-dbf": ".dbf",
    "application/x-msdownload": ".exe",
    "application/x-executable": ".elf",
    "application/vnd.ms-fontobject": ".eot",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/csv": ".csv",
    "text/markdown": ".md",
    "application/xml": ".xml",
    "image/svg+xml": ".svg",
    "application/json": ".json",
    "image/jpeg": ".jpg",
    "audio/mpeg": ".mp3",
    "video/mp4": ".mp4",
    OCTET_STREAM: ".bin",
}

# Binary formats with no usable magic number: the name may decide, but only when the bytes matched nothing.
_BINARY_NAME_HINTS = {".dbf": "application/x-dbf"}
# Text formats that a text sniff cannot tell apart from plain text.
_TEXT_NAME_HINTS = {
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".json": "application/json",
}

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OOXML_PROTECTED = "application/x-tika-ooxml-protected"
_OLE_GENERIC = "application/x-tika-msoffice"


@dataclass(frozen=True, slots=True)
class DetectedType:
    mime: str
    extension: str  # with the dot; derived from the detected type, never from the client's name

    @property
    def is_executable(self) -> bool:
        return self.mime in EXECUTABLE_TYPES


def extension_for(mime: str) -> str:
    ext = _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime, strict=False)
    return ext or ".bin"


def _result(mime: str) -> DetectedType:
    return DetectedType(mime, extension_for(mime))


def _name_suffix(filename: str | None) -> str:
    if not filename:
        return ""
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def detect_bytes(head: bytes, filename: str | None = None) -> DetectedType:
    """Type from the first bytes of a file (pass at least `HEAD_BYTES` when the file is that long)."""
    if not head:
        return _result(OCTET_STREAM)
    if head.startswith(_OLE_MAGIC):
        return _result(_ole_type_from_names(_utf16_names_in(head)) or _OLE_GENERIC)
    kind = filetype.guess(head)
    if kind is not None:
        mime = kind.mime
        if mime == "application/x-msdownload" and b"\x00" not in head[:64]:
            kind = None  # "MZ" followed by text is a text file, a real DOS header is full of NULs
        elif mime == OCTET_STREAM and kind.extension == "eot":
            return _result("application/vnd.ms-fontobject")
        else:
            return _result(mime)
    text_type = _sniff_text(head)
    if text_type is not None:
        if text_type == "text/plain":
            text_type = _TEXT_NAME_HINTS.get(_name_suffix(filename), text_type)
        return _result(text_type)
    hinted = _BINARY_NAME_HINTS.get(_name_suffix(filename))
    return _result(hinted or OCTET_STREAM)


def detect_file(path: Path, filename: str | None = None) -> DetectedType:
    """Like `detect_bytes`, but also looks inside ZIP and OLE2 containers. Blocking: run in a thread."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if head.startswith(_OLE_MAGIC):
        mime = _ole_type(path) or _ole_type_from_names(_utf16_names_in(head)) or _OLE_GENERIC
        if mime == _OOXML_PROTECTED:
            # An encrypted docx/xlsx/pptx is an OLE2 box; only the name can tell which one it was.
            suffix = _name_suffix(filename)
            ext = suffix if suffix in {".docx", ".xlsx", ".pptx", ".docm", ".xlsm", ".pptm"} else ".bin"
            return DetectedType(mime, ext)
        return _result(mime)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        mime = _zip_type(path)
        if mime is not None:
            return _result(mime)
    return detect_bytes(head, filename)


def _zip_type(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                declared = zf.read("mimetype")[:100].decode("ascii", "replace").strip()
                if declared.startswith(("application/vnd.oasis.opendocument.", "application/epub+zip")):
                    return declared
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, NotImplementedError):
        return None
    if "[Content_Types].xml" in names:
        if "word/document.xml" in names:
            return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        if "xl/workbook.xml" in names:
            return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        if "xl/workbook.bin" in names:
            return "application/vnd.ms-excel.sheet.binary.macroenabled.12"
        if "ppt/presentation.xml" in names:
            return "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    if "AndroidManifest.xml" in names and "classes.dex" in names:
        return "application/vnd.android.package-archive"
    if "META-INF/MANIFEST.MF" in names:
        return "application/java-archive"
    return "application/zip"


def _ole_type(path: Path) -> str | None:
    try:
        with olefile.OleFileIO(str(path)) as ole:
            names = {entry[-1] for entry in ole.listdir(streams=True, storages=True)}
    except Exception:  # olefile raises many kinds of errors on damaged files
        return None
    return _ole_type_from_names(names)


def _ole_type_from_names(names: set[str]) -> str | None:
    if {"EncryptionInfo", "EncryptedPackage"} <= names:
        return _OOXML_PROTECTED
    if "WordDocument" in names:
        return "application/msword"
    if "Workbook" in names or "Book" in names:
        return "application/vnd.ms-excel"
    if "PowerPoint Document" in names:
        return "application/vnd.ms-powerpoint"
    if any(n.startswith(("__substg1.0_", "__properties_version1.0")) for n in names):
        return "application/vnd.ms-outlook"
    if "VisioDocument" in names:
        return "application/vnd.visio"
    return None


_OLE_NAMES = (
    "EncryptionInfo",
    "EncryptedPackage",
    "WordDocument",
    "Workbook",
    "Book",
    "PowerPoint Document",
    "__substg1.0_",
    "__properties_version1.0",
    "VisioDocument",
)


def _utf16_names_in(head: bytes) -> set[str]:
    """OLE2 directory entries are UTF-16LE; small files keep the directory inside the first bytes."""
    return {name for name in _OLE_NAMES if name.encode("utf-16-le") in head}


# The tag list of the WHATWG MIME sniffing standard ("identifying a resource with an unknown MIME type").
_HTML_START = re.compile(
    rb"^(<!doctype\s+html|<(html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p)[\s>/])",
    re.IGNORECASE,
)
_LEADING_NOISE = re.compile(rb"^(\s+|<!--.*?-->)+", re.DOTALL)
_XML_START = re.compile(rb"^\s*<\?xml[\s?]", re.IGNORECASE)
_SVG = re.compile(rb"<svg[\s>]", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _sniff_text(head: bytes) -> str | None:
    text = _decode_text(head)
    if text is None:
        return None
    sample = _LEADING_NOISE.sub(b"", text[:4096].encode("utf-8", "replace"), count=1)
    if _HTML_START.match(sample):
        return "text/html"
    if _XML_START.match(sample):
        return "image/svg+xml" if _SVG.search(sample) else "application/xml"
    if _SVG.match(sample):
        return "image/svg+xml"
    return "text/plain"


def _decode_text(head: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            try:
                return codecs.getincrementaldecoder(encoding)().decode(head[len(bom) :])
            except UnicodeDecodeError:
                return None
    if b"\x00" in head:
        return None
    for encoding in ("utf-8", "gb18030"):
        try:
            # incremental: a multi-byte character cut at the end of the head is not an error
            text = codecs.getincrementaldecoder(encoding)().decode(head)
        except UnicodeDecodeError:
            continue
        controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v\x1b")
        if controls <= len(text) // 100:
            return text
        return None
    return None


_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')


def safe_filename(name: str) -> str:
    """A display/download name that keeps Chinese and other letters but can never act as a path.

    Path components are dropped (both separators), control and format characters (including the
    bidi overrides used to disguise ``gpj.exe``) are removed, characters Windows refuses become ``_``,
    and the result is cut to 255 bytes of UTF-8 keeping the extension. Raises ValueError when nothing
    usable is left.
    """
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE_CHARS.sub("_", name)
    name = " ".join(name.split())  # other whitespace (NBSP, ideographic space) becomes one plain space
    name = name.strip(" .")
    if not name:
        raise ValueError("file name is empty after removing path and control characters")
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    return _truncate_utf8(name, MAX_FILENAME_BYTES)


def _truncate_utf8(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8")) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = limit - len(suffix.encode("utf-8"))
    out = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
    if not out:
        raise ValueError("file name is empty after truncation")
    return out + suffix
