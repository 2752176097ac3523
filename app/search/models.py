from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin, utcnow


class DictionaryWord(IdMixin, Base):
    """A business word the segmenter must keep whole: 5G畅享套餐, 光猫, 携号转网."""

    __tablename__ = "search_dictionary"

    word: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(80))


class SynonymGroup(IdMixin, TimestampMixin, Base):
    """Words that mean the same to a caller: 上不了网 ⇔ 无法上网 ⇔ 断网."""

    __tablename__ = "search_synonyms"

    terms: Mapped[list[Any]] = mapped_column(default=list)
    note: Mapped[str] = mapped_column(String(200), default="")


class SearchLog(IdMixin, Base):
    __tablename__ = "search_log"

    search_id: Mapped[str] = mapped_column(String(32), unique=True)  # made by SearchLogBuffer
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    channel: Mapped[str | None] = mapped_column(String(16))
    query: Mapped[str] = mapped_column(String(500))
    normalized: Mapped[str] = mapped_column(String(500))
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total: Mapped[int] = mapped_column(default=0)
    zero_result: Mapped[bool] = mapped_column(default=False, index=True)
    took_ms: Mapped[float] = mapped_column(default=0.0)
    clicked_item_id: Mapped[int | None] = mapped_column(BigId)
    clicked_position: Mapped[int | None]
    clicked_at: Mapped[datetime | None]


class EmbeddingCache(Base):
    """Vectors of short texts by content hash (sha256 of model and text): a reindex or a new
    version with unchanged questions embeds nothing again. Shared by every process and host
    (the index jobs may run anywhere); rows of other models are dropped by a full reindex."""

    __tablename__ = "search_embeddings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(120), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float16, little-endian, `dims` values
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
