"""The app with one probe route behind the channel routers' `RateLimit`, for the rate-limit tests
(in process and served by uvicorn: `uvicorn tests.channels.ratelimit_app:factory --factory`)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.channels.access import Caller
from app.channels.ratelimit import RateLimit
from app.core.config import Settings, get_settings
from app.main import create_app

probe = APIRouter(prefix="/api/v1/channels/{channel}", dependencies=[RateLimit])


@probe.get("/probe")
async def probe_route(caller: Caller) -> dict[str, str]:
    return {"key": caller.key, "channel": caller.channel}


def with_probe(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.include_router(probe)
    return app


def factory() -> FastAPI:
    return with_probe(get_settings())
