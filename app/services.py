"""Build the outside systems (search engine, extractor, blob store) chosen by configuration."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings


async def build(settings: Settings) -> dict[str, Any]:
    services: dict[str, Any] = {}
    return services
