# TEMPORARY stand-in (NDJSON only) until the real readers land; not committed.
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("ndjson", "json", "csv", "xlsx", "zip")
CONTENT_TYPES = {"application/x-ndjson": "ndjson", "application/json": "json", "text/csv": "csv",
                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
                 "application/zip": "zip"}


class ImportFileError(Exception):
    def __init__(self, message: str, code: str, **extra: Any) -> None:
        super().__init__(message)
        self.message, self.code, self.extra = message, code, extra


@dataclass(frozen=True)
class Limits:
    max_unzipped_bytes: int = 4 * 1024**3


@dataclass
class Row:
    number: int
    values: dict[str, Any]
    error: str | None = None


def sniff_format(path: Path, declared: str | None) -> str:
    head = path.read_bytes()[:4]
    if declared in ("xlsx", "zip") and head[:2] != b"PK":
        raise ImportFileError("not a zip", "format_mismatch", declared=declared, found="csv")
    return declared or "ndjson"


class Reader:
    def __init__(self, path: Path) -> None:
        self.path, self.format, self.warnings, self.sheet, self.encoding = path, "ndjson", [], None, None
        first = next(self.rows(), None)
        self.columns = list(first.values) if first else []

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *a: Any) -> None:
        pass

    def rows(self) -> Iterator[Row]:
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    v = json.loads(line)
                except ValueError as e:
                    yield Row(n, {}, f"line {n} is not valid JSON: {e}")
                    continue
                yield Row(n, v)

    def attachment(self, name: str) -> Path | None:
        return None


def open_reader(path: Path, fmt: str, **kw: Any) -> Reader:
    return Reader(path)
