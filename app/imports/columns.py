"""The columns of an import row and of an export: one set of names for every format.

| column                 | value                                                                 |
|------------------------|-----------------------------------------------------------------------|
| `external_id`          | required: the item's id in the source system                          |
| `action`               | `upsert` (default) or `delete` (the item is archived and reported)    |
| `title`                | required for a new item                                               |
| `question`             | the standard question (标准问)                                          |
| `similar_questions`    | list (相似问法)                                                          |
| `body`, `body_format`  | HTML (sanitized) or Markdown                                          |
| `answer.<channel>`     | the channel's own answer: `answer.agent` (话术), `answer.web`, ...      |
| `channels`             | list of agent, web, wechat, app                                       |
| `categories`           | list of paths in the source's taxonomy (`业务/宽带/故障`) or node ids   |
| `tags`                 | list                                                                  |
| `attr.<code>`          | an attribute of the item type's template                              |
| `item_type`, `visibility`, `valid_from`, `valid_to`, `review_due`, `owner` (a user name)       |
| `attachments`          | list of file names inside the ZIP (ZIP imports only)                  |

Lists are JSON arrays in NDJSON/JSON and, in CSV and XLSX cells, one value per line (Alt+Enter in
Excel) or separated by `|`. A token of digits only in `categories` is a node id; write a
one-level path made of digits as `/2024`. Dates and times without an offset are local time
(`KB_IMPORT_TIMEZONE`, default Asia/Shanghai); XLSX dates and Excel serial numbers are accepted.

A column the file has sets the field (an empty cell clears it); a column the file lacks keeps the
item's current value, or the source's default for a new item.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.knowledge.schemas import CHANNELS

ANSWER_PREFIX = "answer."
ATTR_PREFIX = "attr."
LIST_COLUMNS = ("similar_questions", "channels", "categories", "tags", "attachments")
TEXT_COLUMNS = ("title", "question", "body", "body_format", "item_type", "visibility", "owner")
DATE_COLUMNS = ("valid_from", "valid_to", "review_due")
BASE_COLUMNS = (
    "external_id",
    "action",
    *TEXT_COLUMNS[:4],
    "similar_questions",
    "channels",
    "categories",
    "tags",
    "item_type",
    "visibility",
    "valid_from",
    "valid_to",
    "review_due",
    "owner",
    "attachments",
)
ANSWER_COLUMNS = tuple(f"{ANSWER_PREFIX}{c}" for c in CHANNELS)
REQUIRED_COLUMNS = ("external_id",)
ACTIONS = ("upsert", "delete")
MAX_EXTERNAL_ID = 128
_SPLIT = re.compile(r"\r\n|\r|\n|\|")


def split_text(text: str) -> list[str]:
    """A list written in one text cell (CSV, XLSX): one value per line or `|`-separated, or, when a
    value itself holds a line break or `|`, a JSON array of texts (what the export writes then)."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in parsed
        ):
            return [str(v).strip() for v in parsed if str(v).strip()]
    return [v.strip() for v in _SPLIT.split(text) if v.strip()]


def join_cell(values: list[Any]) -> str:
    """The text cell `split_text` reads back as `values`."""
    texts = [str(v) for v in values]
    joined = "\n".join(texts)
    if any(_SPLIT.search(t) for t in texts) or joined.lstrip().startswith("["):
        return json.dumps(texts, ensure_ascii=False)
    return joined


# Excel counts days from 1899-12-30 (its 1900 leap-year bug folded in).
_EXCEL_EPOCH = datetime(1899, 12, 30)


class RowError(Exception):
    """One row cannot be applied; the others go on."""

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.field = message, code, field


def known_column(name: str) -> bool:
    if name in BASE_COLUMNS or name in ANSWER_COLUMNS:
        return True
    return name.startswith(ATTR_PREFIX) and len(name) > len(ATTR_PREFIX)


def unknown_columns(columns: list[str]) -> list[str]:
    return [c for c in columns if not known_column(c)]


def missing_columns(columns: list[str], *, creating: bool = True) -> list[str]:
    return [c for c in REQUIRED_COLUMNS if c not in columns]


@dataclass
class RowData:
    """A row's values, typed; `fields` holds only the columns the file has."""

    number: int
    external_id: str
    action: str
    fields: dict[str, Any] = field(default_factory=dict)

    canonical: str = ""  # the fields as sorted JSON, made once by parse_row

    def content_hash(self, attachment_shas: list[str] | None = None) -> str:
        text = self.canonical or _canonical(self.fields)
        if attachment_shas:
            text += "\n" + "\n".join(attachment_shas)
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":"))


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        raise RowError(f"{name} must be text", "wrong_type", name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if not isinstance(value, str):
        raise RowError(f"{name} must be text", "wrong_type", name)
    return value


def _list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, dict | list) or v is None:
                raise RowError(f"{name} must be a list of texts", "wrong_type", name)
            out.append(_text(v, name).strip())
        return [v for v in out if v]
    return split_text(_text(value, name))


def excel_serial(value: float) -> datetime:
    if not 1 <= value < 2958466:  # 1900-01-01 .. 9999-12-31
        raise ValueError("out of range")
    return _EXCEL_EPOCH + timedelta(days=float(value))


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y%m%d")
_TIME_FORMATS = ("%H:%M:%S", "%H:%M")


def _parse_moment(value: Any, name: str, tz: ZoneInfo) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(f"{name} must be a date", "invalid_date", name)
    if isinstance(value, int | float):
        try:
            moment = excel_serial(float(value))
        except ValueError:
            raise RowError(
                f"{name}: {value} is not a date (Excel serial numbers run from 1 to 2958465)", "invalid_date", name
            )
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        moment = _parse_text_moment(value.strip(), name)
    else:
        raise RowError(f"{name} must be a date", "invalid_date", name)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def _parse_text_moment(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    day_part, _, time_part = text.partition(" ")
    for dfmt in _DATE_FORMATS:
        try:
            day = datetime.strptime(day_part, dfmt)
        except ValueError:
            continue
        if not time_part:
            return day
        for tfmt in _TIME_FORMATS:
            try:
                t = datetime.strptime(time_part.strip(), tfmt).time()
            except ValueError:
                continue
            return datetime.combine(day.date(), t)
    raise RowError(f"{name}: {text!r} is not a date (write 2026-12-31 or 2026-12-31 18:00)", "invalid_date", name)


def _attr_value(value: Any) -> Any:
    """Attribute cells: as sent (the template's validation types them; a multi_enum cell is split
    there, see `split_cell`); XLSX dates become YYYY-MM-DD."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def split_cell(value: Any) -> Any:
    """A multi-value attribute written in one cell (`split_text`)."""
    if isinstance(value, str):
        return split_text(value)
    return value


def parse_row(number: int, values: dict[str, Any], tz: ZoneInfo) -> RowData:
    """Raw cells -> typed values, checked one column at a time (RowError names the column)."""
    raw_id = values.get("external_id")
    external_id = _text(raw_id, "external_id").strip() if raw_id is not None else ""
    if not external_id:
        raise RowError("external_id is empty", "field_required", "external_id")
    if len(external_id) > MAX_EXTERNAL_ID:
        raise RowError(f"external_id has more than {MAX_EXTERNAL_ID} characters", "too_long", "external_id")
    action = (_text(values.get("action"), "action").strip().lower() or "upsert") if "action" in values else "upsert"
    if action not in ACTIONS:
        raise RowError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}", "invalid_action", "action")
    row = RowData(number, external_id, action)
    if action == "delete":
        return row
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("external_id", "action") or not known_column(name):
            continue
        if name in LIST_COLUMNS:
            out[name] = _list(value, name)
        elif name in TEXT_COLUMNS:
            out[name] = _text(value, name).strip() if name != "body" else _text(value, name)
        elif name in ("valid_from", "valid_to"):
            moment = _parse_moment(value, name, tz)
            out[name] = moment.isoformat() if moment else None
        elif name == "review_due":
            moment = _parse_moment(value, name, tz)
            out[name] = moment.astimezone(tz).date().isoformat() if moment else None
        elif name.startswith(ANSWER_PREFIX):
            out[name] = _text(value, name).strip()
        else:  # attr.<code>
            out[name] = _attr_value(value)
    if "title" in out and len(out["title"]) > 300:
        raise RowError("title has more than 300 characters", "too_long", "title")
    if "question" in out and len(out["question"]) > 500:
        raise RowError("question has more than 500 characters", "too_long", "question")
    if out.get("body_format") and out["body_format"] not in ("html", "markdown"):
        raise RowError("body_format must be html or markdown", "invalid_value", "body_format")
    if out.get("visibility") and out["visibility"] not in ("public", "internal"):
        raise RowError("visibility must be public or internal", "invalid_value", "visibility")
    bad = [c for c in out.get("channels", []) if c not in CHANNELS]
    if bad:
        raise RowError(f"unknown channels: {', '.join(bad)} (use {', '.join(CHANNELS)})", "invalid_value", "channels")
    if out.get("valid_from") and out.get("valid_to") and out["valid_to"] <= out["valid_from"]:
        raise RowError("valid_to must be after valid_from", "invalid_validity", "valid_to")
    row.fields = out
    if "\x00" in external_id or any(
        "\x00" in v if isinstance(v, str) else isinstance(v, list) and any("\x00" in x for x in v) for v in out.values()
    ):
        raise RowError("the row holds NUL characters (\\u0000), which no field may contain", "nul_character")
    row.canonical = _canonical(out)
    return row


def export_columns(attribute_codes: list[str]) -> list[str]:
    """The columns an export writes, in a stable order (the import reads them back)."""
    return [
        *[c for c in BASE_COLUMNS if c not in ("action", "attachments")],
        *ANSWER_COLUMNS,
        *(f"{ATTR_PREFIX}{c}" for c in sorted(attribute_codes)),
    ]
