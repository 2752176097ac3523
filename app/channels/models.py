"""Channel delivery tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, TimestampMixin

# ---------------------------------------------------------------- CTI screen pop (app/channels/screenpop.py)


class ScreenPopRule(IdMixin, TimestampMixin, Base):
    """What the agent's softphone shows for a call. A rule matches a call when every condition it
    states holds (conditions left empty match anything; at least one is set); its targets are the
    pinned items, categories and tags whose items are recommended."""

    __tablename__ = "screen_pop_rules"
    __table_args__ = (Index("ix_screen_pop_rules_enabled_priority", "enabled", "priority"),)

    name: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(default=True)
    priority: Mapped[int] = mapped_column(default=0)  # higher first
    # Conditions, stored normalized: digits only; IVR node path "1/3/2"; business code upper-case.
    called: Mapped[str | None] = mapped_column(String(32))
    ivr_path: Mapped[str | None] = mapped_column(String(200))
    business_code: Mapped[str | None] = mapped_column(String(64))
    caller_tags: Mapped[list[Any]] = mapped_column(default=list)  # any of them
    # Targets.
    category_ids: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    pinned_item_ids: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str | None] = mapped_column(String(80))
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


# ---------------------------------------------------------------- end CTI screen pop
