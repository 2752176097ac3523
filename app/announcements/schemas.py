from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from app.core.pagination import Page
from app.core.schemas import Id, Out, Schema
from app.knowledge.schemas import BodyFormat, Channel

Priority = Literal["normal", "high", "urgent"]
State = Literal["draft", "published", "withdrawn"]
Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_BODY_CHARS = 100_000


class AudienceIn(Schema):
    """Who sees it. Each list narrows (a reader must match every non-empty one, any entry within
    it); all empty: every staff member who may read announcements. Public channels must be named."""

    roles: list[RoleName] = Field(default_factory=list, max_length=50, description="Role names")
    departments: list[Id] = Field(
        default_factory=list, max_length=100, description="Department ids; their sub-departments are included"
    )
    channels: list[Channel] = Field(
        default_factory=list, max_length=4, description="Channels it is shown on; empty: agent (staff) only"
    )


class AnnouncementCreate(Schema):
    title: Title
    body: str = Field("", max_length=MAX_BODY_CHARS, description="Sanitized HTML or Markdown")
    body_format: BodyFormat = "html"
    audience: AudienceIn = Field(default_factory=AudienceIn)
    priority: Priority = "normal"
    mandatory: bool = Field(False, description="Must be read: GET /announcements/{id}/unread lists who has not")
    pinned: bool = False
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    state: Literal["draft", "published"] = "published"


class AnnouncementUpdate(Schema):
    """Only the fields sent change; `null` clears a validity bound."""

    title: Title | None = None
    body: str | None = Field(None, max_length=MAX_BODY_CHARS)
    body_format: BodyFormat | None = None
    audience: AudienceIn | None = None
    priority: Priority | None = None
    mandatory: bool | None = None
    pinned: bool | None = None
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    state: State | None = Field(None, description="draft → published → withdrawn (and published again)")


class AudienceOut(Out):
    roles: list[str]
    departments: list[int]
    channels: list[str]


class AnnouncementOut(Out):
    id: int
    title: str
    body: str
    body_format: str
    html: str = Field(description="The body as sanitized HTML")
    audience: AudienceOut
    priority: str
    mandatory: bool
    pinned: bool
    valid_from: datetime | None
    valid_to: datetime | None
    state: str
    current: bool = Field(description="Published and inside its validity window now")
    published_at: datetime | None
    withdrawn_at: datetime | None
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime
    row_version: int
    etag: str


class MyAnnouncement(Out):
    id: int
    title: str
    html: str
    priority: str
    mandatory: bool
    pinned: bool
    valid_from: datetime | None
    valid_to: datetime | None
    published_at: datetime | None
    read: bool
    read_at: datetime | None


class ChannelAnnouncement(Out):
    id: int
    title: str
    html: str = Field(description="Sanitized HTML (web, app, agent)")
    text: str = Field(description="Plain text (wechat)")
    priority: str
    pinned: bool
    valid_from: datetime | None
    valid_to: datetime | None
    published_at: datetime | None


class ReadOut(Out):
    announcement_id: int
    read_at: datetime = Field(description="The first read; reading again keeps it")


class UnreadUser(Out):
    id: int
    username: str
    display_name: str
    department_id: int | None


class UnreadPage(Page[UnreadUser]):
    """Audience members (active users who may read announcements) who have not read it, by user id."""

    total: int = Field(description="Users in the audience")
    read: int = Field(description="Of them, who have read it")
    unread: int
