from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from app.core.schemas import Id, Out, Schema, VersionNo

Category = Literal["outdated", "wrong", "unclear", "missing"]
TaskKind = Literal["error_report", "review_due", "expiring"]
TaskState = Literal["open", "accepted", "fixed", "dismissed"]
MAX_COMMENT = 2000

# Control characters (C0 but tab and line feed, DEL, C1) are stripped; CR LF becomes LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_control(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n")).strip()


CleanText = Annotated[str, AfterValidator(strip_control)]


class ErrorReportIn(Schema):
    category: Category
    comment: Annotated[CleanText, Field(max_length=MAX_COMMENT, description="What is wrong (≤ 2000 characters)")] = ""
    version: Annotated[VersionNo | None, Field(description="The version read; default: the published one")] = None


class FixIn(Schema):
    version: Annotated[VersionNo, Field(description="A published version of the item, newer than the reported one")]
    note: Annotated[CleanText, Field(max_length=MAX_COMMENT)] = ""


class DismissIn(Schema):
    reason: Annotated[CleanText, Field(min_length=1, max_length=MAX_COMMENT, description="Why (shown to the reporter)")]

    @model_validator(mode="after")
    def _not_blank(self) -> DismissIn:
        if not self.reason:
            raise ValueError("reason must not be blank")
        return self


class AcceptIn(Schema):
    note: Annotated[CleanText, Field(max_length=MAX_COMMENT)] = ""


class TaskOut(Out):
    id: int
    kind: TaskKind
    item_id: int
    item_title: str | None = None
    version_no: int | None
    assignee_id: int | None
    reporter_id: int | None
    category: Category | None
    comment: str
    due_at: datetime | None
    state: TaskState
    resolution_note: str | None
    fixed_version: int | None
    fixed_version_url: str | None = Field(None, description="The version that fixed it (API path)")
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: int | None = Field(description="None with resolved_at set: closed by the reminder job")
    etag: str
    allowed_actions: list[str] = []


class OwnerTransferIn(Schema):
    from_user_id: Id
    to_user_id: Id
    dry_run: bool = False


class OwnerTransferOut(Schema):
    from_user_id: int
    to_user_id: int
    dry_run: bool
    items: int = Field(description="Items whose owner changes (changed, unless dry_run)")
    tasks: int = Field(description="Open or accepted tasks that move to the new owner")
