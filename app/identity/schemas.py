from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from app.core.schemas import Id, Out, Schema

Username = Annotated[str, StringConstraints(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
ChannelName = Literal["agent", "web", "wechat", "app"]


class TokenOut(Schema):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None


class RoleRef(Out):
    id: int
    name: str


class DepartmentOut(Out):
    id: int
    name: str
    parent_id: Id | None
    path: str
    created_at: datetime
    updated_at: datetime


class UserOut(Out):
    id: int
    username: str
    display_name: str
    email: str | None
    is_active: bool
    department_id: Id | None
    roles: list[RoleRef]
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class MeOut(Schema):
    kind: str
    id: int
    name: str
    permissions: list[str]
    roles: list[int]
    departments: list[int]
    channel: str | None


class UserCreate(Schema):
    username: Username
    password: Password
    display_name: Annotated[str, StringConstraints(max_length=100)] = ""
    email: Annotated[str | None, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] = None
    department_id: Id | None = None
    role_ids: list[Id] = Field(default_factory=list, max_length=50)
    is_active: bool = True


class UserUpdate(Schema):
    display_name: Annotated[str | None, StringConstraints(max_length=100)] = None
    email: Annotated[str | None, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] = None
    department_id: Id | None = None
    role_ids: list[Id] | None = Field(None, max_length=50)
    is_active: bool | None = None
    password: Password | None = None


class RoleOut(Out):
    id: int
    name: str
    description: str
    permissions: list[str]
    created_at: datetime
    updated_at: datetime


class RoleCreate(Schema):
    name: Annotated[str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z0-9_]+$")]
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    permissions: list[str] = Field(default_factory=list, max_length=100)


class RoleUpdate(Schema):
    description: Annotated[str | None, StringConstraints(max_length=500)] = None
    permissions: list[str] | None = Field(None, max_length=100)


class DepartmentCreate(Schema):
    name: Name
    parent_id: Id | None = None


class DepartmentUpdate(Schema):
    name: Name | None = None
    parent_id: Id | None = None
    move_to_root: bool = False


class ClientOut(Out):
    id: int
    client_id: str
    name: str
    scopes: list[str]
    channel: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ClientCreated(ClientOut):
    client_secret: str = Field(description="Shown once; store it now")


class ClientCreate(Schema):
    client_id: Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z0-9_.-]+$")]
    name: Name
    scopes: list[str] = Field(default_factory=list, max_length=50)
    channel: ChannelName | None = None


class ClientUpdate(Schema):
    name: Name | None = None
    scopes: list[str] | None = Field(None, max_length=50)
    channel: ChannelName | None = None
    is_active: bool | None = None


class PermissionOut(Schema):
    name: str
    description: str
    level: Literal["system", "module", "operation", "all"]
    module: str | None
