"""Uploaded import files -> streams of raw rows (NDJSON, JSON, CSV, XLSX, ZIP with a manifest).

Knows nothing about items: a `Reader` gives column names and `Row`s of raw values; a file that cannot
be read as a whole raises `ImportFileError` (when possible at `open_reader`, else on the first pass,
which the engine runs before writing anything); a row that cannot be parsed is a `Row` with `error`.
Every reader streams: memory does not grow with the file (XLSX keeps openpyxl's shared-string table).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import IO, Any

import ijson

FORMATS = ("ndjson", "json", "csv", "xlsx", "zip")
CONTENT_TYPES: dict[str, str] = {
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json": "json",
    "text/csv": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/zip": "zip",
    "application/x-zip-compressed": "zip",
}

_BOM = codecs.BOM_UTF8
_HEAD = 64 * 1024
_CHUNK = 1024 * 1024
_COLUMN_SCAN_ROWS = 1000
_GB_FAMILY = frozenset({"gbk", "gb2312", "gb18030", "cp936", "euc_cn", "hz"})
_SUPPORTED_ENCODINGS = frozenset(
    {"utf-8", "utf-8-sig", "gb18030", "big5", "big5hkscs", "cp950", "utf-16", "utf-16-le", "utf-16-be"}
)


class ImportFileError(Exception):
    """The file as a whole cannot be read: the job fails before any write."""

    def __init__(self, message: str, code: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra


@dataclass(frozen=True)
class Limits:
    max_unzipped_bytes: int = 4 * 1024**3
    max_entries: int = 20_000
    max_ratio: int = 200  # per entry uncompressed/compressed, for entries > 1 MiB
    max_row_bytes: int = 5 * 1024**2  # a single NDJSON line / JSON element / CSV record


@dataclass
class Row:
    number: int  # CSV/XLSX: spreadsheet row (header = 1); NDJSON: line number; JSON: element index + 1
    values: dict[str, Any]
    error: str | None = None


def excel_serial_to_datetime(value: float) -> datetime:
    """An Excel serial day number (1900 date system) as a datetime; a fraction < 1 is a time on 1899-12-30."""
    from openpyxl.utils.datetime import WINDOWS_EPOCH, from_excel

    if not math.isfinite(value):
        raise ValueError(f"{value} is not a date")
    result = from_excel(value)
    if isinstance(result, time):
        return datetime.combine(WINDOWS_EPOCH.date(), result)
    return result


# --- format sniffing -------------------------------------------------------------------------------------------


def sniff_format(path: Path, declared: str | None) -> str:
    """The file's format: `declared` checked against the bytes, or guessed from them when None."""
    if declared is not None and declared not in FORMATS:
        raise ImportFileError(
            f"unknown import format {declared!r}; use one of {', '.join(FORMATS)}",
            "unsupported_format",
            format=declared,
            formats=list(FORMATS),
        )
    found = _found_format(path)
    if declared is None:
        if found == "json_object":
            return "json"
        if found not in FORMATS:
            raise ImportFileError(
                f"the file is {found}, not one of {', '.join(FORMATS)}",
                "unsupported_format",
                found=found,
                formats=list(FORMATS),
            )
        return found
    if found == declared or (declared == "json" and found in ("json_object", "ndjson")):
        return declared  # a one-line object is also a JSON document; the reader looks for its "rows"
    if found == "json_object":
        found = "json"
    raise ImportFileError(
        f"the file was declared {declared} but its content is {found}",
        "format_mismatch",
        declared=declared,
        found=found,
    )


def _found_format(path: Path) -> str:
    """xlsx, zip, json, ndjson, json_object (one object whose first line is not complete), csv, or what it
    is instead (pdf, html, docx, binary, empty ...)."""
    from app.attachments.detect import detect_bytes, detect_file

    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        mime = detect_file(path).mime
        if mime == CONTENT_TYPE_XLSX:
            return "xlsx"
        return "zip" if mime == "application/zip" else _type_name(mime)
    text = head.removeprefix(_BOM).lstrip(b" \t\r\n")
    if not text:
        return "empty"
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first = _first_nonblank_line(path)
        if len(first) >= Limits.max_row_bytes and not first.endswith(b"\n"):
            return "ndjson"  # a first line too long to check; the NDJSON reader reports it as a failed row
        try:
            value = json.loads(first)
        except ValueError:
            return "json_object"
        if isinstance(value, dict) and isinstance(value.get("rows"), list):
            return "json_object"
        return "ndjson" if isinstance(value, dict) else "json_object"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "csv"  # Excel's "Unicode text": UTF-16 with tabs
    mime = detect_bytes(head).mime
    if mime == "text/plain":
        return "csv"
    if mime == "application/octet-stream":
        return "binary" if b"\x00" in head else "csv"  # text in an encoding the detector does not know
    return _type_name(mime)


CONTENT_TYPE_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _type_name(mime: str) -> str:
    from app.attachments.detect import extension_for

    return {"text/html": "html", "application/octet-stream": "binary"}.get(mime) or (
        extension_for(mime).lstrip(".") or mime
    )


def _first_nonblank_line(path: Path, limit: int = Limits.max_row_bytes) -> bytes:
    with open(path, "rb") as f:
        while line := f.readline(limit):
            if line.strip():
                return line.removeprefix(_BOM)
    return b""


# --- readers ---------------------------------------------------------------------------------------------------


class Reader:
    """Base: `rows()` streams and may be called again (each pass re-opens the file)."""

    format: str = ""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self.columns: list[str] = []
        self.sheet: str | None = None
        self.warnings: list[str] = []
        self.encoding: str | None = None
        self._passes: weakref.WeakSet[Iterator[Row]] = weakref.WeakSet()

    def rows(self) -> Iterator[Row]:
        gen = self._rows()
        self._passes.add(gen)
        return gen

    def _rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def attachment(self, name: str) -> Path | None:
        return None

    def close(self) -> None:
        for gen in list(self._passes):
            gen.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _JsonLikeReader(Reader):
    """NDJSON and JSON: `columns` is the union of keys, first from the first 1000 rows (read at open), then
    extended in place as later rows bring new keys."""

    def __init__(self, path: Path, limits: Limits) -> None:
        super().__init__(path, limits)
        self._seen: set[str] = set()
        passes = self.rows()
        for i, _ in enumerate(passes):
            if i + 1 >= _COLUMN_SCAN_ROWS:
                break
        passes.close()  # type: ignore[attr-defined]

    def _rows(self) -> Iterator[Row]:
        for row in self._parse():
            for key in row.values:
                if key not in self._seen:
                    self._seen.add(key)
                    self.columns.append(key)
            yield row

    def _parse(self) -> Iterator[Row]:
        raise NotImplementedError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class NdjsonReader(_JsonLikeReader):
    format = "ndjson"

    def _parse(self) -> Iterator[Row]:
        limit = self.limits.max_row_bytes
        with open(self.path, "rb") as f:
            number = 0
            while line := f.readline(limit + 1):
                number += 1
                if len(line) > limit and not line.endswith(b"\n"):
                    while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
                        pass  # skip the rest of the oversized line without holding it
                    yield Row(number, {}, f"line {number} is longer than {limit} bytes")
                    continue
                if number == 1:
                    line = line.removeprefix(_BOM)
                if not line.strip():
                    continue
                try:
                    value = json.loads(line, parse_constant=_reject_constant)
                except json.JSONDecodeError as exc:
                    yield Row(number, {}, f"line {number} is not valid JSON: {exc.msg} (column {exc.colno})")
                    continue
                except ValueError as exc:  # bad UTF-8, NaN/Infinity
                    yield Row(number, {}, f"line {number} is not valid JSON: {exc}")
                    continue
                if not isinstance(value, dict):
                    yield Row(number, {}, f"line {number} is not a JSON object (found {_json_kind(value)})")
                    continue
                yield Row(number, value)


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


class _Counting:
    """A binary file that counts the bytes handed to the parser (to bound the size of one JSON element)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.pos += len(data)
        return data


class JsonReader(_JsonLikeReader):
    """A top-level array of objects, or an object whose "rows" member is that array; streamed with ijson
    events so one oversized element is skipped (to within one 64 KiB read buffer) instead of built."""

    format = "json"

    def _parse(self) -> Iterator[Row]:
        with open(self.path, "rb") as raw:
            if raw.read(3) != _BOM:
                raw.seek(0)
            counted = _Counting(raw)
            events = _JsonEvents(ijson.basic_parse(counted, use_float=True))
            first = events.next()
            if first[0] == "start_map":
                self._enter_rows(events)
            elif first[0] != "start_array":
                raise ImportFileError(
                    'the JSON holds a single value, not rows: send an array of objects or {"rows": [...]}',
                    "json_not_rows",
                )
            limit = self.limits.max_row_bytes + 64 * 1024
            while True:
                event, value = events.next()
                if event == "end_array":
                    break
                events.index += 1
                number = events.index
                if event != "start_map":
                    if event == "start_array":
                        events.skip_open(1)
                    yield Row(number, {}, f"element {number} is not a JSON object (found {_event_kind(event)})")
                    continue
                start = counted.pos
                builder: ijson.ObjectBuilder | None = ijson.ObjectBuilder()
                builder.event(event, value)
                depth = 1
                while depth:
                    event, value = events.next()
                    depth += event in ("start_map", "start_array")
                    depth -= event in ("end_map", "end_array")
                    if builder is not None:
                        builder.event(event, value)
                        if counted.pos - start > limit:
                            builder = None
                if builder is None:
                    yield Row(number, {}, f"element {number} is longer than {self.limits.max_row_bytes} bytes")
                else:
                    yield Row(number, builder.value)
            while events.next(allow_end=True)[0]:
                pass  # read to the end: a broken tail fails the file in the scanning pass

    @staticmethod
    def _enter_rows(events: _JsonEvents) -> None:
        while True:
            event, key = events.next()
            if event == "end_map":
                raise ImportFileError(
                    'the JSON object has no "rows" array: send an array of objects or {"rows": [...]}', "json_not_rows"
                )
            event, _ = events.next()
            if key == "rows":
                if event != "start_array":
                    raise ImportFileError('"rows" in the JSON object is not an array', "json_not_rows")
                return
            if event in ("start_map", "start_array"):
                events.skip_open(1)


def _event_kind(event: str) -> str:
    return {"start_array": "an array", "string": "a string", "boolean": "a boolean", "null": "null"}.get(
        event, "a number"
    )


class _JsonEvents:
    def __init__(self, events: Iterator[tuple[str, Any]]) -> None:
        self._events = events
        self.index = 0  # elements of the rows array seen so far

    def next(self, allow_end: bool = False) -> tuple[str, Any]:
        try:
            return next(self._events)
        except StopIteration:
            if allow_end:
                return ("", None)
            raise ImportFileError(f"the JSON ends early (after element {self.index})", "invalid_json", row=self.index)
        except ijson.JSONError as exc:
            raise ImportFileError(
                f"the JSON is not valid after element {self.index}: {exc}", "invalid_json", row=self.index
            )

    def skip_open(self, depth: int) -> None:
        while depth:
            event, _ = self.next()
            depth += event in ("start_map", "start_array")
            depth -= event in ("end_map", "end_array")


# --- CSV -------------------------------------------------------------------------------------------------------


def detect_csv_encoding(path: Path, encoding: str | None = None) -> str:
    """The encoding to read a CSV with: the caller's, a BOM's, UTF-8 when the head decodes, else what
    charset-normalizer finds, if it is one we accept (GBK family -> gb18030, its superset)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if encoding is not None:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise ImportFileError(f"unknown encoding {encoding!r}", "unsupported_encoding", encoding=encoding)
        if name in _GB_FAMILY:
            return "gb18030"
        return "utf-8-sig" if name == "utf-8" and head.startswith(_BOM) else name
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise _unsupported("utf-32")
    if head.startswith(_BOM):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _HEAD)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    sample = (head[: head.rfind(b"\n") + 1] or head) if len(head) == _HEAD else head  # no cut character
    best = from_bytes(sample).best()
    if best is None:
        raise _unsupported("unknown")
    name = codecs.lookup(best.encoding).name
    if name in _GB_FAMILY:
        return "gb18030"
    if name not in _SUPPORTED_ENCODINGS:
        raise _unsupported(name)
    return name


def _unsupported(found: str) -> ImportFileError:
    what = "could not be recognized" if found == "unknown" else f"looks like {found}"
    return ImportFileError(
        f"the CSV's encoding {what}; accepted are UTF-8, GB18030/GBK, Big5 and UTF-16: "
        "save it as UTF-8 (Excel: CSV UTF-8) or pass ?encoding=",
        "unsupported_encoding",
        encoding=found,
    )


def _delimiter(line: str) -> str:
    counts = dict.fromkeys(",;\t", 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _too_large(row: int, limit: int) -> ImportFileError:
    return ImportFileError(
        f"row {row} is longer than {limit} bytes (often a quote that is never closed; the rest "
        "of the file cannot be read reliably)",
        "row_too_large",
        row=row,
    )


def header_columns(cells: list[Any], where: str) -> list[tuple[int, str]]:
    """(position, name) of the named columns: names stripped (BOM, whitespace), trailing blanks dropped;
    a blank name in the middle leaves that column unnamed (a value under it is a row error)."""
    names = ["" if c is None else str(c).replace("\ufeff", "").strip() for c in cells]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ImportFileError(f"{where} has no header row: the first row must name the columns", "no_header")
    columns = [(i, n) for i, n in enumerate(names) if n]
    seen: set[str] = set()
    dupes = [n for _, n in columns if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dupes:
        dupes = list(dict.fromkeys(dupes))
        raise ImportFileError(f"columns appear more than once: {', '.join(dupes)}", "duplicate_columns", columns=dupes)
    return columns


class CsvReader(Reader):
    format = "csv"

    def __init__(self, path: Path, limits: Limits, encoding: str | None) -> None:
        super().__init__(path, limits)
        self.encoding = detect_csv_encoding(path, encoding)
        if csv.field_size_limit() < limits.max_row_bytes:
            csv.field_size_limit(limits.max_row_bytes)
        self.delimiter = ","
        with open(path, "rb") as f:
            self.delimiter = _delimiter(next(self._lines(f, lambda: 0), ""))
        header = next(self._records(), None)
        self._header = header_columns(header[1] if header else [], "the CSV")
        self._width = self._header[-1][0] + 1
        self.columns = [n for _, n in self._header]

    def _lines(self, f: IO[bytes], row: Callable[[], int]) -> Iterator[str]:
        """Decoded lines, one at a time, so a decode error names its row and byte offset. Splitting the bytes
        at \n is safe in UTF-8, GB18030 and Big5 (0x0A is never part of a multi-byte character); UTF-16 goes
        through a text stream instead."""
        assert self.encoding is not None
        limit = self.limits.max_row_bytes
        if self.encoding.startswith("utf-16"):
            text = io.TextIOWrapper(f, encoding=self.encoding, newline="")
            try:
                while line := text.readline(limit + 1):
                    if len(line) > limit:
                        raise _too_large(row() + 1, limit)
                    yield line
            except UnicodeDecodeError as exc:
                raise self._decode_error(exc, row() + 1, None)
            return
        decoder = codecs.getincrementaldecoder(self.encoding)()
        offset = 0
        while raw := f.readline(limit + 1):
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise _too_large(row() + 1, limit)
            try:
                yield decoder.decode(raw)
            except UnicodeDecodeError as exc:
                raise self._decode_error(exc, row() + 1, offset + max(exc.start, 0))
            offset += len(raw)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc, row() + 1, offset)

    def _decode_error(self, exc: UnicodeDecodeError, row: int, offset: int | None) -> ImportFileError:
        where = f"row {row}" + ("" if offset is None else f", byte {offset}")
        return ImportFileError(
            f"the CSV is not valid {self.encoding} at {where} ({exc.reason}): save it as UTF-8 or pass ?encoding=",
            "encoding_error",
            encoding=self.encoding,
            row=row,
            offset=offset,
        )

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        number = 0
        with open(self.path, "rb") as f:
            reader = csv.reader(self._lines(f, lambda: number), delimiter=self.delimiter)
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    if "field limit" in str(exc):
                        raise _too_large(number + 1, self.limits.max_row_bytes)
                    raise ImportFileError(
                        f"the CSV cannot be read at row {number + 1}: {exc}", "csv_error", row=number + 1
                    )
                number += 1
                if number == 1 and cells:
                    cells[0] = cells[0].removeprefix("\ufeff")
                yield number, cells

    def _rows(self) -> Iterator[Row]:
        records = self._records()
        next(records, None)  # the header
        limit = self.limits.max_row_bytes
        for number, cells in records:
            if not any(cells):
                continue
            if sum(map(len, cells)) > limit:
                raise _too_large(number, limit)
            values = {name: (cells[i] or None) if i < len(cells) else None for i, name in self._header}
            yield Row(number, values, self._stray(cells))

    def _stray(self, cells: list[str]) -> str | None:
        if len(cells) > self._width and any(cells[self._width :]):
            used = len(cells)
            while not cells[used - 1]:
                used -= 1
            return f"row has {used} cells, header has {self._width}"
        named = {i for i, _ in self._header}
        for i in range(min(len(cells), self._width)):
            if cells[i] and i not in named:
                return f"cell {i + 1} has a value but its column has no header"
        return None


# --- ZIP -------------------------------------------------------------------------------------------------------


class ZipReader(Reader):
    """Rows from the manifest (read by its own reader); every other entry is an attachment, extracted and
    checked at open into `work_dir`."""

    format = "zip"

    def __init__(self, path: Path, limits: Limits, work_dir: Path, encoding: str | None) -> None:
        from app.imports import zipsafe

        super().__init__(path, limits)
        self._zip = zipsafe.extract(path, work_dir, limits)
        suffix = self._zip.manifest_name.rpartition(".")[2].lower()
        fmt = "ndjson" if suffix in ("ndjson", "jsonl") else suffix
        try:
            sniff_format(self._zip.manifest, fmt)
        except ImportFileError as exc:
            exc.extra["entry"] = self._zip.manifest_name
            exc.message = f"{self._zip.manifest_name}: {exc.message}"
            raise
        self.manifest = self._zip.manifest_name
        self._inner = _open(self._zip.manifest, fmt, work_dir=work_dir, encoding=encoding, sheet=None, limits=limits)
        self.columns = self._inner.columns  # the same list: JSON readers extend it while streaming
        self.warnings = self._inner.warnings
        self.encoding = self._inner.encoding

    def _rows(self) -> Iterator[Row]:
        yield from self._inner.rows()

    def attachment(self, name: str) -> Path | None:
        from app.imports import zipsafe

        return zipsafe.lookup(self._zip, name)


def _open(path: Path, fmt: str, *, work_dir: Path, encoding: str | None, sheet: str | None, limits: Limits) -> Reader:
    if fmt == "ndjson":
        return NdjsonReader(path, limits)
    if fmt == "json":
        return JsonReader(path, limits)
    if fmt == "csv":
        return CsvReader(path, limits, encoding)
    if fmt == "xlsx":
        from app.imports.xlsx import XlsxReader

        return XlsxReader(path, limits, sheet)
    if fmt == "zip":
        return ZipReader(path, limits, work_dir, encoding)
    raise ImportFileError(
        f"unknown import format {fmt!r}; use one of {', '.join(FORMATS)}",
        "unsupported_format",
        format=fmt,
        formats=list(FORMATS),
    )


def open_reader(
    path: Path,
    fmt: str,
    *,
    work_dir: Path,
    encoding: str | None = None,
    sheet: str | None = None,
    limits: Limits = Limits(),
) -> Reader:
    """A reader for `fmt` (see `sniff_format`). Header, encoding, sheet and zip safety are checked here."""
    return _open(path, fmt, work_dir=work_dir, encoding=encoding, sheet=sheet, limits=limits)


__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "ImportFileError",
    "Limits",
    "Reader",
    "Row",
    "detect_csv_encoding",
    "excel_serial_to_datetime",
    "open_reader",
    "sniff_format",
]
