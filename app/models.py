"""Every ORM model, imported so Alembic and the metadata see the whole schema."""

from app.audit.models import AuditEntry
from app.core.db import Base
from app.identity.models import ApiClient, Department, RefreshToken, Role, User, user_roles
from app.workers.models import Job, WorkerHeartbeat

__all__ = ["ApiClient", "AuditEntry", "Base", "Department", "Job", "RefreshToken", "Role", "User",
           "WorkerHeartbeat", "user_roles"]
