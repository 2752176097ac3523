"""Sync sources, import jobs and what they leave behind.

- `SyncSource`: a third-party system (the CRM, the tariff catalogue, the old knowledge base) with
  its policy: publish directly or leave for review, create missing categories and tags, defaults.
- `ImportJob`: one uploaded file and what became of it; the file waits under the data dir.
- `ImportKey`: the external ids of a job's file, written by the scan before any content is
  touched: it finds duplicates in the file, counts what a full sync would archive, and is
  dropped when the job ends.
- `ExportJob`: a large export, written to a file by the worker.
- `SyncRecord`: per synced item, the hash of the row it was last written from (an unchanged row
  is a no-op) and the version the source wrote last.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, IdMixin, TimestampMixin, utcnow

IMPORT_STATES = ("queued", "scanning", "running", "archiving", "needs_confirmation", "done", "failed")
FINAL_STATES = ("needs_confirmation", "done", "failed")
COUNTS = ("created", "updated", "unchanged", "archived", "deleted", "failed")


class SyncSource(IdMixin, TimestampMixin, Base):
    __tablename__ = "sync_sources"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    # publish: a changed row is published at once; review: it waits in review (审核) as a new version.
    publish_mode: Mapped[str] = mapped_column(String(16), default="review")
    create_categories: Mapped[bool] = mapped_column(default=False)
    create_tags: Mapped[bool] = mapped_column(default=False)
    # The tree category paths (业务/宽带/故障) are looked up in; None: the first taxonomy.
    taxonomy_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("taxonomies.id", ondelete="SET NULL"))
    item_type: Mapped[str] = mapped_column(String(32), default="faq")
    channels: Mapped[list[Any]] = mapped_column(default=lambda: ["agent", "web", "wechat", "app"])
    visibility: Mapped[str] = mapped_column(String(16), default="internal")
    # A full sync archiving more than this share of the source's items stops for a confirmation.
    max_archive_share: Mapped[float] = mapped_column(default=0.2)
    watermark: Mapped[str | None] = mapped_column(String(1000))
    watermark_at: Mapped[datetime | None]
    row_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}


class ImportJob(IdMixin, TimestampMixin, Base):
    __tablename__ = "imports"
    __table_args__ = (UniqueConstraint("created_by", "idempotency_key"), Index("ix_imports_source", "source", "id"))

    source: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16), default="incremental")  # incremental | full
    format: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(default=False)
    confirm_mass_archive: Mapped[bool] = mapped_column(default=False)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # encoding, sheet, watermark, file name
    state: Mapped[str] = mapped_column(String(24), default="queued")
    file_path: Mapped[str | None] = mapped_column(String(500))  # under the data dir; removed when final
    file_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_sha256: Mapped[str] = mapped_column(String(64), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    rows_total: Mapped[int | None]
    rows_done: Mapped[int] = mapped_column(default=0)  # applied rows, committed with their batch
    last_row: Mapped[int] = mapped_column(default=0)  # row number of the last committed batch's end
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    columns: Mapped[list[Any]] = mapped_column(default=list)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    to_archive: Mapped[int | None]  # full sync: what the snapshot lacks, counted by the scan
    error: Mapped[dict[str, Any] | None]  # why the whole job failed: {code, message, ...}
    created_by: Mapped[str] = mapped_column(String(80))
    job_id: Mapped[int | None] = mapped_column(BigId)  # the worker job running it
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ImportRowError(IdMixin, Base):
    __tablename__ = "import_errors"
    __table_args__ = (Index("ix_import_errors_job_row", "import_id", "row"),)

    import_id: Mapped[int] = mapped_column(BigId, ForeignKey("imports.id", ondelete="CASCADE"))
    row: Mapped[int]
    external_id: Mapped[str | None] = mapped_column(String(200))
    field: Mapped[str | None] = mapped_column(String(100))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)


class ImportOutcome(IdMixin, Base):
    """Items a job archived or deleted, listed in its report."""

    __tablename__ = "import_outcomes"
    __table_args__ = (Index("ix_import_outcomes_job", "import_id", "action"),)

    import_id: Mapped[int] = mapped_column(BigId, ForeignKey("imports.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # archived | deleted
    item_id: Mapped[int] = mapped_column(BigId)
    external_id: Mapped[str] = mapped_column(String(128))


class ImportKey(Base):
    __tablename__ = "import_keys"

    import_id: Mapped[int] = mapped_column(BigId, ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    row: Mapped[int]
    delete: Mapped[bool] = mapped_column(default=False)


class SyncRecord(Base):
    __tablename__ = "sync_records"

    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))
    # The version this source last wrote: an open version of that number is the sync's own proposal
    # (it may be replaced); any other open version is an editor's draft, which the sync never overwrites.
    version_no: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


EXPORT_STATES = ("queued", "running", "done", "failed")


class ExportJob(IdMixin, TimestampMixin, Base):
    """An export too large to stream at once: a worker writes the file under data_dir/exports."""

    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_source", "source", "id"),)

    source: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))  # ndjson | csv | xlsx
    include_archived: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    rows: Mapped[int] = mapped_column(default=0)  # written so far
    rows_total: Mapped[int | None]  # items to write, counted when the job starts
    file_path: Mapped[str | None] = mapped_column(String(500))  # under the data dir, once done
    file_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(80))
    error: Mapped[dict[str, Any] | None]
    job_id: Mapped[int | None] = mapped_column(BigId)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
