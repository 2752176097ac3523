from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request, status
from pydantic import AfterValidator

from app.core.db import get_or_404
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, AppError, InvalidInput, RateLimited
from app.core.pagination import Page, Paging
from app.core.schemas import Id, no_nul
from app.identity import permissions as perms
from app.identity import service
from app.identity.deps import Codec, CurrentPrincipal, Require
from app.identity.models import ApiClient, Department, Role, User
from app.identity.schemas import (
    ClientCreate,
    ClientCreated,
    ClientOut,
    ClientUpdate,
    DepartmentCreate,
    DepartmentOut,
    DepartmentUpdate,
    MeOut,
    PermissionOut,
    RoleCreate,
    RoleOut,
    RoleUpdate,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

auth_router = APIRouter(prefix="/auth", tags=["auth"], responses=PROBLEMS)
router = APIRouter(tags=["identity"], responses=PROBLEMS)

Admin = Require("identity:manage")


@auth_router.post("/token", response_model=TokenOut, response_model_exclude_none=True)
async def token(
    request: Request,
    session: DbSession,
    codec: Codec,
    grant_type: Annotated[Literal["password", "client_credentials", "refresh_token"], Form()],
    username: Annotated[str | None, Form(max_length=64), AfterValidator(no_nul)] = None,
    password: Annotated[str | None, Form(max_length=128), AfterValidator(no_nul)] = None,
    client_id: Annotated[str | None, Form(max_length=64), AfterValidator(no_nul)] = None,
    client_secret: Annotated[str | None, Form(max_length=256), AfterValidator(no_nul)] = None,
    scope: Annotated[str | None, Form(max_length=2000), AfterValidator(no_nul)] = None,
    refresh_token: Annotated[str | None, Form(max_length=4000), AfterValidator(no_nul)] = None,
) -> TokenOut:
    """OAuth2 token endpoint (form-encoded): users by password, channels and sync jobs by client
    credentials, and refresh tokens (single use)."""
    settings = request.app.state.settings
    address = request.client.host if request.client else "-"

    async def guarded(kind: str, name: str, grant: Callable[[], Awaitable[TokenOut]]) -> TokenOut:
        if await service.signin_blocked(
            session, kind, name, address, settings.login_max_failures, settings.login_window_seconds
        ):
            raise RateLimited(
                "Too many failed sign-ins; wait and try again",
                headers={"Retry-After": str(settings.login_window_seconds)},
            )
        try:
            return await grant()
        except AppError as e:
            await service.record_signin_failure(request.app.state.sessionmaker, kind, name, address, e.code)
            raise

    if grant_type == "password":
        if not username or not password:
            raise InvalidInput("username and password are required", code="invalid_request")
        return await guarded("password", username, lambda: service.password_grant(session, codec, username, password))
    if grant_type == "client_credentials":
        if not client_id or not client_secret:
            raise InvalidInput("client_id and client_secret are required", code="invalid_request")
        return await guarded(
            "client", client_id, lambda: service.client_grant(session, codec, client_id, client_secret, scope)
        )
    if not refresh_token:
        raise InvalidInput("refresh_token is required", code="invalid_request")
    return await service.refresh_grant(session, codec, refresh_token)


@auth_router.post("/revoke", status_code=status.HTTP_204_NO_CONTENT)
async def revoke(
    session: DbSession,
    codec: Codec,
    principal: CurrentPrincipal,
    refresh_token: Annotated[str, Form(max_length=4000), AfterValidator(no_nul)],
) -> None:
    """Sign out: spend a refresh token so it can no longer be used."""
    await service.revoke_refresh(session, codec, refresh_token, principal)


@auth_router.get("/me", response_model=MeOut)
async def me(principal: CurrentPrincipal) -> MeOut:
    return MeOut(
        kind=principal.kind,
        id=principal.id,
        name=principal.name,
        permissions=sorted(principal.permissions),
        roles=list(principal.role_ids),
        departments=list(principal.department_ids),
        channel=principal.channel,
    )


@router.get("/permissions", response_model=list[PermissionOut])
async def list_permissions(_: Admin) -> list[PermissionOut]:
    out = []
    for name, desc in perms.CATALOG.items():
        level = (
            "all"
            if name == perms.ALL
            else "system"
            if name == perms.SYSTEM_ACCESS
            else "module"
            if name.startswith("module:")
            else "operation"
        )
        out.append(PermissionOut(name=name, description=desc, level=level, module=perms.module_of(name)))
    return out


# users ---------------------------------------------------------------


@router.get("/users", response_model=Page[UserOut])
async def list_users(
    session: DbSession,
    _: Admin,
    page: Paging,
    q: Annotated[str | None, Query(max_length=64)] = None,
    active: bool | None = None,
    role_id: Id | None = None,
    department_id: Id | None = None,
) -> Page[UserOut]:
    rows, nxt = await service.list_users(session, page, q, active, role_id, department_id)
    return Page(items=[UserOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(session: DbSession, actor: Admin, body: UserCreate) -> User:
    return await service.create_user(session, actor, body)


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(session: DbSession, _: Admin, user_id: Id) -> User:
    return await get_or_404(session, User, user_id, "user")


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(session: DbSession, actor: Admin, user_id: Id, body: UserUpdate) -> User:
    """Disabling a user or changing the password revokes every token issued before."""
    return await service.update_user(session, actor, user_id, body)


# roles ---------------------------------------------------------------


@router.get("/roles", response_model=list[RoleOut])
async def list_roles(session: DbSession, _: Admin) -> list[Role]:
    return await service.list_roles(session)


@router.post("/roles", response_model=RoleOut, status_code=status.HTTP_201_CREATED)
async def create_role(session: DbSession, actor: Admin, body: RoleCreate) -> Role:
    return await service.create_role(session, actor, body)


@router.get("/roles/{role_id}", response_model=RoleOut)
async def get_role(session: DbSession, _: Admin, role_id: Id) -> Role:
    return await get_or_404(session, Role, role_id, "role")


@router.patch("/roles/{role_id}", response_model=RoleOut)
async def update_role(session: DbSession, actor: Admin, role_id: Id, body: RoleUpdate) -> Role:
    """Grant or withdraw permissions by sending the role's full permission list."""
    return await service.update_role(session, actor, role_id, body)


@router.delete("/roles/{role_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_role(session: DbSession, actor: Admin, role_id: Id) -> None:
    await service.delete_role(session, actor, role_id)


# departments ---------------------------------------------------------


@router.get("/departments", response_model=list[DepartmentOut])
async def list_departments(session: DbSession, _: Admin) -> list[Department]:
    """The whole tree, parents before children (ordered by path)."""
    return await service.list_departments(session)


@router.post("/departments", response_model=DepartmentOut, status_code=status.HTTP_201_CREATED)
async def create_department(session: DbSession, actor: Admin, body: DepartmentCreate) -> Department:
    return await service.create_department(session, actor, body)


@router.patch("/departments/{dept_id}", response_model=DepartmentOut)
async def update_department(session: DbSession, actor: Admin, dept_id: Id, body: DepartmentUpdate) -> Department:
    """Rename, or move under another department (`parent_id`) or to the top (`move_to_root`)."""
    return await service.update_department(session, actor, dept_id, body)


@router.delete("/departments/{dept_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_department(session: DbSession, actor: Admin, dept_id: Id) -> None:
    await service.delete_department(session, actor, dept_id)


# clients -------------------------------------------------------------


@router.get("/clients", response_model=list[ClientOut])
async def list_clients(session: DbSession, _: Admin) -> list[ApiClient]:
    return await service.list_clients(session)


@router.post("/clients", response_model=ClientCreated, status_code=status.HTTP_201_CREATED)
async def create_client(session: DbSession, actor: Admin, body: ClientCreate) -> ClientCreated:
    client, secret = await service.create_client(session, actor, body)
    return ClientCreated.model_validate({**ClientOut.model_validate(client).model_dump(), "client_secret": secret})


@router.patch("/clients/{client_id}", response_model=ClientOut)
async def update_client(session: DbSession, actor: Admin, client_id: Id, body: ClientUpdate) -> ApiClient:
    """Change scopes (the client's grants), channel, or disable it (its tokens stop working)."""
    return await service.update_client(session, actor, client_id, body)


@router.post("/clients/{client_id}/rotate-secret", response_model=ClientCreated)
async def rotate_secret(session: DbSession, actor: Admin, client_id: Id) -> ClientCreated:
    client, secret = await service.rotate_client_secret(session, actor, client_id)
    return ClientCreated.model_validate({**ClientOut.model_validate(client).model_dump(), "client_secret": secret})
