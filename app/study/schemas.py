from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints

from app.core.pagination import Page
from app.core.schemas import Id, Out, Schema

Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_ITEMS = 200


class PathCreate(Schema):
    title: Title
    description: str = Field("", max_length=5000)
    roles: list[RoleName] = Field(min_length=1, max_length=50, description="Role names the path is required for")
    departments: list[Id] = Field(
        default_factory=list,
        max_length=100,
        description="Department ids that narrow the audience (sub-departments included)",
    )
    due_at: AwareDatetime | None = Field(None, description="Complete by (overdue afterwards)")
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_ITEMS, description="The items to read, in order")


class PathUpdate(Schema):
    """Only the fields sent change; `item_ids` replaces the whole list; `due_at: null` clears it."""

    title: Title | None = None
    description: str | None = Field(None, max_length=5000)
    roles: list[RoleName] | None = Field(None, min_length=1, max_length=50)
    departments: list[Id] | None = Field(None, max_length=100)
    due_at: AwareDatetime | None = None
    item_ids: list[Id] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    active: bool | None = Field(None, description="false withdraws the path (kept, no longer assigned)")


class PathItemOut(Out):
    item_id: int
    position: int
    title: str
    status: str = Field(description="The item's status: only published items count for agents")


class PathOut(Out):
    id: int
    title: str
    description: str
    roles: list[str]
    departments: list[int]
    due_at: datetime | None
    active: bool
    items: list[PathItemOut]
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime
    row_version: int
    etag: str


class MyPathItem(Out):
    item_id: int
    position: int
    title: str
    current_version: int = Field(description="The published version")
    read: bool = Field(description="I viewed the published version on the agent channel")
    read_version: int | None = Field(description="The newest version I viewed, if any")
    read_at: datetime | None
    changed: bool = Field(description="I read an older version: see GET /me/study/changes")
    link: str


class MyPath(Out):
    id: int
    title: str
    description: str
    due_at: datetime | None
    overdue: bool
    total: int = Field(description="Items of the path I can read now")
    read: int
    completed: bool
    next_item: MyPathItem | None = Field(description="The first item in order that I have not read")
    items: list[MyPathItem]


class AgentProgress(Out):
    user_id: int
    username: str
    display_name: str
    department_id: int | None
    total: int
    read: int
    completed: bool
    overdue: bool
    last_read_at: datetime | None


class ProgressPage(Page[AgentProgress]):
    path_id: int
    item_count: int = Field(description="Items in the path that agents can see now (published, valid)")


class ChangedItem(Out):
    item_id: int
    title: str
    read_version: int = Field(description="The version I last viewed")
    read_at: datetime
    current_version: int
    published_at: datetime | None
    change_note: str
    diff: str = Field(description="GET this for the changes from the version I read to the current one")
