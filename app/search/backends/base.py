from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from app.search.documents import (
    LanguageResources,
    SearchDocument,
    SearchQuery,
    SearchResult,
    Suggestion,
)


class SearchUnavailable(Exception):
    """The engine cannot answer now (down, index missing). The API maps it to 503."""


class RebuildFailed(Exception):
    """Some documents could not be indexed into the new index; the old index stays live."""

    def __init__(self, errors: dict[int, str]) -> None:
        self.errors = errors
        sample = "; ".join(f"{item_id}: {text}" for item_id, text in list(errors.items())[:5])
        super().__init__(f"{len(errors)} document(s) failed during rebuild: {sample}")


class SearchBackend(ABC):
    """One search engine. Implementations: `embedded` (Tantivy) and `elasticsearch`."""

    name: str
    # False in a process that may only read the index (an embedded index written by another
    # process): that process runs no job worker and queues no rebuild at start-up.
    writable: bool = True

    @abstractmethod
    async def open(self) -> None:
        """Create or open the index (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def health(self) -> bool:
        """True when the index exists and answers."""

    def warm_vectors(self) -> None:
        """Start loading what semantic search reads in memory, ahead of the first query (the
        embedded index's vectors; Elasticsearch keeps its own)."""
        return None

    @abstractmethod
    async def set_language(self, resources: LanguageResources) -> None:
        """Apply a new business dictionary and synonym list without a restart."""

    @abstractmethod
    async def upsert(self, docs: Sequence[SearchDocument]) -> dict[int, str | None]:
        """Index documents (replacing earlier ones of the same item).

        Returns item_id -> None on success or an error text for that document.
        """

    @abstractmethod
    async def delete(self, item_ids: Sequence[int]) -> None: ...

    @abstractmethod
    async def search(self, query: SearchQuery) -> SearchResult: ...

    @abstractmethod
    async def suggest(
        self, prefix: str, principals: list[str], channel: str | None, limit: int = 10
    ) -> list[Suggestion]:
        """Prefix completion over titles and questions, on Chinese, pinyin and initials,
        under the same ACL filter as search."""

    @abstractmethod
    async def indexed_versions(self) -> dict[int, int]:
        """item_id -> version_no of everything in the index (for the consistency check)."""

    async def items_lacking_vectors(self, model: str) -> list[int] | None:
        """Items in the index without vectors of `model` (none, or another model's); None when
        this engine cannot tell (the consistency check then skips the vector part)."""
        return None

    @abstractmethod
    async def document_count(self) -> int:
        """How many items the index holds (cheap: checked at every start)."""

    @abstractmethod
    async def rebuild(self, docs: Sequence[SearchDocument]) -> None:
        """Replace the whole index with these documents without downtime for readers."""
