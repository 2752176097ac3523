from __future__ import annotations

from dataclasses import dataclass, field

from app.identity.permissions import ALL, SYSTEM_ACCESS, module_of


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (password grant) or an API client (client credentials)."""

    kind: str  # "user" | "client"
    id: int
    name: str
    permissions: frozenset[str]
    role_ids: tuple[int, ...] = ()
    department_ids: tuple[int, ...] = ()  # the user's department and its ancestors
    channel: str | None = None  # a channel client's channel; users act on the "agent" channel
    token_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_superuser(self) -> bool:
        return ALL in self.permissions

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    def can(self, permission: str) -> bool:
        if self.is_superuser:
            return True
        if permission not in self.permissions:
            return False
        if self.kind == "client":
            return True  # system access and module are implied by a client's scopes
        module = module_of(permission)
        return SYSTEM_ACCESS in self.permissions and (module is None or module in self.permissions)

    @property
    def acl_principals(self) -> list[str]:
        """The ACL subjects this caller stands for (see app/knowledge ACL rule)."""
        out = ["public", self.actor]
        out += [f"role:{r}" for r in self.role_ids]
        out += [f"dept:{d}" for d in self.department_ids]
        if self.kind == "user":
            out.append("internal")  # any signed-in staff member
        return out
