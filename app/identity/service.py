from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.models import AuditEntry
from app.audit.service import changes, record, record_apart
from app.core.db import get_or_404, like_pattern, utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, Unauthorized
from app.core.pagination import PageParams, paginate_by_id
from app.core.security import TokenCodec, hash_secret, new_secret, verify_secret
from app.identity import permissions as perms
from app.identity.models import ApiClient, Department, RefreshToken, Role, User, user_roles
from app.identity.principal import Principal
from app.identity.schemas import (
    ClientCreate,
    ClientUpdate,
    DepartmentCreate,
    DepartmentUpdate,
    RoleCreate,
    RoleUpdate,
    TokenOut,
    UserCreate,
    UserUpdate,
)

# ---------------------------------------------------------------- tokens


def _dept_ids(path: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (path or "").strip("/").split("/") if p)


def principal_for_user(user: User, token_id: str | None = None) -> Principal:
    return _user_principal(
        user.id,
        user.username,
        [(r.id, r.permissions) for r in user.roles],
        user.department.path if user.department else None,
        token_id,
    )


def _user_principal(
    user_id: int, username: str, roles: list[tuple[int, list[str]]], department_path: str | None, token_id: str | None
) -> Principal:
    granted: set[str] = set()
    for _, permissions in roles:
        granted.update(permissions)
    return Principal(
        kind="user",
        id=user_id,
        name=username,
        permissions=frozenset(granted),
        role_ids=tuple(role_id for role_id, _ in roles),
        department_ids=_dept_ids(department_path),
        channel="agent",
        token_id=token_id,
    )


def principal_for_client(client: ApiClient, scopes: list[str], token_id: str | None = None) -> Principal:
    return Principal(
        kind="client",
        id=client.id,
        name=client.client_id,
        permissions=frozenset(scopes),
        channel=client.channel,
        token_id=token_id,
    )


# Built once: building the statement cost as much as running it (this runs on every request).
_USER_PRINCIPAL_ROWS = (
    select(
        User.username, User.is_active, User.token_version, Department.path, Role.id.label("role_id"), Role.permissions
    )
    .outerjoin(Department, Department.id == User.department_id)
    .outerjoin(user_roles, user_roles.c.user_id == User.id)
    .outerjoin(Role, Role.id == user_roles.c.role_id)
    .where(User.id == bindparam("user_id"))
)


async def load_principal(session: AsyncSession, claims: dict[str, Any]) -> Principal:
    kind, _, raw_id = str(claims.get("sub", "")).partition(":")
    if not raw_id.isdigit():
        raise Unauthorized("The token is not valid", code="invalid_token")
    if kind == "user":
        # This runs on every request: one query of plain columns (roles and department joined),
        # no ORM objects.
        rows = (await session.execute(_USER_PRINCIPAL_ROWS, {"user_id": int(raw_id)})).all()
        if not rows or not rows[0].is_active or rows[0].token_version != claims.get("ver"):
            raise Unauthorized("The token has been revoked", code="token_revoked")
        roles = sorted((row.role_id, row.permissions) for row in rows if row.role_id is not None)
        return _user_principal(int(raw_id), rows[0].username, roles, rows[0].path, claims.get("jti"))
    if kind == "client":
        client = await session.get(ApiClient, int(raw_id))
        if client is None or not client.is_active or client.token_version != claims.get("ver"):
            raise Unauthorized("The token has been revoked", code="token_revoked")
        scopes = [s for s in str(claims.get("scope", "")).split() if s in client.scopes]
        return principal_for_client(client, scopes, claims.get("jti"))
    raise Unauthorized("The token is not valid", code="invalid_token")


# ---------------------------------------------------------------- failed sign-ins

SIGNIN_FAILED = "auth.signin_failed"


def _signin_key(kind: str, name: str, address: str) -> str:
    # The audit log's target_id is short; the readable name and address are in the entry's summary.
    return hashlib.sha256(f"{kind}:{name}:{address}".encode()).hexdigest()[:40]


async def signin_blocked(
    session: AsyncSession, kind: str, name: str, address: str, max_failures: int, window_seconds: int
) -> bool:
    """Too many failed sign-ins for this name from this address in the window. Counted from the
    audit log, so every API process and host shares the count."""
    since = utcnow() - timedelta(seconds=window_seconds)
    failures = await session.scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.target_type == "signin",
            AuditEntry.target_id == _signin_key(kind, name, address),
            AuditEntry.action == SIGNIN_FAILED,
            AuditEntry.at >= since,
        )
    )
    return (failures or 0) >= max_failures


async def record_signin_failure(
    sessionmaker: async_sessionmaker[AsyncSession], kind: str, name: str, address: str, code: str
) -> None:
    await record_apart(
        sessionmaker,
        None,
        SIGNIN_FAILED,
        "signin",
        _signin_key(kind, name, address),
        grant=kind,
        name=name,
        address=address,
        code=code,
    )


async def _issue_user_tokens(session: AsyncSession, codec: TokenCodec, user: User) -> TokenOut:
    sub = f"user:{user.id}"
    access, ttl = codec.encode({"sub": sub, "typ": "access", "ver": user.token_version}, codec.access_ttl)
    refresh_jti = new_secret(16)
    refresh, _ = codec.encode(
        {"sub": sub, "typ": "refresh", "ver": user.token_version, "jti": refresh_jti}, codec.refresh_ttl
    )
    session.add(RefreshToken(jti=refresh_jti, subject=sub, expires_at=utcnow() + codec.refresh_ttl))
    return TokenOut(access_token=access, expires_in=ttl, refresh_token=refresh)


async def password_grant(session: AsyncSession, codec: TokenCodec, username: str, password: str) -> TokenOut:
    user = await session.scalar(select(User).where(User.username == username))
    if not verify_secret(user.password_hash if user else None, password) or user is None:
        raise Unauthorized("Wrong user name or password", code="invalid_grant")
    if not user.is_active:
        raise Unauthorized("This user is disabled", code="user_disabled")
    principal = principal_for_user(user)
    if not (principal.is_superuser or perms.SYSTEM_ACCESS in principal.permissions):
        raise Unauthorized("This user has no system access", code="no_system_access")
    user.last_login_at = utcnow()
    out = await _issue_user_tokens(session, codec, user)
    record(session, principal, "auth.login", "user", user.id)
    await session.commit()
    return out


async def refresh_grant(session: AsyncSession, codec: TokenCodec, token: str) -> TokenOut:
    claims = codec.decode(token, "refresh")
    # Spent by one conditional UPDATE: of several requests racing with the same token, one wins.
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == str(claims.get("jti")), RefreshToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise Unauthorized("The refresh token was already used or revoked", code="token_revoked")
    kind, _, raw_id = str(claims.get("sub")).partition(":")
    user = await session.get(User, int(raw_id)) if kind == "user" and raw_id.isdigit() else None
    if user is None or not user.is_active or user.token_version != claims.get("ver"):
        raise Unauthorized("The token has been revoked", code="token_revoked")
    out = await _issue_user_tokens(session, codec, user)
    await session.commit()
    return out


async def revoke_refresh(session: AsyncSession, codec: TokenCodec, token: str, principal: Principal) -> None:
    claims = codec.decode(token, "refresh")
    if claims.get("sub") != principal.actor:
        raise InvalidInput("That refresh token belongs to someone else", code="invalid_token")
    stored = await session.get(RefreshToken, str(claims.get("jti")))
    if stored is not None and stored.used_at is None:
        stored.used_at = utcnow()
        record(session, principal, "auth.logout", principal.kind, principal.id)
        await session.commit()


async def client_grant(
    session: AsyncSession, codec: TokenCodec, client_id: str, secret: str, scope: str | None
) -> TokenOut:
    client = await session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if not verify_secret(client.secret_hash if client else None, secret) or client is None:
        raise Unauthorized("Wrong client id or secret", code="invalid_client")
    if not client.is_active:
        raise Unauthorized("This client is disabled", code="client_disabled")
    wanted = scope.split() if scope else list(client.scopes)
    missing = [s for s in wanted if s not in client.scopes]
    if missing:
        raise InvalidInput(
            f"Scopes not granted to this client: {' '.join(missing)}", code="invalid_scope", missing_scopes=missing
        )
    access, ttl = codec.encode(
        {"sub": f"client:{client.id}", "typ": "access", "ver": client.token_version, "scope": " ".join(wanted)},
        codec.access_ttl,
    )
    return TokenOut(access_token=access, expires_in=ttl, scope=" ".join(wanted))


# ---------------------------------------------------------------- roles


def ensure_grantable(actor: Principal | None, names: list[str]) -> None:
    """Nobody hands out more than they hold: a user manager without `*` cannot mint an
    administrator, neither by a role, nor a user's roles, nor a client's scopes. (No actor: the CLI.)"""
    if actor is None or actor.is_superuser:
        return
    beyond = sorted(set(names) - actor.permissions)
    if beyond:
        raise Forbidden(
            f"You cannot grant permissions you do not hold: {', '.join(beyond)}",
            code="permission_escalation",
            permissions=beyond,
        )


def _check_permissions(names: list[str]) -> list[str]:
    bad = perms.unknown(names)
    if bad:
        raise InvalidInput(f"Unknown permissions: {', '.join(bad)}", code="unknown_permission", unknown=bad)
    return sorted(set(names))


async def list_roles(session: AsyncSession) -> list[Role]:
    return list((await session.scalars(select(Role).order_by(Role.id))).all())


async def create_role(session: AsyncSession, actor: Principal, data: RoleCreate) -> Role:
    ensure_grantable(actor, data.permissions)
    role = Role(name=data.name, description=data.description, permissions=_check_permissions(data.permissions))
    session.add(role)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A role named {data.name!r} exists", code="role_exists")
    record(session, actor, "role.create", "role", role.id, after={"name": role.name, "permissions": role.permissions})
    await session.commit()
    return role


async def update_role(session: AsyncSession, actor: Principal, role_id: int, data: RoleUpdate) -> Role:
    role = await get_or_404(session, Role, role_id, "role")
    before = {"description": role.description, "permissions": list(role.permissions)}
    if data.description is not None:
        role.description = data.description
    if data.permissions is not None:
        ensure_grantable(actor, data.permissions)
        role.permissions = _check_permissions(data.permissions)
    record(
        session,
        actor,
        "role.update",
        "role",
        role.id,
        **changes(before, {"description": role.description, "permissions": list(role.permissions)}),
    )
    await session.commit()
    return role


async def delete_role(session: AsyncSession, actor: Principal, role_id: int) -> None:
    role = await get_or_404(session, Role, role_id, "role")
    holders = await session.scalar(select(func.count()).select_from(User).where(User.roles.any(Role.id == role_id)))
    if holders:
        raise Conflict(f"{holders} users still hold this role", code="role_in_use", users=holders)
    record(session, actor, "role.delete", "role", role.id, before={"name": role.name})
    await session.delete(role)
    await session.commit()


# ---------------------------------------------------------------- departments


async def role_ids_by_name(session: AsyncSession, names: list[str], field: str) -> dict[str, int]:
    """Role names an audience was given (announcements, exams, learning paths) -> ids; 422
    `unknown_role` naming `field` for any that does not exist."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    found = dict((await session.execute(select(Role.name, Role.id).where(Role.name.in_(names)))).all())
    unknown = [n for n in names if n not in found]
    if unknown:
        raise InvalidInput(f"Unknown role(s): {', '.join(unknown)}", code="unknown_role", field=field, unknown=unknown)
    return {n: found[n] for n in names}


async def department_paths(session: AsyncSession, ids: list[int], field: str) -> dict[int, str]:
    """Department ids an audience was given -> their paths; 422 `unknown_department` naming `field`."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    found = dict((await session.execute(select(Department.id, Department.path).where(Department.id.in_(ids)))).all())
    unknown = [d for d in ids if d not in found]
    if unknown:
        raise InvalidInput(
            f"Unknown department id(s): {', '.join(map(str, unknown))}",
            code="unknown_department",
            field=field,
            unknown=unknown,
        )
    return found


async def list_departments(session: AsyncSession) -> list[Department]:
    return list((await session.scalars(select(Department).order_by(Department.path, Department.id))).all())


async def create_department(session: AsyncSession, actor: Principal, data: DepartmentCreate) -> Department:
    parent_path = "/"
    if data.parent_id is not None:
        parent = await get_or_404(session, Department, data.parent_id, "department")
        parent_path = parent.path
    dept = Department(name=data.name, parent_id=data.parent_id, path=parent_path)
    session.add(dept)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A department named {data.name!r} exists there", code="department_exists")
    dept.path = f"{parent_path}{dept.id}/"
    record(
        session,
        actor,
        "department.create",
        "department",
        dept.id,
        after={"name": dept.name, "parent_id": dept.parent_id},
    )
    await session.commit()
    return dept


async def update_department(
    session: AsyncSession, actor: Principal, dept_id: int, data: DepartmentUpdate
) -> Department:
    dept = await get_or_404(session, Department, dept_id, "department")
    before = {"name": dept.name, "parent_id": dept.parent_id}
    new_parent: int | object | None = ...
    if data.move_to_root:
        new_parent = None
    elif data.parent_id is not None:
        new_parent = data.parent_id
    if new_parent is not ... and new_parent != dept.parent_id:
        new_path_prefix = "/"
        if isinstance(new_parent, int):
            parent = await get_or_404(session, Department, new_parent, "department")
            if parent.path.startswith(dept.path):
                raise Conflict(
                    "A department cannot move under itself or its own sub-department", code="department_cycle"
                )
            new_path_prefix = parent.path
        old_path = dept.path
        new_path = f"{new_path_prefix}{dept.id}/"
        subtree = (await session.scalars(select(Department).where(Department.path.startswith(old_path)))).all()
        for d in subtree:
            d.path = new_path + d.path[len(old_path) :]
        dept.parent_id = new_parent if isinstance(new_parent, int) else None
    if data.name is not None:  # after the move's queries: their autoflush would check the new name at the old place
        dept.name = data.name
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("A department with that name exists there", code="department_exists")
    record(
        session,
        actor,
        "department.update",
        "department",
        dept.id,
        **changes(before, {"name": dept.name, "parent_id": dept.parent_id}),
    )
    await session.commit()
    return dept


async def delete_department(session: AsyncSession, actor: Principal, dept_id: int) -> None:
    dept = await get_or_404(session, Department, dept_id, "department")
    children = await session.scalar(select(func.count()).where(Department.parent_id == dept_id))
    members = await session.scalar(select(func.count()).select_from(User).where(User.department_id == dept_id))
    if children or members:
        raise Conflict(
            "Only an empty department can be deleted", code="department_not_empty", children=children, members=members
        )
    record(session, actor, "department.delete", "department", dept.id, before={"name": dept.name})
    await session.delete(dept)
    await session.commit()


# ---------------------------------------------------------------- users


def _user_summary(user: User) -> dict[str, Any]:
    return {
        "display_name": user.display_name,
        "email": user.email,
        "department_id": user.department_id,
        "is_active": user.is_active,
        "roles": sorted(r.name for r in user.roles),
    }


async def _roles(session: AsyncSession, actor: Principal | None, ids: list[int]) -> list[Role]:
    roles = list((await session.scalars(select(Role).where(Role.id.in_(ids)))).all())
    missing = sorted(set(ids) - {r.id for r in roles})
    if missing:
        raise InvalidInput(f"Unknown role ids: {missing}", code="unknown_role", unknown=missing)
    ensure_grantable(actor, [p for r in roles for p in r.permissions])
    return roles


async def list_users(
    session: AsyncSession,
    page: PageParams,
    q: str | None,
    active: bool | None,
    role_id: int | None,
    department_id: int | None,
) -> tuple[list[User], str | None]:
    stmt = select(User)
    if q:
        like = like_pattern(q)
        stmt = stmt.where(User.username.ilike(like, escape="\\") | User.display_name.ilike(like, escape="\\"))
    if active is not None:
        stmt = stmt.where(User.is_active == active)
    if role_id is not None:
        stmt = stmt.where(User.roles.any(Role.id == role_id))
    if department_id is not None:
        stmt = stmt.where(User.department_id == department_id)
    return await paginate_by_id(session, stmt, User.id, page, descending=False)


async def create_user(session: AsyncSession, actor: Principal | None, data: UserCreate) -> User:
    if data.department_id is not None:
        await get_or_404(session, Department, data.department_id, "department")
    user = User(
        username=data.username,
        display_name=data.display_name,
        email=data.email,
        password_hash=hash_secret(data.password),
        department_id=data.department_id,
        is_active=data.is_active,
        roles=await _roles(session, actor, data.role_ids),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"The user name {data.username!r} is taken", code="user_exists")
    await session.refresh(user, ["department"])
    record(session, actor, "user.create", "user", user.id, after={"username": user.username, **_user_summary(user)})
    await session.commit()
    return user


async def update_user(session: AsyncSession, actor: Principal, user_id: int, data: UserUpdate) -> User:
    user = await get_or_404(session, User, user_id, "user")
    before = _user_summary(user)
    fields = data.model_fields_set
    own_access = ("department_id" in fields and data.department_id != user.department_id) or (
        data.role_ids is not None and set(data.role_ids) != {r.id for r in user.roles}
    )
    if own_access and actor.kind == "user" and actor.id == user.id:
        raise Forbidden(
            "Another administrator must change your own roles or department", code="cannot_change_own_access"
        )
    if "display_name" in fields and data.display_name is not None:
        user.display_name = data.display_name
    if "email" in fields:
        user.email = data.email
    if "department_id" in fields:
        if data.department_id is not None:
            await get_or_404(session, Department, data.department_id, "department")
        user.department_id = data.department_id
    if data.role_ids is not None:
        user.roles = await _roles(session, actor, data.role_ids)
    revoke = False
    if data.is_active is not None and data.is_active != user.is_active:
        if not data.is_active and actor.kind == "user" and actor.id == user.id:
            raise Conflict("You cannot disable yourself", code="cannot_disable_self")
        user.is_active = data.is_active
        revoke = not data.is_active
    if data.password is not None:
        user.password_hash = hash_secret(data.password)
        revoke = True
    if revoke:
        user.token_version += 1  # every token issued before now stops working
    await session.flush()
    await session.refresh(user, ["department"])
    after = _user_summary(user)
    record(
        session,
        actor,
        "user.update",
        "user",
        user.id,
        **changes(before, after),
        password_changed=data.password is not None,
        tokens_revoked=revoke,
    )
    await session.commit()
    return user


# ---------------------------------------------------------------- clients


async def list_clients(session: AsyncSession) -> list[ApiClient]:
    return list((await session.scalars(select(ApiClient).order_by(ApiClient.id))).all())


async def create_client(session: AsyncSession, actor: Principal, data: ClientCreate) -> tuple[ApiClient, str]:
    secret = new_secret()
    ensure_grantable(actor, data.scopes)
    client = ApiClient(
        client_id=data.client_id,
        name=data.name,
        secret_hash=hash_secret(secret),
        scopes=_check_scopes(data.scopes),
        channel=data.channel,
    )
    session.add(client)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"The client id {data.client_id!r} is taken", code="client_exists")
    record(
        session,
        actor,
        "client.create",
        "client",
        client.id,
        after={"client_id": client.client_id, "scopes": client.scopes, "channel": client.channel},
    )
    await session.commit()
    return client, secret


def _check_scopes(scopes: list[str]) -> list[str]:
    names = _check_permissions(scopes)
    if perms.ALL in names:
        raise InvalidInput("A client cannot hold '*'", code="unknown_permission")
    return names


async def update_client(session: AsyncSession, actor: Principal, id_: int, data: ClientUpdate) -> ApiClient:
    client = await get_or_404(session, ApiClient, id_, "client")
    before = {
        "name": client.name,
        "scopes": list(client.scopes),
        "channel": client.channel,
        "is_active": client.is_active,
    }
    if data.name is not None:
        client.name = data.name
    if data.scopes is not None:
        ensure_grantable(actor, data.scopes)
        client.scopes = _check_scopes(data.scopes)
    if "channel" in data.model_fields_set:
        client.channel = data.channel
    if data.is_active is not None and data.is_active != client.is_active:
        client.is_active = data.is_active
        if not data.is_active:
            client.token_version += 1
    record(
        session,
        actor,
        "client.update",
        "client",
        client.id,
        **changes(
            before,
            {
                "name": client.name,
                "scopes": list(client.scopes),
                "channel": client.channel,
                "is_active": client.is_active,
            },
        ),
    )
    await session.commit()
    return client


async def rotate_client_secret(session: AsyncSession, actor: Principal, id_: int) -> tuple[ApiClient, str]:
    client = await get_or_404(session, ApiClient, id_, "client")
    secret = new_secret()
    client.secret_hash = hash_secret(secret)
    client.token_version += 1
    record(session, actor, "client.rotate_secret", "client", client.id)
    await session.commit()
    return client, secret


# ---------------------------------------------------------------- bootstrap


async def ensure_default_roles(session: AsyncSession) -> dict[str, Role]:
    existing = {r.name: r for r in await list_roles(session)}
    for name, (desc, granted) in perms.DEFAULT_ROLES.items():
        if name not in existing:
            role = Role(name=name, description=desc, permissions=sorted(granted))
            session.add(role)
            existing[name] = role
    await session.flush()
    return existing


async def ensure_admin(session: AsyncSession, username: str, password: str) -> tuple[User, bool]:
    """Create an administrator unless a user of that name exists (never resets a password)."""
    roles = await ensure_default_roles(session)
    user = await session.scalar(select(User).where(User.username == username))
    created = False
    if user is None:
        user = User(
            username=username, display_name="系统管理员", password_hash=hash_secret(password), roles=[roles["admin"]]
        )
        session.add(user)
        await session.flush()
        record(session, None, "user.bootstrap_admin", "user", user.id, after={"username": username})
        created = True
    await session.commit()
    return user, created


async def purge_used_refresh_tokens(  # runs inside a job's transaction
    session: AsyncSession, older_than: timedelta = timedelta(days=1)
) -> int:
    from sqlalchemy import delete

    cutoff = utcnow() - older_than
    res = await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < cutoff))
    return res.rowcount or 0
