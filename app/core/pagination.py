"""One pagination shape for every list: `?limit=&cursor=` in, `{items, next_cursor}` out."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import InvalidInput
from app.core.schemas import MAX_ID

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("The cursor is not valid; start again without it", code="invalid_cursor")
    if not isinstance(values, dict):
        raise InvalidInput("The cursor is not valid; start again without it", code="invalid_cursor")
    return values


@dataclass
class PageParams:
    limit: int
    cursor: str | None


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
) -> PageParams:
    return PageParams(limit, cursor)


Paging = Annotated[PageParams, Depends(_page_params)]


async def paginate_by_id(
    session: AsyncSession,
    stmt: Select[Any],
    id_col: InstrumentedAttribute[int],
    page: PageParams,
    *,
    descending: bool = True,
) -> tuple[list[Any], str | None]:
    """Keyset pagination on a unique integer id (newest first by default)."""
    if page.cursor:
        after = decode_cursor(page.cursor).get("id")
        if not isinstance(after, int) or isinstance(after, bool) or not 1 <= after <= MAX_ID:
            raise InvalidInput("The cursor is not valid; start again without it", code="invalid_cursor")
        stmt = stmt.where(id_col < after if descending else id_col > after)
    stmt = stmt.order_by(id_col.desc() if descending else id_col.asc()).limit(page.limit + 1)
    rows = list((await session.scalars(stmt)).all())
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = encode_cursor({"id": getattr(rows[-1], id_col.key)})
    return rows, next_cursor
