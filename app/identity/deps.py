"""Who is calling, and may they? Every route states its permission with `Require(...)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.audit.service import record_apart
from app.core.deps import DbSession
from app.core.errors import Forbidden, Unauthorized
from app.core.security import TokenCodec
from app.identity.principal import Principal
from app.identity.service import load_principal

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /api/v1/auth/token")


async def get_codec(request: Request) -> TokenCodec:  # async: a sync dependency costs a thread hop per request
    return request.app.state.token_codec


Codec = Annotated[TokenCodec, Depends(get_codec)]


async def optional_principal(
    request: Request,
    session: DbSession,
    codec: Codec,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    if creds is None:
        if request.headers.get("authorization"):
            raise Unauthorized("Use 'Authorization: Bearer <token>'", code="invalid_token")
        return None
    principal = await load_principal(session, codec.decode(creds.credentials, "access"))
    request.state.principal = principal
    return principal


async def current_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized("Sign in first: send a bearer token", code="unauthenticated")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
MaybePrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def record_denial(
    request: Request, principal: Principal | None, permission: str, target: str | None = None, target_id: object = None
) -> None:
    """Denials are audited in their own transaction: the request itself is about to fail."""
    await record_apart(
        request.app.state.sessionmaker,
        principal,
        "permission.denied",
        target,
        target_id,
        permission=permission,
        method=request.method,
        path=request.url.path,
    )


async def deny(
    request: Request, principal: Principal | None, permission: str, target: str | None = None, target_id: object = None
) -> Forbidden:
    await record_denial(request, principal, permission, target, target_id)
    return Forbidden(
        f"You lack the permission {permission!r}", code="permission_denied", required_permission=permission
    )


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            raise await deny(request, principal, permission)
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency


def Require(permission: str) -> type[Principal]:
    """`principal: Require("knowledge:publish")` — the caller, known to hold that permission."""
    return Annotated[Principal, Depends(require(permission))]  # type: ignore[return-value]


def require_any(*permissions: str) -> Callable[..., Awaitable[Principal]]:
    """The caller holds at least one of `permissions` (the route narrows further, e.g. a permission
    scoped to one item type); a refusal names the first, the general one."""

    async def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        if not any(principal.can(p) for p in permissions):
            raise await deny(request, principal, permissions[0])
        return principal

    dependency.__name__ = "require_any_" + "_".join(p.replace(":", "_") for p in permissions)
    return dependency


def RequireAny(*permissions: str) -> type[Principal]:
    """`principal: RequireAny("knowledge:create", "knowledge:propose_case")`."""
    return Annotated[Principal, Depends(require_any(*permissions))]  # type: ignore[return-value]
