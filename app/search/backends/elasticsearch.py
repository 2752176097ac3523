"""Elasticsearch 9.x search backend (IK or smartcn analysis), over `AsyncElasticsearch`.

The request bodies and response mappings live in `es_bodies` as pure functions; this
module sends them and turns transport failures into `SearchUnavailable`.

Index layout: versioned indices `<prefix>_<analyzer>_v<N>` behind a read alias
(`<prefix>`) and a write alias (`<prefix>_write`). `rebuild` moves the write alias to a
fresh index first (so changes made during the rebuild land there, guarded by external
versions), bulk-loads it, swaps the read alias in one atomic `_aliases` call and drops the
old index. Readers see changes made during a rebuild once it finishes. A delete that
races a rebuild can be undone by the rebuild's older snapshot: the consistency check
(`indexed_versions` against the database) repairs that.

The semantic leg (`SearchQuery.mode == "semantic"`): each index holds the vectors of one
embedding model (`es_bodies.VectorSpec`, in the mapping's `_meta`). A new index takes the
model most of its documents carry (the configured `vector_model` first); an index created
without vectors gets the vector field from the first documents that carry some. Documents
whose vectors are of another model or length are indexed keyword-only, so a model change
never mixes two models' vectors in one index: `vector_state` shows those items, and a
`rebuild` makes a new index version of the new model.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, Literal

from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError, TransportError, helpers

from app.search import ranking
from app.search.backends import es_bodies as bodies
from app.search.backends.base import RebuildFailed, SearchBackend, SearchUnavailable
from app.search.documents import (
    LanguageResources,
    SearchDocument,
    SearchQuery,
    SearchResult,
    Suggestion,
)

log = logging.getLogger(__name__)

Refresh = Literal[False, True, "wait_for"]


def _newest_per_item(docs: Sequence[SearchDocument]) -> dict[int, SearchDocument]:
    latest: dict[int, SearchDocument] = {}
    for doc in docs:
        if doc.item_id not in latest or doc.version_no >= latest[doc.item_id].version_no:
            latest[doc.item_id] = doc
    return latest


class ElasticsearchBackend(SearchBackend):
    name = "elasticsearch"

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        analyzer: bodies.Analyzer = "ik",
        index_prefix: str = "kb_items",
        pinyin: bool | None = None,
        client: AsyncElasticsearch | None = None,
        refresh: Refresh = False,
        request_timeout: float = 10.0,
        api_key: str | None = None,
        vector_model: str | None = None,
        vector_dims: int | None = None,
    ) -> None:
        """`pinyin` defaults to True with IK (the image installs analysis-pinyin beside it)
        and False with smartcn, the fallback for clusters without third-party plugins.
        `refresh="wait_for"` makes writes visible before they return (tests, small setups).

        `vector_model` is the embedder the service embeds queries and documents with
        (`Embedder.model`; None when it is off or unknown): semantic searches then compare
        only with documents of that model, and a rebuild prefers it. With `vector_dims` too,
        new indices are created with the vector field already mapped."""
        if analyzer not in bodies.ANALYZERS:
            raise ValueError(f"unknown analyzer {analyzer!r}; choose one of {bodies.ANALYZERS}")
        self.analyzer: bodies.Analyzer = analyzer
        self.prefix = bodies.validate_prefix(index_prefix)
        self.pinyin = (analyzer == "ik") if pinyin is None else pinyin
        self.read_alias = bodies.read_alias(self.prefix)
        self.write_alias = bodies.write_alias(self.prefix)
        self.synonyms_set = bodies.synonyms_set_id(self.prefix)
        self.refresh: Refresh = refresh
        self.vector_model = vector_model
        self.vectors: bodies.VectorSpec | None = (
            bodies.VectorSpec(vector_model, vector_dims) if vector_model and vector_dims else None
        )
        self._owns_client = client is None
        self._client = client or AsyncElasticsearch(
            hosts=[url] if isinstance(url, str) else list(url),
            api_key=api_key,
            request_timeout=request_timeout,
            max_retries=2,
            retry_on_timeout=True,
        )

    # ------------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _unavailable_on_error(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except (SearchUnavailable, RebuildFailed):
            raise
        except TransportError as exc:  # connection refused, timeout, TLS, serialization
            raise SearchUnavailable(f"Elasticsearch unreachable during {what}: {exc}") from exc
        except ApiError as exc:
            raise SearchUnavailable(f"Elasticsearch refused {what}: {exc}") from exc

    def _create_body(
        self, aliases: dict[str, dict[str, Any]] | None = None, vectors: bodies.VectorSpec | None = None
    ) -> dict[str, Any]:
        return bodies.create_index_body(
            self.analyzer, self.synonyms_set, pinyin=self.pinyin, aliases=aliases, vectors=vectors
        )

    async def _vector_specs(self, alias: str) -> dict[str, bodies.VectorSpec | None]:
        """index behind `alias` -> the model and length of the vectors it holds (None: none)."""
        try:
            response = await self._client.indices.get_mapping(index=alias, filter_path=bodies.VECTOR_MAPPING_FILTER)
        except NotFoundError:
            return {}
        return bodies.index_vector_specs(response.body)

    async def _write_vectors(self, docs: Sequence[SearchDocument]) -> bodies.VectorSpec | None:
        """The VectorSpec of the index behind the write alias, asked at each write (another
        process may have rebuilt it). An index without vectors gets the field for the model
        of these documents; if another process added a different one meanwhile, that one holds."""
        specs = await self._vector_specs(self.write_alias)
        if len(specs) != 1:
            return None
        ((index, spec),) = specs.items()
        if spec is not None:
            return spec
        wanted = bodies.choose_vector_spec(docs, self.vector_model)
        if wanted is None:
            return None
        try:
            await self._client.indices.put_mapping(index=index, **bodies.vector_mapping_update(wanted))
        except ApiError as exc:
            if exc.status_code != 400:
                raise
            log.warning("could not add vectors of %s to %s: %s", wanted.model, index, exc)
            return (await self._vector_specs(self.write_alias)).get(index)
        log.info("index %s now holds vectors of %s (%d dims)", index, wanted.model, wanted.dims)
        return wanted

    async def _alias_targets(self, alias: str) -> list[str]:
        try:
            response = await self._client.indices.get_alias(name=alias)
        except NotFoundError:
            return []
        return sorted(response.body)

    async def _versioned_indices(self) -> list[str]:
        response = await self._client.indices.resolve_index(
            name=bodies.index_pattern(self.prefix, self.analyzer), expand_wildcards="all"
        )
        return [entry["name"] for entry in response.body.get("indices", [])]

    async def _ensure_synonyms_set(self) -> None:
        # The set must exist before an index that references it is created.
        try:
            await self._client.synonyms.get_synonym(id=self.synonyms_set, size=1)
        except NotFoundError:
            await self._client.synonyms.put_synonym(id=self.synonyms_set, synonyms_set=[])

    async def _bulk(self, actions: list[dict[str, Any]]) -> dict[str, str | None]:
        """Document id -> None (done, or superseded by a newer version) or error text."""
        outcomes: dict[str, str | None] = {}
        unreachable = 0
        kwargs: dict[str, Any] = {"refresh": self.refresh} if self.refresh else {}
        async for ok, item in helpers.async_streaming_bulk(
            self._client,
            actions,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=3,
            **kwargs,
        ):
            doc_id, outcome, error = bodies.bulk_item_outcome(ok, item)
            if outcome == "unavailable":
                unreachable += 1
            # The same id can come back once per index (delete during a rebuild): keep errors.
            outcomes[doc_id] = outcomes.get(doc_id) or error
        if actions and unreachable == len(actions):
            sample = next((e for e in outcomes.values() if e), "no answer")
            raise SearchUnavailable(f"Elasticsearch rejected the whole bulk request: {sample}")
        return outcomes

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        async with self._unavailable_on_error("open"):
            await self._ensure_synonyms_set()
            current = await self._alias_targets(self.read_alias)
            if current:
                if not any(bodies.index_version(n, self.prefix, self.analyzer) for n in current):
                    log.warning(
                        "read alias %s points to %s, not a %s index: run a rebuild to switch analyzers",
                        self.read_alias,
                        current,
                        self.analyzer,
                    )
                spec = await self.index_vectors() if self.vector_model else None
                if spec is not None and spec.model != self.vector_model:
                    log.warning(
                        "index %s holds vectors of %s, the embedder is %s: semantic search finds nothing "
                        "until a rebuild",
                        current,
                        spec.model,
                        self.vector_model,
                    )
                return
            # Leftovers of a crashed rebuild keep their number; take the next one.
            name = bodies.next_index_name(await self._versioned_indices(), self.prefix, self.analyzer)
            try:
                await self._client.indices.create(
                    index=name, **self._create_body(bodies.initial_aliases(self.prefix), self.vectors)
                )
            except ApiError as exc:
                # Another process won the race; its index came with the aliases.
                if exc.error != "resource_already_exists_exception":
                    raise

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def health(self) -> bool:
        try:
            await self._client.count(index=self.read_alias)
        except (TransportError, ApiError):
            return False
        return True

    async def index_vectors(self) -> bodies.VectorSpec | None:
        """The model and length of the vectors behind the read alias (None: no vectors yet)."""
        async with self._unavailable_on_error("mapping lookup"):
            specs = await self._vector_specs(self.read_alias)
        return next(iter(specs.values()), None) if len(specs) == 1 else None

    async def aliases(self) -> tuple[list[str], list[str]]:
        """(indices behind the read alias, indices behind the write alias)."""
        async with self._unavailable_on_error("alias lookup"):
            return await self._alias_targets(self.read_alias), await self._alias_targets(self.write_alias)

    # ------------------------------------------------------------------ language

    async def set_language(self, resources: LanguageResources) -> None:
        """Replace the synonyms set; Elasticsearch reloads the search analyzers itself.

        The business dictionary is IK's (`remote_ext_dict`, polled from the service, see
        `es_bodies.ik_user_dictionary`): new words apply to new analysis only, so existing
        documents need a `rebuild` to be re-segmented.
        """
        body = bodies.synonyms_set_body(resources)
        async with self._unavailable_on_error("synonyms update"):
            await self._client.synonyms.put_synonym(id=self.synonyms_set, synonyms_set=body["synonyms_set"])

    # ------------------------------------------------------------------ writes

    async def upsert(self, docs: Sequence[SearchDocument]) -> dict[int, str | None]:
        latest = _newest_per_item(docs)  # one action per item: the highest version of the batch
        if not latest:
            return {}
        async with self._unavailable_on_error("indexing"):
            spec = await self._write_vectors(list(latest.values())) if any(d.vectors for d in latest.values()) else None
            actions = [bodies.index_action(doc, self.write_alias, spec) for doc in latest.values()]
            outcomes = await self._bulk(actions)
        dropped = [d.item_id for d in latest.values() if d.vectors and (spec is None or d.embedder != spec.model)]
        if dropped:
            log.warning(
                "%d item(s) indexed without vectors: their model is not the index's %s (e.g. %s); rebuild to switch",
                len(dropped),
                spec.model if spec else "(none)",
                dropped[:5],
            )
        return {
            item_id: outcomes.get(bodies.document_id(item_id), "no result from Elasticsearch") for item_id in latest
        }

    async def delete(self, item_ids: Sequence[int]) -> None:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return
        async with self._unavailable_on_error("delete"):
            # Behind both aliases: during a rebuild they point at different indices.
            read, write = (
                await self._alias_targets(self.read_alias),
                await self._alias_targets(self.write_alias),
            )
            indices = sorted(set(read) | set(write))
            actions = [bodies.delete_action(item_id, index) for index in indices for item_id in ids]
            outcomes = await self._bulk(actions)
        failed = {doc_id: error for doc_id, error in outcomes.items() if error}
        if failed:
            raise SearchUnavailable(f"delete failed for {failed}")

    async def rebuild(self, docs: Sequence[SearchDocument]) -> None:
        async with self._unavailable_on_error("rebuild"):
            await self._ensure_synonyms_set()
            read, write = (
                await self._alias_targets(self.read_alias),
                await self._alias_targets(self.write_alias),
            )
            existing = {*await self._versioned_indices(), *read, *write}
            new = bodies.next_index_name(existing, self.prefix, self.analyzer)
            latest = _newest_per_item(docs)
            # The new index holds one model's vectors: the documents' (the configured one first).
            spec = bodies.choose_vector_spec(latest.values(), self.vector_model) or self.vectors
            await self._client.indices.create(index=new, **self._create_body(vectors=spec))
            try:
                # 1. Writes go to the new index from now on; readers still use the old one.
                await self._client.indices.update_aliases(**bodies.alias_actions(write, new, write=self.write_alias))
                # 2. Load. A newer version written meanwhile wins (external versions).
                outcomes = await self._bulk([bodies.index_action(doc, new, spec) for doc in latest.values()])
                errors = {
                    item_id: error
                    for item_id in latest
                    if (error := outcomes.get(bodies.document_id(item_id), "no result")) is not None
                }
                if errors:
                    raise RebuildFailed(errors)
                await self._client.indices.refresh(index=new)
                # 3. Readers switch in one atomic step.
                await self._client.indices.update_aliases(**bodies.alias_actions(read, new, read=self.read_alias))
            except Exception:
                await self._undo_rebuild(new, write)
                raise
            # 4. The old indices are no longer behind any alias.
            for old in sorted((set(read) | set(write)) - {new}):
                with suppress(NotFoundError):
                    await self._client.indices.delete(index=old)

    async def _undo_rebuild(self, new: str, old_write: list[str]) -> None:
        try:
            if old_write:
                await self._client.indices.update_aliases(
                    **bodies.alias_actions([new], old_write[0], write=self.write_alias)
                )
            await self._client.indices.delete(index=new)
        except (TransportError, ApiError):
            log.exception("could not roll back the failed rebuild into %s", new)

    # ------------------------------------------------------------------ reads

    async def search(self, query: SearchQuery) -> SearchResult:
        if query.mode == "semantic":
            return await self._semantic(query)
        result = await self._search_once(query)
        if bodies.relax(query, result):
            result = await self._search_once(replace(query, strict=False))
            result.relaxed = result.total > 0
        return result

    async def _search_once(self, query: SearchQuery) -> SearchResult:
        body = bodies.search_body(ranking.engine_query(query))
        async with self._unavailable_on_error("search"):
            response = await self._client.search(index=self.read_alias, body=body)
        return bodies.search_result(response.body, query)

    async def _semantic(self, query: SearchQuery) -> SearchResult:
        """The nearest documents to `query.vector` under the query's ACL, channel and filters.

        No vector (the embedder is off or failed) or a zero vector: nothing to compare, an
        empty result. A vector of another length than the index's: Elasticsearch refuses it
        (400), which surfaces as SearchUnavailable, as any engine failure does."""
        if not query.vector or not any(query.vector):
            return SearchResult(total=0, hits=[])
        body = bodies.knn_body(query, model=self.vector_model)
        async with self._unavailable_on_error("semantic search"):
            response = await self._client.search(index=self.read_alias, body=body)
        return bodies.semantic_result(response.body, query, self.vector_model)

    async def suggest(
        self, prefix: str, principals: list[str], channel: str | None, limit: int = 10
    ) -> list[Suggestion]:
        if not bodies.has_word(prefix) or limit <= 0:
            return []
        body = bodies.suggest_body(prefix, principals, channel, limit, pinyin=self.pinyin)
        async with self._unavailable_on_error("suggest"):
            response = await self._client.search(index=self.read_alias, body=body)
        return bodies.suggestions(response.body, limit)

    async def document_count(self) -> int:
        async with self._unavailable_on_error("count"):
            response = await self._client.count(index=self.read_alias)
        return int(response.body["count"])

    async def _walk(self, what: str, source: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """Every search response page of a point-in-time walk over the read index."""
        async with self._unavailable_on_error(what):
            pit = await self._client.open_point_in_time(index=self.read_alias, keep_alive="1m")
            pit_id: str = pit.body["id"]
            try:
                search_after: list[Any] | None = None
                while True:
                    response = await self._client.search(
                        body=bodies.indexed_versions_body(pit_id, search_after, source=source)
                    )
                    page: dict[str, Any] = response.body
                    hits = (page.get("hits") or {}).get("hits") or []
                    pit_id = page.get("pit_id") or pit_id
                    yield page
                    if not hits:
                        break
                    search_after = hits[-1].get("sort")
            finally:
                try:
                    await self._client.close_point_in_time(id=pit_id)
                except (TransportError, ApiError):
                    log.warning("could not close point in time %s", pit_id)

    async def indexed_versions(self) -> dict[int, int]:
        found: dict[int, int] = {}
        async for page in self._walk("version scan", bodies.VERSIONS_SOURCE):
            found.update(bodies.versions_page(page)[0])
        return found

    async def items_lacking_vectors(self, model: str) -> list[int]:
        """Items without vectors of `model`: every item when the live index holds another model's
        vectors (only a rebuild, a new index version, switches it), else those indexed without."""
        spec = await self.index_vectors()
        state = await self.vector_state()
        if spec is not None and spec.model != model:
            return sorted(state)
        return sorted(item_id for item_id, got in state.items() if got != model)

    async def vector_state(self) -> dict[int, str | None]:
        """item_id -> the model of its indexed vectors, or None when it is indexed without
        (embedder off, failed, or its vectors were of another model than the index's).

        For the consistency check: items whose value is not the current embedder's model
        need reindexing; when the index itself holds another model (`index_vectors`), only a
        `rebuild` (a new index version) switches it."""
        found: dict[int, str | None] = {}
        async for page in self._walk("vector scan", bodies.VECTOR_STATE_SOURCE):
            found.update(bodies.vector_state_page(page)[0])
        return found
