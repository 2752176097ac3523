"""Every router, mounted in one place. Routes are protected by their own `Require(...)`;
the public ones (token, health, channel reads) say so in their module."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.analytics.router import router as analytics_router
from app.announcements.router import channel_router as announcements_channel_router
from app.announcements.router import router as announcements_router
from app.attachments.router import router as attachments_router
from app.audit.router import router as audit_router
from app.channels.events import router as channel_events_router
from app.channels.feed import channel_router as snapshot_router
from app.channels.feed import router as changes_router
from app.channels.router import router as channels_router
from app.channels.screenpop import router as screenpop_router
from app.experts.router import router as experts_router
from app.feedback.router import router as feedback_router
from app.identity.router import auth_router
from app.identity.router import router as identity_router
from app.imports.router import router as imports_router
from app.knowledge.router import router as knowledge_router
from app.learning.router import router as learning_router
from app.ops.router import router as ops_router
from app.search.router import router as search_router
from app.study.router import router as study_router
from app.taxonomy.router import router as taxonomy_router
from app.todo.router import router as todo_router
from app.workers.router import router as jobs_router

API_PREFIX = "/api/v1"


def mount_routers(app: FastAPI) -> None:
    api = APIRouter(prefix=API_PREFIX)
    # Routes are matched in order, one by one: the hot paths (search, channel reads) come first.
    for r in (
        screenpop_router,
        channels_router,
        channel_events_router,
        search_router,
        knowledge_router,
        attachments_router,
        auth_router,
        identity_router,
        audit_router,
        jobs_router,
        taxonomy_router,
        changes_router,
        snapshot_router,
        imports_router,
        feedback_router,
        todo_router,
        announcements_router,
        announcements_channel_router,
        analytics_router,
        learning_router,
        study_router,
        experts_router,
    ):
        api.include_router(r)
    app.include_router(api)
    app.include_router(ops_router)
