from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncSession

from app import jobs_registry  # noqa: F401 - registers every job handler
from app.analytics.jobs import schedule_rollup
from app.api import mount_routers
from app.attachments.jobs import schedule_orphan_collection
from app.cases.defaults import ensure_case_type
from app.channels.events import ChannelEvents
from app.channels.jobs import schedule_sweep
from app.channels.publiccache import PublicCache
from app.channels.ratelimit import build_rate_limiter
from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_sessionmaker
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import BodySizeLimitMiddleware, NulCharacterMiddleware, RequestContextMiddleware
from app.core.security import TokenCodec
from app.feedback.jobs import schedule_reminders
from app.identity.service import ensure_admin, ensure_default_roles
from app.imports.jobs import schedule_expiry
from app.learning.jobs import schedule_sweep as schedule_learning_sweep
from app.search.indexing import language_resources
from app.search.searchlog import SearchLogBuffer
from app.search.service import rebuild_if_empty, revectorize_if_needed
from app.services import build
from app.services import close as close_services
from app.taxonomy.service import ensure_default_item_types
from app.workers.worker import Worker

log = logging.getLogger("app")
ROOT = Path(__file__).resolve().parent.parent


def migration_head() -> str | None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    return ScriptDirectory.from_config(cfg).get_current_head()


async def build_services(settings: Settings) -> dict[str, Any]:
    return await build(settings)


async def ensure_defaults(session: AsyncSession) -> None:
    """Default roles and item types exist on every database (idempotent; admins may change them)."""
    await ensure_default_roles(session)
    await ensure_default_item_types(session)
    await ensure_case_type(session)
    await session.commit()


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """`freeze_heap`: for a serving process only (see the lifespan); never in tests, which build
    hundreds of apps in one process."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url, busy_timeout=settings.sqlite_busy_timeout_seconds)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.services = await build_services(settings)
        app.state.services["rate_limiter"] = build_rate_limiter(settings)
        search = app.state.services["search"]
        try:  # defaults and the managed dictionary before the first request; a database that is
            # down must not stop the process (readyz reports it, the next start retries)
            async with app.state.sessionmaker() as s:
                await ensure_defaults(s)
                if await schedule_orphan_collection(s, settings.orphan_collect_hours):
                    await s.commit()
                if await schedule_sweep(s, settings.channel_sweep_seconds):
                    await s.commit()
                if await schedule_reminders(s, settings.review_reminder_hours):
                    await s.commit()
                if await schedule_rollup(s, settings.analytics_rollup_seconds):
                    await s.commit()
                if await schedule_expiry(s, settings.export_retention_hours):
                    await s.commit()
                if await schedule_learning_sweep(s, settings.learning_sweep_seconds):
                    await s.commit()
                await search.set_language(await language_resources(s))
                if search.writable and await rebuild_if_empty(s, search):
                    log.warning("the search index is empty while items are published: a rebuild is queued")
                elif search.writable and (
                    queued := await revectorize_if_needed(s, search, app.state.services.get("semantic"))
                ):
                    log.warning("indexed items lack vectors of the loaded embedder: %s queued", queued)
            semantic = app.state.services.get("semantic")
            if semantic is not None and semantic.available:
                search.warm_vectors()
        except Exception:
            log.exception("start-up data could not be loaded")
        if settings.bootstrap_admin_user and settings.bootstrap_admin_password:
            async with app.state.sessionmaker() as s:
                _, created = await ensure_admin(s, settings.bootstrap_admin_user, settings.bootstrap_admin_password)
                if created:
                    log.info("bootstrap administrator created", extra={"user": settings.bootstrap_admin_user})
        stop = asyncio.Event()
        app.state.search_log = SearchLogBuffer(app.state.sessionmaker)
        app.state.channel_events = ChannelEvents(app.state.sessionmaker)
        app.state.public_cache = PublicCache(app.state.sessionmaker, settings.channel_cache_seconds)
        log_tasks = [
            asyncio.create_task(app.state.search_log.run(stop)),
            asyncio.create_task(app.state.channel_events.run(stop)),
        ]
        task = None
        # With `serve --workers N` and the embedded index, the process that took the index's
        # writer lock runs the worker; the others only read (README, "Scaling").
        if settings.worker_embedded and search.writable:
            worker = Worker(app.state.sessionmaker, settings, services=app.state.services)
            task = asyncio.create_task(worker.run_forever(stop))
        if freeze_heap:
            # The start-up heap (SQLAlchemy, pydantic, OpenCC and pinyin tables: ~400,000 objects)
            # lives as long as the process. Frozen, the collector stops walking it: without this a
            # full collection paused a serving process for 130-160 ms under search load.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                with suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=10)
            await asyncio.gather(*log_tasks)  # their last flushes write what is left
            await close_services(app.state.services)
            await engine.dispose()

    app = FastAPI(
        title="Call-center knowledge service",
        version="1.0.0",
        description="Knowledge items, versions and publishing, Chinese search and attachments for "
        "call-center agents, the website FAQ, WeChat and the mobile APP. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.token_codec = TokenCodec(settings)
    app.state.migration_head = migration_head()
    app.state.services = {}
    install_error_handlers(app)
    mount_routers(app)
    # Added last = outermost: request id first, then limits, then CORS.
    app.add_middleware(NulCharacterMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["ETag", "X-Request-ID"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        json_limit=settings.max_json_body_bytes,
        upload_limit=settings.max_upload_request_bytes,
        import_limit=settings.import_max_bytes,
    )
    app.add_middleware(RequestContextMiddleware)
    return app


def app_factory() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings, freeze_heap=True)
