from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from app.core.schemas import Id, Out, Schema
from app.knowledge.schemas import Channel, Visibility

SourceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
PublishMode = Literal["publish", "review"]
ImportMode = Literal["incremental", "full"]
ImportFormat = Literal["ndjson", "json", "csv", "xlsx", "zip"]
ImportState = Literal["queued", "scanning", "running", "archiving", "needs_confirmation", "done", "failed"]


class SourcePolicy(Schema):
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    publish_mode: PublishMode | None = Field(
        None, description="publish: a changed row is published at once; review: it waits in review (审核)"
    )
    create_categories: bool | None = Field(
        None, description="Create category paths that do not exist (else the row fails)"
    )
    create_tags: bool | None = Field(None, description="Create unknown tags (else the row fails)")
    taxonomy_id: Id | None = Field(None, description="The tree category paths are looked up in (default: the first)")
    item_type: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    channels: list[Channel] | None = Field(None, min_length=1, max_length=4)
    visibility: Visibility | None = None
    max_archive_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A full sync archiving more than this "
        "share of the source's items stops for confirm_mass_archive=true",
    )


class SourceCreate(SourcePolicy):
    name: SourceName = Field(description="Lower-case letters, digits, _ . -; the `source` of its items")


class SourceUpdate(SourcePolicy):
    pass


class WatermarkIn(Schema):
    watermark: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        description="Where the sync job left off (a timestamp, a change number ...): read back by the next run"
    )


class LastImport(Out):
    id: int
    state: str
    mode: str
    finished_at: datetime | None


class SourceOut(Out):
    name: str
    description: str
    publish_mode: str
    create_categories: bool
    create_tags: bool
    taxonomy_id: int | None
    item_type: str
    channels: list[str]
    visibility: str
    max_archive_share: float
    watermark: str | None
    watermark_at: datetime | None
    items: int = Field(0, description="Items of this source that are not archived")
    last_import: LastImport | None = None
    etag: str
    created_at: datetime
    updated_at: datetime


class Progress(Out):
    phase: str
    rows_done: int
    rows_total: int | None
    percent: float | None


class RowErrorOut(Out):
    row: int = Field(description="Spreadsheet row (the header is row 1), NDJSON line, or JSON element number")
    external_id: str | None
    field: str | None
    code: str
    message: str


class OutcomeOut(Out):
    action: str
    item_id: int
    external_id: str


class ImportOut(Out):
    id: int
    source: str
    mode: str
    format: str
    dry_run: bool
    confirm_mass_archive: bool
    state: ImportState
    progress: Progress
    counts: dict[str, int] = Field(description="created, updated, unchanged, archived, deleted, failed")
    to_archive: int | None = Field(description="Full sync: items of the source the file does not name")
    columns: list[str]
    warnings: list[str]
    error: dict[str, Any] | None = Field(description="Why the job as a whole failed or stopped: {code, message}")
    errors: list[RowErrorOut] = Field(description="The first row errors; all of them at /imports/{id}/errors")
    errors_total: int
    outcomes: list[OutcomeOut] = Field(description="The first items archived or deleted; all at /imports/{id}/outcomes")
    file: dict[str, Any]
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


ExportFormat = Literal["ndjson", "csv", "xlsx"]
ExportState = Literal["queued", "running", "done", "failed", "expired"]


class ExportOut(Out):
    id: int
    source: str
    format: str
    include_archived: bool
    state: ExportState
    rows: int = Field(description="Rows written so far")
    rows_total: int | None = Field(description="Items to write, counted when the job starts")
    file_bytes: int
    file: str | None = Field(description="Where to download the file, once done")
    error: dict[str, Any] | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
