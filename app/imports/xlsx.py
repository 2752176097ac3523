"""XLSX rows for `app.imports.formats`: openpyxl in read-only mode, plus what read-only mode hides."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.parsers import expat

from app.imports.formats import ImportFileError, Limits, Reader, Row, header_columns

_CHUNK = 1024 * 1024
_FORMULA_WARNINGS = 10


# --- XLSX ------------------------------------------------------------------------------------------------------


class XlsxReader(Reader):
    """openpyxl in read-only mode with cached formula values; merged ranges and formulas without a cached
    value come from one streaming pass over the sheet's XML (read-only mode does not expose them)."""

    format = "xlsx"
    _HEADER_SEARCH_ROWS = 100

    def __init__(self, path: Path, limits: Limits, sheet: str | None) -> None:
        super().__init__(path, limits)
        wb = self._workbook()
        try:
            names = list(wb.sheetnames)
            if sheet is not None and sheet not in names:
                raise ImportFileError(
                    f"the workbook has no sheet {sheet!r}; its sheets: {', '.join(names)}",
                    "unknown_sheet",
                    sheet=sheet,
                    sheets=names,
                )
            candidates = [n for n in names if hasattr(wb[n], "iter_rows") and sheet in (None, n)]
            if not candidates:
                raise ImportFileError("the workbook has no worksheet", "no_header")
            chosen, header = candidates[0], self._find_header(wb[candidates[0]])
            if sheet is None:
                for name in candidates:
                    found = self._find_header(wb[name])
                    if found and "external_id" in [str(c).strip() for c in found[1] if c is not None]:
                        chosen, header = name, found
                        break
            member = getattr(wb[chosen], "_worksheet_path", None)
        finally:
            wb.close()
        self.sheet = chosen
        others = [n for n in names if n != chosen]
        if others:
            self.warnings.append(f"sheets {', '.join(others)} ignored")
        if header is None:
            raise ImportFileError(
                f"sheet {chosen!r} has no header row: its first row must name the columns", "no_header", sheet=chosen
            )
        self._header_row = header[0]
        self._header = header_columns(list(header[1]), f"sheet {chosen!r}")
        self._width = self._header[-1][0] + 1
        self.columns = [n for _, n in self._header]
        self._merges: dict[int, list[tuple[int, int, int, int]]] = {}
        if member:
            self._scan(member.lstrip("/"))

    def _workbook(self) -> Any:
        from openpyxl import load_workbook

        try:
            return load_workbook(self.path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds on damaged files
            raise ImportFileError(f"the XLSX cannot be read: {exc}", "bad_xlsx")

    def _find_header(self, ws: Any) -> tuple[int, tuple[Any, ...]] | None:
        ws.reset_dimensions()  # some writers store a wrong <dimension>; read every cell there is
        for number, values in enumerate(ws.iter_rows(max_row=self._HEADER_SEARCH_ROWS, values_only=True), 1):
            if any(v is not None and str(v).strip() for v in values):
                return number, values
        return None

    def _scan(self, member: str) -> None:
        from openpyxl.utils.cell import range_boundaries

        try:
            with zipfile.ZipFile(self.path) as zf:
                if not _sheet_mentions(zf, member, _FORMULA_OR_MERGE):
                    return  # the common case: one fast byte search, no XML parsing
                no_cache: list[str] = []
                missing = 0
                cell: dict[str, Any] = {}

                def text(data: str) -> None:
                    if data.strip():
                        cell["v"] = True  # openpyxl writes an empty <v></v> for a formula it could not compute

                def start(tag: str, attrs: dict[str, str]) -> None:
                    tag = tag.rpartition(":")[2]
                    if tag == "c":
                        cell.clear()
                        cell["r"] = attrs.get("r")
                    elif tag == "f":
                        cell["f"] = True
                    elif tag == "v" and cell.get("f"):
                        parser.CharacterDataHandler = text
                    elif tag == "mergeCell" and attrs.get("ref"):
                        min_col, min_row, max_col, max_row = range_boundaries(attrs["ref"])
                        if min_row > self._header_row:
                            self._merges.setdefault(min_row, []).append((min_row, min_col, max_row, max_col))

                def end(tag: str) -> None:
                    nonlocal missing
                    tag = tag.rpartition(":")[2]
                    if tag == "v":
                        parser.CharacterDataHandler = None
                    elif tag == "c" and cell.get("f") and not cell.get("v"):
                        missing += 1
                        if len(no_cache) < _FORMULA_WARNINGS:
                            no_cache.append(cell.get("r") or "?")

                parser = expat.ParserCreate()
                parser.StartElementHandler = start
                parser.EndElementHandler = end
                with zf.open(member) as f:
                    parser.ParseFile(f)
        except (KeyError, zipfile.BadZipFile, expat.ExpatError, OSError, ValueError) as exc:
            raise ImportFileError(f"the XLSX cannot be read: {exc}", "bad_xlsx")
        for ref in no_cache:
            self.warnings.append(
                f"formula cell {ref} has no cached value (read as empty; open and save the file in Excel to compute it)"
            )
        if missing > len(no_cache):
            self.warnings.append(f"{missing - len(no_cache)} more formula cells have no cached value")

    def _rows(self) -> Iterator[Row]:
        from openpyxl.utils import get_column_letter

        wb = self._workbook()
        try:
            ws = wb[self.sheet]
            ws.reset_dimensions()
            active: list[tuple[tuple[int, int, int, int], Any]] = []
            named = {i for i, _ in self._header}
            for number, raw in enumerate(
                ws.iter_rows(min_row=self._header_row + 1, values_only=True), self._header_row + 1
            ):
                values = [_cell_value(v) for v in raw]
                empty = all(v is None for v in values)
                if active or number in self._merges:
                    active = self._fill(number, values, active)
                if empty:
                    continue
                row = {name: values[i] if i < len(values) else None for i, name in self._header}
                stray = next((i for i, v in enumerate(values) if v is not None and i not in named), None)
                error = None
                if stray is not None:
                    error = (
                        f"cell {get_column_letter(stray + 1)}{number} has a value but column "
                        f"{get_column_letter(stray + 1)} has no header"
                    )
                yield Row(number, row, error)
        finally:
            wb.close()

    def _fill(
        self, number: int, values: list[Any], active: list[tuple[tuple[int, int, int, int], Any]]
    ) -> list[tuple[tuple[int, int, int, int], Any]]:
        """Every cell of a merged range gets its top-left value (people merge a category down a block)."""
        for rng in self._merges.get(number, ()):
            active.append((rng, values[rng[1] - 1] if rng[1] <= len(values) else None))
        active = [(rng, v) for rng, v in active if rng[2] >= number]
        for (_, min_col, _, max_col), value in active:
            if len(values) < max_col:
                values.extend([None] * (max_col - len(values)))
            for col in range(min_col, max_col + 1):
                values[col - 1] = value
        return active


_FORMULA_OR_MERGE = re.compile(rb"<(?:\w+:)?(?:f[\s>/]|mergeCell[\s>/])")


def _sheet_mentions(zf: zipfile.ZipFile, member: str, pattern: re.Pattern[bytes]) -> bool:
    tail = b""
    with zf.open(member) as f:
        while chunk := f.read(_CHUNK):
            if pattern.search(tail + chunk):
                return True
            tail = chunk[-64:]
    return False


def _cell_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == "":
        return None
    return value
